//! The camera source: a capture device (V4L2, or recorded frames in tests).
//!
//! While open, a **capture** thread keeps the device streaming (a camera takes a while
//! to start, so it stays open even without viewers), converts raw pictures to I420
//! while someone watches, and hands them to the runner, which encodes them; H.264 from
//! the device is cut into access units and handed over untouched, with the driver's
//! capture timestamp. Capturing never waits for the encoder: the hand-over keeps only
//! the newest raw picture, so when encoding falls behind older pictures are dropped
//! rather than queued, and delay does not grow.
//!
//! A camera that delivers JPEG also hands each picture, untouched, to its stream's
//! [`JpegTap`] while MJPEG clients want pictures (no decoding, no encoding for them).
//!
//! A device that fails or disappears is closed and, by the runner, opened again with
//! backoff, forever (µStreamer's `--persistent`); viewers stay connected and see NO
//! SIGNAL meanwhile.

pub mod convert;
pub mod device;
pub mod replay;
pub mod v4l2;

use std::collections::VecDeque;

use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use self::convert::Converter;
use self::device::{CaptureDevice, DeviceError, DeviceOpener, Negotiated, PixelFormat};
use super::annexb::AnnexBSplitter;
use super::lifecycle::StatusHandle;
use super::pattern::I420Frame;
use super::runner::{self, Closing, Demand, Next, RunnerConfig, Source};
use crate::media::jpeg_tap::JpegTap;
use crate::media::VideoSettings;
use crate::media::{Hub, Picture};

#[derive(Clone, Debug)]
pub struct CameraConfig {
    /// The size is the NO SIGNAL picture's until the camera has shown its own; the
    /// rest is for pictures peregrine encodes.
    pub video: VideoSettings,
    /// First and longest pause before reopening a lost device.
    pub reopen_min: Duration,
    pub reopen_max: Duration,
}

impl CameraConfig {
    pub fn new(video: VideoSettings) -> CameraConfig {
        CameraConfig {
            video,
            reopen_min: Duration::from_millis(250),
            reopen_max: Duration::from_secs(2),
        }
    }

    /// How the runner makes pictures for this camera.
    pub fn runner(&self) -> RunnerConfig {
        RunnerConfig::new(self.video.size(), self.video)
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

/// Run the camera into `hub` until `stop` is set. Returns the source's thread.
pub fn spawn(
    cfg: CameraConfig,
    opener: Box<dyn DeviceOpener>,
    hub: Arc<Hub>,
    status: StatusHandle,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(std::thread::JoinHandle<()>, Arc<CameraCounters>)> {
    let source = CameraSource::new(&cfg, opener);
    let counters = source.counters.clone();
    let thread = runner::spawn(Box::new(source), cfg.runner(), hub, status, stop)?;
    Ok((thread, counters))
}

/// A capture device as a source.
pub struct CameraSource {
    opener: Box<dyn DeviceOpener>,
    reopen: (Duration, Duration),
    counters: Arc<CameraCounters>,
    shared: Arc<Shared>,
    capture: Option<std::thread::JoinHandle<()>>,
    /// The raw picture lent to the runner, given back for reuse at the next call.
    lent: Option<I420Frame>,
    /// Where a JPEG camera's own pictures go.
    jpeg_tap: Option<Arc<JpegTap>>,
}

impl CameraSource {
    pub fn new(cfg: &CameraConfig, opener: Box<dyn DeviceOpener>) -> CameraSource {
        CameraSource {
            opener,
            reopen: (cfg.reopen_min, cfg.reopen_max),
            counters: Arc::new(CameraCounters::default()),
            shared: Arc::default(),
            capture: None,
            lent: None,
            jpeg_tap: None,
        }
    }

    /// Hand a JPEG camera's pictures to `tap` as they are, while it has clients.
    pub fn with_jpeg_tap(mut self, tap: Arc<JpegTap>) -> CameraSource {
        self.jpeg_tap = Some(tap);
        self
    }

    pub fn counters(&self) -> &Arc<CameraCounters> {
        &self.counters
    }
}

impl Source for CameraSource {
    fn thread_name(&self) -> &'static str {
        "camera"
    }

    fn backoff(&self) -> (Duration, Duration) {
        self.reopen
    }

    fn open(&mut self, demand: &Demand) -> Result<(), String> {
        let device = self.opener.open().map_err(|e| e.to_string())?;
        self.counters.opens.fetch_add(1, Ordering::Relaxed);
        let negotiated = device.negotiated();
        demand.describe(format!(
            "{} {} {}x{}",
            self.opener.name(),
            negotiated.format,
            negotiated.width,
            negotiated.height
        ));
        self.shared.stop.store(false, Ordering::Relaxed);
        self.shared.handover.clear();
        let mut capture = Capture {
            device,
            shared: self.shared.clone(),
            counters: self.counters.clone(),
            jpeg_tap: self.jpeg_tap.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("camera-capture".into())
            .spawn(move || capture.run())
            .map_err(|e| format!("starting the camera capture thread: {e}"))?;
        self.capture = Some(thread);
        Ok(())
    }

    fn next(&mut self, demand: &Demand, deadline: Instant) -> Next<'_> {
        self.shared
            .watching
            .store(demand.watched(), Ordering::Relaxed);
        self.shared
            .want_key
            .store(demand.want_key(), Ordering::Relaxed);
        if let Some(frame) = self.lent.take() {
            self.shared.handover.give_back(frame);
        }
        match self.shared.handover.take(deadline) {
            Some(Delivery::Raw { frame, capture_us }) => {
                let frame = self.lent.insert(frame);
                Next::Raw(frame, capture_us)
            }
            Some(Delivery::Encoded(picture)) => Next::Picture(picture),
            Some(Delivery::Broken(why)) => Next::Failing(why),
            Some(Delivery::Lost(why)) => Next::Lost(why),
            None => Next::Waiting,
        }
    }

    fn close(&mut self, _: Closing) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.capture.take() {
            if thread.join().is_err() {
                tracing::error!("camera capture thread panicked");
            }
        }
        self.shared.handover.clear();
        tracing::info!(device = %self.opener.name(), "camera closed");
    }
}

/// What the capture thread and the source share.
#[derive(Default)]
struct Shared {
    handover: Handover,
    /// Somebody watches: convert raw pictures, pass H.264 on.
    watching: AtomicBool,
    /// A keyframe is wanted: ask an H.264 device for one.
    want_key: AtomicBool,
    /// Close the device.
    stop: AtomicBool,
}

/// What the capture thread hands to the source.
enum Delivery {
    Raw {
        frame: I420Frame,
        capture_us: u64,
    },
    Encoded(Picture),
    /// The device delivers only broken pictures.
    Broken(String),
    /// The device failed; the capture thread has ended.
    Lost(String),
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

    /// The next delivery, waiting until `deadline` at most.
    fn take(&self, deadline: Instant) -> Option<Delivery> {
        let q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (mut q, _) = self
            .ready
            .wait_timeout_while(q, timeout, |q| q.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        q.pop_front()
    }

    fn clear(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).clear();
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

/// One open device, captured on its own thread until it fails or the source closes.
struct Capture {
    device: Box<dyn CaptureDevice>,
    shared: Arc<Shared>,
    counters: Arc<CameraCounters>,
    jpeg_tap: Option<Arc<JpegTap>>,
}

/// A device answers the force-key-frame control a few pictures later; the control is
/// sent again only after this long without a keyframe.
const KEY_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// This many broken pictures in a row and the source counts as lost.
const BAD_FRAMES_LOST: u32 = 30;

impl Capture {
    fn run(&mut self) {
        // While it is open, a JPEG camera feeds the MJPEG clients its own pictures, and
        // a raw camera its pictures before H.264; an H.264 camera leaves them to the tap.
        let format = self.device.negotiated().format;
        let passthrough = self
            .jpeg_tap
            .clone()
            .filter(|_| format == PixelFormat::Mjpeg);
        let raw_tap = self
            .jpeg_tap
            .clone()
            .filter(|_| format != PixelFormat::Mjpeg && !format.is_h264());
        if let Some(tap) = &passthrough {
            tap.set_direct(true);
        }
        if let Some(tap) = &raw_tap {
            tap.set_raw(true);
        }
        let result = self.stream(passthrough.as_deref(), raw_tap.as_deref());
        if let Some(tap) = &passthrough {
            tap.set_direct(false);
        }
        if let Some(tap) = &raw_tap {
            tap.set_raw(false);
        }
        if let Err(e) = result {
            self.shared.handover.put(Delivery::Lost(e.to_string()));
        }
    }

    /// Capture until the source closes (Ok) or the device fails (Err).
    fn stream(
        &mut self,
        passthrough: Option<&JpegTap>,
        raw_tap: Option<&JpegTap>,
    ) -> Result<(), DeviceError> {
        let negotiated = self.device.negotiated();
        let is_h264 = negotiated.format.is_h264();
        let mut converter = Converter::new();
        let mut splitter = AnnexBSplitter::new();
        let mut pictures = Vec::new();
        let mut watching = false;
        let mut bad_in_a_row = 0u32;
        let mut last_key_request: Option<Instant> = None;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let frame = self.device.next_frame()?;
            self.counters.captured.fetch_add(1, Ordering::Relaxed);
            if let Some(tap) = passthrough.filter(|tap| tap.has_clients()) {
                // Only what looks like a JPEG picture; a broken one is counted below
                // when it is converted, or dropped here unseen.
                if frame.data.starts_with(&[0xFF, 0xD8]) {
                    let size = (negotiated.width, negotiated.height);
                    tap.publish_direct(Bytes::copy_from_slice(frame.data), size, frame.capture_us);
                }
            }
            let raw_wanted = raw_tap.filter(|tap| tap.has_clients());
            if !self.shared.watching.load(Ordering::Relaxed) {
                watching = false;
                if let Some(tap) = raw_wanted {
                    // MJPEG clients only: their JPEG from the raw picture, no H.264 at
                    // all. A broken picture is counted when somebody watches.
                    let wanted = Wanted {
                        h264: false,
                        jpeg: Some(tap),
                    };
                    let _ = convert(
                        &self.shared.handover,
                        &self.counters,
                        &mut converter,
                        &negotiated,
                        (frame.data, frame.capture_us),
                        wanted,
                    );
                }
                continue;
            }
            if !watching {
                watching = true;
                // Whoever starts watching needs a picture that stands alone.
                splitter.wait_for_idr();
            }
            let capture_us = frame.capture_us;
            let outcome = if is_h264 {
                let result = splitter
                    .push(frame.data, &mut pictures)
                    .map(|()| splitter.flush(&mut pictures))
                    .map_err(|e| e.to_string());
                // A device buffer is one whole picture.
                for mut picture in pictures.drain(..) {
                    picture.capture_us = capture_us;
                    self.shared.handover.put(Delivery::Encoded(picture));
                }
                result
            } else {
                let wanted = Wanted {
                    h264: true,
                    jpeg: raw_wanted,
                };
                convert(
                    &self.shared.handover,
                    &self.counters,
                    &mut converter,
                    &negotiated,
                    (frame.data, capture_us),
                    wanted,
                )
            };
            let key_now = is_h264
                && self.shared.want_key.load(Ordering::Relaxed)
                && last_key_request.is_none_or(|t| t.elapsed() >= KEY_REQUEST_INTERVAL);
            if key_now {
                last_key_request = Some(Instant::now());
                if let Err(e) = self.device.force_keyframe() {
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
                        self.shared
                            .handover
                            .put(Delivery::Broken(format!("every picture is broken: {why}")));
                    }
                    if is_h264 {
                        splitter = AnnexBSplitter::new();
                    }
                }
            }
        }
        Ok(())
    }
}

/// Who wants a raw picture converted.
struct Wanted<'a> {
    /// The H.264 encoder (somebody watches the stream).
    h264: bool,
    /// MJPEG clients, through the stream's tap.
    jpeg: Option<&'a JpegTap>,
}

/// Convert one raw buffer (with its capture time) to I420, copy it to the tap if its
/// clients want it, and hand it over to be encoded if somebody watches.
fn convert(
    handover: &Handover,
    counters: &CameraCounters,
    converter: &mut Converter,
    negotiated: &Negotiated,
    (data, capture_us): (&[u8], u64),
    wanted: Wanted,
) -> Result<(), String> {
    let mut frame = handover.spare_frame();
    if let Err(e) = converter.to_i420(negotiated, data, &mut frame) {
        handover.give_back(frame);
        return Err(e.to_string());
    }
    if let Some(tap) = wanted.jpeg {
        tap.publish_raw(&frame, capture_us);
    }
    if wanted.h264 {
        let replaced = handover.put(Delivery::Raw { frame, capture_us });
        counters.dropped.fetch_add(replaced, Ordering::Relaxed);
    } else {
        handover.give_back(frame);
    }
    Ok(())
}
