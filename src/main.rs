use clap::Parser;
use tracing_subscriber::EnvFilter;

use peregrine::config::{Args, Config};
use peregrine::source::camera::v4l2;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let (list_devices, list_formats) = (args.list_devices, args.list_formats);
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("peregrine: {err:#}");
            return std::process::ExitCode::from(2);
        }
    };
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("peregrine: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(peregrine::server::run(config));
    // Connections still open (browsers) must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("peregrine: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
