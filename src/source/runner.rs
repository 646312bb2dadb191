//! The one way every source runs: a [`Source`] only opens and hands over pictures; the
//! runner, on the source's own thread, owns everything around that:
//!
//! * running only while somebody watches, for sources that say so ([`RunWhen`]);
//! * opening again with backoff when opening fails or the source is lost;
//! * liveness: an open source with no picture for [`STALL`] is lost;
//! * NO SIGNAL pictures while the source is gone and somebody watches;
//! * encoding raw pictures (test pattern, a camera's raw formats) with the stream's
//!   [`crate::media::encoder`] (openh264 or the V4L2 M2M encoder), keyframes when the
//!   hub asks and when watching starts; a picture the encoder fails on is NO SIGNAL;
//! * numbering and publishing into the hub, and the status `/state` reports.
//!
//! The runner does not look at the hub again and again: it waits on [`Hub::demand`],
//! which is notified when watching starts or stops and when a keyframe is asked for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::lifecycle::{Backoff, Publisher, StatusHandle};
use crate::media::encoder::{EncoderFactory, H264EncoderChoice, PictureEncoder};
use crate::media::yuv::I420Frame;
use crate::media::VideoSettings;
use crate::media::{clock, Hub, Picture};
use crate::ratelog::RateLimited;

/// An open source with no picture for this long is lost.
pub const STALL: Duration = Duration::from_secs(2);
/// Longest the runner goes without looking at `stop`.
const STOP_POLL: Duration = Duration::from_millis(100);
/// While viewers see NO SIGNAL, how soon the runner looks again whether one of them
/// waits for a keyframe (a source blocked on its input is not woken by the request).
const NO_SIGNAL_POLL: Duration = Duration::from_millis(50);
/// Encoder failures are logged at most this often.
const ENCODE_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// When a source runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunWhen {
    /// Open all the time (a camera takes a while to start; a pushing encoder must be
    /// read whether or not anyone watches).
    Always,
    /// Open only while somebody watches, closed otherwise (nothing is made for nobody).
    WhileWatched,
}

/// What a source gives the runner.
pub enum Next<'a> {
    /// An encoded picture, stamped with its capture time.
    Picture(Picture),
    /// A raw picture captured at `capture_us`, for the runner to encode.
    Raw(&'a I420Frame, u64),
    /// Nothing before the deadline.
    Waiting,
    /// The source is open but what it delivers is unusable; viewers get NO SIGNAL
    /// until it delivers pictures again.
    Failing(String),
    /// The source is gone (disconnected, unplugged, failed): closed, and opened again
    /// after a backoff.
    Lost(String),
    /// The source must be opened again at once (e.g. a memsink recreated by its
    /// writer); not a loss.
    Reopen,
    /// The source is gone for good (standard input ended): NO SIGNAL until shutdown.
    Ended(String),
}

/// Why the runner closes a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    /// Nobody watches a [`RunWhen::WhileWatched`] source.
    NobodyWatches,
    /// The source was lost or ended.
    Lost,
    /// The source asked to be opened again.
    Reopen,
    /// The runner stops.
    Stopping,
}

/// What the outputs want of a source, for it to read while it works or waits.
pub struct Demand<'a> {
    hub: &'a Hub,
    stop: &'a AtomicBool,
    /// Make (or ask the device for) a keyframe now.
    want_key: bool,
    status: &'a StatusHandle,
}

impl Demand<'_> {
    /// Somebody watches (or holds the source open).
    pub fn watched(&self) -> bool {
        self.hub.has_subscribers()
    }

    /// A keyframe is wanted now: the stream (re)starts or a viewer asked for one.
    pub fn want_key(&self) -> bool {
        self.want_key
    }

    /// When a requested keyframe may be made, if one is requested.
    pub fn keyframe_due_at(&self) -> Option<Instant> {
        let due_us = self.hub.keyframe_due_at()?;
        let now_us = clock::monotonic_us();
        Some(Instant::now() + Duration::from_micros(due_us.saturating_sub(now_us)))
    }

    /// The runner is stopping: return soon.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Note this before looking at the demand, then pass it to [`Demand::wait`].
    pub fn seen(&self) -> u64 {
        self.hub.demand().seen()
    }

    /// Sleep until `until`, or until the demand changed after `seen` (somebody started
    /// or stopped watching, a keyframe was requested). True when it changed.
    pub fn wait(&self, seen: u64, until: Instant) -> bool {
        self.hub.demand().wait(seen, until)
    }

    /// Name the source by what it really uses, e.g. the port a `:0` listener got or
    /// the camera's negotiated format.
    pub fn describe(&self, kind: String) {
        self.status.set_kind(kind);
    }

    /// What an RTP ingest received, for `/state`.
    pub fn report_rtp(&self, rtp: super::rtp_listen::RtpIngestStatus) {
        self.status.set_rtp(rtp);
    }
}

/// A source of pictures. It opens, hands over pictures and closes; the runner does the
/// rest (see the module documentation). Calls come from the runner's thread only.
pub trait Source: Send {
    /// The thread's name.
    fn thread_name(&self) -> &'static str;

    /// When the source runs.
    fn run_when(&self) -> RunWhen {
        RunWhen::Always
    }

    /// A generator that cannot be lost (the test pattern): live from the start with
    /// this size and rate, never NO SIGNAL.
    fn generated(&self) -> Option<(u32, u32, u32)> {
        None
    }

    /// The first and longest pause before opening again.
    fn backoff(&self) -> (Duration, Duration) {
        (Duration::from_millis(250), Duration::from_secs(5))
    }

    /// After opening, NO SIGNAL waits this long for a first picture: a source that
    /// delivers at once shows its own picture first, not a placeholder.
    fn no_signal_grace(&self) -> Duration {
        Duration::ZERO
    }

    /// Start delivering (connect, open the device or the sink). An error says why not.
    fn open(&mut self, demand: &Demand) -> Result<(), String>;

    /// The next picture, waiting no later than `deadline`.
    fn next(&mut self, demand: &Demand, deadline: Instant) -> Next<'_>;

    /// Stop delivering, for `why`.
    fn close(&mut self, why: Closing) {
        let _ = why;
    }
}

/// How the runner makes pictures for a source.
#[derive(Clone)]
pub struct RunnerConfig {
    /// Size of the NO SIGNAL picture until the source has shown its own.
    pub fallback_size: (u32, u32),
    /// For raw pictures; the encoded size is each picture's own.
    pub encoder: VideoSettings,
    /// An open source with no picture for this long is lost.
    pub stall: Duration,
    /// Makes the encoder of raw pictures (openh264 unless configured otherwise).
    pub encoders: EncoderFactory,
}

impl RunnerConfig {
    pub fn new(fallback_size: (u32, u32), encoder: VideoSettings) -> RunnerConfig {
        RunnerConfig {
            fallback_size,
            encoder,
            stall: STALL,
            encoders: H264EncoderChoice::Cpu.factory(),
        }
    }
}

/// Run `source` on its own thread until `stop` is set.
pub fn spawn(
    source: Box<dyn Source>,
    cfg: RunnerConfig,
    hub: Arc<Hub>,
    status: StatusHandle,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let name = source.thread_name();
    let runner = Runner::new(source, cfg, hub, status, stop);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || runner.run())
        .with_context(|| format!("starting the {name} thread"))
}

struct Runner {
    source: Box<dyn Source>,
    cfg: RunnerConfig,
    out: Publisher,
    stop: Arc<AtomicBool>,
    backoff: Backoff,
    open: bool,
    /// When to try opening again.
    retry_at: Option<Instant>,
    ended: bool,
    opened_at: Instant,
    last_picture: Instant,
    /// Somebody watched at the last look.
    watched: bool,
    /// Ask for a keyframe until one is published: the stream (re)starts.
    key_pending: bool,
    /// Drop pictures until a keyframe: what comes after a loss refers to pictures the
    /// viewers never got.
    drop_until_key: bool,
    /// For raw pictures, with the size it encodes.
    encoder: Option<Box<dyn PictureEncoder>>,
    encode_errors: RateLimited,
    /// The last raw picture failed to encode (NO SIGNAL until one does).
    encoder_failing: bool,
}

impl Runner {
    fn new(
        source: Box<dyn Source>,
        cfg: RunnerConfig,
        hub: Arc<Hub>,
        status: StatusHandle,
        stop: Arc<AtomicBool>,
    ) -> Runner {
        let (min, max) = source.backoff();
        let now = Instant::now();
        Runner {
            source,
            out: Publisher::new(hub, status, cfg.fallback_size),
            cfg,
            stop,
            backoff: Backoff::new(min, max),
            open: false,
            retry_at: None,
            ended: false,
            opened_at: now,
            last_picture: now,
            watched: false,
            key_pending: true,
            drop_until_key: false,
            encoder: None,
            encode_errors: RateLimited::new(ENCODE_ERROR_LOG_EVERY),
            encoder_failing: false,
        }
    }

    fn run(mut self) {
        let generated = self.source.generated();
        match generated {
            Some((w, h, fps)) => self.out.status().set_live(w, h, Some(f64::from(fps))),
            None => self.out.not_yet(),
        }
        let hub = self.out.hub().clone();
        let status = self.out.status().clone();
        let stop = self.stop.clone();
        while !stop.load(Ordering::Relaxed) {
            let seen = hub.demand().seen();
            let watched = hub.has_subscribers();
            if watched && !self.watched {
                // Whoever starts watching needs a picture that stands alone.
                self.key_pending = true;
            }
            self.watched = watched;
            let now = Instant::now();
            let now_us = clock::monotonic_us();

            if self.source.run_when() == RunWhen::WhileWatched && !watched {
                if self.open {
                    self.close(Closing::NobodyWatches);
                }
                hub.demand().wait(seen, now + STOP_POLL);
                continue;
            }
            let demand = Demand {
                hub: &hub,
                stop: &stop,
                want_key: self.key_pending || hub.keyframe_due(now_us),
                status: &status,
            };
            if !self.open && !self.ended && self.retry_at.is_none_or(|t| now >= t) {
                match self.source.open(&demand) {
                    Ok(()) => {
                        self.open = true;
                        self.retry_at = None;
                        self.opened_at = now;
                        self.last_picture = now;
                        self.key_pending = true;
                    }
                    Err(why) => {
                        self.out.lost(&why);
                        self.retry_at = Some(now + self.backoff.next_delay());
                    }
                }
            }
            let deadline = self.deadline(now, now_us, generated.is_some());
            if self.open {
                let demand = Demand {
                    want_key: self.key_pending || hub.keyframe_due(clock::monotonic_us()),
                    ..demand
                };
                self.take_next(&demand, deadline);
            } else {
                hub.demand().wait(seen, deadline);
            }
            if generated.is_none() {
                self.check_liveness();
                let grace = self.open && self.opened_at.elapsed() < self.source.no_signal_grace();
                if watched && !grace {
                    self.out.show_no_signal(clock::monotonic_us());
                }
            }
        }
        if self.open {
            self.close(Closing::Stopping);
        }
        tracing::info!("source stopped");
    }

    /// When the runner must look again: the next NO SIGNAL picture, the liveness
    /// limit, the next attempt to open, and `stop` in any case.
    fn deadline(&self, now: Instant, now_us: u64, generated: bool) -> Instant {
        let mut deadline = now + STOP_POLL;
        if !generated {
            if let Some(due_us) = self.out.no_signal_due_us(now_us) {
                if self.watched {
                    let until_due = Duration::from_micros(due_us.saturating_sub(now_us));
                    deadline = deadline.min(now + until_due.min(NO_SIGNAL_POLL));
                }
            }
            if self.open && self.out.is_live() {
                deadline = deadline.min(self.last_picture + self.cfg.stall);
            }
        }
        if let (false, Some(retry)) = (self.open, self.retry_at) {
            deadline = deadline.min(retry);
        }
        deadline
    }

    fn take_next(&mut self, demand: &Demand, deadline: Instant) {
        match self.source.next(demand, deadline) {
            Next::Picture(picture) => {
                self.last_picture = Instant::now();
                self.publish(picture);
            }
            Next::Raw(frame, capture_us) => {
                self.last_picture = Instant::now();
                let hub = self.out.hub();
                let key = self.key_pending || hub.keyframe_due(clock::monotonic_us());
                let encoded = encode(&mut self.encoder, &self.cfg, frame, capture_us, key);
                match encoded {
                    Ok(Some(picture)) => {
                        self.encoder_failing = false;
                        self.publish(picture);
                    }
                    Ok(None) => tracing::trace!("the encoder skipped a picture"),
                    Err(e) => {
                        if let Some(count) = self.encode_errors.hit() {
                            tracing::warn!(failures = count, "picture not encoded: {e:#}");
                        }
                        // Viewers see NO SIGNAL, /state says why, and the video resumes
                        // at a keyframe once the encoder works again.
                        if !std::mem::replace(&mut self.encoder_failing, true) {
                            self.out.lost(&format!("encoder: {e:#}"));
                        }
                        self.drop_until_key = true;
                        self.key_pending = true;
                    }
                }
            }
            Next::Waiting => {}
            Next::Failing(why) => {
                self.out.lost(&why);
                self.drop_until_key = true;
                self.key_pending = true;
            }
            Next::Lost(why) => {
                self.close(Closing::Lost);
                self.out.lost(&why);
                self.retry_at = Some(Instant::now() + self.backoff.next_delay());
            }
            Next::Reopen => self.close(Closing::Reopen),
            Next::Ended(why) => {
                self.close(Closing::Lost);
                self.ended = true;
                self.out.lost(&why);
            }
        }
    }

    fn publish(&mut self, picture: Picture) {
        if self.drop_until_key && !picture.key {
            return;
        }
        let key = picture.key;
        if self.out.publish(picture, clock::monotonic_us()) {
            self.backoff.reset();
            if key {
                self.key_pending = false;
                self.drop_until_key = false;
            }
        }
    }

    /// An open source that stopped delivering is lost; it stays open (a connection
    /// may come back to life), and what it sends next must start at a keyframe.
    fn check_liveness(&mut self) {
        let stall = self.cfg.stall;
        if self.open && self.out.is_live() && self.last_picture.elapsed() > stall {
            self.out
                .lost(&format!("no pictures for {} s", stall.as_secs_f32()));
            self.drop_until_key = true;
            self.key_pending = true;
        }
    }

    fn close(&mut self, why: Closing) {
        self.source.close(why);
        self.open = false;
        self.key_pending = true;
    }
}

/// Encode `frame` with `encoder`, made (again) for the frame's size.
fn encode(
    encoder: &mut Option<Box<dyn PictureEncoder>>,
    cfg: &RunnerConfig,
    frame: &I420Frame,
    capture_us: u64,
    key: bool,
) -> anyhow::Result<Option<Picture>> {
    let size = (frame.width as u32, frame.height as u32);
    let current = encoder
        .as_ref()
        .map(|e| (e.settings().width, e.settings().height));
    if current != Some(size) {
        let settings = VideoSettings {
            width: size.0,
            height: size.1,
            ..cfg.encoder
        };
        *encoder = None;
        let made = (cfg.encoders)(&settings)?;
        tracing::info!(
            encoder = made.name(),
            width = size.0,
            height = size.1,
            fps = settings.fps,
            bitrate_kbps = settings.bitrate_kbps,
            gop = settings.gop,
            "encoder started"
        );
        *encoder = Some(made);
    }
    let Some(encoder) = encoder.as_mut() else {
        return Ok(None);
    };
    encoder.encode(frame, capture_us, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::hub::StartAt;
    use std::sync::mpsc;

    /// A source the test drives: each picture sent is handed over once.
    struct Scripted {
        pictures: mpsc::Receiver<Picture>,
        opens: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Source for Scripted {
        fn thread_name(&self) -> &'static str {
            "scripted"
        }

        fn open(&mut self, _: &Demand) -> Result<(), String> {
            self.opens.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        fn next(&mut self, _: &Demand, deadline: Instant) -> Next<'_> {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.pictures.recv_timeout(wait) {
                Ok(mut picture) => {
                    picture.capture_us = clock::monotonic_us();
                    Next::Picture(picture)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => Next::Waiting,
                Err(mpsc::RecvTimeoutError::Disconnected) => Next::Lost("script over".into()),
            }
        }
    }

    /// A camera of raw pictures the test drives, each with its capture time.
    struct RawScripted {
        frames: mpsc::Receiver<(I420Frame, u64)>,
        current: I420Frame,
    }

    impl Source for RawScripted {
        fn thread_name(&self) -> &'static str {
            "raw-scripted"
        }

        fn open(&mut self, _: &Demand) -> Result<(), String> {
            Ok(())
        }

        fn next(&mut self, _: &Demand, deadline: Instant) -> Next<'_> {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.frames.recv_timeout(wait) {
                Ok((frame, capture_us)) => {
                    self.current = frame;
                    Next::Raw(&self.current, capture_us)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => Next::Waiting,
                Err(mpsc::RecvTimeoutError::Disconnected) => Next::Lost("script over".into()),
            }
        }
    }

    #[tokio::test]
    async fn a_failing_hardware_encoder_shows_no_signal_then_resumes_at_a_keyframe() {
        use crate::media::m2m::{fake, M2mEncoder};
        let hub = Hub::new(64);
        let status = StatusHandle::new("raw-scripted", "no_signal");
        let stop = Arc::new(AtomicBool::new(false));
        let log = fake::log_with(fake::Fault::None);
        let mut cfg = RunnerConfig::new((160, 120), VideoSettings::default());
        let factory_log = log.clone();
        cfg.encoders = Arc::new(move |settings: &VideoSettings| {
            let opener = fake::opener(&factory_log);
            let encoder = M2mEncoder::new(settings, false, "/dev/fake-m2m", opener)
                .with_timeout(Duration::from_millis(20));
            Ok(Box::new(encoder) as Box<dyn PictureEncoder>)
        });
        let (tx, rx) = mpsc::channel();
        let source = RawScripted {
            frames: rx,
            current: I420Frame::new(160, 120),
        };
        let mut sub = hub.subscribe(StartAt::NextKeyframe);
        let thread = spawn(
            Box::new(source),
            cfg,
            hub.clone(),
            status.clone(),
            stop.clone(),
        )
        .unwrap();
        let t0 = clock::monotonic_us();
        let mut pattern = crate::source::pattern::TestPattern::new(160, 120).unwrap();
        let mut send = |i: u32, at_us: u64| tx.send((pattern.draw(i, 0).clone(), at_us)).unwrap();
        for i in 0..3 {
            send(i, t0 + u64::from(i) * 40_000);
        }
        let mut live = Vec::new();
        while live.len() < 3 {
            let picture = next(&mut sub).await;
            if !picture.placeholder {
                live.push(picture);
            }
        }
        assert!(live[0].key);
        assert_eq!(status.snapshot().state, "live");
        // The device breaks: NO SIGNAL, and /state says it is the encoder.
        let queued = log.lock().unwrap().queued;
        log.lock().unwrap().fault = Some(fake::Fault::QueueFrom(queued));
        send(3, t0 + 200_000);
        let placeholder = loop {
            let picture = next(&mut sub).await;
            if picture.placeholder {
                break picture;
            }
        };
        assert!(placeholder.key);
        let s = status.snapshot();
        assert_eq!(s.state, "no_signal");
        let why = s.last_error.unwrap_or_default();
        assert!(
            why.contains("encoder") && why.contains("/dev/fake-m2m"),
            "{why}"
        );
        // Repaired: the device is opened again and the video resumes at its IDR.
        log.lock().unwrap().fault = None;
        send(4, t0 + 2_000_000);
        let resumed = loop {
            let picture = next(&mut sub).await;
            if !picture.placeholder {
                break picture;
            }
        };
        assert!(resumed.key, "live video resumes at a keyframe");
        assert_eq!(log.lock().unwrap().opens, 2);
        stop.store(true, Ordering::Relaxed);
        hub.wake_source();
        thread.join().unwrap();
    }

    fn encoded(count: u32, keys: &[u32]) -> Vec<Picture> {
        crate::source::lifecycle::tests::pattern_pictures(160, 120, count, keys)
    }

    async fn next(sub: &mut crate::media::Subscriber) -> Arc<Picture> {
        tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("a picture within 5 s")
            .expect("hub alive")
    }

    #[tokio::test]
    async fn a_silent_source_is_lost_then_resumes_at_a_keyframe_with_no_signal_between() {
        let hub = Hub::new(64);
        let status = StatusHandle::new("scripted", "no_signal");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let opens = Arc::default();
        let source = Scripted {
            pictures: rx,
            opens: Arc::clone(&opens),
        };
        let mut cfg = RunnerConfig::new(
            (160, 120),
            VideoSettings {
                width: 160,
                height: 120,
                fps: 30,
                bitrate_kbps: 300,
                gop: 30,
            },
        );
        cfg.stall = Duration::from_millis(300);
        let mut sub = hub.subscribe(StartAt::NextKeyframe);
        let thread = spawn(
            Box::new(source),
            cfg,
            hub.clone(),
            status.clone(),
            stop.clone(),
        )
        .unwrap();
        let mut pictures = encoded(8, &[6]).into_iter();
        // Live: IDR and two P-frames.
        for _ in 0..3 {
            tx.send(pictures.next().unwrap()).unwrap();
        }
        let mut live = Vec::new();
        while live.len() < 3 {
            let picture = next(&mut sub).await;
            if !picture.placeholder {
                live.push(picture);
            }
        }
        assert!(live[0].key);
        assert_eq!(status.snapshot().state, "live");
        // Silent for longer than the stall limit: lost, and NO SIGNAL for the viewer.
        let placeholder = loop {
            let picture = next(&mut sub).await;
            if picture.placeholder {
                break picture;
            }
        };
        assert!(placeholder.key, "the first NO SIGNAL picture stands alone");
        assert_eq!(placeholder.seq, live[2].seq + 1, "one sequence throughout");
        let s = status.snapshot();
        assert_eq!(s.state, "no_signal");
        assert!(s.last_error.unwrap_or_default().contains("no pictures"));
        // Back, mid-GOP: P-frames referring to what the viewer never got are dropped;
        // live again at the IDR.
        for picture in pictures.by_ref().take(5) {
            tx.send(picture).unwrap();
        }
        let resumed = loop {
            let picture = next(&mut sub).await;
            if !picture.placeholder {
                break picture;
            }
        };
        assert!(resumed.key, "live video resumes at a keyframe");
        assert_eq!(status.snapshot().interruptions, 1);
        assert_eq!(opens.load(Ordering::SeqCst), 1, "a stall does not reopen");
        stop.store(true, Ordering::Relaxed);
        hub.wake_source();
        thread.join().unwrap();
    }
}
