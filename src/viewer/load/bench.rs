//! The benchmark: start peregrine on a pre-encoded H.264 file (no encoding cost in the
//! figures), then for each viewer count run the load in this process and measure the
//! server from outside (/proc) and inside (/state's delay histogram).

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use super::bench_server::{cpu_notes, CpuUse, ServerProcess};
use super::procstat::{thread_groups, ThreadGroup};
use super::{audio_cost, compare, mjpeg_bench, LoadConfig, LoadRun, LoadSummary};
use crate::rtc::latency::HistogramSnapshot;

/// Which viewers a benchmark runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// WebRTC viewers joining through the Janus API.
    Webrtc,
    /// MJPEG `/stream` clients.
    Mjpeg,
}

/// Parse `webrtc`, `mjpeg` or `both` (or a comma-separated list).
pub fn parse_transports(s: &str) -> Result<Vec<Transport>> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim) {
        let add: &[Transport] = match name {
            "webrtc" => &[Transport::Webrtc],
            "mjpeg" => &[Transport::Mjpeg],
            "both" => &[Transport::Webrtc, Transport::Mjpeg],
            _ => bail!("unknown transport {name:?} in --transport (webrtc, mjpeg or both)"),
        };
        for t in add {
            if !out.contains(t) {
                out.push(*t);
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub peregrine: PathBuf,
    pub input: PathBuf,
    pub fps: u32,
    /// Run one after the other, each on a freshly started server.
    pub transports: Vec<Transport>,
    pub steps: Vec<usize>,
    /// The MJPEG steps.
    pub mjpeg_steps: Vec<usize>,
    /// The address the viewers' media sockets bind to.
    pub bind: std::net::IpAddr,
    /// Viewers that decode their pictures; the others only count them.
    pub decode_sample: usize,
    /// Keep adding steps (×1.5) after the listed ones until loss (WebRTC) or dropped
    /// pictures (MJPEG) exceed 1 %.
    pub extend: bool,
    /// Measured window per step (after ramp-up and settling).
    pub window: Duration,
    pub ramp_per_s: f64,
    /// Stop adding steps when a transport's run has taken this long.
    pub budget: Duration,
    pub show_progress: bool,
    /// The WebRTC runs, each on a server of its own: viewers without sound (false)
    /// and/or with it (true, `watch {audio: true}`).
    pub audio: Vec<bool>,
    /// Arguments added to the server's command line (e.g. its sound source).
    pub server_args: Vec<String>,
}

/// Parse `--audio`: `off`, `on` or `both` (off, then on).
pub fn parse_audio(s: &str) -> Result<Vec<bool>> {
    match s {
        "off" => Ok(vec![false]),
        "on" => Ok(vec![true]),
        "both" => Ok(vec![false, true]),
        _ => bail!("unknown --audio {s:?} (off, on or both)"),
    }
}

/// One line of the table.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BenchRow {
    pub viewers: usize,
    pub receiving: usize,
    /// Receiving viewers that lost less than 0.5 % of their packets.
    pub held: usize,
    /// RTP packets the server sent in the window, and its CPU per packet (µs).
    pub server_packets: u64,
    pub server_us_per_packet: f64,
    /// The load generator's CPU per RTP packet the server sent (µs) and per viewer per
    /// second (ms).
    pub load_us_per_packet: f64,
    pub load_ms_per_viewer_s: f64,
    /// Server RSS once every viewer of the step has left.
    pub rss_after_kib: u64,
    /// Server CPU by thread name (engine shards apart), in % of one core.
    pub server_threads: Vec<ThreadGroup>,
    /// Which process ran out of CPU, if one did.
    pub saturated: Option<String>,
    pub ttff_p99_ms: Option<f64>,
    /// Viewers that decoded their pictures, and the pictures decoded.
    pub decoding: usize,
    pub pictures_decoded: u64,
    /// Viewers asked for sound, and got an offer with it.
    pub audio_asked: bool,
    pub with_audio: usize,
    pub audio_loss_pct: f64,
    pub window_s: f64,
    /// Server CPU (user + sys) in % of one core.
    pub server_cpu_pct: f64,
    /// Server CPU in ms per viewer per second.
    pub server_ms_per_viewer_s: f64,
    pub server_rss_kib: u64,
    pub rss_per_viewer_kib: f64,
    /// RSS added per viewer since the previous step (none for the first): what one
    /// more viewer costs, without what the first ones start once (the source, the
    /// picture caches, code paged in).
    pub rss_added_per_viewer_kib: Option<f64>,
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
    /// Server RSS before the WebRTC steps (0 without them).
    pub baseline_rss_kib: u64,
    /// The WebRTC steps (the first run's, when there are runs without and with sound).
    pub rows: Vec<BenchRow>,
    /// The same steps with sound, after a run without (`--audio both`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_rows: Option<Vec<BenchRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mjpeg: Option<mjpeg_bench::MjpegBenchReport>,
    pub elapsed_s: f64,
}

/// Which step comes next: the listed ones, then (with `extend`) ×1.5 while the last
/// one was clean and the time budget allows.
pub struct StepPlan {
    steps: VecDeque<usize>,
    extend: bool,
    budget: Duration,
    t0: Instant,
    longest_step: Duration,
}

impl StepPlan {
    pub fn new(steps: &[usize], extend: bool, budget: Duration) -> StepPlan {
        StepPlan {
            steps: steps.iter().copied().collect(),
            extend,
            budget,
            t0: Instant::now(),
            longest_step: Duration::ZERO,
        }
    }

    pub fn next_step(&mut self) -> Option<usize> {
        self.steps.pop_front()
    }

    /// Step `n` took `took`; `clean` when it held every client within 1 %.
    pub fn done(&mut self, n: usize, took: Duration, clean: bool) {
        self.longest_step = self.longest_step.max(took);
        if !self.steps.is_empty() || !self.extend || !clean {
            return;
        }
        let next = ((n as f64 * 1.5 / 50.0).ceil() as usize * 50).max(n + 50);
        // A bigger step takes longer (ramp-up); keep within the budget.
        let estimate = self.longest_step.mul_f64(1.5);
        if self.t0.elapsed() + estimate < self.budget {
            self.steps.push_back(next);
        } else {
            eprintln!("not trying {next} clients: the time budget is spent");
        }
    }
}

/// Run the whole benchmark and print the tables to stdout.
pub async fn run(cfg: BenchConfig) -> Result<BenchReport> {
    let t0 = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut report = BenchReport {
        cores,
        input: cfg.input.display().to_string(),
        baseline_rss_kib: 0,
        rows: Vec::new(),
        audio_rows: None,
        mjpeg: None,
        elapsed_s: 0.0,
    };
    for transport in &cfg.transports {
        match transport {
            Transport::Webrtc => {
                let mut steps = cfg.steps.clone();
                for (i, &audio) in cfg.audio.iter().enumerate() {
                    // A second run measures the first one's steps, no more, to compare.
                    let extend = cfg.extend && i == 0;
                    let (rows, baseline) = run_webrtc(&cfg, cores, audio, &steps, extend).await?;
                    steps = rows.iter().map(|r| r.viewers).collect();
                    report.elapsed_s = t0.elapsed().as_secs_f64();
                    if i == 0 {
                        report.rows = rows;
                        report.baseline_rss_kib = baseline;
                        print_table(&report, &report.rows);
                    } else {
                        print_table(&report, &rows);
                        report.audio_rows = Some(rows);
                    }
                }
                if let Some(with) = &report.audio_rows {
                    audio_cost::print(&report.rows, with);
                }
            }
            Transport::Mjpeg => {
                let mjpeg = mjpeg_bench::run(&cfg, cores).await?;
                mjpeg_bench::print_table(&report.input, cores, &mjpeg);
                report.mjpeg = Some(mjpeg);
            }
        }
    }
    report.elapsed_s = t0.elapsed().as_secs_f64();
    if let (false, Some(mjpeg)) = (report.rows.is_empty(), &report.mjpeg) {
        compare::print(&report.rows, mjpeg, f64::from(cfg.fps));
    }
    Ok(report)
}

/// The WebRTC steps (viewers with sound or without) on a server of their own; the rows
/// and the server's RSS before.
async fn run_webrtc(
    cfg: &BenchConfig,
    cores: usize,
    audio: bool,
    steps: &[usize],
    extend: bool,
) -> Result<(Vec<BenchRow>, u64)> {
    let server =
        ServerProcess::start(&cfg.peregrine, &cfg.input, cfg.fps, &cfg.server_args).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline_rss = server.rss_kib()?;
    eprintln!(
        "peregrine {} on {} ({} fps), {} cores, baseline RSS {} KiB, viewers {} sound",
        cfg.peregrine.display(),
        cfg.input.display(),
        cfg.fps,
        cores,
        baseline_rss,
        if audio { "with" } else { "without" }
    );
    let mut rows = Vec::new();
    let mut plan = StepPlan::new(steps, extend, cfg.budget);
    while let Some(n) = plan.next_step() {
        let step_start = Instant::now();
        let mut row = run_step(cfg, &server, n, baseline_rss, cores, audio).await?;
        row.rss_added_per_viewer_kib = rows
            .last()
            .filter(|before: &&BenchRow| n > before.viewers)
            .map(|before| {
                (row.server_rss_kib as f64 - before.server_rss_kib as f64)
                    / (n - before.viewers) as f64
            });
        print_row_live(&row);
        let clean = row.loss_pct <= 1.0 && row.receiving >= n;
        rows.push(row);
        plan.done(n, step_start.elapsed(), clean);
        if server.gone() {
            bail!("peregrine exited during the benchmark");
        }
    }
    Ok((rows, baseline_rss))
}

fn counter(state: &Value, name: &str) -> u64 {
    state["rtc"][name].as_u64().unwrap_or(0)
}

/// Past 90 % of what it can use, a process limits the step: the load generator of one
/// core, the server of its cores, or one of its engine threads of itself.
fn saturation(cpu: &CpuUse, threads: &[ThreadGroup], cores: usize) -> Option<String> {
    if cpu.load_pct > 90.0 {
        return Some(format!("load generator ({:.0} % CPU)", cpu.load_pct));
    }
    if cpu.server_pct > 90.0 * cores as f64 {
        return Some(format!("server ({:.0} % CPU)", cpu.server_pct));
    }
    let busiest = threads
        .iter()
        .filter(|g| g.busiest_pct > 90.0)
        .max_by(|a, b| a.busiest_pct.total_cmp(&b.busiest_pct))?;
    Some(format!(
        "server (a {} thread at {:.0} %)",
        busiest.name, busiest.busiest_pct
    ))
}

fn histogram(state: &Value, name: &str) -> HistogramSnapshot {
    serde_json::from_value(state["rtc"][name].clone()).unwrap_or_default()
}

async fn run_step(
    cfg: &BenchConfig,
    server: &ServerProcess,
    n: usize,
    baseline_rss: u64,
    cores: usize,
    audio: bool,
) -> Result<BenchRow> {
    eprintln!(
        "--- {n} viewers{} ---",
        if audio { " with sound" } else { "" }
    );
    let run = LoadRun::start(LoadConfig {
        endpoint: server.ws.clone(),
        stream: None,
        viewers: n,
        ramp_per_s: cfg.ramp_per_s,
        audio,
        bind: cfg.bind,
        decode_sample: cfg.decode_sample,
    });
    let ramp = Duration::from_secs_f64(n as f64 / cfg.ramp_per_s);
    run.wait_ramped(ramp + Duration::from_secs(20)).await;
    // Let everyone reach a keyframe (the file's GOP is 2 s) before measuring.
    run.watch_for(Duration::from_secs(3), cfg.show_progress)
        .await;
    let a = server.sample().await?;
    run.watch_for(cfg.window, cfg.show_progress).await;
    let b = server.sample().await?;
    let cpu = CpuUse::between(&a, &b);
    let rss = server.rss_kib()?;
    let summary = run.finish().await;
    server
        .wait_until_none("WebRTC peers", |s| s["rtc"]["peers"].as_u64().unwrap_or(1))
        .await;
    // The server gives freed memory back at its next check after peers leave (every
    // second); the RSS read after two has seen it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server.rss_kib()?;
    let threads = thread_groups(&a.server_threads, &b.server_threads, cpu.secs);
    let packets =
        counter(&b.state, "rtp_packets_sent").saturating_sub(counter(&a.state, "rtp_packets_sent"));
    let saturated = saturation(&cpu, &threads, cores);

    let delay =
        histogram(&b.state, "capture_to_send_us").since(&histogram(&a.state, "capture_to_send_us"));
    let engine = histogram(&b.state, "send_delay_us").since(&histogram(&a.state, "send_delay_us"));
    let mut row = BenchRow {
        viewers: n,
        receiving: summary.viewers_receiving,
        held: summary.viewers_held,
        server_packets: packets,
        server_us_per_packet: if packets > 0 {
            cpu.server_pct * 10.0 * cpu.secs * 1000.0 / packets as f64
        } else {
            0.0
        },
        load_us_per_packet: if packets > 0 {
            cpu.load_pct * 10.0 * cpu.secs * 1000.0 / packets as f64
        } else {
            0.0
        },
        load_ms_per_viewer_s: cpu.load_pct * 10.0 / summary.viewers_receiving.max(1) as f64,
        rss_after_kib: rss_after,
        server_threads: threads,
        saturated,
        ttff_p99_ms: summary.ttff_ms.p99,
        decoding: summary.viewers_decoding,
        pictures_decoded: summary.pictures_decoded,
        audio_asked: audio,
        with_audio: summary.viewers_with_audio,
        audio_loss_pct: summary.audio_loss_pct,
        window_s: cpu.secs,
        server_cpu_pct: cpu.server_pct,
        server_ms_per_viewer_s: cpu.server_ms_per_client_s(n),
        server_rss_kib: rss,
        rss_per_viewer_kib: rss.saturating_sub(baseline_rss) as f64 / n as f64,
        rss_added_per_viewer_kib: None,
        load_cpu_pct: cpu.load_pct,
        machine_cpu_pct: cpu.machine_pct,
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
    row.note = bottleneck_note(&row, &cpu, cores, f64::from(cfg.fps));
    Ok(row)
}

/// Say who ran out of CPU when the figures are not the server's alone.
fn bottleneck_note(row: &BenchRow, cpu: &CpuUse, cores: usize, fps: f64) -> String {
    let mut notes = cpu_notes(cpu, cores);
    if let Some(who) = &row.saturated {
        notes.insert(0, format!("saturated: {who}"));
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
    if row.audio_asked && row.with_audio < row.receiving {
        notes.push(format!(
            "{} viewers were offered no sound (has the server a sound source?)",
            row.receiving - row.with_audio
        ));
    }
    if row.with_audio > 0 && row.audio_loss_pct > 1.0 {
        notes.push(format!("audio loss {:.1} %", row.audio_loss_pct));
    }
    if notes.is_empty() {
        "ok".into()
    } else {
        notes.join("; ")
    }
}

pub(super) fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

fn print_row_live(row: &BenchRow) {
    eprint!("{}", row.summary.describe());
    eprintln!(
        "server CPU {:.1} % ({:.2} ms/viewer/s, {:.2} µs/packet), RSS {} KiB ({} KiB after they left); load generator CPU {:.1} % ({:.2} ms/viewer/s, {:.2} µs/packet); machine {:.1} %; {}",
        row.server_cpu_pct,
        row.server_ms_per_viewer_s,
        row.server_us_per_packet,
        row.server_rss_kib,
        row.rss_after_kib,
        row.load_cpu_pct,
        row.load_ms_per_viewer_s,
        row.load_us_per_packet,
        row.machine_cpu_pct,
        row.note
    );
    eprintln!("server threads: {}", threads_line(&row.server_threads));
}

/// `name N %` per thread name, `(×k)` for a pool of k threads, busiest first.
fn threads_line(groups: &[ThreadGroup]) -> String {
    let shown: Vec<String> = groups
        .iter()
        .filter(|g| g.cpu_pct >= 0.5)
        .map(|g| {
            let pool = if g.threads > 1 {
                format!(" (×{})", g.threads)
            } else {
                String::new()
            };
            format!("{} {:.1} %{pool}", g.name, g.cpu_pct)
        })
        .collect();
    if shown.is_empty() {
        "all under 0.5 %".into()
    } else {
        shown.join(", ")
    }
}

pub fn print_table(report: &BenchReport, rows: &[BenchRow]) {
    let mut out = std::io::stdout().lock();
    let sound = match rows.first() {
        Some(r) if r.audio_asked => ", viewers with sound",
        _ => "",
    };
    let _ = writeln!(
        out,
        "\nperegrine fan-out benchmark: {} ({} cores), {:.0} s{sound}",
        report.input, report.cores, report.elapsed_s
    );
    let _ = writeln!(
        out,
        "held = viewers receiving with < 0.5 % loss; CPU in % of one core (user+sys from /proc); µs/pkt = server (ld: load generator) CPU per RTP packet sent; \
         KiB/view = (RSS - RSS before any viewer) / viewers, +KiB/view = RSS added per viewer since the step before; RSS left = server RSS after the step's viewers left; TTFF = watch -> first whole keyframe at the load generator (ms); \
         srv = capture -> last RTP packet sent, eng = engine send delay (µs, server histograms)"
    );
    let _ = writeln!(
        out,
        "{:>7} {:>5} {:>5} {:>7} {:>8} {:>6} {:>9} {:>8} {:>9} {:>7} {:>8} {:>9} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>7} {:>7}  note",
        "viewers", "recv", "held", "loss %", "srv CPU", "µs/pkt", "ms/view/s", "load CPU", "ld µs/pkt", "RSS MiB",
        "KiB/view", "+KiB/view", "RSS left", "fps", "TTFF50", "TTFF99", "srv50 µs", "srv99 µs", "eng99 µs", "e2e50", "e2e99"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>7} {:>5} {:>5} {:>7.3} {:>7.1}% {:>6.2} {:>9.3} {:>7.1}% {:>9.2} {:>7.1} {:>8.0} {:>9} {:>7.1} {:>7.1} {:>6} {:>6} {:>8} {:>8} {:>8} {:>7} {:>7}  {}",
            r.viewers,
            r.receiving,
            r.held,
            r.loss_pct,
            r.server_cpu_pct,
            r.server_us_per_packet,
            r.server_ms_per_viewer_s,
            r.load_cpu_pct,
            r.load_us_per_packet,
            r.server_rss_kib as f64 / 1024.0,
            r.rss_per_viewer_kib,
            r.rss_added_per_viewer_kib.map_or("–".to_string(), |k| format!("{k:.0}")),
            r.rss_after_kib as f64 / 1024.0,
            r.fps_per_viewer,
            opt(r.ttff_p50_ms),
            opt(r.ttff_p99_ms),
            r.server_delay_p50_us,
            r.server_delay_p99_us,
            r.engine_send_p99_us,
            opt(r.e2e_p50_ms),
            opt(r.e2e_p99_ms),
            r.note
        );
    }
    let _ = writeln!(out, "server CPU by thread (% of one core):");
    for r in rows {
        let _ = writeln!(out, "{:>7}  {}", r.viewers, threads_line(&r.server_threads));
    }
    if let Some(r) = rows.iter().find(|r| r.decoding > 0) {
        let _ = writeln!(
            out,
            "{} viewers per step decoded their pictures ({} pictures at {} viewers); the others counted pictures and packets only.",
            r.decoding, r.pictures_decoded, r.viewers
        );
    }
    let _ = writeln!(
        out,
        "e2e in ms. A new viewer starts from the server's cached GOP, so e2e p99 includes the replayed (older) pictures of each viewer's first GOP."
    );
}

/// Parse `1,10,50` into viewer (or client) counts.
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
