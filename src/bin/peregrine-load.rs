//! peregrine-load: many WebRTC viewers in one process against any Janus-API server, or
//! (with --bench) the fan-out benchmark against a peregrine it starts itself.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use peregrine::viewer::janus_client::Endpoint;
use peregrine::viewer::load::{self, bench, LoadConfig, LoadRun};

#[derive(Parser, Debug)]
#[command(
    name = "peregrine-load",
    about = "Load generator: N real WebRTC viewers joining through the Janus API"
)]
struct Args {
    /// Janus API URL: ws://HOST:8188/ (WebSocket) or http://HOST:8088/janus (long-poll).
    #[arg(long, required_unless_present = "bench")]
    server: Option<String>,
    /// The stream to watch, by name (a server's `[[stream]]`); without it, the default.
    #[arg(long, value_name = "NAME")]
    stream: Option<String>,
    /// Viewers to run at once.
    #[arg(long, default_value_t = 10)]
    viewers: usize,
    /// Seconds to keep all viewers watching after the last one started (benchmark: the
    /// measured window per step).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Viewers started per second.
    #[arg(long, default_value_t = 50.0)]
    ramp: f64,
    /// Write the JSON summary (per-viewer figures included) to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    /// Benchmark mode: start peregrine on this pre-encoded H.264 file and measure each
    /// step of --steps.
    #[arg(long, value_name = "FILE.h264")]
    bench: Option<PathBuf>,
    /// The peregrine binary for --bench [default: next to this one].
    #[arg(long)]
    peregrine: Option<PathBuf>,
    /// Viewer counts for --bench, comma-separated.
    #[arg(long, default_value = "1,10,50,100,200")]
    steps: String,
    /// With --bench: only the listed steps, not more until loss exceeds 1 %.
    #[arg(long)]
    no_extend: bool,
    /// With --bench: do not start new steps after this many seconds.
    #[arg(long, default_value_t = 480)]
    budget: u64,
    /// Frame rate the file is played at (--bench).
    #[arg(long, default_value_t = 30)]
    fps: u32,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The WebRTC stack warns per viewer about things a load run expects (late
                // duplicates, retransmitted handshakes); errors are what matter here.
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peregrine-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peregrine-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    if args.duration <= 0.0 || !args.duration.is_finite() {
        bail!("--duration must be above 0");
    }
    if args.ramp <= 0.0 || !args.ramp.is_finite() {
        bail!("--ramp must be above 0");
    }
    if let Some(input) = &args.bench {
        return run_bench(&args, input.clone()).await;
    }
    let url = args.server.as_deref().unwrap_or_default();
    let endpoint = Endpoint::parse(url)?;
    if args.viewers == 0 {
        bail!("--viewers must be at least 1");
    }
    load::probe(&endpoint).await?;
    let run = LoadRun::start(LoadConfig {
        endpoint,
        stream: args.stream.clone(),
        viewers: args.viewers,
        ramp_per_s: args.ramp,
    });
    let ramp = Duration::from_secs_f64(args.viewers as f64 / args.ramp);
    run.watch_for(ramp, !args.quiet).await;
    run.wait_ramped(Duration::from_secs(20)).await;
    run.watch_for(Duration::from_secs_f64(args.duration), !args.quiet)
        .await;
    let summary = run.finish().await;
    print!("{}", summary.describe());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    if summary.viewers_receiving == 0 {
        bail!("no viewer received video");
    }
    Ok(())
}

async fn run_bench(args: &Args, input: PathBuf) -> Result<()> {
    let peregrine = match &args.peregrine {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("peregrine"))
            .context("cannot locate the peregrine binary; pass --peregrine")?,
    };
    if !input.is_file() {
        bail!("{}: no such file", input.display());
    }
    let cfg = bench::BenchConfig {
        peregrine,
        input,
        fps: args.fps,
        steps: bench::parse_steps(&args.steps)?,
        extend: !args.no_extend,
        window: Duration::from_secs_f64(args.duration),
        ramp_per_s: args.ramp,
        budget: Duration::from_secs(args.budget),
        show_progress: !args.quiet,
    };
    let report = bench::run(cfg).await?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
