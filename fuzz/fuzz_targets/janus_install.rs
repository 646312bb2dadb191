//! A Janus `.jcfg` file (libconfig syntax) as `--janus-config` reads it: parsed, never
//! a panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::config::janus_install;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = janus_install::parse(text);
});
