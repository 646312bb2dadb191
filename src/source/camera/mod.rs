//! The camera source: a capture device (V4L2, or recorded frames in tests) → hub.
//!
//! Two threads, so capturing never waits for the encoder:
//! * **capture** keeps the device streaming (a camera takes a while to start, so it
//!   stays open even without viewers), converts raw pictures to I420 while someone
//!   watches, and hands them over; H.264 from the device is cut into access units and
//!   handed over untouched;
//! * **publish** encodes raw pictures with openh264 and publishes every picture into
//!   the hub with the driver's capture timestamp, and shows NO SIGNAL while the device
//!   is gone.
//!
//! The hand-over keeps only the newest raw picture: when encoding falls behind, older
//! pictures are dropped rather than queued, so delay does not grow.
//!
//! A device that fails or disappears is reopened with backoff, forever (µStreamer's
//! `--persistent`); viewers stay connected and see NO SIGNAL meanwhile.

pub mod convert;
pub mod device;
pub mod replay;
pub mod v4l2;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use self::convert::Converter;
use self::device::{CaptureDevice, DeviceError, DeviceOpener, Negotiated};
use super::annexb::AnnexBSplitter;
use super::lifecycle::{Backoff, Output, StatusHandle};
use super::pattern::I420Frame;
use crate::media::encoder::{EncoderSettings, H264Encoder};
use crate::media::{clock, Hub, Picture};

#[derive(Clone, Debug)]
pub struct CameraConfig {
    /// Size of the NO SIGNAL picture until the camera has shown its own.
    pub size: (u32, u32),
    /// For sources peregrine encodes.
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub gop: u32,
    /// First and longest pause before reopening a lost device.
    pub reopen_min: Duration,
    pub reopen_max: Duration,
}

impl CameraConfig {
    pub fn new(size: (u32, u32), fps: u32, bitrate_kbps: u32, gop: u32) -> CameraConfig {
        CameraConfig {
            size,
            fps,
            bitrate_kbps,
            gop,
            reopen_min: Duration::from_millis(250),
            reopen_max: Duration::from_secs(2),
        }
    }
}

/// What happened to pictures on their way, for `/state`-style checks and logs.
#[derive(Default, Debug)]
pub struct CameraCounters {
    pub captured: AtomicU64,
    /// Raw pictures replaced by a newer one before the encoder took them.
    pub dropped: AtomicU64,
    /// Buffers that could not be converted or split (broken JPEG, short buffer...).
    pub bad_frames: AtomicU64,
    pub opens: AtomicU64,
}

/// Start the capture and publish threads. Returns the capture thread, which stops the
/// publisher when it ends (after `stop` is set).
pub fn spawn(
    cfg: CameraConfig,
    opener: Box<dyn DeviceOpener>,
    hub: Arc<Hub>,
    status: StatusHandle,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(std::thread::JoinHandle<()>, Arc<CameraCounters>)> {
    let counters = Arc::new(CameraCounters::default());
    let handover = Arc::new(Handover::default());
    let publisher = {
        let (cfg, hub, handover) = (cfg.clone(), hub.clone(), handover.clone());
        let status = status.clone();
        std::thread::Builder::new()
            .name("camera-publish".into())
            .spawn(move || publish_loop(&cfg, &hub, status, &handover))
            .context("starting the camera publish thread")?
    };
    let capture = {
        let counters = counters.clone();
        std::thread::Builder::new()
            .name("camera".into())
            .spawn(move || {
                let mut capture = Capture {
                    cfg,
                    opener,
                    hub,
                    status,
                    handover: handover.clone(),
                    counters,
                };
                capture.run(&stop);
                handover.put(Delivery::Stop);
                if publisher.join().is_err() {
                    tracing::error!("camera publish thread panicked");
                }
            })
            .context("starting the camera capture thread")?
    };
    Ok((capture, counters))
}

/// What the capture thread hands to the publish thread.
enum Delivery {
    Raw { frame: I420Frame, capture_us: u64 },
    Encoded { picture: Picture, capture_us: u64 },
    Lost(String),
    Stop,
}

/// A small queue where a raw picture replaces any raw picture not yet taken.
#[derive(Default)]
struct Handover {
    queue: Mutex<VecDeque<Delivery>>,
    ready: Condvar,
    /// Converted pictures given back for reuse, so each picture does not allocate.
    spare: Mutex<Vec<I420Frame>>,
}

/// More than this many waiting deliveries means the publisher is stuck; the oldest go.
const HANDOVER_LIMIT: usize = 64;

impl Handover {
    /// Queue `d`; returns how many raw pictures it replaced.
    fn put(&self, d: Delivery) -> u64 {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let before = q.len();
        if matches!(d, Delivery::Raw { .. }) {
            q.retain(|old| !matches!(old, Delivery::Raw { .. }));
        }
        let replaced = (before - q.len()) as u64;
        q.push_back(d);
        while q.len() > HANDOVER_LIMIT {
            q.pop_front();
        }
        self.ready.notify_one();
        replaced
    }

    fn take(&self, timeout: Duration) -> Option<Delivery> {
        let q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let (mut q, _) = self
            .ready
            .wait_timeout_while(q, timeout, |q| q.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        q.pop_front()
    }

    fn spare_frame(&self) -> I420Frame {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        spare.pop().unwrap_or_else(|| I420Frame::new(16, 16))
    }

    fn give_back(&self, frame: I420Frame) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < 2 {
            spare.push(frame);
        }
    }
}

struct Capture {
    cfg: CameraConfig,
    opener: Box<dyn DeviceOpener>,
    hub: Arc<Hub>,
    status: StatusHandle,
    handover: Arc<Handover>,
    counters: Arc<CameraCounters>,
}

/// Pause between looks at `stop` while waiting to reopen.
const STOP_POLL: Duration = Duration::from_millis(10);
/// A device answers the force-key-frame control a few pictures later; the control is
/// sent again only after this long without a keyframe.
const KEY_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// This many broken pictures in a row and the source counts as lost.
const BAD_FRAMES_LOST: u32 = 30;

impl Capture {
    fn run(&mut self, stop: &AtomicBool) {
        let name = self.opener.name();
        let mut backoff = Backoff::new(self.cfg.reopen_min, self.cfg.reopen_max);
        while !stop.load(Ordering::Relaxed) {
            let error = match self.opener.open() {
                Ok(mut device) => {
                    self.counters.opens.fetch_add(1, Ordering::Relaxed);
                    match self.stream(device.as_mut(), stop, &mut backoff) {
                        Ok(()) => break,
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            // The publisher logs it (once, not at every retry) and shows it in /state.
            self.handover.put(Delivery::Lost(error.to_string()));
            let until = Instant::now() + backoff.next_delay();
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(STOP_POLL);
            }
        }
        tracing::info!(device = %name, "camera source stopped");
    }

    /// Capture until `stop` (Ok) or the device fails (Err).
    fn stream(
        &mut self,
        device: &mut dyn CaptureDevice,
        stop: &AtomicBool,
        backoff: &mut Backoff,
    ) -> Result<(), DeviceError> {
        let negotiated = device.negotiated();
        self.status.set_kind(format!(
            "{} {} {}x{}",
            self.opener.name(),
            negotiated.format,
            negotiated.width,
            negotiated.height
        ));
        let mut converter = Converter::new();
        let mut splitter = AnnexBSplitter::new();
        let mut pictures = Vec::new();
        let mut watching = false;
        let mut bad_in_a_row = 0u32;
        let mut last_key_request: Option<Instant> = None;
        let mut first = true;
        while !stop.load(Ordering::Relaxed) {
            let frame = device.next_frame()?;
            if first {
                backoff.reset();
                first = false;
            }
            self.counters.captured.fetch_add(1, Ordering::Relaxed);
            if !self.hub.has_subscribers() {
                watching = false;
                continue;
            }
            let mut key_now = false;
            if !watching {
                watching = true;
                // Whoever starts watching needs a picture that stands alone.
                splitter.wait_for_idr();
                key_now = negotiated.format.is_h264();
            }
            let capture_us = frame.capture_us;
            let outcome = if negotiated.format.is_h264() {
                let result = splitter
                    .push(frame.data, &mut pictures)
                    .map(|()| splitter.flush(&mut pictures))
                    .map_err(|e| e.to_string());
                // A device buffer is one whole picture.
                for picture in pictures.drain(..) {
                    self.handover.put(Delivery::Encoded {
                        picture,
                        capture_us,
                    });
                }
                result
            } else {
                self.convert(&mut converter, &negotiated, frame.data, capture_us)
            };
            key_now |= negotiated.format.is_h264()
                && self.hub.keyframe_due(clock::monotonic_us())
                && last_key_request.is_none_or(|t| t.elapsed() >= KEY_REQUEST_INTERVAL);
            if key_now {
                last_key_request = Some(Instant::now());
                if let Err(e) = device.force_keyframe() {
                    tracing::debug!("{e}");
                }
            }
            match outcome {
                Ok(()) => bad_in_a_row = 0,
                Err(why) => {
                    self.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                    bad_in_a_row += 1;
                    if bad_in_a_row <= 3 {
                        tracing::warn!("camera picture skipped: {why}");
                    }
                    if bad_in_a_row == BAD_FRAMES_LOST {
                        self.handover
                            .put(Delivery::Lost(format!("every picture is broken: {why}")));
                    }
                    if negotiated.format.is_h264() {
                        splitter = AnnexBSplitter::new();
                    }
                }
            }
        }
        Ok(())
    }

    fn convert(
        &self,
        converter: &mut Converter,
        negotiated: &Negotiated,
        data: &[u8],
        capture_us: u64,
    ) -> Result<(), String> {
        let mut frame = self.handover.spare_frame();
        if let Err(e) = converter.to_i420(negotiated, data, &mut frame) {
            self.handover.give_back(frame);
            return Err(e.to_string());
        }
        let replaced = self.handover.put(Delivery::Raw { frame, capture_us });
        self.counters.dropped.fetch_add(replaced, Ordering::Relaxed);
        Ok(())
    }
}

/// How long the publisher waits for a delivery before looking at NO SIGNAL again.
const PUBLISH_POLL: Duration = Duration::from_millis(10);
/// A gap this long since the last encoded picture (nobody watched) starts with an IDR.
const KEY_AFTER_GAP: Duration = Duration::from_millis(500);

fn publish_loop(cfg: &CameraConfig, hub: &Arc<Hub>, status: StatusHandle, handover: &Handover) {
    let mut output = Output::new(hub.clone(), status, cfg.size);
    output.not_yet();
    let mut encoder: Option<(H264Encoder, (usize, usize))> = None;
    let mut last_encoded: Option<Instant> = None;
    loop {
        match handover.take(PUBLISH_POLL) {
            Some(Delivery::Stop) => return,
            Some(Delivery::Lost(why)) => {
                output.lost(&why);
                last_encoded = None;
            }
            Some(Delivery::Encoded {
                picture,
                capture_us,
            }) => output.publish_captured(picture, capture_us),
            Some(Delivery::Raw { frame, capture_us }) => {
                let size = (frame.width, frame.height);
                if encoder.as_ref().is_none_or(|(_, s)| *s != size) {
                    match new_encoder(cfg, size) {
                        Ok(e) => encoder = Some((e, size)),
                        Err(e) => {
                            tracing::error!("camera encoder: {e:#}");
                            output.lost(&format!("encoder: {e:#}"));
                            handover.give_back(frame);
                            continue;
                        }
                    }
                    last_encoded = None;
                }
                let Some((enc, _)) = encoder.as_mut() else {
                    continue;
                };
                if hub.keyframe_due(clock::monotonic_us())
                    || last_encoded.is_none_or(|t| t.elapsed() > KEY_AFTER_GAP)
                {
                    enc.force_keyframe();
                }
                match enc.encode(&frame, capture_us) {
                    Ok(Some(picture)) => {
                        last_encoded = Some(Instant::now());
                        output.publish_captured(picture, capture_us);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!("camera picture not encoded: {e:#}"),
                }
                handover.give_back(frame);
            }
            None => {}
        }
        if !output.is_live() {
            output.idle();
        }
    }
}

fn new_encoder(cfg: &CameraConfig, (width, height): (usize, usize)) -> anyhow::Result<H264Encoder> {
    tracing::info!(width, height, fps = cfg.fps, "camera encoder started");
    H264Encoder::new(&EncoderSettings {
        width: width as u32,
        height: height as u32,
        fps: cfg.fps,
        bitrate_kbps: cfg.bitrate_kbps,
        gop: cfg.gop,
    })
}
