//! H.264 from the V4L2 memory-to-memory encoder (a Raspberry Pi's `/dev/video11`), so
//! a Pi does not spend its CPU in openh264. The stateful encoder API: controls set
//! before the formats, raw pictures queued with a timestamp, the encoded access unit
//! for that timestamp dequeued, keyframes asked for with
//! `V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME`.
//!
//! Everything here works through [`M2mDevice`], the device at the ioctl boundary:
//! [`v4l2`] is the real one, and the tests drive a fake that encodes with openh264.
//! A device that fails or stops answering is closed, the picture is an error (the
//! runner shows NO SIGNAL), and it is opened again for a later picture.

mod layout;
pub mod v4l2;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use v4l::v4l_sys as k;

use super::encoder::PictureEncoder;
use super::h264::{self, NalType};
use super::picture::Picture;
use super::video::VideoSettings;
use super::yuv::I420Frame;
pub use layout::InputLayout;

/// Where the M2M encoder is and how it is driven.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct M2mConfig {
    pub device: PathBuf,
    /// µStreamer's `--h264-boost`: H.264 level 4.2 instead of 4.0 and up to 60
    /// pictures per second above 720p (faster Pi boards, e.g. PiKVM V4).
    pub boost: bool,
}

/// The Raspberry Pi's H.264 encoder node, µStreamer's default.
pub const DEFAULT_DEVICE: &str = "/dev/video11";

/// Longest wait for one picture's encoded data; a device slower than this has failed.
pub const ENCODE_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failure the device is opened again for the first picture this much later.
const REOPEN_AFTER_US: u64 = 1_000_000;
/// Pictures in a row for which the device held every input buffer: then it has failed.
const MAX_HELD_IN_A_ROW: u32 = 5;
/// Bytes the driver may use for one encoded picture (µStreamer's figure: smaller
/// buffers truncate high-bitrate keyframes on the Pi).
pub const BITSTREAM_BUFFER_BYTES: u32 = 1536 * 1024;

/// One encoded buffer the device handed back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub data: Vec<u8>,
    /// The driver's keyframe flag.
    pub key: bool,
    /// The timestamp of the picture it encodes.
    pub timestamp_us: u64,
}

/// A memory-to-memory H.264 encoder at the ioctl boundary.
pub trait M2mDevice: Send {
    /// VIDIOC_S_CTRL.
    fn set_control(&mut self, id: u32, value: i32) -> io::Result<()>;

    /// Set the formats (I420 in, H.264 out) and picture rate, set up the buffers and
    /// start both queues. Returns how the device wants a picture laid out.
    fn start(&mut self, width: u32, height: u32, fps: u32) -> io::Result<InputLayout>;

    /// Take back the input buffers the device is done with, let `fill` write a picture
    /// into a free one (returning the bytes used) and queue it stamped `timestamp_us`.
    /// `WouldBlock` when the device holds every input buffer.
    fn queue_input(
        &mut self,
        timestamp_us: u64,
        fill: &mut dyn FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<()>;

    /// The next encoded buffer, waiting up to `timeout`; `None` when none came in time.
    fn dequeue_output(&mut self, timeout: Duration) -> io::Result<Option<Encoded>>;
}

/// Opens the device (again after a failure).
pub type DeviceOpener = Box<dyn FnMut() -> anyhow::Result<Box<dyn M2mDevice>> + Send>;

/// Fails unless `path` is a memory-to-memory device that encodes I420 to H.264.
pub fn check_device(path: &Path) -> anyhow::Result<()> {
    v4l2::V4l2M2m::open(path)
        .map(drop)
        .with_context(|| format!("--h264-m2m-device {}", path.display()))
}

/// The controls µStreamer sets on the Pi's encoder, in its order, for `settings`.
pub fn controls(settings: &VideoSettings, boost: bool) -> Vec<(u32, i32, &'static str)> {
    let pixels = u64::from(settings.width) * u64::from(settings.height);
    let level = if pixels > 1920 * 1080 {
        k::v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_5_1
    } else if boost {
        k::v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_4_2
    } else {
        k::v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_4_0
    };
    let bitrate = settings
        .bitrate_kbps
        .saturating_mul(1000)
        .min(i32::MAX as u32);
    vec![
        (k::V4L2_CID_MPEG_VIDEO_BITRATE, bitrate as i32, "bitrate"),
        (
            k::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD,
            settings.gop.min(i32::MAX as u32) as i32,
            "keyframe interval",
        ),
        (
            k::V4L2_CID_MPEG_VIDEO_H264_PROFILE,
            k::v4l2_mpeg_video_h264_profile_V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE
                as i32,
            "profile",
        ),
        (k::V4L2_CID_MPEG_VIDEO_H264_LEVEL, level as i32, "level"),
        // SPS and PPS with every IDR, so each keyframe stands alone.
        (
            k::V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER,
            1,
            "repeat sequence header",
        ),
        (k::V4L2_CID_MPEG_VIDEO_H264_MIN_QP, 16, "minimum QP"),
        (k::V4L2_CID_MPEG_VIDEO_H264_MAX_QP, 32, "maximum QP"),
    ]
}

/// The most pictures per second the Pi's encoder is given (µStreamer's limits: more
/// makes encoding slower than real time above 720p unless boosted).
pub fn fps_limit(width: u32, height: u32, boost: bool) -> u32 {
    if u64::from(width) * u64::from(height) <= 1280 * 720 || boost {
        60
    } else {
        30
    }
}

/// The device, started for the encoder's picture size.
struct Running {
    device: Box<dyn M2mDevice>,
    layout: InputLayout,
}

/// [`PictureEncoder`] on a memory-to-memory device.
pub struct M2mEncoder {
    settings: VideoSettings,
    boost: bool,
    /// For messages.
    path: String,
    open_device: DeviceOpener,
    running: Option<Running>,
    /// After a failure: no attempt to open before this capture time.
    reopen_at_us: Option<u64>,
    timeout: Duration,
    /// Pictures faster than this are skipped.
    min_interval_us: u64,
    last_encoded_us: Option<u64>,
    held_in_a_row: u32,
    /// The last SPS and PPS seen, put in front of an IDR that comes without them.
    params: Option<Vec<u8>>,
}

impl M2mEncoder {
    /// An encoder on the V4L2 device `m2m.device`, opened at the first picture.
    pub fn open_v4l2(settings: &VideoSettings, m2m: &M2mConfig) -> M2mEncoder {
        let path = m2m.device.clone();
        let opener: DeviceOpener = Box::new(move || {
            let device = v4l2::V4l2M2m::open(&path)?;
            Ok(Box::new(device) as Box<dyn M2mDevice>)
        });
        M2mEncoder::new(
            settings,
            m2m.boost,
            &m2m.device.display().to_string(),
            opener,
        )
    }

    pub fn new(
        settings: &VideoSettings,
        boost: bool,
        path: &str,
        open_device: DeviceOpener,
    ) -> M2mEncoder {
        let fps = settings
            .fps
            .clamp(1, fps_limit(settings.width, settings.height, boost));
        M2mEncoder {
            settings: *settings,
            boost,
            path: path.into(),
            open_device,
            running: None,
            reopen_at_us: None,
            timeout: ENCODE_TIMEOUT,
            // A tenth of an interval's slack for capture jitter.
            min_interval_us: 900_000 / u64::from(fps),
            last_encoded_us: None,
            held_in_a_row: 0,
            params: None,
        }
    }

    /// How long to wait for one picture's data (the tests' fake answers at once).
    pub fn with_timeout(mut self, timeout: Duration) -> M2mEncoder {
        self.timeout = timeout;
        self
    }

    /// Open and configure the device: controls first (the Pi's driver applies them
    /// when the queues start), then formats, rate, buffers.
    fn start(&mut self) -> anyhow::Result<Running> {
        let mut device = (self.open_device)()?;
        let s = self.settings;
        for (id, value, what) in controls(&s, self.boost) {
            device
                .set_control(id, value)
                .with_context(|| format!("setting the {what} ({value})"))?;
        }
        let fps = s.fps.clamp(1, fps_limit(s.width, s.height, self.boost));
        let layout = device
            .start(s.width, s.height, fps)
            .context("starting the encoder")?;
        layout.check(s.width, s.height)?;
        tracing::info!(
            device = %self.path,
            width = s.width,
            height = s.height,
            fps,
            bitrate_kbps = s.bitrate_kbps,
            gop = s.gop,
            "M2M H.264 encoder started"
        );
        Ok(Running { device, layout })
    }

    /// One picture through the running device: the encoded access unit and whether
    /// the device held every input buffer (`None`).
    fn encode_on(
        running: &mut Running,
        frame: &I420Frame,
        capture_us: u64,
        force_key: bool,
        timeout: Duration,
    ) -> anyhow::Result<Option<Encoded>> {
        if force_key {
            running
                .device
                .set_control(k::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1)
                .context("asking for a keyframe")?;
        }
        let layout = running.layout;
        let queued = running
            .device
            .queue_input(capture_us, &mut |buffer| layout.write(frame, buffer));
        match queued {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(anyhow!(e).context("queueing a picture")),
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let out = running
                .device
                .dequeue_output(left)
                .context("taking the encoded picture")?;
            let Some(out) = out else {
                bail!("no encoded picture within {} ms", timeout.as_millis());
            };
            // The Pi's encoder may first hand back a buffer of garbage from before
            // this picture: only the one stamped with it is its encoding.
            if out.timestamp_us == capture_us {
                return Ok(Some(out));
            }
            tracing::debug!(
                expected = capture_us,
                got = out.timestamp_us,
                "encoded buffer for another picture dropped"
            );
        }
    }

    /// The device's access unit as a picture: its own key flag is checked against the
    /// bitstream (the hub relies on it), and an IDR without parameter sets gets the
    /// last ones seen.
    fn picture(&mut self, out: Encoded, capture_us: u64) -> Option<Picture> {
        let mut data = out.data;
        if data.is_empty() {
            return None;
        }
        let key = h264::access_unit_is_key(&data);
        if key != out.key {
            tracing::debug!(
                flag = out.key,
                bitstream = key,
                "M2M keyframe flag disagrees"
            );
        }
        let mut sps_pps = Vec::new();
        for nal in h264::nal_units(&data) {
            if matches!(h264::nal_type(nal), Some(NalType::Sps | NalType::Pps)) {
                sps_pps.extend_from_slice(&[0, 0, 0, 1]);
                sps_pps.extend_from_slice(nal);
            }
        }
        if !sps_pps.is_empty() {
            self.params = Some(sps_pps);
        } else if key {
            match &self.params {
                Some(params) => data.splice(0..0, params.iter().copied()).for_each(drop),
                None => tracing::warn!("M2M encoder sent an IDR without SPS/PPS"),
            }
        }
        let size = (self.settings.width, self.settings.height);
        Some(Picture::video(data, key, size, capture_us))
    }

    /// Close the device after `e`; opened again for a picture a while later.
    fn fail(&mut self, capture_us: u64, e: anyhow::Error) -> anyhow::Error {
        self.running = None;
        self.reopen_at_us = Some(capture_us.saturating_add(REOPEN_AFTER_US));
        self.held_in_a_row = 0;
        e.context(format!("M2M H.264 encoder {}", self.path))
    }
}

impl PictureEncoder for M2mEncoder {
    fn name(&self) -> &'static str {
        "v4l2-m2m"
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
        let size = (frame.width as u32, frame.height as u32);
        if size != self.settings.size() {
            bail!(
                "picture {}x{} given to an encoder made for {}x{}",
                size.0,
                size.1,
                self.settings.width,
                self.settings.height
            );
        }
        let too_soon = self
            .last_encoded_us
            .is_some_and(|last| capture_us.saturating_sub(last) < self.min_interval_us);
        if too_soon && !force_key {
            return Ok(None);
        }
        let mut force_key = force_key;
        if self.running.is_none() {
            if let Some(at) = self.reopen_at_us {
                if capture_us < at {
                    bail!(
                        "M2M H.264 encoder {} failed; opening it again shortly",
                        self.path
                    );
                }
            }
            match self.start() {
                Ok(running) => self.running = Some(running),
                Err(e) => return Err(self.fail(capture_us, e)),
            }
            self.reopen_at_us = None;
            // A fresh encoder starts with an IDR anyway; asking costs nothing.
            force_key = true;
        }
        let Some(running) = self.running.as_mut() else {
            return Ok(None);
        };
        match Self::encode_on(running, frame, capture_us, force_key, self.timeout) {
            Ok(Some(out)) => {
                self.held_in_a_row = 0;
                self.last_encoded_us = Some(capture_us);
                Ok(self.picture(out, capture_us))
            }
            Ok(None) => {
                self.held_in_a_row += 1;
                if self.held_in_a_row >= MAX_HELD_IN_A_ROW {
                    let e = anyhow!(
                        "the device kept every input buffer for {} pictures",
                        self.held_in_a_row
                    );
                    return Err(self.fail(capture_us, e));
                }
                tracing::debug!("M2M encoder holds every input buffer: picture skipped");
                Ok(None)
            }
            Err(e) => Err(self.fail(capture_us, e)),
        }
    }
}
