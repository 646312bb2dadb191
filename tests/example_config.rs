//! The shipped example configuration must behave like no configuration at all: a user
//! who copies it to a machine without a camera gets the test pattern, as the README
//! says, not NO SIGNAL for a device that is not there.

use clap::Parser;
use peregrine::config::{Args, Config};

#[test]
fn example_config_resolves_the_source_like_no_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/peregrine.toml");
    let with_file = Config::load(Args::parse_from(["peregrine", "--config", example])).unwrap();
    let without = Config::load(Args::parse_from(["peregrine"])).unwrap();
    assert_eq!(with_file.source, without.source, "source chosen");
    assert_eq!(with_file.source_chosen, without.source_chosen);
    assert_eq!(with_file.device, without.device);
}
