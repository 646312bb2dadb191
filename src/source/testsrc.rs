//! The generated test pattern, encoded with openh264.
//!
//! One OS thread draws [`TestPattern`] pictures at the configured rate, encodes them as
//! constrained-baseline H.264 (no B-frames, so no reordering delay) and publishes them
//! into the hub. It works only while someone is subscribed: without viewers it idles in
//! short sleeps and starts again with an IDR.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::{OpenH264API, Timestamp};

use super::pattern::{I420Frame, TestPattern};
use crate::media::h264::{self, NalType};
use crate::media::{clock, AccessUnit, Hub};

#[derive(Clone, Debug)]
pub struct TestsrcConfig {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub gop: u32,
    /// Delay before the first picture each time a viewer wakes the source, as a camera
    /// takes a moment to start; zero in normal use.
    pub warmup: Duration,
}

/// Longest single sleep, so `stop` and new subscribers are noticed quickly.
const SLEEP_STEP: Duration = Duration::from_millis(10);
/// How often a keyframe request is looked for between pictures.
const KEY_POLL_STEP: Duration = Duration::from_millis(2);

/// Start the encoder thread. It publishes into `hub` while anyone is subscribed, idles
/// otherwise, honours keyframe requests, and exits when `stop` is set.
pub fn spawn(
    cfg: TestsrcConfig,
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    if cfg.fps == 0 || cfg.fps > 240 {
        anyhow::bail!("testsrc fps must be 1..=240, got {}", cfg.fps);
    }
    let pattern = TestPattern::new(cfg.width, cfg.height)?;
    let encoder = PictureEncoder::new(&cfg)?;
    std::thread::Builder::new()
        .name("testsrc".into())
        .spawn(move || run(cfg, pattern, encoder, &hub, &stop))
        .context("starting the testsrc thread")
}

fn run(
    cfg: TestsrcConfig,
    mut pattern: TestPattern,
    mut encoder: PictureEncoder,
    hub: &Hub,
    stop: &AtomicBool,
) {
    tracing::info!(
        width = cfg.width,
        height = cfg.height,
        fps = cfg.fps,
        bitrate_kbps = cfg.bitrate_kbps,
        gop = cfg.gop,
        "test pattern source started"
    );
    let period = Duration::from_nanos(1_000_000_000 / u64::from(cfg.fps));
    let started = Instant::now();
    let mut seq: u64 = 0;
    let mut errors: u64 = 0;
    let mut params_checked = false;
    // The deadline of the next picture; None while idle.
    let mut schedule: Option<Instant> = None;
    let mut last_picture: Option<Instant> = None;

    while !stop.load(Ordering::Relaxed) {
        if !hub.has_subscribers() {
            if schedule.take().is_some() {
                tracing::debug!("testsrc idle: no subscribers");
            }
            std::thread::sleep(SLEEP_STEP);
            continue;
        }
        let deadline = match schedule {
            Some(deadline) => deadline,
            None => {
                tracing::debug!("testsrc active");
                // Whoever arrives first must be able to start decoding at once.
                encoder.force_keyframe();
                Instant::now() + cfg.warmup
            }
        };
        // A requested keyframe (a viewer waiting to start) is encoded at once rather
        // than at the next tick, but never sooner than half a period after the last
        // picture, so a flood of requests cannot raise the frame rate.
        let earliest_key = last_picture.map_or(deadline, |t| t + period / 2);
        let Some(deadline) = wait_for_picture(deadline, earliest_key, hub, stop) else {
            break;
        };
        last_picture = Some(Instant::now());

        let capture_us = clock::monotonic_us();
        let wall_ms = clock::realtime_us() / 1000;
        if hub.keyframe_due() {
            encoder.force_keyframe();
        }
        // The strip carries the low 32 bits of seq; wrapping is intended.
        let frame = pattern.draw(seq as u32, wall_ms);
        let pts_ms = started.elapsed().as_millis() as u64;
        match encoder.encode(frame, pts_ms) {
            Ok(Some(picture)) => {
                if picture.key && !params_checked {
                    params_checked = true;
                    check_params(&picture.data, &cfg);
                }
                hub.publish(AccessUnit {
                    data: Bytes::from(picture.data),
                    width: cfg.width,
                    height: cfg.height,
                    key: picture.key,
                    capture_us,
                    seq,
                });
            }
            Ok(None) => tracing::trace!(seq, "encoder skipped a picture"),
            Err(e) => {
                // Log the first failure and then every 100th, not 30 lines a second.
                if errors.is_multiple_of(100) {
                    tracing::warn!(seq, errors = errors + 1, "testsrc encoding failed: {e:#}");
                }
                errors += 1;
            }
        }
        seq += 1;
        schedule = Some(next_deadline(deadline, period, Instant::now()));
    }
    tracing::info!(pictures = seq, "test pattern source stopped");
}

/// The deadline after `deadline`. Deadlines advance by exactly one period, so the rate does
/// not drift; after falling more than a period behind the schedule restarts from `now`
/// rather than bursting to catch up.
fn next_deadline(deadline: Instant, period: Duration, now: Instant) -> Instant {
    let next = deadline + period;
    if now > next + period {
        now
    } else {
        next
    }
}

/// Sleep until `deadline` in short steps; false when `stop` was set meanwhile.
/// Sleep until `deadline`, or until `earliest_key` once a keyframe has been requested.
/// Returns the moment the picture is due (the schedule continues from it), or None when
/// `stop` was set.
fn wait_for_picture(
    deadline: Instant,
    earliest_key: Instant,
    hub: &Hub,
    stop: &AtomicBool,
) -> Option<Instant> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let now = Instant::now();
        if now >= deadline {
            return Some(deadline);
        }
        if now >= earliest_key && hub.keyframe_due() {
            return Some(now);
        }
        std::thread::sleep((deadline - now).min(KEY_POLL_STEP));
    }
}

/// Log what the stream's SPS announces; the hub keeps the real SPS, so signalling always
/// describes what is actually sent even if it is not what was asked for.
fn check_params(annexb: &[u8], cfg: &TestsrcConfig) {
    let Some(sps) = h264::nal_units(annexb).find(|n| h264::nal_type(n) == Some(NalType::Sps))
    else {
        tracing::warn!("testsrc keyframe without SPS");
        return;
    };
    match h264::parse_sps(sps) {
        Ok(info) => {
            let constrained_baseline = info.profile_idc == 66 && info.constraint_flags & 0x40 != 0;
            if !constrained_baseline || (info.width, info.height) != (cfg.width, cfg.height) {
                tracing::warn!(
                    profile_level_id = %info.profile_level_id(),
                    width = info.width,
                    height = info.height,
                    "testsrc stream is not the constrained baseline picture configured"
                );
            } else {
                tracing::info!(profile_level_id = %info.profile_level_id(), "testsrc stream");
            }
        }
        Err(e) => tracing::warn!("testsrc SPS unreadable: {e}"),
    }
}

/// One encoded picture in Annex-B form.
pub struct EncodedPicture {
    pub data: Vec<u8>,
    /// Carries an IDR slice, preceded by SPS and PPS.
    pub key: bool,
}

/// openh264 set up for live viewing: constrained baseline, bitrate rate control, a fixed
/// IDR interval, no skipped pictures, and SPS+PPS in front of every IDR.
pub struct PictureEncoder {
    encoder: Encoder,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

impl PictureEncoder {
    pub fn new(cfg: &TestsrcConfig) -> anyhow::Result<PictureEncoder> {
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(cfg.bitrate_kbps.saturating_mul(1000)))
            .max_frame_rate(FrameRate::from_hz(cfg.fps as f32))
            .intra_frame_period(IntraFramePeriod::from_num_frames(cfg.gop))
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            // Every drawn picture is sent: the frame counter must not jump by itself.
            .skip_frames(false)
            // IDRs only on schedule or request; others would only cost bitrate.
            .scene_change_detect(false)
            .complexity(Complexity::Low)
            .num_threads(1);
        let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .context("creating the H.264 encoder")?;
        crate::sys::openh264_log::route_encoder_log(&mut encoder);
        Ok(PictureEncoder {
            encoder,
            sps: None,
            pps: None,
        })
    }

    /// Make the next picture an IDR.
    pub fn force_keyframe(&mut self) {
        self.encoder.force_intra_frame();
    }

    /// Encode one picture; `None` when the encoder produced nothing for it.
    pub fn encode(
        &mut self,
        frame: &I420Frame,
        pts_ms: u64,
    ) -> anyhow::Result<Option<EncodedPicture>> {
        let (w, h) = (frame.width, frame.height);
        let yuv = YUVSlices::new((&frame.y, &frame.u, &frame.v), (w, h), (w, w / 2, w / 2));
        let stream = self
            .encoder
            .encode_at(&yuv, Timestamp::from_millis(pts_ms))
            .context("openh264 encode")?;
        if matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        let mut data = Vec::new();
        stream.write_vec(&mut data);
        if data.is_empty() {
            return Ok(None);
        }
        let (mut has_sps, mut has_pps) = (false, false);
        for nal in h264::nal_units(&data) {
            match h264::nal_type(nal) {
                Some(NalType::Sps) => {
                    has_sps = true;
                    self.sps = Some(nal.to_vec());
                }
                Some(NalType::Pps) => {
                    has_pps = true;
                    self.pps = Some(nal.to_vec());
                }
                _ => {}
            }
        }
        let key = h264::access_unit_is_key(&data);
        if key && !(has_sps && has_pps) {
            data = self.with_params(&data)?;
        }
        Ok(Some(EncodedPicture { data, key }))
    }

    /// The access unit with the last SPS and PPS put in front of it.
    fn with_params(&self, data: &[u8]) -> anyhow::Result<Vec<u8>> {
        let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else {
            anyhow::bail!("IDR before any SPS/PPS");
        };
        let mut out = Vec::with_capacity(sps.len() + pps.len() + data.len() + 8);
        for nal in [sps, pps] {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
        for nal in h264::nal_units(data)
            .filter(|n| !matches!(h264::nal_type(n), Some(NalType::Sps) | Some(NalType::Pps)))
        {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::pattern::read_code_strip;
    use crate::viewer::decoder::H264Decoder;

    fn config(width: u32, height: u32) -> TestsrcConfig {
        TestsrcConfig {
            width,
            height,
            fps: 30,
            bitrate_kbps: 1000,
            gop: 60,
            warmup: Duration::ZERO,
        }
    }

    /// Draw, encode, decode, read the strip back: the numbers must survive compression.
    fn round_trip(width: u32, height: u32, bitrate_kbps: u32, pictures: u32) {
        let cfg = TestsrcConfig {
            bitrate_kbps,
            ..config(width, height)
        };
        let mut pattern = TestPattern::new(width, height).unwrap();
        let mut encoder = PictureEncoder::new(&cfg).unwrap();
        let mut decoder = H264Decoder::new().unwrap();
        let base_ms = 1_760_000_000_000u64;
        for i in 0..pictures {
            let ms = base_ms + u64::from(i) * 33;
            let counter = 1000 + i;
            let picture = encoder
                .encode(pattern.draw(counter, ms), u64::from(i) * 33)
                .unwrap()
                .expect("a picture for every frame");
            assert_eq!(picture.key, i == 0, "picture {i}");
            let frame = decoder.decode(&picture.data).unwrap().expect("decoded");
            assert_eq!(
                (frame.width, frame.height),
                (width as usize, height as usize)
            );
            let code = read_code_strip(&frame.y, frame.y_stride, frame.width, frame.height);
            assert_eq!(code, Some((counter, ms)), "picture {i} at {width}x{height}");
        }
    }

    #[test]
    fn code_strip_survives_encoding_at_320x240() {
        round_trip(320, 240, 1000, 20);
    }

    #[test]
    fn code_strip_survives_encoding_at_1280x720() {
        round_trip(1280, 720, 2000, 5);
    }

    #[test]
    fn code_strip_survives_a_starved_bitrate() {
        // 50 kbit/s for 720p: the quantiser goes to its maximum.
        round_trip(1280, 720, 50, 40);
    }

    #[test]
    fn keyframes_carry_constrained_baseline_params() {
        let cfg = config(320, 240);
        let mut pattern = TestPattern::new(320, 240).unwrap();
        let mut encoder = PictureEncoder::new(&cfg).unwrap();
        for i in 0..4 {
            if i == 2 {
                encoder.force_keyframe();
            }
            let picture = encoder.encode(pattern.draw(i, 0), 0).unwrap().unwrap();
            assert_eq!(picture.key, i == 0 || i == 2, "picture {i}");
            let types: Vec<_> = h264::nal_units(&picture.data)
                .filter_map(h264::nal_type)
                .collect();
            if picture.key {
                assert_eq!(&types[..2], &[NalType::Sps, NalType::Pps], "{types:?}");
                let sps = h264::parse_sps(h264::nal_units(&picture.data).next().unwrap()).unwrap();
                assert_eq!((sps.width, sps.height), (320, 240));
                assert_eq!(sps.profile_idc, 66);
                assert_ne!(sps.constraint_flags & 0x40, 0, "constraint_set1");
            } else {
                assert!(!types.contains(&NalType::Sps), "{types:?}");
            }
        }
    }

    #[test]
    fn idr_without_params_gets_the_cached_ones() {
        let mut pattern = TestPattern::new(320, 240).unwrap();
        let mut encoder = PictureEncoder::new(&config(320, 240)).unwrap();
        let first = encoder.encode(pattern.draw(0, 0), 0).unwrap().unwrap();
        let nals: Vec<&[u8]> = h264::nal_units(&first.data).collect();
        let idr_only: Vec<u8> = nals
            .iter()
            .filter(|n| h264::nal_type(n) == Some(NalType::Idr))
            .flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat())
            .collect();
        let fixed = encoder.with_params(&idr_only).unwrap();
        assert_eq!(
            fixed, first.data,
            "SPS, PPS, then the slice, as the encoder wrote them"
        );
    }

    #[test]
    fn deadlines_do_not_drift_and_do_not_burst() {
        let t0 = Instant::now();
        let period = Duration::from_millis(33);
        assert_eq!(
            next_deadline(t0, period, t0 + Duration::from_millis(5)),
            t0 + period
        );
        // Slightly late: keep the grid.
        assert_eq!(
            next_deadline(t0, period, t0 + Duration::from_millis(50)),
            t0 + period
        );
        // Far behind: restart from now.
        let late = t0 + Duration::from_millis(200);
        assert_eq!(next_deadline(t0, period, late), late);
    }
}
