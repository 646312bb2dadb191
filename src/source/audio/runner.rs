//! The one way every sound source runs, on its own thread: the source is open only
//! while somebody listens (the ustreamer plugin opens ALSA only while a client wants
//! audio), opened again with backoff when opening fails or the device is lost (or
//! stays silent for [`STALL`]), and each frame it captures is encoded to Opus once,
//! numbered and published into the stream's audio hub for every listener.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{AudioNext, AudioSource, AudioStatusHandle};
use crate::media::audio::opus::OpusEncoder;
use crate::media::{Hub, Picture};
use crate::ratelog::RateLimited;
use crate::source::failure_log::{FailureLog, Verdict};
use crate::source::lifecycle::Backoff;

/// Frames a listener may fall behind before it skips ahead: one second of sound.
pub const QUEUE_FRAMES: usize = 50;
/// An open source that delivers no frame for this long is lost.
pub const STALL: Duration = Duration::from_secs(2);
/// Longest the runner goes without looking at `stop` and at who listens.
const POLL: Duration = Duration::from_millis(100);
/// Encoder failures are logged at most this often.
const ENCODE_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Run `source` on its own thread until `stop` is set, publishing Opus at
/// `bitrate_kbps` into `hub`.
pub fn spawn(
    source: Box<dyn AudioSource>,
    bitrate_kbps: u32,
    hub: Arc<Hub>,
    status: AudioStatusHandle,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let name = source.thread_name();
    let encoder = OpusEncoder::new(bitrate_kbps).context("the Opus encoder")?;
    let (min, max) = source.backoff();
    let runner = Runner {
        source,
        encoder,
        hub,
        status,
        stop,
        backoff: Backoff::new(min, max),
        failures: FailureLog::default(),
        encode_errors: RateLimited::new(ENCODE_ERROR_LOG_EVERY),
        open: false,
        retry_at: None,
        last_frame: Instant::now(),
        seq: 0,
    };
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || runner.run())
        .with_context(|| format!("starting the {name} thread"))
}

struct Runner {
    source: Box<dyn AudioSource>,
    encoder: OpusEncoder,
    hub: Arc<Hub>,
    status: AudioStatusHandle,
    stop: Arc<AtomicBool>,
    backoff: Backoff,
    failures: FailureLog,
    encode_errors: RateLimited,
    open: bool,
    /// When to try opening again after a failure.
    retry_at: Option<Instant>,
    last_frame: Instant,
    /// The number of the next frame published; continues across openings.
    seq: u64,
}

impl Runner {
    fn run(mut self) {
        let hub = self.hub.clone();
        while !self.stop.load(Ordering::Relaxed) {
            let seen = hub.demand().seen();
            let now = Instant::now();
            if !hub.has_subscribers() {
                if self.open {
                    self.close();
                    tracing::debug!("sound idle: nobody listens");
                }
                // Whoever listens next gets a fresh attempt.
                self.retry_at = None;
                self.backoff.reset();
                self.status.set_idle();
                hub.demand().wait(seen, now + POLL);
                continue;
            }
            if !self.open {
                match self.retry_at {
                    Some(at) if now < at => {
                        hub.demand().wait(seen, at.min(now + POLL));
                        continue;
                    }
                    _ => self.try_open(),
                }
                continue;
            }
            self.take_next(now + POLL);
        }
        if self.open {
            self.close();
        }
        tracing::debug!("sound source stopped");
    }

    fn try_open(&mut self) {
        match self.source.open() {
            Ok(opened) => {
                tracing::info!(
                    rate = opened.rate,
                    channels = opened.channels,
                    "sound live: {}",
                    self.status.snapshot().source
                );
                self.open = true;
                self.retry_at = None;
                self.last_frame = Instant::now();
                self.status.set_live(opened);
            }
            Err(why) => self.failed(&why),
        }
    }

    fn take_next(&mut self, deadline: Instant) {
        match self.source.next(deadline) {
            AudioNext::Frame(pcm, capture_us) => {
                self.last_frame = Instant::now();
                self.backoff.reset();
                match self.encoder.encode(pcm) {
                    Ok(opus) => {
                        let mut frame = Picture::audio(opus, capture_us);
                        frame.seq = self.seq;
                        self.seq += 1;
                        self.hub.publish(frame);
                    }
                    Err(e) => {
                        if let Some(count) = self.encode_errors.hit() {
                            tracing::warn!(failures = count, "sound not encoded: {e}");
                        }
                    }
                }
            }
            AudioNext::Waiting if self.last_frame.elapsed() >= STALL => {
                self.close();
                self.failed(&format!("no sound for {} s", STALL.as_secs()));
            }
            AudioNext::Waiting => {}
            AudioNext::Lost(why) => {
                self.close();
                self.failed(&why);
            }
        }
    }

    fn close(&mut self) {
        self.source.close();
        self.open = false;
    }

    /// Opening failed or the source was lost: `/state` says why, the log says it once
    /// (not at every retry), and the next attempt waits.
    fn failed(&mut self, why: &str) {
        self.status.set_failing(why);
        match self.failures.judge(why, Instant::now()) {
            Verdict::New => tracing::warn!("sound unavailable: {why}"),
            Verdict::Repeated(n) => {
                tracing::warn!("sound still unavailable ({n} more failed attempts): {why}")
            }
            Verdict::Quiet => tracing::debug!("sound unavailable: {why}"),
        }
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::opus::FRAME_LEN;
    use crate::media::audio::FRAME_US;
    use crate::media::StartAt;
    use std::sync::Mutex;

    /// What a scripted source was asked to do.
    #[derive(Default)]
    struct Calls {
        opens: usize,
        closes: usize,
    }

    /// Fails to open `failures` times, then delivers a frame every 20 ms (unpaced
    /// stamps, paced hand-over).
    struct Scripted {
        failures: usize,
        calls: Arc<Mutex<Calls>>,
        pcm: Vec<i16>,
        stamp: u64,
    }

    impl AudioSource for Scripted {
        fn thread_name(&self) -> &'static str {
            "audio-test"
        }
        fn backoff(&self) -> (Duration, Duration) {
            (Duration::from_millis(10), Duration::from_millis(40))
        }
        fn open(&mut self) -> Result<super::super::Opened, String> {
            let mut calls = self.calls.lock().unwrap();
            calls.opens += 1;
            if calls.opens <= self.failures {
                return Err(format!("no such device (attempt {})", calls.opens));
            }
            Ok(super::super::Opened {
                rate: 44_100,
                channels: 1,
            })
        }
        fn next(&mut self, _: Instant) -> AudioNext<'_> {
            std::thread::sleep(Duration::from_millis(20));
            self.stamp += FRAME_US;
            AudioNext::Frame(&self.pcm, self.stamp)
        }
        fn close(&mut self) {
            self.calls.lock().unwrap().closes += 1;
        }
    }

    fn wait_for(what: &str, pred: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pred() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[tokio::test]
    async fn opens_only_while_listened_retries_and_numbers_frames() {
        let calls = Arc::new(Mutex::new(Calls::default()));
        let source = Scripted {
            failures: 2,
            calls: calls.clone(),
            pcm: vec![0; FRAME_LEN],
            stamp: 0,
        };
        let hub = Hub::new(50);
        let status = AudioStatusHandle::new("test");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = spawn(
            Box::new(source),
            64,
            hub.clone(),
            status.clone(),
            stop.clone(),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(calls.lock().unwrap().opens, 0, "nobody listens: closed");
        assert_eq!(status.snapshot().state, "idle");

        let mut listener = hub.subscribe(StartAt::NextKeyframe);
        let first = listener.recv().await.unwrap();
        let second = listener.recv().await.unwrap();
        assert_eq!(second.seq, first.seq + 1);
        assert_eq!(second.capture_us, first.capture_us + FRAME_US);
        assert!(!first.data.is_empty());
        let s = status.snapshot();
        assert_eq!(
            (s.state, s.rate, s.channels),
            ("live", Some(44_100), Some(1))
        );
        assert_eq!(
            s.last_error.as_deref(),
            Some("no such device (attempt 2)"),
            "the last failure is kept"
        );
        assert_eq!(calls.lock().unwrap().opens, 3, "two failures, then open");

        drop(listener);
        wait_for("the close", || calls.lock().unwrap().closes == 1);
        assert_eq!(status.snapshot().state, "idle");

        stop.store(true, Ordering::Relaxed);
        hub.wake_source();
        thread.join().unwrap();
    }
}
