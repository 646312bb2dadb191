//! `--source memsink:NAME`: frames from a running µStreamer's H.264 memsink, read as
//! the Janus ustreamer plugin reads them.
//!
//! * The sink is open only while somebody watches (readers keep µStreamer encoding).
//! * A missing sink is waited for; errors (version mismatch, corrupt header) are logged
//!   once and the sink is reopened after a second, so a fixed or restarted writer is
//!   picked up without restarting peregrine.
//! * A writer that removes and recreates the object is noticed by its inode.
//! * Viewers' keyframe requests are passed on through `wants.key`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::annexb::AnnexBSplitter;
use super::lifecycle::{Output, StatusHandle};
use crate::media::Picture;
use crate::media::{clock, Hub};
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
/// Without a new frame for this long the source is reported offline.
const OFFLINE_AFTER: Duration = Duration::from_secs(2);
const IDLE_STEP: Duration = Duration::from_millis(10);
/// After opening the sink, NO SIGNAL is shown only if no picture came for this long: a
/// live writer delivers well within it, and a placeholder shown meanwhile would be what
/// the first viewer sees instead of the camera.
const NO_SIGNAL_GRACE: Duration = Duration::from_millis(500);
/// A frame captured longer ago than this is not live video (see where it is used).
const STALE_FRAME_US: u64 = 1_000_000;

pub fn spawn(
    cfg: MemsinkSourceConfig,
    hub: Arc<Hub>,
    status: StatusHandle,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    data_size_for_name(&cfg.name).context("source memsink:NAME")?;
    std::thread::Builder::new()
        .name("memsink-in".into())
        .spawn(move || {
            let output = Output::new(hub.clone(), status, (640, 480));
            Reading::new(cfg, output).run(&hub, &stop)
        })
        .context("starting the memsink source thread")
}

struct Reading {
    cfg: MemsinkSourceConfig,
    /// Into the hub, with NO SIGNAL while the writer is gone and `/state` kept true.
    output: Output,
    /// Each memsink frame is one access unit; this checks it and reads its SPS.
    splitter: AnnexBSplitter,
    pictures: Vec<Picture>,
    reader: Option<SinkReader>,
    frames: u64,
    last_frame: Instant,
    opened: Instant,
    /// The stream (re)starts here: ask the writer for a keyframe on every read until one
    /// came, instead of waiting for its next scheduled one.
    need_key: bool,
    last_replaced_check: Instant,
    /// The last problem logged, so a persisting one is logged once, not every second.
    reported: Option<String>,
    waiting_for_magic: bool,
}

impl Reading {
    fn new(cfg: MemsinkSourceConfig, output: Output) -> Reading {
        Reading {
            cfg,
            output,
            splitter: AnnexBSplitter::new(),
            pictures: Vec::new(),
            reader: None,
            frames: 0,
            last_frame: Instant::now(),
            opened: Instant::now(),
            need_key: true,
            last_replaced_check: Instant::now(),
            reported: None,
            waiting_for_magic: false,
        }
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

    fn lost(&mut self, why: &str) {
        self.output.lost(why);
        self.restart_stream();
    }

    /// What comes next does not continue what came before (another writer, or the same
    /// one after a pause): start again at an IDR, and ask for one.
    fn restart_stream(&mut self) {
        self.splitter = AnnexBSplitter::new();
        self.need_key = true;
    }

    fn run(mut self, hub: &Hub, stop: &AtomicBool) {
        tracing::info!(sink = %self.cfg.name, "memsink source started");
        while !stop.load(Ordering::Relaxed) {
            if !hub.has_subscribers() {
                if self.reader.take().is_some() {
                    tracing::info!(sink = %self.cfg.name, "memsink closed: nobody watching");
                    self.restart_stream();
                }
                std::thread::sleep(IDLE_STEP);
                continue;
            }
            if self.reader.is_none() {
                match SinkReader::open(&self.cfg.name, self.cfg.lock_timeout) {
                    Ok(r) => {
                        tracing::info!(sink = %self.cfg.name, "memsink opened");
                        self.reader = Some(r);
                        self.last_frame = Instant::now();
                        self.opened = Instant::now();
                        self.waiting_for_magic = false;
                    }
                    Err(e) => {
                        let problem = format!("waiting for the memsink: {e}");
                        self.lost(&problem);
                        self.output.wait(self.cfg.reopen_delay, stop);
                        continue;
                    }
                }
            }
            self.step(hub, stop);
        }
        tracing::info!(sink = %self.cfg.name, frames = self.frames, "memsink source stopped");
    }

    fn step(&mut self, hub: &Hub, stop: &AtomicBool) {
        let Some(reader) = self.reader.as_mut() else {
            return;
        };
        match reader.get(self.need_key || hub.keyframe_due(clock::monotonic_us())) {
            Ok(Get::Frame(frame)) => {
                self.last_frame = Instant::now();
                self.reported = None;
                self.waiting_for_magic = false;
                if frame.meta.format != FORMAT_H264 {
                    let fourcc = frame.meta.format.to_le_bytes();
                    self.report(
                        format!(
                            "memsink {:?} carries {:?} frames, not H264; use an --h264-sink",
                            self.cfg.name,
                            String::from_utf8_lossy(&fourcc)
                        ),
                        true,
                    );
                    return;
                }
                if frame.data.len() <= 3 {
                    return;
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
                    return;
                }
                self.frames += 1;
                let split = self
                    .splitter
                    .push(&frame.data, &mut self.pictures)
                    .map(|()| self.splitter.flush(&mut self.pictures));
                if let Err(e) = split {
                    let problem = format!("memsink {:?}: {e}", self.cfg.name);
                    self.lost(&problem);
                    return;
                }
                for picture in self.pictures.drain(..) {
                    self.need_key &= !picture.key;
                    self.output.publish_captured(picture, capture_us);
                }
            }
            Ok(Get::NoData) => {
                if reader.bad_magic && !self.waiting_for_magic {
                    self.waiting_for_magic = true;
                    tracing::warn!(
                        sink = %self.cfg.name,
                        "memsink holds no valid frame (magic not set); waiting for the writer"
                    );
                }
                let idle = self.last_frame.elapsed();
                let check_replaced =
                    idle > REPLACED_CHECK && self.last_replaced_check.elapsed() > REPLACED_CHECK;
                if check_replaced {
                    self.last_replaced_check = Instant::now();
                    if reader.replaced() {
                        tracing::info!(sink = %self.cfg.name, "memsink was recreated; reopening");
                        self.reader = None;
                        return;
                    }
                }
                if idle > OFFLINE_AFTER && self.output.is_live() {
                    self.lost("no frame from the memsink writer for 2 s");
                }
                if !self.output.is_live() && self.opened.elapsed() > NO_SIGNAL_GRACE {
                    self.output.idle();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => {
                let problem = format!("{e}; reopening in {:?}", self.cfg.reopen_delay);
                self.lost(&problem);
                self.reader = None;
                self.output.wait(self.cfg.reopen_delay, stop);
            }
        }
    }
}
