//! Load generation: many real WebRTC viewers in one process, joining through the Janus
//! API, or many MJPEG `/stream` clients, and the benchmark that runs them against a
//! peregrine it starts itself.
//!
//! * [`one_viewer`]: one WebRTC viewer and what it measures.
//! * [`catchup`]: which of a new viewer's first pictures are the GOP catch-up burst.
//! * [`summary`]: per-run figures from the viewers' reports.
//! * [`one_mjpeg_client`], [`mjpeg_run`]: one MJPEG client, and many with their figures.
//! * [`procstat`]: CPU time and memory of processes, from `/proc`.
//! * [`bench_server`]: the peregrine a benchmark starts and measures.
//! * [`bench`]: the benchmark table (server started on a file source, N viewers per
//!   step); [`mjpeg_bench`] the same for MJPEG clients; [`compare`] both side by side;
//!   [`audio_cost`] the WebRTC steps without and with sound side by side.

pub mod audio_cost;
pub mod bench;
pub mod bench_server;
pub mod catchup;
pub mod compare;
pub mod mjpeg_bench;
pub mod mjpeg_run;
pub mod one_mjpeg_client;
pub mod one_viewer;
pub mod procstat;
pub mod summary;

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::viewer::janus_client::{Endpoint, JanusClient};
use one_viewer::{Progress, ViewerReport};
pub use summary::LoadSummary;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub endpoint: Endpoint,
    /// The stream the viewers watch; `None`: the default one.
    pub stream: Option<String>,
    pub viewers: usize,
    /// New viewers per second while ramping up.
    pub ramp_per_s: f64,
    /// Viewers watch with `audio: true` and count the sound they get.
    pub audio: bool,
    /// The address the viewers' media sockets bind to.
    pub bind: IpAddr,
    /// How many viewers (the first ones) put their pictures together and decode them;
    /// the others only count pictures and packets, which costs far less.
    pub decode_sample: usize,
}

/// Counters as of the last progress line.
struct Shown {
    frames: u64,
    catch_up: u64,
    at: Instant,
}

/// A load run in progress: viewers are being started or are watching.
pub struct LoadRun {
    cfg: LoadConfig,
    started: Instant,
    progress: Arc<Progress>,
    /// What the last progress line counted, so the next one (even from a later
    /// [`LoadRun::watch_for`]) reports only what came since: a burst that arrived
    /// between two watches is still shown.
    shown: Mutex<Shown>,
    stop: watch::Sender<bool>,
    ramp: JoinHandle<Vec<JoinHandle<ViewerReport>>>,
}

/// Check that `endpoint` speaks the Janus API and has the ustreamer plugin, with one
/// short-lived session; the error says what went wrong.
pub async fn probe(endpoint: &Endpoint) -> Result<()> {
    let url = endpoint.url();
    let attempt = async {
        let mut janus = JanusClient::connect(endpoint).await?;
        janus.create_and_attach().await?;
        janus.destroy();
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 10 s"))
        .and_then(|r| r)
        .with_context(|| format!("cannot use the Janus API at {url}"))
}

impl LoadRun {
    /// Start ramping viewers up at `cfg.ramp_per_s`.
    pub fn start(cfg: LoadConfig) -> LoadRun {
        let progress = Arc::new(Progress::default());
        let (stop, stop_rx) = watch::channel(false);
        let ramp = {
            let (cfg, progress) = (cfg.clone(), progress.clone());
            tokio::spawn(async move {
                let gap = Duration::from_secs_f64(1.0 / cfg.ramp_per_s.max(0.001));
                let t0 = tokio::time::Instant::now();
                let mut viewers = Vec::with_capacity(cfg.viewers);
                for id in 0..cfg.viewers {
                    if *stop_rx.borrow() {
                        break;
                    }
                    tokio::time::sleep_until(t0 + gap * id as u32).await;
                    let watch = one_viewer::Watch {
                        endpoint: cfg.endpoint.clone(),
                        stream: cfg.stream.clone(),
                        audio: cfg.audio,
                        bind: cfg.bind,
                        decode: id < cfg.decode_sample,
                    };
                    viewers.push(tokio::spawn(one_viewer::run(
                        id,
                        watch,
                        progress.clone(),
                        stop_rx.clone(),
                    )));
                }
                viewers
            })
        };
        let started = Instant::now();
        LoadRun {
            cfg,
            started,
            progress,
            shown: Mutex::new(Shown {
                frames: 0,
                catch_up: 0,
                at: started,
            }),
            stop,
            ramp,
        }
    }

    /// Wait until every viewer was started and has connected or failed, for at most
    /// `timeout`.
    pub async fn wait_ramped(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let p = &self.progress;
            let done = p.connected.load(Ordering::Relaxed) + p.failed.load(Ordering::Relaxed);
            if done >= self.cfg.viewers {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
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
            let frames = p.frames.load(Ordering::Relaxed);
            let catch_up = p.catch_up_frames.load(Ordering::Relaxed);
            let last = std::mem::replace(
                &mut *self.shown.lock().unwrap_or_else(|e| e.into_inner()),
                Shown {
                    frames,
                    catch_up,
                    at: Instant::now(),
                },
            );
            let connected = p.connected.load(Ordering::Relaxed);
            // The catch-up burst is not a frame rate; it is shown apart.
            let new_catch_up = catch_up - last.catch_up;
            let live = (frames - last.frames).saturating_sub(new_catch_up);
            let rate = live as f64 / last.at.elapsed().as_secs_f64();
            let per_viewer = if connected > 0 {
                rate / connected as f64
            } else {
                0.0
            };
            let burst = if new_catch_up > 0 {
                format!(" (+{new_catch_up} catch-up frames)")
            } else {
                String::new()
            };
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "[{:6.1}s] viewers {connected}/{} connected, {} failed, {frames} frames, {per_viewer:.1} fps per viewer{burst}",
                self.started.elapsed().as_secs_f64(),
                self.cfg.viewers,
                p.failed.load(Ordering::Relaxed),
            );
        }
    }

    /// Stop every viewer and gather their reports.
    pub async fn finish(self) -> LoadSummary {
        let _ = self.stop.send(true);
        let viewers = self.ramp.await.unwrap_or_default();
        let mut reports = Vec::with_capacity(viewers.len());
        for v in viewers {
            if let Ok(r) = v.await {
                reports.push(r);
            }
        }
        LoadSummary::from_reports(
            &self.cfg.endpoint.url(),
            self.cfg.viewers,
            self.started.elapsed(),
            reports,
        )
    }
}
