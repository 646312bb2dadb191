//! Replays attacks on peregrine's signalling and sources against a given binary and
//! prints what they did: memory, latency of other clients, frame rates, errors.
//!
//! ```sh
//! cargo bench --bench attacks -- --bin target/release/peregrine [--only NAME[,NAME]] [--runs N]
//!     [--ping-clients N]
//! ```
//!
//! It starts the binary itself (several times) on free ports of 127.0.0.1 and sends
//! traffic only there. The server runs with at most 4096 open files (1024 for the idle
//! connection attack), a 16 GiB address space, no core files, and is killed if its
//! resident memory passes 3 GiB or the benchmark ends. Only flags that older versions
//! have too are used, so older builds can be measured the same way. Not a test:
//! nothing here fails on a figure.

mod candidates;
mod clients;
mod figures;
mod idle_connections;
mod memsink_truncate;
mod ping_flood;
mod server;
mod tcp_listen_hijack;
mod watch_flood;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use figures::{progress, Row};

/// The attacks, in the order they run.
const ATTACKS: &[(&str, &str)] = &[
    (
        "ping-flood",
        "1 MB Janus pings from clients that never read",
    ),
    ("candidates", "trickled ICE candidate floods"),
    (
        "watch-flood",
        "20,000 unanswered watch requests on one WebSocket",
    ),
    (
        "idle-connections",
        "1,100 idle TCP connections, server limited to 1024 files",
    ),
    (
        "memsink-truncate",
        "the memsink object truncated under a reading peregrine",
    ),
    (
        "tcp-listen-hijack",
        "a second encoder connecting to tcp-listen://",
    ),
];

struct Options {
    bin: PathBuf,
    only: Vec<String>,
    runs: usize,
    /// How many clients flood with pings together (the figure quoted is for five).
    ping_clients: usize,
}

const USAGE: &str =
    "usage: cargo bench --bench attacks -- --bin PATH [--only NAME[,NAME...]] [--runs N] \
     [--ping-clients N]";

fn parse(args: &[String]) -> Result<Options> {
    let (mut bin, mut only, mut runs, mut ping_clients) = (None, Vec::new(), 3, 5);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--bin" => bin = Some(PathBuf::from(value()?)),
            "--only" => only.extend(value()?.split(',').map(str::to_string)),
            "--runs" => runs = value()?.parse().context("--runs takes a number")?,
            "--ping-clients" => {
                ping_clients = value()?.parse().context("--ping-clients takes a number")?
            }
            "--bench" => {}
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let bin = bin
        .or_else(|| std::env::var_os("PEREGRINE_BIN").map(PathBuf::from))
        .with_context(|| format!("which binary? --bin PATH (or PEREGRINE_BIN)\n{USAGE}"))?;
    for name in &only {
        if !ATTACKS.iter().any(|(n, _)| n == name) {
            let names: Vec<&str> = ATTACKS.iter().map(|(n, _)| *n).collect();
            bail!("no attack {name}; there are: {}", names.join(", "));
        }
    }
    if runs == 0 || ping_clients == 0 {
        bail!("--runs and --ping-clients must be at least 1");
    }
    Ok(Options {
        bin,
        only,
        runs,
        ping_clients,
    })
}

/// Enough descriptors for 1,100 client sockets and more.
fn raise_own_nofile() {
    peregrine::sys::process::raise_open_file_limit();
}

async fn run_one(name: &str, opts: &Options) -> Result<Vec<Row>> {
    let (bin, runs) = (opts.bin.as_path(), opts.runs);
    match name {
        "ping-flood" => ping_flood::run(bin, opts.ping_clients).await,
        "candidates" => candidates::run(bin, runs).await,
        "watch-flood" => watch_flood::run(bin).await,
        "idle-connections" => idle_connections::run(bin, runs).await,
        "memsink-truncate" => memsink_truncate::run(bin).await,
        "tcp-listen-hijack" => tcp_listen_hijack::run(bin).await,
        _ => unreachable!("names are checked in parse"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to do.
    if !args.iter().any(|a| a == "--bench" || a == "--bin") {
        println!("attacks: a benchmark, not a test ({USAGE})");
        return ExitCode::SUCCESS;
    }
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    if !opts.bin.is_file() {
        eprintln!("{} is not a file", opts.bin.display());
        return ExitCode::from(2);
    }
    raise_own_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut rows = Vec::new();
    runtime.block_on(async {
        for (name, what) in ATTACKS {
            if !opts.only.is_empty() && !opts.only.iter().any(|o| o == name) {
                continue;
            }
            progress(format!("== {name}: {what} (load {:.2})", figures::load1()));
            match run_one(name, &opts).await {
                Ok(r) => rows.extend(r),
                Err(e) => {
                    progress(format!("{name} failed: {e:#}"));
                    rows.push(Row::new(name, "failed", format!("{e:#}")));
                }
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    figures::print_table(&opts.bin.display().to_string(), &rows);
    ExitCode::SUCCESS
}
