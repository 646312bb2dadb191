//! ALSA capture in this process, through the real ALSA library: PCMs defined with ALSA's
//! `file` plugin read a 1 kHz tone the test wrote; the capture source runs under the
//! audio runner into a hub, and what a listener receives is decoded from Opus.
//!
//! alsa-lib reads `$HOME/.asoundrc`, so this binary sets HOME before anything opens a
//! device and holds a single test: no other thread is running when it does.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use peregrine::media::audio::opus::{OpusDecoder, FRAME_LEN};
use peregrine::media::audio::{level, FRAME_US};
use peregrine::media::{clock, Hub, StartAt, Subscriber};
use peregrine::source::audio::alsa::{AlsaConfig, AlsaSource};
use peregrine::source::audio::{runner, AudioStatusHandle};
use support::alsa::{sine, AlsaHome};

/// A capture running under the audio runner; stopped and joined when dropped.
struct Capture {
    hub: Arc<Hub>,
    status: AudioStatusHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    fn start(device: &str, rate: u32, channels: u32) -> Capture {
        let source = AlsaSource::new(AlsaConfig {
            device: device.into(),
            rate,
            channels,
            tc358743: None,
        });
        let hub = Hub::new(runner::QUEUE_FRAMES);
        let status = AudioStatusHandle::new(&format!("alsa:{device}"));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = runner::spawn(
            Box::new(source),
            128,
            hub.clone(),
            status.clone(),
            stop.clone(),
        )
        .expect("the runner starts");
        Capture {
            hub,
            status,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.hub.wake_source();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the runner ends without panicking");
        }
    }
}

/// What a listener received in `frames` frames, decoded.
struct Heard {
    /// Left channel, 48 kHz.
    left: Vec<i16>,
    stamps: Vec<u64>,
    /// Each frame's stamp and when it arrived (CLOCK_MONOTONIC µs).
    arrivals: Vec<(u64, u64)>,
}

async fn listen(sub: &mut Subscriber, frames: usize) -> Heard {
    let mut decoder = OpusDecoder::new().unwrap();
    let mut pcm = vec![0i16; FRAME_LEN];
    let mut heard = Heard {
        left: Vec::new(),
        stamps: Vec::new(),
        arrivals: Vec::new(),
    };
    for _ in 0..frames {
        let frame = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("a frame within 5 s")
            .expect("the hub lives");
        heard
            .arrivals
            .push((frame.capture_us, clock::monotonic_us()));
        heard.stamps.push(frame.capture_us);
        let n = decoder.decode(&frame.data, &mut pcm).unwrap();
        heard.left.extend(level::left(&pcm[..n * 2]));
    }
    heard
}

/// The tone arrived: 1 kHz at -9 dBFS (half scale) past the codec's start, in frames
/// stamped 20 ms apart and handed over in real time, never ahead of it.
fn assert_tone(what: &str, heard: &Heard) {
    for pair in heard.stamps.windows(2) {
        assert_eq!(pair[1] - pair[0], FRAME_US, "{what}: frames 20 ms apart");
    }
    for &(stamp, arrived) in &heard.arrivals {
        assert!(
            arrived >= stamp + FRAME_US,
            "{what}: a frame arrived before its end was captured"
        );
    }
    let (first, last) = (heard.arrivals[0].1, heard.arrivals.last().unwrap().1);
    let span = (heard.arrivals.len() as u64 - 1) * FRAME_US;
    assert!(
        last - first >= span - 2 * FRAME_US,
        "{what}: {} frames in {} ms, faster than real time",
        heard.arrivals.len(),
        (last - first) / 1000
    );
    let tail = &heard.left[FRAME_LEN / 2 * 5..];
    let hz = level::dominant_hz(tail, &[440.0, 918.75, 1000.0, 1088.4, 2000.0]);
    assert_eq!(hz, 1000.0, "{what}: the tone's frequency");
    let db = level::rms_dbfs(tail);
    assert!((db - -9.03).abs() < 1.5, "{what}: level {db} dBFS");
}

#[tokio::test]
async fn alsa_capture_reaches_listeners_as_opus_and_a_missing_device_is_retried() {
    let home = AlsaHome::new("audio-alsa");
    home.capture_pcm("cap48", &sine(1000.0, 0.5, 48_000, 2, 10.0));
    home.capture_pcm("cap44", &sine(1000.0, 0.5, 44_100, 2, 10.0));
    home.capture_pcm("capmono", &sine(1000.0, 0.5, 48_000, 1, 10.0));
    // Before any thread of this binary opens a device (see the module documentation).
    std::env::set_var("HOME", &home.dir);

    for (device, rate, channels) in [
        ("cap48", 48_000, 2),
        ("cap44", 44_100, 2),
        ("capmono", 48_000, 1),
    ] {
        let capture = Capture::start(device, rate, channels);
        assert_eq!(
            capture.status.snapshot().state,
            "idle",
            "nobody listens yet"
        );
        let mut listener = capture.hub.subscribe(StartAt::NextKeyframe);
        let heard = listen(&mut listener, 50).await;
        assert_tone(device, &heard);
        let status = capture.status.snapshot();
        assert_eq!(
            (status.state, status.rate, status.channels),
            ("live", Some(rate), Some(channels)),
            "{device}"
        );
        // Nobody listens any more: the device is closed.
        drop(listener);
        let deadline = Instant::now() + Duration::from_secs(5);
        while capture.status.snapshot().state != "idle" {
            assert!(Instant::now() < deadline, "{device} still open");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    let missing = Capture::start("nosuchdevice", 48_000, 2);
    let _listener = missing.hub.subscribe(StartAt::NextKeyframe);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = missing.status.snapshot();
        if status.failures >= 3 {
            assert_eq!(status.state, "failing");
            let error = status.last_error.unwrap_or_default();
            assert!(
                error.contains("\"nosuchdevice\": no such capture device"),
                "{error}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not retried: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(missing.hub.info().frames, 0);
    drop(missing);
}
