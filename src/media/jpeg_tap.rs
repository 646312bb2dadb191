//! A stream's JPEG pictures, made only while somebody wants them (MJPEG `/stream`
//! clients, `/snapshot` requests) and shared by all of them.
//!
//! While it has clients, a tap takes its pictures from one of two places:
//!
//! * a camera that delivers JPEG hands its pictures over untouched
//!   ([`JpegTap::publish_direct`]), with no decoding or encoding at all;
//! * a camera that delivers raw pictures hands over its I420 copies
//!   ([`JpegTap::publish_raw`]), encoded as JPEG with no H.264 in between;
//! * otherwise the tap subscribes to the stream's hub, decodes the H.264 on a thread of
//!   its own and encodes the newest picture as JPEG, at most `max_fps` times a second.
//!
//! When the last client leaves, the tap lets go of the hub, so the source idles as it
//! does when nobody watches, and forgets its last picture (it is no longer live).
//! Clients read through a `watch` channel: each sees only the newest picture, so one
//! that reads slowly skips pictures and never holds anything back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use tokio::sync::{watch, Notify};

use super::clock;
use super::hub::{Hub, StartAt, Subscriber};
use super::jpeg::{JpegEncoder, Planes};
use super::yuv::I420Frame;
use super::Picture;
use crate::ratelog::{RateLimited, PERIOD};

/// One JPEG picture of a stream.
#[derive(Clone, Debug)]
pub struct JpegPicture {
    pub data: Bytes,
    pub width: u32,
    pub height: u32,
    /// The source's own picture, not NO SIGNAL.
    pub online: bool,
    /// When the picture was captured (CLOCK_MONOTONIC µs).
    pub capture_us: u64,
    /// When encoding began and ended (CLOCK_MONOTONIC µs); equal to the capture time
    /// for pictures the camera encoded.
    pub encode_begin_us: u64,
    pub encode_end_us: u64,
}

/// How a tap makes its pictures.
#[derive(Clone, Copy, Debug)]
pub struct TapConfig {
    /// JPEG quality, 1..=100.
    pub quality: u8,
    /// Most pictures encoded per second.
    pub max_fps: u32,
}

/// Counts for `/state`.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct TapStats {
    pub clients: usize,
    pub running: bool,
    /// The camera hands over its own JPEG pictures.
    pub passthrough: bool,
    /// The camera hands over its raw pictures, encoded as JPEG with no H.264 between.
    pub raw_input: bool,
    pub decoded: u64,
    pub encoded: u64,
    pub direct: u64,
}

#[derive(Default)]
struct TapState {
    clients: usize,
    /// A worker thread is alive.
    running: bool,
}

pub struct JpegTap {
    name: String,
    hub: Arc<Hub>,
    cfg: TapConfig,
    latest: watch::Sender<Option<Arc<JpegPicture>>>,
    state: Mutex<TapState>,
    /// Wakes the worker: the last client left, or the camera started or stopped
    /// handing over JPEG.
    wake: Notify,
    direct: AtomicBool,
    /// The camera hands over raw pictures ([`JpegTap::publish_raw`]).
    raw: AtomicBool,
    /// The newest raw picture not yet encoded, with its capture time; and a spare
    /// buffer to copy the next one into.
    raw_slot: Mutex<RawSlot>,
    decoded: AtomicU64,
    encoded: AtomicU64,
    direct_count: AtomicU64,
    errors: RateLimited,
}

impl JpegTap {
    /// The tap of the stream `name`, fed by `hub`.
    pub fn new(name: impl Into<String>, hub: Arc<Hub>, cfg: TapConfig) -> Arc<JpegTap> {
        Arc::new(JpegTap {
            name: name.into(),
            hub,
            cfg: TapConfig {
                quality: cfg.quality.clamp(1, 100),
                max_fps: cfg.max_fps.max(1),
            },
            latest: watch::Sender::new(None),
            state: Mutex::default(),
            wake: Notify::new(),
            direct: AtomicBool::new(false),
            raw: AtomicBool::new(false),
            raw_slot: Mutex::new(RawSlot::new(cfg.max_fps)),
            decoded: AtomicU64::new(0),
            encoded: AtomicU64::new(0),
            direct_count: AtomicU64::new(0),
            errors: RateLimited::new(PERIOD),
        })
    }

    fn state(&self) -> MutexGuard<'_, TapState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Become a client: pictures are made until every client has dropped its handle.
    /// Must be called within a Tokio runtime (the worker waits on the hub through it).
    pub fn join(self: &Arc<Self>) -> JpegClient {
        let rx = self.latest.subscribe();
        let mut state = self.state();
        if state.clients == 0 {
            // A camera's picture that slipped in as the last client left is not live.
            self.latest.send_replace(None);
        }
        state.clients += 1;
        if !state.running && !self.direct.load(Ordering::SeqCst) {
            state.running = self.spawn_worker();
        }
        drop(state);
        JpegClient {
            tap: self.clone(),
            rx,
        }
    }

    fn leave(&self) {
        let mut state = self.state();
        state.clients -= 1;
        if state.clients == 0 {
            if !state.running {
                // Nothing will clear the picture for us (the camera hands them over).
                self.latest.send_replace(None);
            }
            self.wake.notify_one();
        }
    }

    /// Whether anybody wants pictures now; a camera hands its JPEG over only then.
    pub fn has_clients(&self) -> bool {
        self.state().clients > 0
    }

    /// For a camera that delivers JPEG: from now on (`true`) its pictures come through
    /// [`JpegTap::publish_direct`] and nothing is decoded; `false` when it closes, and
    /// clients get the hub's pictures (NO SIGNAL) again.
    pub fn set_direct(self: &Arc<Self>, direct: bool) {
        self.direct.store(direct, Ordering::SeqCst);
        let mut state = self.state();
        if direct {
            self.wake.notify_one();
        } else if state.clients > 0 && !state.running {
            state.running = self.spawn_worker();
        }
    }

    /// For a camera that delivers raw pictures: from now on (`true`) its pictures come
    /// through [`JpegTap::publish_raw`] rather than from the hub's H.264; `false` when
    /// it closes, and clients get the hub's pictures (NO SIGNAL) again.
    pub fn set_raw(self: &Arc<Self>, raw: bool) {
        self.raw.store(raw, Ordering::SeqCst);
        if !raw {
            self.raw_slot().pending = None;
        }
        let mut state = self.state();
        if state.clients > 0 && !state.running {
            state.running = self.spawn_worker();
        } else {
            // The worker lets go of the hub, or takes it again.
            self.wake.notify_one();
        }
    }

    /// A camera's raw picture, copied for the worker to encode, at most `max_fps` a
    /// second (the camera's thread only copies; the worker encodes the newest).
    pub fn publish_raw(&self, frame: &I420Frame, capture_us: u64) {
        let mut slot = self.raw_slot();
        if !slot.gate.admit(capture_us) {
            return;
        }
        let mut copy = slot.spare.take().unwrap_or_else(|| I420Frame::new(0, 0));
        copy.clone_from(frame);
        if let Some((replaced, _)) = slot.pending.replace((copy, capture_us)) {
            slot.spare = Some(replaced);
        }
        drop(slot);
        self.wake.notify_one();
    }

    fn raw_slot(&self) -> MutexGuard<'_, RawSlot> {
        self.raw_slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A camera's own JPEG picture, passed to clients untouched.
    pub fn publish_direct(&self, data: Bytes, (width, height): (u32, u32), capture_us: u64) {
        self.direct_count.fetch_add(1, Ordering::Relaxed);
        self.latest.send_replace(Some(Arc::new(JpegPicture {
            data,
            width,
            height,
            online: true,
            capture_us,
            encode_begin_us: capture_us,
            encode_end_us: capture_us,
        })));
    }

    pub fn stats(&self) -> TapStats {
        let state = self.state();
        TapStats {
            clients: state.clients,
            running: state.running,
            passthrough: self.direct.load(Ordering::Relaxed),
            raw_input: self.raw.load(Ordering::Relaxed),
            decoded: self.decoded.load(Ordering::Relaxed),
            encoded: self.encoded.load(Ordering::Relaxed),
            direct: self.direct_count.load(Ordering::Relaxed),
        }
    }

    pub fn quality(&self) -> u8 {
        self.cfg.quality
    }

    /// Start the worker; false when no thread could be made (clients then get nothing,
    /// and the next client tries again).
    fn spawn_worker(self: &Arc<Self>) -> bool {
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(stream = %self.name, "JPEG pictures need the runtime: {e}");
                return false;
            }
        };
        let tap = self.clone();
        let spawned = std::thread::Builder::new()
            .name("jpeg-tap".into())
            .spawn(move || tap.work(&runtime));
        match spawned {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(stream = %self.name, "cannot start JPEG encoding: {e}");
                false
            }
        }
    }

    /// The worker: decode the hub's H.264, encode JPEG, until nobody wants pictures or
    /// the camera hands its own over.
    fn work(self: Arc<Self>, runtime: &tokio::runtime::Handle) {
        tracing::debug!(stream = %self.name, "JPEG encoding starts");
        let mut maker = match Maker::new(self.cfg) {
            Ok(maker) => Some(maker),
            Err(e) => {
                tracing::error!(stream = %self.name, "cannot start the H.264 decoder: {e}");
                None
            }
        };
        let mut sub: Option<Subscriber> = None;
        loop {
            let from_camera = self.direct.load(Ordering::SeqCst) || self.raw.load(Ordering::SeqCst);
            if sub.is_none() && maker.is_some() && !from_camera {
                sub = Some(self.hub.subscribe(StartAt::Gop));
            }
            let next = runtime.block_on(async {
                match sub.as_mut() {
                    Some(sub) => tokio::select! {
                        biased;
                        _ = self.wake.notified() => None,
                        picture = sub.recv() => Some(picture),
                    },
                    None => {
                        self.wake.notified().await;
                        None
                    }
                }
            });
            match next {
                Some(Some(picture)) => {
                    let behind = sub.as_ref().map_or(0, |s| s.waiting());
                    if let Some(maker) = maker.as_mut() {
                        self.make(maker, &picture, behind);
                    }
                }
                // The hub is gone: the server is stopping.
                Some(None) => {
                    self.stop();
                    return;
                }
                None => {
                    if self.direct.load(Ordering::SeqCst) || self.raw.load(Ordering::SeqCst) {
                        sub = None;
                    }
                    if let Some(maker) = maker.as_mut() {
                        self.encode_raw(maker);
                    }
                    if self.stop_if_unwanted() {
                        tracing::debug!(stream = %self.name, "JPEG encoding stops");
                        return;
                    }
                }
            }
        }
    }

    /// Encode the camera's newest raw picture, if one waits.
    fn encode_raw(&self, maker: &mut Maker) {
        let Some((frame, capture_us)) = self.raw_slot().pending.take() else {
            return;
        };
        if self.raw.load(Ordering::SeqCst) {
            match maker.encode_raw(&frame, capture_us) {
                Ok(jpeg) => {
                    self.encoded.fetch_add(1, Ordering::Relaxed);
                    self.latest.send_replace(Some(Arc::new(jpeg)));
                }
                Err(e) => {
                    if let Some(times) = self.errors.hit() {
                        tracing::warn!(stream = %self.name, times, "no JPEG of a picture: {e}");
                    }
                }
            }
        }
        self.raw_slot().spare = Some(frame);
    }

    fn make(&self, maker: &mut Maker, picture: &Picture, behind: usize) {
        match maker.take(picture, behind) {
            Ok(Made::Nothing) => {}
            Ok(Made::Decoded) => {
                self.decoded.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Made::Jpeg(jpeg)) => {
                self.decoded.fetch_add(1, Ordering::Relaxed);
                self.encoded.fetch_add(1, Ordering::Relaxed);
                if !self.direct.load(Ordering::SeqCst) && !self.raw.load(Ordering::SeqCst) {
                    self.latest.send_replace(Some(Arc::new(jpeg)));
                }
            }
            Err(e) => {
                if let Some(times) = self.errors.hit() {
                    tracing::warn!(stream = %self.name, times, "no JPEG of a picture: {e}");
                }
            }
        }
    }

    /// Stop when nobody wants pictures or the camera hands them over; true if stopped.
    fn stop_if_unwanted(&self) -> bool {
        let mut state = self.state();
        if state.clients > 0 && !self.direct.load(Ordering::SeqCst) {
            return false;
        }
        if state.clients == 0 {
            self.latest.send_replace(None);
        }
        state.running = false;
        true
    }

    fn stop(&self) {
        self.latest.send_replace(None);
        self.state().running = false;
    }
}

/// One client of a tap; dropping it leaves.
pub struct JpegClient {
    tap: Arc<JpegTap>,
    rx: watch::Receiver<Option<Arc<JpegPicture>>>,
}

impl JpegClient {
    /// The newest picture, if there is one; marks it seen.
    pub fn latest(&mut self) -> Option<Arc<JpegPicture>> {
        self.rx.borrow_and_update().clone()
    }

    /// Wait for a picture newer than the last one seen. `None` only when the tap is gone.
    pub async fn next(&mut self) -> Option<Arc<JpegPicture>> {
        loop {
            self.rx.changed().await.ok()?;
            if let Some(picture) = self.rx.borrow_and_update().clone() {
                return Some(picture);
            }
        }
    }

    pub fn tap(&self) -> &Arc<JpegTap> {
        &self.tap
    }
}

impl Drop for JpegClient {
    fn drop(&mut self) {
        self.tap.leave();
    }
}

/// What one access unit gave.
enum Made {
    /// Not decodable yet (waiting for a keyframe) or not a video picture.
    Nothing,
    /// Decoded, not encoded (too soon after the last JPEG, or newer pictures wait).
    Decoded,
    Jpeg(JpegPicture),
}

/// Decoder, encoder and rate limit of one worker.
struct Maker {
    decoder: Decoder,
    encoder: JpegEncoder,
    gate: RateGate,
}

/// Pictures waiting behind the current one are skipped for encoding, but no longer
/// than this, so a decoder that never catches up still shows something.
const MAX_SKIP_US: u64 = 1_000_000;

impl Maker {
    fn new(cfg: TapConfig) -> Result<Maker, openh264::Error> {
        Ok(Maker {
            decoder: Decoder::new()?,
            encoder: JpegEncoder::new(cfg.quality),
            gate: RateGate::new(cfg.max_fps),
        })
    }

    fn take(&mut self, picture: &Picture, behind: usize) -> Result<Made, String> {
        if picture.kind != super::MediaKind::Video {
            return Ok(Made::Nothing);
        }
        let Some(yuv) = self
            .decoder
            .decode(&picture.data)
            .map_err(|e| e.to_string())?
        else {
            return Ok(Made::Nothing);
        };
        let t = picture.capture_us;
        let stale = t.saturating_sub(self.gate.last_us) >= MAX_SKIP_US;
        if (behind > 0 && !stale) || !self.gate.admit(t) {
            return Ok(Made::Decoded);
        }
        let (width, height) = yuv.dimensions();
        let (ys, us, vs) = yuv.strides();
        let planes = Planes {
            width,
            height,
            y: yuv.y(),
            u: yuv.u(),
            v: yuv.v(),
            strides: (ys, us, vs),
        };
        let encode_begin_us = clock::monotonic_us();
        let data = self.encoder.encode(planes).map_err(|e| e.to_string())?;
        Ok(Made::Jpeg(JpegPicture {
            data,
            width: width as u32,
            height: height as u32,
            online: picture.online(),
            capture_us: picture.capture_us,
            encode_begin_us,
            encode_end_us: clock::monotonic_us(),
        }))
    }
}

impl Maker {
    /// A camera's raw picture as JPEG (the camera's thread already kept to the rate).
    fn encode_raw(&mut self, frame: &I420Frame, capture_us: u64) -> Result<JpegPicture, String> {
        let planes = Planes {
            width: frame.width,
            height: frame.height,
            y: &frame.y,
            u: &frame.u,
            v: &frame.v,
            strides: (frame.width, frame.width / 2, frame.width / 2),
        };
        let encode_begin_us = clock::monotonic_us();
        let data = self.encoder.encode(planes).map_err(|e| e.to_string())?;
        Ok(JpegPicture {
            data,
            width: frame.width as u32,
            height: frame.height as u32,
            online: true,
            capture_us,
            encode_begin_us,
            encode_end_us: clock::monotonic_us(),
        })
    }
}

/// The camera's newest raw picture for the worker, and a buffer to reuse.
struct RawSlot {
    pending: Option<(I420Frame, u64)>,
    spare: Option<I420Frame>,
    /// Copies kept to the tap's rate.
    gate: RateGate,
}

impl RawSlot {
    fn new(max_fps: u32) -> RawSlot {
        RawSlot {
            pending: None,
            spare: None,
            gate: RateGate::new(max_fps),
        }
    }
}

/// At most `fps` pictures a second on average, by capture time: a picture may come a
/// quarter interval early (capture jitter), but credit is not banked over a pause.
struct RateGate {
    interval_us: u64,
    next_us: u64,
    last_us: u64,
}

impl RateGate {
    fn new(fps: u32) -> RateGate {
        RateGate {
            interval_us: 1_000_000 / u64::from(fps.max(1)),
            next_us: 0,
            last_us: 0,
        }
    }

    fn admit(&mut self, t_us: u64) -> bool {
        let slack = self.interval_us / 4;
        if t_us + slack < self.next_us {
            return false;
        }
        self.next_us = self.next_us.max(t_us.saturating_sub(slack)) + self.interval_us;
        self.last_us = t_us;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::encoder::H264Encoder;
    use crate::media::yuv::I420Frame;
    use crate::media::VideoSettings;
    use std::time::Duration;

    fn tap_of(hub: &Arc<Hub>) -> Arc<JpegTap> {
        let cfg = TapConfig {
            quality: 80,
            max_fps: 30,
        };
        JpegTap::new("test", hub.clone(), cfg)
    }

    /// Publish H.264 pictures of a grey 64x48 picture while `until` says so.
    fn publish_until(hub: &Arc<Hub>, until: impl Fn() -> bool) {
        let settings = VideoSettings {
            width: 64,
            height: 48,
            fps: 30,
            bitrate_kbps: 200,
            gop: 10,
        };
        let mut encoder = H264Encoder::new(&settings).unwrap();
        let frame = I420Frame::new(64, 48);
        let mut t = clock::monotonic_us();
        let mut seq = 0;
        while !until() {
            if hub.keyframe_wanted() {
                encoder.force_keyframe();
            }
            if let Some(mut picture) = encoder.encode(&frame, t).unwrap() {
                picture.seq = seq;
                seq += 1;
                hub.publish_at(picture, t);
            }
            t += 33_333;
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_gets_jpeg_while_it_stays_and_the_hub_is_let_go_after() {
        let hub = Hub::new(30);
        let tap = tap_of(&hub);
        assert!(!hub.has_subscribers(), "nothing is made for nobody");
        let mut client = tap.join();
        let done = Arc::new(AtomicBool::new(false));
        let publisher = std::thread::spawn({
            let (hub, done) = (hub.clone(), done.clone());
            move || publish_until(&hub, || done.load(Ordering::Relaxed))
        });
        let picture = tokio::time::timeout(Duration::from_secs(20), client.next())
            .await
            .expect("a JPEG within 20 s")
            .expect("tap alive");
        assert_eq!((picture.width, picture.height), (64, 48));
        assert!(picture.online && picture.data.starts_with(&[0xff, 0xd8]));
        let second = tap.join();
        drop(client);
        assert!(tap.stats().running, "one client is left");
        drop(second);
        let stopped = async {
            while tap.stats().running || hub.has_subscribers() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), stopped)
            .await
            .expect("the tap stops and lets go of the hub");
        let mut late = tap.join();
        assert!(
            late.latest().is_none(),
            "no stale picture for the next client"
        );
        drop(late);
        done.store(true, Ordering::Relaxed);
        publisher.join().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_camera_jpeg_passes_through_untouched_and_nothing_is_decoded() {
        let hub = Hub::new(30);
        let tap = tap_of(&hub);
        tap.set_direct(true);
        let mut client = tap.join();
        assert!(!hub.has_subscribers() && tap.has_clients());
        let jpeg = Bytes::from_static(b"\xff\xd8camera bytes\xff\xd9");
        tap.publish_direct(jpeg.clone(), (640, 480), 42);
        let got = client.next().await.unwrap();
        assert_eq!(
            (got.data.clone(), got.width, got.capture_us),
            (jpeg, 640, 42)
        );
        // The camera closes: the hub's pictures (NO SIGNAL) are decoded again.
        tap.set_direct(false);
        assert!(tap.stats().running);
        drop(client);
    }

    fn admitted(fps: u32, source_fps: u64, jitter: &[i64]) -> usize {
        let mut gate = RateGate::new(fps);
        let step = 1_000_000 / source_fps;
        (0..source_fps)
            .filter(|&i| {
                let j = jitter[i as usize % jitter.len()];
                gate.admit((10_000_000 + i * step).saturating_add_signed(j))
            })
            .count()
    }

    #[test]
    fn the_rate_gate_keeps_every_picture_at_the_source_rate_despite_jitter() {
        assert_eq!(admitted(30, 30, &[0, 3_000, -3_000, 1_000]), 30);
    }

    #[test]
    fn the_rate_gate_holds_a_faster_source_to_the_limit() {
        let n = admitted(30, 100, &[0]);
        assert!((29..=31).contains(&n), "{n} a second");
        let n = admitted(5, 30, &[0, 2_000]);
        assert!((5..=6).contains(&n), "{n} a second");
    }

    #[test]
    fn the_rate_gate_banks_no_credit_over_a_pause() {
        let mut gate = RateGate::new(10);
        assert!(gate.admit(1_000_000));
        // Five seconds of nothing, then pictures at 100 fps: still 10 a second.
        let burst = (0..100)
            .filter(|i| gate.admit(6_000_000 + i * 10_000))
            .count();
        assert!((10..=11).contains(&burst), "{burst}");
    }
}
