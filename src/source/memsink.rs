//! `--source memsink:NAME`: frames from a running µStreamer's H.264 memsink, read as
//! the Janus ustreamer plugin reads them.
//!
//! * The sink is open only while somebody watches (readers keep µStreamer encoding).
//! * A missing sink is waited for; errors (version mismatch, corrupt header) are logged
//!   once and the sink is reopened after a second, so a fixed or restarted writer is
//!   picked up without restarting peregrine.
//! * A writer that removes and recreates the object is noticed by its inode.
//! * Viewers' keyframe requests are passed on through `wants.key`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::annexb::AnnexBSplitter;
use super::lifecycle::StatusHandle;
use super::runner::{self, Closing, Demand, Next, RunWhen, RunnerConfig, Source};
use crate::media::VideoSettings;
use crate::media::{clock, Hub, Picture};
use crate::memsink::layout::{data_size_for_name, FORMAT_H264};
use crate::memsink::reader::{Get, SinkReader};
use crate::memsink::s_to_us;

#[derive(Clone, Debug)]
pub struct MemsinkSourceConfig {
    pub name: String,
    /// Longest wait for the sink lock on each read.
    pub lock_timeout: Duration,
    /// Pause before reopening after an error or while the sink is missing.
    pub reopen_delay: Duration,
}

impl MemsinkSourceConfig {
    pub fn new(name: &str) -> MemsinkSourceConfig {
        MemsinkSourceConfig {
            name: name.to_string(),
            lock_timeout: Duration::from_secs(1),
            reopen_delay: Duration::from_secs(1),
        }
    }
}

/// Without a new frame for this long, check whether the name now points to a new object.
const REPLACED_CHECK: Duration = Duration::from_secs(1);
/// Between two looks at a sink with no new frame.
const POLL_STEP: Duration = Duration::from_millis(1);
/// After opening the sink, NO SIGNAL is shown only if no picture came for this long: a
/// live writer delivers well within it, and a placeholder shown meanwhile would be what
/// the first viewer sees instead of the camera.
const NO_SIGNAL_GRACE: Duration = Duration::from_millis(500);
/// A frame captured longer ago than this is not live video (see where it is used).
const STALE_FRAME_US: u64 = 1_000_000;
/// Size of the NO SIGNAL picture until the writer has shown its own.
const FALLBACK_SIZE: (u32, u32) = (640, 480);

/// Run the memsink source into `hub` until `stop` is set.
pub fn spawn(
    cfg: MemsinkSourceConfig,
    hub: Arc<Hub>,
    status: StatusHandle,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let source = MemsinkSource::new(cfg)?;
    runner::spawn(Box::new(source), MemsinkSource::runner(), hub, status, stop)
}

/// A µStreamer H.264 memsink as a source.
pub struct MemsinkSource {
    cfg: MemsinkSourceConfig,
    /// Each memsink frame is one access unit; this checks it and reads its SPS.
    splitter: AnnexBSplitter,
    pictures: std::collections::VecDeque<Picture>,
    batch: Vec<Picture>,
    reader: Option<SinkReader>,
    frames: u64,
    last_frame: Instant,
    last_replaced_check: Instant,
    /// The last problem logged, so a persisting one is logged once, not every second.
    reported: Option<String>,
    waiting_for_magic: bool,
}

impl MemsinkSource {
    /// Refuses a name no sink can have.
    pub fn new(cfg: MemsinkSourceConfig) -> anyhow::Result<MemsinkSource> {
        data_size_for_name(&cfg.name).context("source memsink:NAME")?;
        Ok(MemsinkSource {
            cfg,
            splitter: AnnexBSplitter::new(),
            pictures: Default::default(),
            batch: Vec::new(),
            reader: None,
            frames: 0,
            last_frame: Instant::now(),
            last_replaced_check: Instant::now(),
            reported: None,
            waiting_for_magic: false,
        })
    }

    /// The writer encodes; the runner only makes NO SIGNAL.
    pub fn runner() -> RunnerConfig {
        RunnerConfig::new(
            FALLBACK_SIZE,
            VideoSettings {
                width: FALLBACK_SIZE.0,
                height: FALLBACK_SIZE.1,
                fps: 30,
                bitrate_kbps: 1000,
                gop: 60,
            },
        )
    }

    fn report(&mut self, problem: String, error: bool) {
        if self.reported.as_deref() != Some(problem.as_str()) {
            if error {
                tracing::error!("{problem}");
            } else {
                tracing::info!("{problem}");
            }
            self.reported = Some(problem);
        }
    }

    /// Read one frame, if a new one is there. `Some` ends the call to `next`.
    fn read(&mut self, want_key: bool) -> Option<Next<'static>> {
        let reader = self.reader.as_mut()?;
        match reader.get(want_key) {
            Ok(Get::Frame(frame)) => {
                self.last_frame = Instant::now();
                self.reported = None;
                self.waiting_for_magic = false;
                if frame.meta.format != FORMAT_H264 {
                    let fourcc = frame.meta.format.to_le_bytes();
                    let problem = format!(
                        "memsink {:?} carries {:?} frames, not H264; use an --h264-sink",
                        self.cfg.name,
                        String::from_utf8_lossy(&fourcc)
                    );
                    self.report(problem, true);
                    return None;
                }
                if frame.data.len() <= 3 {
                    return None;
                }
                let now_us = clock::monotonic_us();
                let capture_us = match s_to_us(frame.meta.grab_begin_ts) {
                    0 => now_us,
                    us => us,
                };
                if now_us.saturating_sub(capture_us) > STALE_FRAME_US {
                    // The sink keeps its last frame after the writer stops or idles: what
                    // a reader finds on opening can be from long ago. Not the live stream.
                    tracing::debug!(
                        age_ms = now_us.saturating_sub(capture_us) / 1000,
                        "memsink frame too old; skipped"
                    );
                    return None;
                }
                self.frames += 1;
                let split = self
                    .splitter
                    .push(&frame.data, &mut self.batch)
                    .map(|()| self.splitter.flush(&mut self.batch));
                if let Err(e) = split {
                    return Some(Next::Lost(format!("memsink {:?}: {e}", self.cfg.name)));
                }
                for mut picture in self.batch.drain(..) {
                    picture.capture_us = capture_us;
                    self.pictures.push_back(picture);
                }
                None
            }
            Ok(Get::NoData) => {
                if reader.bad_magic && !self.waiting_for_magic {
                    self.waiting_for_magic = true;
                    tracing::warn!(
                        sink = %self.cfg.name,
                        "memsink holds no valid frame (magic not set); waiting for the writer"
                    );
                }
                let check_replaced = self.last_frame.elapsed() > REPLACED_CHECK
                    && self.last_replaced_check.elapsed() > REPLACED_CHECK;
                if check_replaced {
                    self.last_replaced_check = Instant::now();
                    if reader.replaced() {
                        tracing::info!(sink = %self.cfg.name, "memsink was recreated; reopening");
                        return Some(Next::Reopen);
                    }
                }
                None
            }
            Err(e) => Some(Next::Lost(format!(
                "{e}; reopening in {:?}",
                self.cfg.reopen_delay
            ))),
        }
    }
}

impl Source for MemsinkSource {
    fn thread_name(&self) -> &'static str {
        "memsink-in"
    }

    /// The sink is read only while somebody watches: readers keep µStreamer encoding.
    fn run_when(&self) -> RunWhen {
        RunWhen::WhileWatched
    }

    fn backoff(&self) -> (Duration, Duration) {
        (self.cfg.reopen_delay, self.cfg.reopen_delay)
    }

    fn no_signal_grace(&self) -> Duration {
        NO_SIGNAL_GRACE
    }

    fn open(&mut self, _: &Demand) -> Result<(), String> {
        let reader = SinkReader::open(&self.cfg.name, self.cfg.lock_timeout)
            .map_err(|e| format!("waiting for the memsink: {e}"))?;
        tracing::info!(sink = %self.cfg.name, "memsink opened");
        self.reader = Some(reader);
        // What comes next does not continue what came before (another writer, or the
        // same one after a pause): start again at an IDR.
        self.splitter = AnnexBSplitter::new();
        self.pictures.clear();
        self.last_frame = Instant::now();
        self.last_replaced_check = Instant::now();
        self.waiting_for_magic = false;
        Ok(())
    }

    fn next(&mut self, demand: &Demand, deadline: Instant) -> Next<'_> {
        loop {
            if let Some(picture) = self.pictures.pop_front() {
                return Next::Picture(picture);
            }
            // A keyframe is asked of the writer on every read while one is wanted.
            if let Some(next) = self.read(demand.want_key()) {
                return next;
            }
            if !self.pictures.is_empty() {
                continue;
            }
            if Instant::now() + POLL_STEP >= deadline || demand.stopping() {
                return Next::Waiting;
            }
            // The sink has no way to wake a reader: look again shortly.
            std::thread::sleep(POLL_STEP);
        }
    }

    fn close(&mut self, why: Closing) {
        if self.reader.take().is_some() && why == Closing::NobodyWatches {
            tracing::info!(sink = %self.cfg.name, frames = self.frames, "memsink closed: nobody watching");
        }
    }
}
