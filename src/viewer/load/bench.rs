//! The benchmark: start peregrine on a pre-encoded H.264 file (no encoding cost in the
//! figures), then for each viewer count run the load in this process and measure the
//! server from outside (/proc) and inside (/state's delay histogram).

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::{procstat, LoadConfig, LoadRun, LoadSummary};
use crate::rtc::latency::HistogramSnapshot;
use crate::viewer::http;
use crate::viewer::janus_client::Endpoint;

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub peregrine: PathBuf,
    pub input: PathBuf,
    pub fps: u32,
    pub steps: Vec<usize>,
    /// Keep adding steps (×1.5) after the listed ones until loss exceeds 1 %.
    pub extend: bool,
    /// Measured window per step (after ramp-up and settling).
    pub window: Duration,
    pub ramp_per_s: f64,
    /// Stop adding steps when the run has taken this long.
    pub budget: Duration,
    pub show_progress: bool,
}

/// One line of the table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchRow {
    pub viewers: usize,
    pub receiving: usize,
    pub window_s: f64,
    /// Server CPU (user + sys) in % of one core.
    pub server_cpu_pct: f64,
    /// Server CPU in ms per viewer per second.
    pub server_ms_per_viewer_s: f64,
    pub server_rss_kib: u64,
    pub rss_per_viewer_kib: f64,
    /// CPU of this process (the viewers) in % of one core.
    pub load_cpu_pct: f64,
    /// Busy CPU of the whole machine in % of one core (others included).
    pub machine_cpu_pct: f64,
    pub fps_per_viewer: f64,
    pub loss_pct: f64,
    pub nacks: u64,
    pub ttff_p50_ms: Option<f64>,
    pub ttff_p95_ms: Option<f64>,
    pub e2e_p50_ms: Option<f64>,
    pub e2e_p99_ms: Option<f64>,
    /// Server-side: access unit arrival → last RTP packet sent, from /state.
    pub server_delay_p50_us: u64,
    pub server_delay_p99_us: u64,
    /// The part of it spent in the engine (taken from the hub → last packet sent).
    pub engine_send_p99_us: u64,
    pub note: String,
    #[serde(skip)]
    pub summary: LoadSummary,
}

#[derive(Debug, serde::Serialize)]
pub struct BenchReport {
    pub cores: usize,
    pub input: String,
    pub baseline_rss_kib: u64,
    pub rows: Vec<BenchRow>,
    pub elapsed_s: f64,
}

/// peregrine on free loopback ports; killed when dropped.
struct ServerProcess {
    child: Child,
    http: String,
    ws: Endpoint,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn start_server(cfg: &BenchConfig) -> Result<ServerProcess> {
    let (http, ws, jhttp) = (free_port()?, free_port()?, free_port()?);
    let child = Command::new(&cfg.peregrine)
        .args(["--host", "127.0.0.1", "--udp-port-range", "0"])
        .args(["--port", &http.to_string()])
        .args(["--janus-ws-port", &ws.to_string()])
        .args(["--janus-http-port", &jhttp.to_string()])
        .arg("--source")
        .arg(&cfg.input)
        .args(["--desired-fps", &cfg.fps.to_string()])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        // Its log would interleave with the table; RUST_LOG plus a manual run shows it.
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", cfg.peregrine.display()))?;
    let mut server = ServerProcess {
        child,
        http: format!("127.0.0.1:{http}"),
        ws: Endpoint::parse(&format!("ws://127.0.0.1:{ws}/"))?,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Viewers retry `watch` while the source starts, as pages do.
        if state(&server.http).await.is_ok() {
            return Ok(server);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            bail!("peregrine exited at start ({status})");
        }
        if Instant::now() > deadline {
            bail!("peregrine did not answer /state within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn state(authority: &str) -> Result<Value> {
    let (status, body) = http::request(authority, "GET", "/state", None).await?;
    if status != 200 {
        bail!("/state answered {status}");
    }
    Ok(serde_json::from_slice(&body)?)
}

fn histogram(state: &Value, name: &str) -> HistogramSnapshot {
    serde_json::from_value(state["rtc"][name].clone()).unwrap_or_default()
}

struct Sample {
    at: Instant,
    server_ms: f64,
    load_ms: f64,
    machine_busy_ms: f64,
    state: Value,
}

async fn sample(server: &ServerProcess) -> Result<Sample> {
    let (busy, _) = procstat::machine_ms()?;
    Ok(Sample {
        at: Instant::now(),
        server_ms: procstat::cpu_ms(server.child.id())?,
        load_ms: procstat::cpu_ms(std::process::id())?,
        machine_busy_ms: busy,
        state: state(&server.http).await?,
    })
}

/// Run the whole benchmark and print the table to stdout.
pub async fn run(cfg: BenchConfig) -> Result<BenchReport> {
    let t0 = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server = start_server(&cfg).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline_rss = procstat::rss_kib(server.child.id())?;
    eprintln!(
        "peregrine {} on {} ({} fps), {} cores, baseline RSS {} KiB",
        cfg.peregrine.display(),
        cfg.input.display(),
        cfg.fps,
        cores,
        baseline_rss
    );
    let mut rows = Vec::new();
    let mut steps: std::collections::VecDeque<usize> = cfg.steps.iter().copied().collect();
    let mut last_step_time = Duration::ZERO;
    while let Some(n) = steps.pop_front() {
        let step_start = Instant::now();
        let row = run_step(&cfg, &server, n, baseline_rss, cores).await?;
        print_row_live(&row);
        let lossy = row.loss_pct > 1.0 || row.receiving < n;
        rows.push(row);
        last_step_time = last_step_time.max(step_start.elapsed());
        if steps.is_empty() && cfg.extend && !lossy {
            let next = ((n as f64 * 1.5 / 50.0).ceil() as usize * 50).max(n + 50);
            // A bigger step takes longer (ramp-up); keep within the budget.
            let estimate = last_step_time.mul_f64(1.5);
            if t0.elapsed() + estimate < cfg.budget {
                steps.push_back(next);
            } else {
                eprintln!("not trying {next} viewers: the time budget is spent");
            }
        }
        if server_gone(&server) {
            bail!("peregrine exited during the benchmark");
        }
    }
    let report = BenchReport {
        cores,
        input: cfg.input.display().to_string(),
        baseline_rss_kib: baseline_rss,
        rows,
        elapsed_s: t0.elapsed().as_secs_f64(),
    };
    print_table(&report);
    Ok(report)
}

fn server_gone(server: &ServerProcess) -> bool {
    std::fs::metadata(format!("/proc/{}", server.child.id())).is_err()
}

async fn run_step(
    cfg: &BenchConfig,
    server: &ServerProcess,
    n: usize,
    baseline_rss: u64,
    cores: usize,
) -> Result<BenchRow> {
    eprintln!("--- {n} viewers ---");
    let run = LoadRun::start(LoadConfig {
        endpoint: server.ws.clone(),
        stream: None,
        viewers: n,
        ramp_per_s: cfg.ramp_per_s,
    });
    let ramp = Duration::from_secs_f64(n as f64 / cfg.ramp_per_s);
    run.wait_ramped(ramp + Duration::from_secs(20)).await;
    // Let everyone reach a keyframe (the file's GOP is 2 s) before measuring.
    run.watch_for(Duration::from_secs(3), cfg.show_progress)
        .await;
    let a = sample(server).await?;
    run.watch_for(cfg.window, cfg.show_progress).await;
    let b = sample(server).await?;
    let rss = procstat::rss_kib(server.child.id())?;
    let summary = run.finish().await;
    wait_for_no_viewers(server).await;

    let secs = b.at.duration_since(a.at).as_secs_f64();
    let pct = |d: f64| d / secs / 10.0;
    let server_cpu = pct(b.server_ms - a.server_ms);
    let load_cpu = pct(b.load_ms - a.load_ms);
    let machine = pct(b.machine_busy_ms - a.machine_busy_ms);
    let delay =
        histogram(&b.state, "capture_to_send_us").since(&histogram(&a.state, "capture_to_send_us"));
    let engine = histogram(&b.state, "send_delay_us").since(&histogram(&a.state, "send_delay_us"));
    let mut row = BenchRow {
        viewers: n,
        receiving: summary.viewers_receiving,
        window_s: secs,
        server_cpu_pct: server_cpu,
        server_ms_per_viewer_s: (b.server_ms - a.server_ms) / secs / n as f64,
        server_rss_kib: rss,
        rss_per_viewer_kib: rss.saturating_sub(baseline_rss) as f64 / n as f64,
        load_cpu_pct: load_cpu,
        machine_cpu_pct: machine,
        fps_per_viewer: summary.fps_per_viewer,
        loss_pct: summary.loss_pct,
        nacks: summary.nacks_sent,
        ttff_p50_ms: summary.ttff_ms.p50,
        ttff_p95_ms: summary.ttff_ms.p95,
        e2e_p50_ms: summary.end_to_end_ms.p50,
        e2e_p99_ms: summary.end_to_end_ms.p99,
        server_delay_p50_us: delay.p50_us,
        server_delay_p99_us: delay.p99_us,
        engine_send_p99_us: engine.p99_us,
        note: String::new(),
        summary,
    };
    row.note = bottleneck_note(&row, cores, f64::from(cfg.fps));
    Ok(row)
}

/// Say who ran out of CPU when the figures are not the server's alone.
fn bottleneck_note(row: &BenchRow, cores: usize, fps: f64) -> String {
    let capacity = cores as f64 * 100.0;
    let mut notes = Vec::new();
    if row.machine_cpu_pct >= 0.9 * capacity {
        let others = (row.machine_cpu_pct - row.server_cpu_pct - row.load_cpu_pct).max(0.0);
        if row.load_cpu_pct > row.server_cpu_pct {
            notes.push("load generator was the bottleneck".to_string());
        } else {
            notes.push("CPU saturated".to_string());
        }
        if others > 0.2 * capacity {
            notes.push(format!("other processes used {others:.0} %"));
        }
    }
    if row.receiving < row.viewers {
        notes.push(format!(
            "{} viewers got no video",
            row.viewers - row.receiving
        ));
    }
    if row.fps_per_viewer > 0.0 && row.fps_per_viewer < 0.9 * fps {
        notes.push(format!("viewers saw {:.1} fps", row.fps_per_viewer));
    }
    if notes.is_empty() {
        "ok".into()
    } else {
        notes.join("; ")
    }
}

async fn wait_for_no_viewers(server: &ServerProcess) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(s) = state(&server.http).await {
            if s["rtc"]["peers"] == 0 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("warning: peers still present on the server 15 s after the viewers left");
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

fn print_row_live(row: &BenchRow) {
    eprint!("{}", row.summary.describe());
    eprintln!(
        "server CPU {:.1} % ({:.2} ms/viewer/s), RSS {} KiB; load generator CPU {:.1} %; machine {:.1} %; {}",
        row.server_cpu_pct,
        row.server_ms_per_viewer_s,
        row.server_rss_kib,
        row.load_cpu_pct,
        row.machine_cpu_pct,
        row.note
    );
}

pub fn print_table(report: &BenchReport) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nperegrine fan-out benchmark: {} ({} cores), {:.0} s",
        report.input, report.cores, report.elapsed_s
    );
    let _ = writeln!(
        out,
        "CPU in % of one core (user+sys from /proc); server delay = access unit arrival -> last RTP packet sent (server histogram)"
    );
    let _ = writeln!(
        out,
        "{:>7} {:>5} {:>8} {:>9} {:>8} {:>9} {:>8} {:>8} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}  note",
        "viewers", "recv", "srv CPU", "ms/view/s", "RSS MiB", "KiB/view", "load CPU", "machine",
        "fps", "loss %", "TTFF50", "TTFF95", "e2e50", "e2e99", "srv50 µs", "srv99 µs"
    );
    for r in &report.rows {
        let _ = writeln!(
            out,
            "{:>7} {:>5} {:>7.1}% {:>9.3} {:>8.1} {:>9.0} {:>7.1}% {:>7.1}% {:>6.1} {:>7.3} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}  {}",
            r.viewers,
            r.receiving,
            r.server_cpu_pct,
            r.server_ms_per_viewer_s,
            r.server_rss_kib as f64 / 1024.0,
            r.rss_per_viewer_kib,
            r.load_cpu_pct,
            r.machine_cpu_pct,
            r.fps_per_viewer,
            r.loss_pct,
            opt(r.ttff_p50_ms),
            opt(r.ttff_p95_ms),
            opt(r.e2e_p50_ms),
            opt(r.e2e_p99_ms),
            r.server_delay_p50_us,
            r.server_delay_p99_us,
            r.note
        );
    }
    let _ = writeln!(
        out,
        "TTFF and e2e in ms. A new viewer starts from the server's cached GOP, so e2e p99 includes the replayed (older) pictures of each viewer's first GOP."
    );
}

/// Parse `1,10,50` into viewer counts.
pub fn parse_steps(s: &str) -> Result<Vec<usize>> {
    let steps: Vec<usize> = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .map_err(|_| anyhow!("bad viewer count {p:?} in --steps"))
        })
        .collect::<Result<_>>()?;
    if steps.is_empty() || steps.contains(&0) {
        bail!("--steps needs viewer counts above 0");
    }
    Ok(steps)
}
