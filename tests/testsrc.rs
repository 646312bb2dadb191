//! The test pattern source end to end: thread → hub → subscriber → decoder → code strip.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use peregrine::media::h264::{self, NalType};
use peregrine::media::hub::KEYFRAME_MIN_SPACING_US;
use peregrine::media::{clock, Hub, Picture, StartAt, Subscriber, VideoSettings};
use peregrine::source::pattern::read_code_strip;
use peregrine::source::testsrc::{spawn, TestsrcConfig};
use peregrine::viewer::decoder::H264Decoder;

/// A running source that is stopped and joined when dropped.
struct Running {
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn start(width: u32, height: u32, gop: u32) -> Running {
        let hub = Hub::new(120);
        let stop = Arc::new(AtomicBool::new(false));
        let cfg = TestsrcConfig {
            video: VideoSettings {
                width,
                height,
                fps: 30,
                bitrate_kbps: 1500,
                gop,
            },
            warmup: Duration::ZERO,
        };
        let thread = spawn(cfg, hub.clone(), stop.clone()).expect("testsrc starts");
        Running {
            hub,
            stop,
            thread: Some(thread),
        }
    }

    /// Stop the thread; returns how long it took to exit.
    fn stop(&mut self) -> Duration {
        let t = Instant::now();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("testsrc thread did not panic");
        }
        t.elapsed()
    }

    fn published(&self) -> u64 {
        self.hub.info().frames
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn next(sub: &mut Subscriber) -> Arc<Picture> {
    tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("an access unit within 5 s")
        .expect("hub alive")
}

fn nal_types(au: &Picture) -> Vec<NalType> {
    h264::nal_units(&au.data)
        .filter_map(h264::nal_type)
        .collect()
}

#[tokio::test]
async fn subscriber_gets_decodable_paced_pictures_carrying_their_number_and_time() {
    let mut src = Running::start(1280, 720, 60);
    let mut sub = src.hub.subscribe(StartAt::NextKeyframe);
    let mut decoder = H264Decoder::new().unwrap();
    let mut aus = Vec::new();
    while aus.len() < 60 {
        aus.push(next(&mut sub).await);
    }

    let first = &aus[0];
    assert!(first.key);
    assert_eq!(&nal_types(first)[..2], &[NalType::Sps, NalType::Pps]);
    let params = src.hub.params().expect("hub learnt SPS/PPS");
    let sps = h264::parse_sps(&params.sps).unwrap();
    assert_eq!((sps.width, sps.height), (1280, 720));
    assert!(
        ["42e0", "42c0"].contains(&&sps.profile_level_id()[..4]),
        "{}",
        sps.profile_level_id()
    );

    let now_ms = clock::realtime_us() / 1000;
    let mut decoded = 0;
    let mut last_ms = 0;
    for (i, au) in aus.iter().enumerate() {
        assert_eq!((au.width, au.height), (1280, 720));
        assert_eq!(au.seq, first.seq + i as u64, "no gaps");
        assert_eq!(au.key, h264::access_unit_is_key(&au.data));
        let frame = decoder
            .decode(&au.data)
            .unwrap()
            .expect("every access unit yields a picture");
        assert_eq!((frame.width, frame.height), (1280, 720));
        decoded += 1;
        let (counter, ms) = read_code_strip(&frame.y, frame.y_stride, frame.width, frame.height)
            .expect("code strip readable after encoding");
        assert_eq!(u64::from(counter), au.seq);
        assert!(
            now_ms.abs_diff(ms) < 5_000,
            "capture time {ms} vs now {now_ms}"
        );
        assert!(ms >= last_ms, "capture times grow");
        last_ms = ms;
        // The wall-clock time in the picture and the monotonic capture stamp agree.
        let stamp_ms = clock::monotonic_to_realtime_us(au.capture_us) / 1000;
        assert!(
            stamp_ms.abs_diff(ms) < 50,
            "strip {ms} vs capture_us {stamp_ms}"
        );
    }
    assert_eq!(decoded, 60);

    // Paced at 30 fps: 59 intervals of 33.3 ms.
    let span_ms = (aus[59].capture_us - aus[0].capture_us) / 1000;
    assert!(
        (1_800..=2_600).contains(&span_ms),
        "60 pictures took {span_ms} ms"
    );

    assert!(src.stop() < Duration::from_millis(500), "stops promptly");
}

#[tokio::test]
async fn keyframe_request_gives_an_idr_within_two_pictures() {
    // A long GOP, so any IDR after the first one was requested.
    let src = Running::start(320, 240, 1000);
    let mut sub = src.hub.subscribe(StartAt::NextKeyframe);
    assert!(next(&mut sub).await.key);
    for _ in 0..5 {
        assert!(!next(&mut sub).await.key);
    }
    for _ in 0..3 {
        // Requested keyframes are spaced; wait that out so the request is due at once.
        tokio::time::sleep(Duration::from_micros(KEYFRAME_MIN_SPACING_US)).await;
        src.hub.request_keyframe();
        // Pictures published so far; the one being encoded now may have missed the request.
        let requested_at = src.published();
        let key = loop {
            let au = next(&mut sub).await;
            if au.key {
                break au;
            }
        };
        assert!(
            key.seq <= requested_at + 1,
            "IDR at {} after a request at {requested_at}",
            key.seq
        );
        assert_eq!(&nal_types(&key)[..2], &[NalType::Sps, NalType::Pps]);
    }
}

#[tokio::test]
async fn a_flood_of_keyframe_requests_gives_spaced_keyframes() {
    let src = Running::start(320, 240, 1000);
    let mut sub = src.hub.subscribe(StartAt::NextKeyframe);
    assert!(next(&mut sub).await.key);
    let started = std::time::Instant::now();
    let mut keys = Vec::new();
    while started.elapsed() < Duration::from_millis(1600) {
        // A viewer sending a PLI before every picture.
        src.hub.request_keyframe();
        let au = next(&mut sub).await;
        if au.key {
            keys.push(au.capture_us);
        }
    }
    assert!(
        (2..=4).contains(&keys.len()),
        "{} keyframes in 1.6 s of requests",
        keys.len()
    );
    for pair in keys.windows(2) {
        // Capture times come from the encoding thread: allow one picture of jitter.
        assert!(
            pair[1] - pair[0] >= KEYFRAME_MIN_SPACING_US - 40_000,
            "{keys:?}"
        );
    }
}

#[tokio::test]
async fn idles_without_subscribers_and_resumes_with_an_idr() {
    let src = Running::start(320, 240, 1000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(src.published(), 0, "nothing is encoded for nobody");

    // Keep the source awake without asking for keyframes.
    let hold = src.hub.hold();
    while src.published() < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(hold);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let idle_at = src.published();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(src.published(), idle_at, "idle once the last holder left");
    let keyframes = src.hub.info().keyframes;

    let _hold = src.hub.hold();
    while src.published() < idle_at + 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(src.hub.info().keyframes, keyframes + 1);
    // The cached GOP starts at the first picture after waking up.
    let mut sub = src.hub.subscribe(StartAt::Gop);
    let au = next(&mut sub).await;
    assert!(au.key);
    assert_eq!(au.seq, idle_at, "numbering continues across idle periods");
}

#[test]
fn bad_configuration_is_an_error_not_a_panic() {
    let hub = Hub::new(4);
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = |width, height, fps| TestsrcConfig {
        video: VideoSettings {
            width,
            height,
            fps,
            bitrate_kbps: 500,
            gop: 30,
        },
        warmup: Duration::ZERO,
    };
    assert!(spawn(cfg(321, 240, 30), hub.clone(), stop.clone()).is_err());
    assert!(spawn(cfg(320, 240, 0), hub.clone(), stop.clone()).is_err());
}
