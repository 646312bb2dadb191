use clap::Parser;
use tracing_subscriber::EnvFilter;

use peregrine::config::{Args, Config};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let config = match Config::load(Args::parse()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("peregrine: {err:#}");
            return std::process::ExitCode::from(2);
        }
    };
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
