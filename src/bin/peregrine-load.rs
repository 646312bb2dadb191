//! peregrine-load: many WebRTC viewers in one process against any Janus-API server (or
//! MJPEG `/stream` clients against any µStreamer-style server), or (with --bench) the
//! fan-out benchmark against a peregrine it starts itself.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use peregrine::viewer::janus_client::Endpoint;
use peregrine::viewer::load::bench::Transport;
use peregrine::viewer::load::mjpeg_run::{MjpegConfig, MjpegRun};
use peregrine::viewer::load::{self, bench, LoadConfig, LoadRun};

#[derive(Parser, Debug)]
#[command(
    name = "peregrine-load",
    about = "Load generator: N real WebRTC viewers joining through the Janus API, or N MJPEG /stream clients",
    // bench.sh passes defaults of its own; what its caller adds wins.
    args_override_self = true
)]
struct Args {
    /// WebRTC: the Janus API URL, ws://HOST:8188/ (WebSocket) or http://HOST:8088/janus
    /// (long-poll). MJPEG: the HTTP server, http://HOST:8080.
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "bench",
        help_heading = "Load"
    )]
    server: Option<String>,
    /// What the clients watch with: webrtc or mjpeg; with --bench also both (one after
    /// the other, then side by side).
    #[arg(
        long,
        value_name = "KIND",
        default_value = "webrtc",
        help_heading = "Load"
    )]
    transport: String,
    /// The stream to watch, by name (a server's `[[stream]]`); without it, the default.
    #[arg(long, value_name = "NAME", help_heading = "Load")]
    stream: Option<String>,
    /// Viewers to run at once.
    #[arg(long, value_name = "N", default_value_t = 10, help_heading = "Load")]
    viewers: usize,
    /// Seconds to keep all viewers watching after the last one started (benchmark: the
    /// measured window per step).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10.0,
        help_heading = "Load"
    )]
    duration: f64,
    /// Viewers started per second.
    #[arg(
        long,
        value_name = "PER-SECOND",
        default_value_t = 50.0,
        help_heading = "Load"
    )]
    ramp: f64,
    /// Write the JSON summary (per-viewer figures included) to this file.
    #[arg(long, value_name = "FILE", help_heading = "Load")]
    json: Option<PathBuf>,
    /// No progress lines.
    #[arg(long, help_heading = "Load")]
    quiet: bool,
    /// WebRTC viewers watch with `audio: true` and count the sound they get (`--audio`
    /// alone means on); with --bench also `both`: the steps without sound, then with it,
    /// and what sound costs per viewer.
    #[arg(
        long,
        value_name = "WHEN",
        num_args = 0..=1,
        default_value = "off",
        default_missing_value = "on",
        help_heading = "Load"
    )]
    audio: String,
    /// The local address the viewers' media (UDP) sockets bind to, e.g. this end's
    /// address in a network namespace the server is reached from.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1",
        help_heading = "Load"
    )]
    bind: IpAddr,
    /// How many viewers put their pictures together and decode them (H.264), as a
    /// player does; the others authenticate and decrypt every packet and count
    /// packets, losses and pictures, but skip the decoding, so that one core drives
    /// many more of them.
    #[arg(long, value_name = "N", default_value_t = 2, help_heading = "Load")]
    decode_sample: usize,
    /// Threads the viewers run on. One (the default) keeps the generator on one core,
    /// and it costs less per packet than several: no wake-ups across threads.
    #[arg(long, value_name = "N", default_value_t = 1, help_heading = "Load")]
    threads: usize,
    /// Benchmark mode: start peregrine on this pre-encoded H.264 file and measure each
    /// step of --steps.
    #[arg(long, value_name = "FILE.h264", help_heading = "Benchmark")]
    bench: Option<PathBuf>,
    /// The peregrine binary for --bench [default: next to this one].
    #[arg(long, value_name = "PATH", help_heading = "Benchmark")]
    peregrine: Option<PathBuf>,
    /// One more argument for the peregrine --bench starts (repeat it for several), e.g.
    /// its sound source for --audio.
    #[arg(
        long,
        value_name = "ARG",
        allow_hyphen_values = true,
        help_heading = "Benchmark"
    )]
    peregrine_arg: Vec<String>,
    /// Viewer counts for --bench, comma-separated [default: 100,300,600,1000 for WebRTC,
    /// 1,10,50,100,200 for MJPEG] (MJPEG always measures 1 first: the fixed cost of
    /// making the pictures).
    #[arg(long, value_name = "N,N,...", help_heading = "Benchmark")]
    steps: Option<String>,
    /// MJPEG client counts for --bench [default: --steps when given, else
    /// 1,10,50,100,200].
    #[arg(long, value_name = "N,N,...", help_heading = "Benchmark")]
    mjpeg_steps: Option<String>,
    /// With --bench: only the listed steps, not more until loss (WebRTC) or dropped
    /// pictures (MJPEG) exceed 1 %.
    #[arg(long, help_heading = "Benchmark")]
    no_extend: bool,
    /// With --bench: do not start new steps after this many seconds (per transport).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 480,
        help_heading = "Benchmark"
    )]
    budget: u64,
    /// Frame rate the file is played at (--bench).
    #[arg(
        long,
        value_name = "FPS",
        default_value_t = 30,
        help_heading = "Benchmark"
    )]
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
    let mut builder = if args.threads > 1 {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
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

/// The benchmark's steps unless told otherwise: WebRTC up to a thousand viewers; MJPEG
/// clients, each costing the server far more, fewer.
const WEBRTC_STEPS: &str = "100,300,600,1000";
const MJPEG_STEPS: &str = "1,10,50,100,200";

async fn run(args: Args) -> Result<()> {
    if args.bind.is_unspecified() {
        bail!("--bind needs a specific address: it is the candidate the server sends to");
    }
    if args.duration <= 0.0 || !args.duration.is_finite() {
        bail!("--duration must be above 0");
    }
    if args.ramp <= 0.0 || !args.ramp.is_finite() {
        bail!("--ramp must be above 0");
    }
    let transports = bench::parse_transports(&args.transport)?;
    let audio = bench::parse_audio(&args.audio)?;
    if let Some(input) = &args.bench {
        return run_bench(&args, input.clone(), transports, audio).await;
    }
    let audio = match audio[..] {
        [on] => on,
        _ => bail!("--audio both needs --bench; without it, pick on or off"),
    };
    if args.viewers == 0 {
        bail!("--viewers must be at least 1");
    }
    match transports[..] {
        [Transport::Webrtc] => run_webrtc(&args, audio).await,
        [Transport::Mjpeg] => run_mjpeg(&args).await,
        _ => bail!("--transport both needs --bench; without it, pick webrtc or mjpeg"),
    }
}

async fn run_webrtc(args: &Args, audio: bool) -> Result<()> {
    let url = args.server.as_deref().unwrap_or_default();
    let endpoint = Endpoint::parse(url)?;
    load::probe(&endpoint).await?;
    let run = LoadRun::start(LoadConfig {
        endpoint,
        stream: args.stream.clone(),
        viewers: args.viewers,
        ramp_per_s: args.ramp,
        audio,
        bind: args.bind,
        decode_sample: args.decode_sample,
    });
    let ramp = Duration::from_secs_f64(args.viewers as f64 / args.ramp);
    run.watch_for(ramp, !args.quiet).await;
    run.wait_ramped(Duration::from_secs(20)).await;
    run.watch_for(Duration::from_secs_f64(args.duration), !args.quiet)
        .await;
    let summary = run.finish().await;
    print!("{}", summary.describe());
    if audio && summary.viewers_receiving > 0 && summary.viewers_with_audio == 0 {
        eprintln!("warning: no viewer was offered sound: the stream has none");
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    if summary.viewers_receiving == 0 {
        bail!("no viewer received video");
    }
    Ok(())
}

async fn run_mjpeg(args: &Args) -> Result<()> {
    let url = args.server.as_deref().unwrap_or_default();
    let authority = http_authority(url)?;
    let run = MjpegRun::start(MjpegConfig {
        authority,
        stream: args.stream.clone(),
        clients: args.viewers,
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
    if summary.clients_receiving == 0 {
        bail!("no client received a picture");
    }
    Ok(())
}

/// `HOST:PORT` of an `http://HOST:PORT[/]` URL.
fn http_authority(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--server {url:?}: MJPEG needs http://HOST:PORT"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        bail!("--server {url:?}: MJPEG needs http://HOST:PORT, without a path");
    }
    if !authority.contains(':') {
        return Ok(format!("{authority}:80"));
    }
    Ok(authority.to_string())
}

async fn run_bench(
    args: &Args,
    input: PathBuf,
    transports: Vec<Transport>,
    audio: Vec<bool>,
) -> Result<()> {
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
        transports,
        steps: bench::parse_steps(args.steps.as_deref().unwrap_or(WEBRTC_STEPS))?,
        mjpeg_steps: bench::parse_steps(
            args.mjpeg_steps
                .as_deref()
                .or(args.steps.as_deref())
                .unwrap_or(MJPEG_STEPS),
        )?,
        bind: args.bind,
        decode_sample: args.decode_sample,
        extend: !args.no_extend,
        window: Duration::from_secs_f64(args.duration),
        ramp_per_s: args.ramp,
        budget: Duration::from_secs(args.budget),
        show_progress: !args.quiet,
        audio,
        server_args: args.peregrine_arg.clone(),
    };
    let report = bench::run(cfg).await?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
