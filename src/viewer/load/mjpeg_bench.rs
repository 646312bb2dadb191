//! The MJPEG benchmark: the same steps as the WebRTC one, with `/stream` clients.
//!
//! A client is held when it gets at least 99 % of the JPEG pictures the server made in
//! the measured window (the stream's `encoded` count in /state). On an H.264 file the
//! server decodes and encodes each picture once for every client, a fixed cost: the
//! server's CPU with no client and with one is measured first, and each step's
//! marginal figure is what the clients beyond the first cost.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::Value;

use super::bench::{opt, BenchConfig, StepPlan};
use super::bench_server::{cpu_notes, CpuUse, ServerProcess};
use super::mjpeg_run::{MjpegConfig, MjpegRun, MjpegSummary};

/// Dropped pictures a held client may have, in %.
pub const HELD_DROPPED_PCT: f64 = 1.0;

/// One line of the table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MjpegBenchRow {
    pub clients: usize,
    /// Clients that got at least one picture in the window.
    pub receiving: usize,
    /// Clients that got at least 99 % of the pictures made in the window.
    pub held: usize,
    pub window_s: f64,
    /// Server CPU (user + sys) in % of one core.
    pub server_cpu_pct: f64,
    /// Server CPU in ms per client per second, everything included.
    pub server_ms_per_client_s: f64,
    /// The same for the clients beyond the first: (CPU − CPU with 1 client) / (N − 1).
    pub marginal_ms_per_client_s: Option<f64>,
    pub server_rss_kib: u64,
    pub rss_per_client_kib: f64,
    pub load_cpu_pct: f64,
    pub machine_cpu_pct: f64,
    /// JPEG pictures the server made per second (for every client together).
    pub made_fps: f64,
    /// Pictures per second a client got, on average.
    pub fps_per_client: f64,
    /// Pictures made in the window that a client did not get, on average, in %.
    pub dropped_pct: f64,
    pub worst_dropped_pct: f64,
    /// Request → first picture.
    pub ttfp_p50_ms: Option<f64>,
    pub ttfp_p95_ms: Option<f64>,
    /// Capture → picture complete at the client.
    pub e2e_p50_ms: Option<f64>,
    pub e2e_p99_ms: Option<f64>,
    pub note: String,
    #[serde(skip)]
    pub summary: MjpegSummary,
}

#[derive(Debug, serde::Serialize)]
pub struct MjpegBenchReport {
    pub baseline_rss_kib: u64,
    /// Server CPU with no client (the source idles), % of one core.
    pub idle_cpu_pct: f64,
    pub rows: Vec<MjpegBenchRow>,
    pub elapsed_s: f64,
}

impl MjpegBenchReport {
    /// The 1-client step: the fixed cost of making pictures, plus one client.
    pub fn one_client(&self) -> Option<&MjpegBenchRow> {
        self.rows.iter().find(|r| r.clients == 1)
    }
}

/// JPEG pictures the default stream has made so far (encoded, or a camera's own).
fn made(state: &Value) -> u64 {
    let tap = &state["mjpeg"]["streams"]["default"];
    tap["encoded"].as_u64().unwrap_or(0) + tap["direct"].as_u64().unwrap_or(0)
}

fn stream_clients(state: &Value) -> u64 {
    state["mjpeg"]["stream_clients"].as_u64().unwrap_or(1)
}

/// Run every step on a server of its own; prints a line per step to stderr.
pub async fn run(cfg: &BenchConfig, cores: usize) -> Result<MjpegBenchReport> {
    let t0 = Instant::now();
    let server =
        ServerProcess::start(&cfg.peregrine, &cfg.input, cfg.fps, &cfg.server_args).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline_rss = server.rss_kib()?;
    let a = server.sample().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = CpuUse::between(&a, &server.sample().await?);
    eprintln!(
        "MJPEG: peregrine {} on {} ({} fps), {} cores, baseline RSS {} KiB, idle CPU {:.1} %",
        cfg.peregrine.display(),
        cfg.input.display(),
        cfg.fps,
        cores,
        baseline_rss,
        idle.server_pct,
    );
    // The 1-client step first: the fixed cost the marginal figures are taken against.
    let mut steps = cfg.mjpeg_steps.clone();
    if steps.first() != Some(&1) {
        steps.retain(|&n| n != 1);
        steps.insert(0, 1);
    }
    let mut rows: Vec<MjpegBenchRow> = Vec::new();
    let mut plan = StepPlan::new(&steps, cfg.extend, cfg.budget);
    while let Some(n) = plan.next_step() {
        let step_start = Instant::now();
        let one = rows.iter().find(|r| r.clients == 1);
        let row = run_step(cfg, &server, n, baseline_rss, cores, one).await?;
        eprint!("{}", row.summary.describe());
        eprintln!(
            "server CPU {:.1} % ({:.2} ms/client/s), RSS {} KiB; made {:.1} fps, dropped {:.2} % (worst {:.2} %); load generator CPU {:.1} %; machine {:.1} %; {}",
            row.server_cpu_pct,
            row.server_ms_per_client_s,
            row.server_rss_kib,
            row.made_fps,
            row.dropped_pct,
            row.worst_dropped_pct,
            row.load_cpu_pct,
            row.machine_cpu_pct,
            row.note
        );
        let clean = row.held >= n;
        rows.push(row);
        plan.done(n, step_start.elapsed(), clean);
        if server.gone() {
            bail!("peregrine exited during the MJPEG benchmark");
        }
    }
    Ok(MjpegBenchReport {
        baseline_rss_kib: baseline_rss,
        idle_cpu_pct: idle.server_pct,
        rows,
        elapsed_s: t0.elapsed().as_secs_f64(),
    })
}

async fn run_step(
    cfg: &BenchConfig,
    server: &ServerProcess,
    n: usize,
    baseline_rss: u64,
    cores: usize,
    one_client: Option<&MjpegBenchRow>,
) -> Result<MjpegBenchRow> {
    eprintln!("--- {n} MJPEG clients ---");
    let run = MjpegRun::start(MjpegConfig {
        authority: server.http.clone(),
        stream: None,
        clients: n,
        ramp_per_s: cfg.ramp_per_s,
    });
    let ramp = Duration::from_secs_f64(n as f64 / cfg.ramp_per_s);
    run.wait_ramped(ramp + Duration::from_secs(20)).await;
    // The first client starts the decoder, which waits for a keyframe (the file's GOP
    // is 2 s).
    run.watch_for(Duration::from_secs(3), cfg.show_progress)
        .await;
    let a = server.sample().await?;
    let counts_a = run.counts();
    run.watch_for(cfg.window, cfg.show_progress).await;
    let b = server.sample().await?;
    let counts_b = run.counts();
    let rss = server.rss_kib()?;
    let summary = run.finish().await;
    server
        .wait_until_none("MJPEG clients", stream_clients)
        .await;

    let cpu = CpuUse::between(&a, &b);
    let made_in_window = made(&b.state).saturating_sub(made(&a.state));
    let window = Window::of(&counts_a, &counts_b, made_in_window);
    let server_ms_s = cpu.server_pct * 10.0;
    let marginal = one_client
        .filter(|_| n > 1)
        .map(|one| (server_ms_s - one.server_cpu_pct * 10.0) / (n - 1) as f64);
    let mut row = MjpegBenchRow {
        clients: n,
        receiving: window.receiving,
        held: window.held,
        window_s: cpu.secs,
        server_cpu_pct: cpu.server_pct,
        server_ms_per_client_s: cpu.server_ms_per_client_s(n),
        marginal_ms_per_client_s: marginal,
        server_rss_kib: rss,
        rss_per_client_kib: rss.saturating_sub(baseline_rss) as f64 / n as f64,
        load_cpu_pct: cpu.load_pct,
        machine_cpu_pct: cpu.machine_pct,
        made_fps: made_in_window as f64 / cpu.secs,
        fps_per_client: window.mean_got / cpu.secs,
        dropped_pct: window.mean_dropped_pct,
        worst_dropped_pct: window.worst_dropped_pct,
        ttfp_p50_ms: summary.ttfp_ms.p50,
        ttfp_p95_ms: summary.ttfp_ms.p95,
        e2e_p50_ms: summary.end_to_end_ms.p50,
        e2e_p99_ms: summary.end_to_end_ms.p99,
        note: String::new(),
        summary,
    };
    row.note = note(&row, &cpu, cores, f64::from(cfg.fps));
    Ok(row)
}

/// What the clients got in the measured window, against what the server made.
#[derive(Debug, PartialEq)]
struct Window {
    receiving: usize,
    held: usize,
    mean_got: f64,
    mean_dropped_pct: f64,
    worst_dropped_pct: f64,
}

impl Window {
    /// `before` and `after`: each client's picture count at the window's edges.
    fn of(before: &[u64], after: &[u64], made: u64) -> Window {
        let got: Vec<u64> = after
            .iter()
            .zip(before)
            .map(|(b, a)| b.saturating_sub(*a))
            .collect();
        // A picture made just before the window may arrive just inside it: a client
        // can count one more than was made, which is not a negative loss.
        let dropped: Vec<f64> = got
            .iter()
            .map(|&g| {
                if made == 0 {
                    100.0
                } else {
                    (100.0 * (1.0 - g as f64 / made as f64)).max(0.0)
                }
            })
            .collect();
        let n = got.len().max(1) as f64;
        Window {
            receiving: got.iter().filter(|&&g| g > 0).count(),
            held: dropped.iter().filter(|&&d| d < HELD_DROPPED_PCT).count(),
            mean_got: got.iter().sum::<u64>() as f64 / n,
            mean_dropped_pct: dropped.iter().sum::<f64>() / n,
            worst_dropped_pct: dropped.iter().copied().fold(0.0, f64::max),
        }
    }
}

fn note(row: &MjpegBenchRow, cpu: &CpuUse, cores: usize, fps: f64) -> String {
    let mut notes = cpu_notes(cpu, cores);
    if row.made_fps < 0.99 * fps {
        notes.push(format!("the server made {:.1} fps", row.made_fps));
    }
    if row.held < row.clients {
        notes.push(format!(
            "{} clients dropped over {HELD_DROPPED_PCT} %",
            row.clients - row.held
        ));
    }
    if row.marginal_ms_per_client_s.is_some_and(|m| m < 0.0) {
        // Encoding time follows the picture's content, which changes from window to
        // window; at small steps that outweighs what the clients cost.
        notes.push("marginal cost below the fixed cost's variation".into());
    }
    if row.summary.not_jpeg > 0 {
        notes.push(format!("{} parts were not a JPEG", row.summary.not_jpeg));
    }
    if notes.is_empty() {
        "ok".into()
    } else {
        notes.join("; ")
    }
}

pub fn print_table(input: &str, cores: usize, report: &MjpegBenchReport) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nperegrine MJPEG fan-out benchmark: {input} ({cores} cores), {:.0} s",
        report.elapsed_s
    );
    let _ = writeln!(
        out,
        "CPU in % of one core (user+sys from /proc); held = clients that got >= 99 % of the JPEG pictures the server made in the window"
    );
    if let Some(one) = report.one_client() {
        let _ = writeln!(
            out,
            "fixed cost: server CPU {:.1} % with no client, {:.1} % with 1 (decoding the H.264 and encoding {:.1} JPEG pictures a second of {} KiB each, shared by every client)",
            report.idle_cpu_pct,
            one.server_cpu_pct,
            one.made_fps,
            one.summary.picture_bytes_avg / 1024
        );
    }
    let _ = writeln!(
        out,
        "{:>7} {:>5} {:>5} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>6} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7}  note",
        "clients", "recv", "held", "srv CPU", "ms/cli/s", "marginal", "RSS MiB", "KiB/cli", "load CPU",
        "machine", "made", "fps", "dropped%", "worst%", "TTFP50", "TTFP95", "e2e50", "e2e99"
    );
    for r in &report.rows {
        let _ = writeln!(
            out,
            "{:>7} {:>5} {:>5} {:>7.1}% {:>9.3} {:>8} {:>8.1} {:>8.0} {:>7.1}% {:>6.1}% {:>6.1} {:>6.1} {:>8.2} {:>7.2} {:>7} {:>7} {:>7} {:>7}  {}",
            r.clients,
            r.receiving,
            r.held,
            r.server_cpu_pct,
            r.server_ms_per_client_s,
            r.marginal_ms_per_client_s
                .map_or("-".into(), |m| format!("{m:.3}")),
            r.server_rss_kib as f64 / 1024.0,
            r.rss_per_client_kib,
            r.load_cpu_pct,
            r.machine_cpu_pct,
            r.made_fps,
            r.fps_per_client,
            r.dropped_pct,
            r.worst_dropped_pct,
            opt(r.ttfp_p50_ms),
            opt(r.ttfp_p95_ms),
            opt(r.e2e_p50_ms),
            opt(r.e2e_p99_ms),
            r.note
        );
    }
    let _ = writeln!(
        out,
        "ms/cli/s = server CPU ms per client-second; marginal = the same for the clients beyond the first (the fixed cost left out). TTFP (request -> first picture) and e2e (capture -> picture complete at the client) in ms."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_clients_got_99_percent_of_what_was_made() {
        let w = Window::of(&[10, 10, 10, 0], &[311, 308, 301, 0], 300);
        assert_eq!((w.receiving, w.held), (3, 2));
        assert!((w.worst_dropped_pct - 100.0).abs() < 1e-9);
        // 0 (one over is not negative) + 2/3 % + 3 % + 100 %, over four clients.
        let mean = (200.0 / 300.0 + 3.0 + 100.0) / 4.0;
        assert!((w.mean_dropped_pct - mean).abs() < 1e-9);
        assert!((w.mean_got - 222.5).abs() < 1e-9);
    }

    #[test]
    fn nothing_made_is_nothing_held() {
        let w = Window::of(&[0, 5], &[0, 5], 0);
        assert_eq!((w.receiving, w.held), (0, 0));
        assert!((w.mean_dropped_pct - 100.0).abs() < 1e-9);
    }
}
