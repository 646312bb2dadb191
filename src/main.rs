//! Exit status: 0 after a clean stop, 2 for a usage or configuration error (clap's own
//! for bad flags, and [`UsageError`]), 1 for a failure while starting or running.

use peregrine::config::{self, Config, UsageError};
use peregrine::logging;
use peregrine::source::camera::v4l2;

const USAGE: u8 = 2;

fn main() -> std::process::ExitCode {
    let (args, ustreamer_flags) = match config::parse_command_line() {
        Ok(parsed) => parsed,
        Err(err) => {
            eprintln!("peregrine: {err:#}");
            return std::process::ExitCode::from(USAGE);
        }
    };
    // With both, no colour.
    let colour = if ustreamer_flags.contains(&"no-log-colors") {
        Some(false)
    } else if ustreamer_flags.contains(&"force-log-colors") {
        Some(true)
    } else {
        None
    };
    let (list_devices, list_formats) = (args.list_devices, args.list_formats);
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("peregrine: {err:#}");
            return std::process::ExitCode::from(USAGE);
        }
    };
    let rust_log = std::env::var("RUST_LOG").ok();
    match logging::filter(
        config.log_level,
        config.log_level_given,
        rust_log.as_deref(),
    ) {
        Ok(filter) => logging::init(filter, config.log_format, colour),
        Err(err) => {
            eprintln!("peregrine: {err:#}");
            return std::process::ExitCode::from(USAGE);
        }
    }
    if list_devices {
        print!("{}", v4l2::list_devices());
        return std::process::ExitCode::SUCCESS;
    }
    if list_formats {
        return match v4l2::list_formats(&config.device) {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("peregrine: {err:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if config.exit_on_parent_death {
        if let Err(err) = peregrine::sys::process::stop_with_parent() {
            eprintln!("peregrine: --exit-on-parent-death: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("peregrine: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(peregrine::app::run(config));
    // Connections still open (browsers) must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("peregrine: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                std::process::ExitCode::from(USAGE)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
