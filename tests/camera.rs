//! The camera path without a camera: buffers recorded by ffmpeg (MJPEG 4:2:0 and 4:2:2
//! as UVC cameras send, YUYV, NV12, H.264) played through the replay device, then the
//! real conversion, encoder, hub and decoder. Pictures are compared with ffmpeg's own
//! rendering of the same frames, timestamps with what the device reported.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use peregrine::media::hub::DEFAULT_QUEUE_FRAMES;
use peregrine::media::yuv::I420Frame;
use peregrine::media::{Hub, Picture, StartAt, VideoSettings};
use peregrine::source::camera::device::PixelFormat;
use peregrine::source::camera::replay::{Recording, ReplayLog, ReplayOpener, Step};
use peregrine::source::camera::{self, CameraConfig, CameraCounters};
use peregrine::source::lifecycle::StatusHandle;
use peregrine::source::nosignal;
use peregrine::viewer::decoder::{psnr, H264Decoder};
use support::Server;

const W: u32 = 320;
const H: u32 = 240;
const FRAMES: usize = 30;
const FPS: u32 = 30;

/// Luma PSNR a converted and encoded picture must reach against ffmpeg's rendering of
/// the same source frame. At 1.5 Mbit/s for 320x240 the encoder costs little: measured
/// 45.8 dB worst case for MJPEG, 48.9 dB for YUYV and NV12. Conversion mistakes cost
/// far more: leaving JPEG's full range uncompressed measured 28.6 dB, and the wrong
/// source frame stays under 33 dB (checked on every picture below).
const MIN_LUMA_PSNR: f64 = 38.0;
/// Chroma goes through JPEG's chroma compression and two resamplings (decoder
/// upsampling, our 2x2 average), so it scores lower: measured 31.1 dB worst case for
/// MJPEG, 38.1 dB for YUYV. Swapped U and V measured 7.2 dB.
const MIN_CHROMA_PSNR: f64 = 25.0;

/// ffmpeg's test source rendered into every format a camera might deliver.
struct Fixtures {
    dir: PathBuf,
}

impl Fixtures {
    fn record() -> Result<Fixtures> {
        let dir = std::env::temp_dir().join(format!("peregrine-camera-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let outputs: [(&str, &[&str]); 6] = [
            ("ref.yuv", &["-pix_fmt", "yuv420p", "-f", "rawvideo"]),
            (
                "420.mjpeg",
                &[
                    "-pix_fmt", "yuvj420p", "-c:v", "mjpeg", "-q:v", "3", "-f", "mjpeg",
                ],
            ),
            (
                "422.mjpeg",
                &[
                    "-pix_fmt", "yuvj422p", "-c:v", "mjpeg", "-q:v", "3", "-f", "mjpeg",
                ],
            ),
            ("yuyv.raw", &["-pix_fmt", "yuyv422", "-f", "rawvideo"]),
            ("nv12.raw", &["-pix_fmt", "nv12", "-f", "rawvideo"]),
            (
                "camera.h264",
                &[
                    "-pix_fmt",
                    "yuv420p",
                    "-c:v",
                    "libx264",
                    "-profile:v",
                    "baseline",
                    "-g",
                    "30",
                    "-bf",
                    "0",
                    "-x264-params",
                    "repeat-headers=1",
                    "-f",
                    "h264",
                ],
            ),
        ];
        for (name, args) in outputs {
            let out = dir.join(name);
            let status = Command::new("ffmpeg")
                .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
                .arg(format!("testsrc2=size={W}x{H}:rate={FPS}"))
                .args(["-frames:v", &FRAMES.to_string()])
                .args(args)
                .arg(&out)
                .status()
                .context("ffmpeg must be installed (scripts/install-test-deps.sh)")?;
            ensure!(status.success(), "ffmpeg could not record {name}");
        }
        Ok(Fixtures { dir })
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap_or_default()
    }

    /// ffmpeg's I420 pictures: the reference every path is measured against.
    fn reference(&self) -> Vec<I420Frame> {
        let (w, h) = (W as usize, H as usize);
        let size = w * h * 3 / 2;
        self.read("ref.yuv")
            .chunks_exact(size)
            .map(|f| I420Frame {
                width: w,
                height: h,
                y: f[..w * h].to_vec(),
                u: f[w * h..w * h * 5 / 4].to_vec(),
                v: f[w * h * 5 / 4..].to_vec(),
            })
            .collect()
    }
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A camera source running on the replay device, with a subscriber watching.
struct Running {
    hub: Arc<Hub>,
    status: StatusHandle,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    counters: Arc<CameraCounters>,
    log: Arc<ReplayLog>,
}

impl Running {
    fn start(
        recording: Recording,
        script: &[Step],
    ) -> Result<(Running, peregrine::media::Subscriber)> {
        let hub = Hub::new(DEFAULT_QUEUE_FRAMES);
        let status = StatusHandle::new("camera", "no_signal");
        let stop = Arc::new(AtomicBool::new(false));
        let sub = hub.subscribe(StartAt::NextKeyframe);
        let (opener, log) = ReplayOpener::new(recording, FPS, script);
        let mut cfg = CameraConfig::new(VideoSettings {
            width: W,
            height: H,
            fps: FPS,
            bitrate_kbps: 1500,
            gop: 30,
        });
        cfg.reopen_min = Duration::from_millis(100);
        cfg.reopen_max = Duration::from_millis(200);
        let (thread, counters) = camera::spawn(
            cfg,
            Box::new(opener),
            hub.clone(),
            status.clone(),
            stop.clone(),
        )?;
        Ok((
            Running {
                hub,
                status,
                stop,
                thread: Some(thread),
                counters,
                log,
            },
            sub,
        ))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn next_au(sub: &mut peregrine::media::Subscriber) -> Result<Arc<Picture>> {
    tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .context("no access unit within 5 s")?
        .context("hub closed")
}

/// The first picture from the device; NO SIGNAL pictures shown while the camera
/// starts are skipped.
async fn first_live_au(
    run: &Running,
    sub: &mut peregrine::media::Subscriber,
) -> Result<Arc<Picture>> {
    loop {
        let au = next_au(sub).await?;
        if run.log.index_at(au.capture_us).is_some() {
            ensure!(au.key, "the first camera picture must be a keyframe");
            return Ok(au);
        }
    }
}

/// The next picture from the device, decoding (and so skipping) NO SIGNAL pictures;
/// an error, not an endless wait, when the device delivers none for 20 s.
async fn next_live_au(
    run: &Running,
    sub: &mut peregrine::media::Subscriber,
    decoder: &mut H264Decoder,
) -> Result<Arc<Picture>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        ensure!(
            Instant::now() < deadline,
            "only NO SIGNAL pictures for 20 s; the source is {:?}",
            run.status.snapshot().state
        );
        let au = next_au(sub).await?;
        if run.log.index_at(au.capture_us).is_some() {
            return Ok(au);
        }
        decoder.decode_planes(&au.data)?;
    }
}

/// Decode `count` pictures and compare each with the reference frame the device
/// delivered under the same timestamp. Returns the worst luma and chroma PSNR.
async fn check_pictures(
    run: &Running,
    sub: &mut peregrine::media::Subscriber,
    reference: &[I420Frame],
    count: usize,
) -> Result<(f64, f64)> {
    let mut decoder = H264Decoder::new()?;
    let (mut worst_y, mut worst_c) = (f64::MAX, f64::MAX);
    let mut checked = 0;
    let first = first_live_au(run, sub).await?;
    let mut pending = Some(first);
    while checked < count {
        let au = match pending.take() {
            Some(au) => au,
            None => next_au(sub).await?,
        };
        let Some(index) = run.log.index_at(au.capture_us) else {
            bail!(
                "access unit at {} µs matches no device timestamp",
                au.capture_us
            );
        };
        let picture = decoder
            .decode_planes(&au.data)?
            .context("the decoder gave no picture for an access unit")?;
        ensure!(
            (picture.width, picture.height) == (W as usize, H as usize),
            "decoded {}x{}",
            picture.width,
            picture.height
        );
        let want = &reference[index];
        let y = psnr(&picture.y, &want.y);
        let c = psnr(&picture.u, &want.u).min(psnr(&picture.v, &want.v));
        // The same comparison against a frame half a second away must fail, or the
        // measure would not tell pictures apart.
        let other = &reference[(index + FRAMES / 2) % FRAMES];
        ensure!(
            psnr(&picture.y, &other.y) < MIN_LUMA_PSNR - 5.0,
            "frame {index} also matches frame {} (PSNR {:.1})",
            (index + FRAMES / 2) % FRAMES,
            psnr(&picture.y, &other.y)
        );
        worst_y = worst_y.min(y);
        worst_c = worst_c.min(c);
        checked += 1;
    }
    Ok((worst_y, worst_c))
}

#[tokio::test]
async fn recorded_camera_formats_match_the_source_pictures() -> Result<()> {
    let fx = Fixtures::record()?;
    let reference = fx.reference();
    assert_eq!(reference.len(), FRAMES);
    let cases = [
        (Recording::mjpeg(&fx.read("420.mjpeg"), W, H), "MJPEG 4:2:0"),
        (Recording::mjpeg(&fx.read("422.mjpeg"), W, H), "MJPEG 4:2:2"),
        (
            Recording::raw(PixelFormat::Yuyv, &fx.read("yuyv.raw"), W, H),
            "YUYV",
        ),
        (
            Recording::raw(PixelFormat::Nv12, &fx.read("nv12.raw"), W, H),
            "NV12",
        ),
    ];
    for (recording, what) in cases {
        assert_eq!(recording.frames.len(), FRAMES, "{what}");
        run_case(recording, &reference, what).await?;
    }
    Ok(())
}

async fn run_case(recording: Recording, reference: &[I420Frame], what: &str) -> Result<()> {
    let (run, mut sub) = Running::start(recording, &[])?;
    let (y, c) = check_pictures(&run, &mut sub, reference, 45).await?;
    eprintln!("{what}: worst PSNR luma {y:.1} dB, chroma {c:.1} dB over 45 pictures");
    ensure!(y >= MIN_LUMA_PSNR, "{what}: luma PSNR {y:.1} dB");
    ensure!(c >= MIN_CHROMA_PSNR, "{what}: chroma PSNR {c:.1} dB");
    let s = run.status.snapshot();
    ensure!(s.state == "live", "{what}: state {}", s.state);
    ensure!((s.width, s.height) == (W, H), "{what}: /state size");
    // Wide: a loaded machine delays frames, and the point is the camera's rate, not 0 or 2x.
    ensure!(
        (s.fps - f64::from(FPS)).abs() < 10.0,
        "{what}: /state fps {}",
        s.fps
    );
    ensure!(run.counters.bad_frames.load(Ordering::Relaxed) == 0);
    Ok(())
}

#[tokio::test]
async fn h264_camera_passes_through_untouched_and_takes_keyframe_requests() -> Result<()> {
    let fx = Fixtures::record()?;
    let recording = Recording::h264(&fx.read("camera.h264"));
    ensure!(
        recording.frames.len() == FRAMES,
        "{} access units",
        recording.frames.len()
    );
    let frames = recording.frames.clone();
    let (run, mut sub) = Running::start(recording, &[])?;
    let mut decoder = H264Decoder::new()?;
    for n in 0..40 {
        let au = next_live_au(&run, &mut sub, &mut decoder).await?;
        let index = run
            .log
            .index_at(au.capture_us)
            .context("timestamp not from the device")?;
        ensure!(
            au.data[..] == frames[index][..],
            "picture {n} (buffer {index}) was changed"
        );
        ensure!(decoder.decode_planes(&au.data)?.is_some() || n == 0);
    }
    // One request when watching began; a viewer's request is passed on too.
    let before = run.log.keyframe_requests.load(Ordering::Relaxed);
    ensure!(before >= 1, "no keyframe request when watching began");
    // (Once the last keyframe is old enough: requested ones are spaced.)
    run.hub.request_keyframe();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while run.log.keyframe_requests.load(Ordering::Relaxed) == before {
        ensure!(
            std::time::Instant::now() < deadline,
            "the request never reached the device"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The NO SIGNAL picture at the camera's size, as encoded and decoded.
fn looks_like_no_signal(picture: &I420Frame) -> bool {
    let drawn = nosignal::draw(picture.width as u32, picture.height as u32);
    psnr(&picture.y, &drawn.y) > 25.0
}

#[tokio::test]
async fn unplugged_camera_shows_no_signal_then_live_pictures_again() -> Result<()> {
    let fx = Fixtures::record()?;
    let reference = fx.reference();
    let recording = Recording::mjpeg(&fx.read("422.mjpeg"), W, H);
    // 40 pictures, unplugged for four attempts to reopen, then back for good.
    let script = [Step::Deliver(40), Step::Missing(4)];
    let (run, mut sub) = Running::start(recording, &script)?;
    let mut decoder = H264Decoder::new()?;
    // live → no_signal → live, with the picture count of each phase.
    let mut phases: Vec<(&str, usize)> = Vec::new();
    let mut last_seq;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    // NO SIGNAL until the camera's first picture is not part of the sequence checked.
    let first = first_live_au(&run, &mut sub).await?;
    decoder.decode_planes(&first.data)?;
    last_seq = Some(first.seq);
    phases.push(("live", 1));
    while phases.len() < 3 || phases[2].1 < 30 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "phases so far: {phases:?}"
        );
        let au = next_au(&mut sub).await?;
        if let Some(prev) = last_seq {
            ensure!(
                au.seq == prev + 1,
                "sequence jumps from {prev} to {}",
                au.seq
            );
        }
        last_seq = Some(au.seq);
        let Some(picture) = decoder.decode_planes(&au.data)? else {
            continue;
        };
        let phase = match run.log.index_at(au.capture_us) {
            Some(index) => {
                let y = psnr(&picture.y, &reference[index].y);
                ensure!(
                    y >= MIN_LUMA_PSNR,
                    "live picture {index} after replug: {y:.1} dB"
                );
                "live"
            }
            None => {
                ensure!(
                    looks_like_no_signal(&picture),
                    "a picture neither live nor NO SIGNAL"
                );
                "no_signal"
            }
        };
        match phases.last_mut() {
            Some((p, n)) if *p == phase => *n += 1,
            _ => phases.push((phase, 1)),
        }
    }
    ensure!(
        phases.iter().map(|p| p.0).collect::<Vec<_>>() == ["live", "no_signal", "live"],
        "phases {phases:?}"
    );
    ensure!(phases[1].1 >= 2, "NO SIGNAL shown {} times", phases[1].1);
    let s = run.status.snapshot();
    ensure!(s.state == "live" && s.interruptions == 1, "{s:?}");
    let why = s.last_error.unwrap_or_default();
    ensure!(why.contains("no such device"), "last error {why:?}");
    ensure!(run.log.opens.load(Ordering::Relaxed) == 2);
    eprintln!("phases: {phases:?}");
    Ok(())
}

#[tokio::test]
async fn broken_buffers_are_skipped_and_good_ones_still_play() -> Result<()> {
    let fx = Fixtures::record()?;
    let reference = fx.reference();
    let mut recording = Recording::mjpeg(&fx.read("420.mjpeg"), W, H);
    // Every third buffer broken: cut short, garbage, empty.
    for (i, frame) in recording.frames.iter_mut().enumerate() {
        match i % 9 {
            2 => frame.truncate(frame.len() / 3),
            5 => frame
                .iter_mut()
                .skip(2)
                .for_each(|b| *b = b.wrapping_mul(31) ^ 0x5A),
            8 => frame.clear(),
            _ => {}
        }
    }
    let broken: Vec<usize> = (0..FRAMES)
        .filter(|i| [2, 5, 8].contains(&(i % 9)))
        .collect();
    let (run, mut sub) = Running::start(recording, &[])?;
    let mut decoder = H264Decoder::new()?;
    let mut good = 0;
    while good < 30 {
        let au = next_live_au(&run, &mut sub, &mut decoder).await?;
        let index = run.log.index_at(au.capture_us).context("timestamp")?;
        let picture = decoder.decode_planes(&au.data)?;
        // A JPEG with garbage inside may still decode into some picture.
        if broken.contains(&index) {
            continue;
        }
        if let Some(picture) = picture {
            let y = psnr(&picture.y, &reference[index].y);
            ensure!(y >= MIN_LUMA_PSNR, "picture {index}: {y:.1} dB");
            good += 1;
        }
    }
    ensure!(run.counters.bad_frames.load(Ordering::Relaxed) >= 4);
    ensure!(run.status.snapshot().state == "live");
    Ok(())
}

#[tokio::test]
async fn short_raw_buffers_are_skipped() -> Result<()> {
    let fx = Fixtures::record()?;
    let mut recording = Recording::raw(PixelFormat::Yuyv, &fx.read("yuyv.raw"), W, H);
    for frame in recording.frames.iter_mut().step_by(2) {
        frame.truncate(frame.len() - 1);
    }
    let (run, mut sub) = Running::start(recording, &[])?;
    let mut decoder = H264Decoder::new()?;
    for _ in 0..10 {
        let au = next_live_au(&run, &mut sub, &mut decoder).await?;
        let index = run.log.index_at(au.capture_us).context("timestamp")?;
        ensure!(index % 2 == 1, "a short buffer ({index}) became a picture");
    }
    ensure!(run.counters.bad_frames.load(Ordering::Relaxed) >= 5);
    Ok(())
}

#[tokio::test]
async fn missing_device_keeps_the_server_up_with_no_signal() -> Result<()> {
    let device = "/dev/peregrine-test-no-camera";
    let server = Server::start(&["--source", "v4l2", "--device", device]).await?;
    let state = server
        .wait_state(Duration::from_secs(5), |s| {
            s["source"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("no such device"))
        })
        .await?;
    assert_eq!(state["source"]["state"], "no_signal", "{state}");
    assert!(
        state["source"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains(device),
        "{state}"
    );
    Ok(())
}

#[test]
fn listing_formats_of_something_that_is_no_camera_fails_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .args(["--list-formats", "--device", "/dev/null"])
        .output()
        .expect("run peregrine");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/dev/null: not a V4L2 device"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .args(["--format", "RGB24"])
        .output()
        .expect("run peregrine");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("format must be"));
}
