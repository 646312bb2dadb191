//! The H.264 encoders of raw pictures (the test pattern, a camera delivering raw
//! pictures, the NO SIGNAL picture): [`PictureEncoder`] is what the source runner
//! drives, [`H264EncoderChoice`] says which one a stream uses. [`H264Encoder`] is
//! openh264 on the CPU, set up for live viewing, its output published as openh264
//! writes it; the V4L2 memory-to-memory encoder is in [`super::m2m`].

use anyhow::Context;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::{OpenH264API, Timestamp};

use std::sync::Arc;

use super::h264::{self, NalType};
use super::m2m::M2mConfig;
use super::picture::Picture;
use super::video::VideoSettings;
use super::yuv::I420Frame;

/// An H.264 encoder of I420 pictures.
pub trait PictureEncoder: Send {
    /// Which encoder, for logs.
    fn name(&self) -> &'static str;

    /// What it was made for; the picture size is the one it encodes.
    fn settings(&self) -> &VideoSettings;

    /// Encode `frame`, captured at `capture_us` (CLOCK_MONOTONIC µs); `force_key` makes
    /// it an IDR with SPS and PPS in front. `None` when the encoder made nothing of it.
    fn encode(
        &mut self,
        frame: &I420Frame,
        capture_us: u64,
        force_key: bool,
    ) -> anyhow::Result<Option<Picture>>;
}

/// Which encoder makes a stream's H.264 from raw pictures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum H264EncoderChoice {
    /// openh264, on the CPU.
    #[default]
    Cpu,
    /// The V4L2 memory-to-memory encoder (a Raspberry Pi's `/dev/video11`).
    M2m(M2mConfig),
}

/// Makes an encoder for the given settings (again whenever the picture size changes).
pub type EncoderFactory =
    Arc<dyn Fn(&VideoSettings) -> anyhow::Result<Box<dyn PictureEncoder>> + Send + Sync>;

impl H264EncoderChoice {
    /// Check at start that the chosen encoder can be used, so a wrong device path stops
    /// the program with a message instead of a stream of NO SIGNAL.
    pub fn check(&self) -> anyhow::Result<()> {
        match self {
            H264EncoderChoice::Cpu => Ok(()),
            H264EncoderChoice::M2m(m2m) => super::m2m::check_device(&m2m.device),
        }
    }

    pub fn factory(&self) -> EncoderFactory {
        match self {
            H264EncoderChoice::Cpu => Arc::new(|settings: &VideoSettings| {
                Ok(Box::new(H264Encoder::new(settings)?) as Box<dyn PictureEncoder>)
            }),
            H264EncoderChoice::M2m(m2m) => {
                let m2m = m2m.clone();
                Arc::new(move |settings: &VideoSettings| {
                    Ok(Box::new(super::m2m::M2mEncoder::open_v4l2(settings, &m2m))
                        as Box<dyn PictureEncoder>)
                })
            }
        }
    }
}

impl PictureEncoder for H264Encoder {
    fn name(&self) -> &'static str {
        "openh264"
    }

    fn settings(&self) -> &VideoSettings {
        &self.settings
    }

    fn encode(
        &mut self,
        frame: &I420Frame,
        capture_us: u64,
        force_key: bool,
    ) -> anyhow::Result<Option<Picture>> {
        if force_key {
            self.force_keyframe();
        }
        H264Encoder::encode(self, frame, capture_us)
    }
}

/// openh264 as constrained baseline (no B-frames, so no reordering delay), bitrate rate
/// control, a fixed IDR interval, no skipped pictures, and SPS+PPS in front of every IDR.
pub struct H264Encoder {
    encoder: Encoder,
    settings: VideoSettings,
    /// The first keyframe's parameters were checked against the settings.
    announced: bool,
}

impl H264Encoder {
    pub fn new(settings: &VideoSettings) -> anyhow::Result<H264Encoder> {
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(
                settings.bitrate_kbps.saturating_mul(1000),
            ))
            .max_frame_rate(FrameRate::from_hz(settings.fps.max(1) as f32))
            .intra_frame_period(IntraFramePeriod::from_num_frames(settings.gop))
            // SPS and PPS written again with every IDR, so each keyframe stands alone.
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            // Every picture given is sent: the frame counter must not jump by itself.
            .skip_frames(false)
            // IDRs only on schedule or request; others would only cost bitrate.
            .scene_change_detect(false)
            .complexity(Complexity::Low)
            .num_threads(1);
        let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .context("creating the H.264 encoder")?;
        crate::sys::openh264_log::route_encoder_log(&mut encoder);
        Ok(H264Encoder {
            encoder,
            settings: *settings,
            announced: false,
        })
    }

    pub fn settings(&self) -> &VideoSettings {
        &self.settings
    }

    /// Make the next picture an IDR.
    pub fn force_keyframe(&mut self) {
        self.encoder.force_intra_frame();
    }

    /// Encode `frame`, captured at `capture_us` (CLOCK_MONOTONIC µs, which also paces
    /// the rate control); `None` when the encoder produced nothing for it.
    pub fn encode(
        &mut self,
        frame: &I420Frame,
        capture_us: u64,
    ) -> anyhow::Result<Option<Picture>> {
        let (w, h) = (frame.width, frame.height);
        let yuv = YUVSlices::new((&frame.y, &frame.u, &frame.v), (w, h), (w, w / 2, w / 2));
        let stream = self
            .encoder
            .encode_at(&yuv, Timestamp::from_millis(capture_us / 1000))
            .context("openh264 encode")?;
        if matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        let mut data = Vec::new();
        stream.write_vec(&mut data);
        if data.is_empty() {
            return Ok(None);
        }
        let key = stream.frame_type() == FrameType::IDR;
        if key && !self.announced {
            self.announced = true;
            self.check_params(&data);
        }
        Ok(Some(Picture::video(
            data,
            key,
            (w as u32, h as u32),
            capture_us,
        )))
    }

    /// Log what the stream's SPS announces; the hub keeps the real SPS, so signalling
    /// always describes what is actually sent even if it is not what was asked for.
    fn check_params(&self, annexb: &[u8]) {
        let Some(sps) = h264::nal_units(annexb).find(|n| h264::nal_type(n) == Some(NalType::Sps))
        else {
            tracing::warn!("H.264 keyframe without SPS");
            return;
        };
        match h264::parse_sps(sps) {
            Ok(info) => {
                let constrained_baseline =
                    info.profile_idc == 66 && info.constraint_flags & 0x40 != 0;
                let asked = (self.settings.width, self.settings.height);
                if !constrained_baseline || (info.width, info.height) != asked {
                    tracing::warn!(
                        profile_level_id = %info.profile_level_id(),
                        width = info.width,
                        height = info.height,
                        "encoded stream is not the constrained baseline picture configured"
                    );
                } else {
                    tracing::debug!(profile_level_id = %info.profile_level_id(), "encoder stream");
                }
            }
            Err(e) => tracing::warn!("encoder SPS unreadable: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::pattern::{read_code_strip, TestPattern};
    use crate::viewer::decoder::H264Decoder;

    fn settings(width: u32, height: u32, bitrate_kbps: u32) -> VideoSettings {
        VideoSettings {
            width,
            height,
            fps: 30,
            bitrate_kbps,
            gop: 60,
        }
    }

    /// Draw, encode, decode, read the strip back: the numbers must survive compression.
    fn round_trip(width: u32, height: u32, bitrate_kbps: u32, pictures: u32) {
        let mut pattern = TestPattern::new(width, height).unwrap();
        let mut encoder = H264Encoder::new(&settings(width, height, bitrate_kbps)).unwrap();
        let mut decoder = H264Decoder::new().unwrap();
        let base_ms = 1_760_000_000_000u64;
        for i in 0..pictures {
            let ms = base_ms + u64::from(i) * 33;
            let counter = 1000 + i;
            let picture = encoder
                .encode(pattern.draw(counter, ms), u64::from(i) * 33_000)
                .unwrap()
                .expect("a picture for every frame");
            assert_eq!(picture.key, i == 0, "picture {i}");
            assert_eq!((picture.width, picture.height), (width, height));
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
        let mut pattern = TestPattern::new(320, 240).unwrap();
        let mut encoder = H264Encoder::new(&settings(320, 240, 1000)).unwrap();
        for i in 0..4 {
            if i == 2 {
                encoder.force_keyframe();
            }
            let picture = encoder.encode(pattern.draw(i, 0), 0).unwrap().unwrap();
            assert_eq!(picture.key, i == 0 || i == 2, "picture {i}");
            assert_eq!(picture.key, h264::access_unit_is_key(&picture.data));
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
}
