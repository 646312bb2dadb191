//! Many MJPEG `/stream` clients in one process, ramped up at a steady rate, and the
//! figures of the run.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::one_mjpeg_client::{self, MjpegClientReport, MjpegProgress};
use super::summary::Quantiles;

/// What to run.
#[derive(Clone, Debug)]
pub struct MjpegConfig {
    /// `host:port` of the HTTP server.
    pub authority: String,
    /// The stream to watch; `None`: the default one.
    pub stream: Option<String>,
    pub clients: usize,
    /// New clients per second while ramping up.
    pub ramp_per_s: f64,
}

impl MjpegConfig {
    /// µStreamer's `/stream`, asking for the capture times kvmd reads.
    fn path(&self) -> String {
        let mut query = vec![("extra_headers", "1")];
        if let Some(name) = &self.stream {
            query.push(("stream", name));
        }
        let query = serde_urlencoded::to_string(query).unwrap_or_default();
        format!("/stream?{query}")
    }
}

/// A run in progress.
pub struct MjpegRun {
    cfg: MjpegConfig,
    started: Instant,
    progress: Arc<MjpegProgress>,
    /// Each client's pictures so far, by id.
    counts: Arc<[AtomicU64]>,
    /// Pictures and time of the last progress line.
    shown: Mutex<(u64, Instant)>,
    stop: watch::Sender<bool>,
    ramp: JoinHandle<Vec<JoinHandle<MjpegClientReport>>>,
}

impl MjpegRun {
    pub fn start(cfg: MjpegConfig) -> MjpegRun {
        let progress = Arc::new(MjpegProgress::default());
        let counts: Arc<[AtomicU64]> = (0..cfg.clients).map(|_| AtomicU64::new(0)).collect();
        let (stop, stop_rx) = watch::channel(false);
        let ramp = {
            let (cfg, progress, counts) = (cfg.clone(), progress.clone(), counts.clone());
            tokio::spawn(async move {
                let gap = Duration::from_secs_f64(1.0 / cfg.ramp_per_s.max(0.001));
                let t0 = tokio::time::Instant::now();
                let path = cfg.path();
                let mut clients = Vec::with_capacity(cfg.clients);
                for id in 0..cfg.clients {
                    if *stop_rx.borrow() {
                        break;
                    }
                    tokio::time::sleep_until(t0 + gap * id as u32).await;
                    clients.push(tokio::spawn(one_mjpeg_client::run(
                        id,
                        cfg.authority.clone(),
                        path.clone(),
                        progress.clone(),
                        counts.clone(),
                        stop_rx.clone(),
                    )));
                }
                clients
            })
        };
        let started = Instant::now();
        MjpegRun {
            cfg,
            started,
            progress,
            counts,
            shown: Mutex::new((0, started)),
            stop,
            ramp,
        }
    }

    /// Wait until every client was started and is streaming or failed, for at most
    /// `timeout`.
    pub async fn wait_ramped(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let p = &self.progress;
            let done = p.connected.load(Ordering::Relaxed) + p.failed.load(Ordering::Relaxed);
            if done >= self.cfg.clients {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Each client's pictures so far, by id.
    pub fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Print a progress line to stderr every second for `duration`.
    pub async fn watch_for(&self, duration: Duration, show: bool) {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
            if !show {
                continue;
            }
            let p = &self.progress;
            let pictures = p.pictures.load(Ordering::Relaxed);
            let (last, at) = std::mem::replace(
                &mut *self.shown.lock().unwrap_or_else(|e| e.into_inner()),
                (pictures, Instant::now()),
            );
            let connected = p.connected.load(Ordering::Relaxed);
            let rate = (pictures - last) as f64 / at.elapsed().as_secs_f64();
            let per_client = if connected > 0 {
                rate / connected as f64
            } else {
                0.0
            };
            let _ = writeln!(
                std::io::stderr().lock(),
                "[{:6.1}s] MJPEG clients {connected}/{} streaming, {} failed, {pictures} pictures, {per_client:.1} fps per client",
                self.started.elapsed().as_secs_f64(),
                self.cfg.clients,
                p.failed.load(Ordering::Relaxed),
            );
        }
    }

    /// Stop every client and gather their reports.
    pub async fn finish(self) -> MjpegSummary {
        let _ = self.stop.send(true);
        let clients = self.ramp.await.unwrap_or_default();
        let mut reports = Vec::with_capacity(clients.len());
        for c in clients {
            if let Ok(r) = c.await {
                reports.push(r);
            }
        }
        MjpegSummary::from_reports(
            &self.cfg.authority,
            self.cfg.clients,
            self.started.elapsed(),
            reports,
        )
    }
}

/// Figures of a whole MJPEG run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MjpegSummary {
    pub server: String,
    pub clients_requested: usize,
    /// Clients that received at least one picture.
    pub clients_receiving: usize,
    pub clients_failed: usize,
    pub duration_s: f64,
    pub pictures: u64,
    /// Average size of a picture, bytes.
    pub picture_bytes_avg: u64,
    /// Parts that were not a whole JPEG, over all clients.
    pub not_jpeg: u64,
    /// Pictures per second per receiving client, from its first picture on.
    pub fps_per_client: f64,
    /// Request → first picture.
    pub ttfp_ms: Quantiles,
    /// Capture → picture complete at the client.
    pub end_to_end_ms: Quantiles,
    pub errors: Vec<(String, usize)>,
    pub clients: Vec<MjpegClientReport>,
}

impl MjpegSummary {
    pub fn from_reports(
        server: &str,
        requested: usize,
        duration: Duration,
        clients: Vec<MjpegClientReport>,
    ) -> MjpegSummary {
        let fps: Vec<f64> = clients
            .iter()
            .filter(|c| c.receiving_s > 0.5)
            .map(|c| c.pictures as f64 / c.receiving_s)
            .collect();
        let pictures: u64 = clients.iter().map(|c| c.pictures).sum();
        let bytes: u64 = clients.iter().map(|c| c.picture_bytes).sum();
        let mut errors: Vec<(String, usize)> = Vec::new();
        for e in clients.iter().filter_map(|c| c.error.as_ref()) {
            if let Some((_, n)) = errors.iter_mut().find(|(m, _)| m == e) {
                *n += 1;
            } else if errors.len() < 5 {
                errors.push((e.clone(), 1));
            }
        }
        MjpegSummary {
            server: server.to_string(),
            clients_requested: requested,
            clients_receiving: clients.iter().filter(|c| c.pictures > 0).count(),
            clients_failed: clients.iter().filter(|c| c.error.is_some()).count(),
            duration_s: duration.as_secs_f64(),
            pictures,
            picture_bytes_avg: bytes.checked_div(pictures).unwrap_or(0),
            not_jpeg: clients.iter().map(|c| c.not_jpeg).sum(),
            fps_per_client: if fps.is_empty() {
                0.0
            } else {
                fps.iter().sum::<f64>() / fps.len() as f64
            },
            ttfp_ms: Quantiles::of(clients.iter().filter_map(|c| c.ttfp_ms).collect()),
            end_to_end_ms: Quantiles::of(
                clients
                    .iter()
                    .flat_map(|c| c.delays_ms.iter().map(|&d| f64::from(d)))
                    .collect(),
            ),
            errors,
            clients,
        }
    }

    /// A few human lines.
    pub fn describe(&self) -> String {
        let q = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let mut s = format!(
            "{}: {}/{} MJPEG clients received pictures ({} failed) over {:.1} s\n\
             pictures {} ({:.1} fps per client, {} KiB each: {:.1} Mbit/s per client), parts that were not a JPEG {}\n\
             time to first picture ms p50 {} p95 {} max {}\n\
             capture-to-client delay ms p50 {} p99 {} max {} ({} pictures)\n",
            self.server,
            self.clients_receiving,
            self.clients_requested,
            self.clients_failed,
            self.duration_s,
            self.pictures,
            self.fps_per_client,
            self.picture_bytes_avg / 1024,
            self.fps_per_client * self.picture_bytes_avg as f64 * 8.0 / 1e6,
            self.not_jpeg,
            q(self.ttfp_ms.p50),
            q(self.ttfp_ms.p95),
            q(self.ttfp_ms.max),
            q(self.end_to_end_ms.p50),
            q(self.end_to_end_ms.p99),
            q(self.end_to_end_ms.max),
            self.end_to_end_ms.samples,
        );
        for (e, n) in &self.errors {
            s += &format!("error ({n} clients): {e}\n");
        }
        s
    }
}
