//! A capture device that plays recorded camera buffers (MJPEG, YUYV, NV12, YU12, H.264)
//! at a steady rate, and can be scripted to be unplugged and plugged in again. It lets
//! everything after the driver run for real where no camera exists: in tests, and as
//! `--source FILE.mjpeg` to replay a camera's own recording.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::device::{CaptureDevice, DeviceError, DeviceOpener, Frame, Negotiated, PixelFormat};
use crate::media::clock;
use crate::source::annexb::AnnexBSplitter;

/// Buffers as a device would hand them out, one picture each.
#[derive(Clone, Debug)]
pub struct Recording {
    pub negotiated: Negotiated,
    pub frames: Vec<Vec<u8>>,
}

impl Recording {
    /// Concatenated JPEG pictures (ffmpeg's `-f mjpeg`, or a camera's MJPEG buffers).
    pub fn mjpeg(data: &[u8], width: u32, height: u32) -> Recording {
        let mut frames = Vec::new();
        let mut start = None;
        let mut i = 0;
        while i + 1 < data.len() {
            match (data[i], data[i + 1]) {
                (0xFF, 0xD8) if start.is_none() => start = Some(i),
                (0xFF, 0xD9) => {
                    if let Some(s) = start.take() {
                        frames.push(data[s..i + 2].to_vec());
                    }
                    i += 1;
                }
                _ => {}
            }
            i += 1;
        }
        Recording {
            negotiated: Negotiated {
                format: PixelFormat::Mjpeg,
                width,
                height,
                stride: 0,
                fps: None,
            },
            frames,
        }
    }

    /// Raw pictures back to back, tightly packed (`stride` = the format's line length).
    pub fn raw(format: PixelFormat, data: &[u8], width: u32, height: u32) -> Recording {
        let (w, h) = (width as usize, height as usize);
        let (stride, size) = match format {
            PixelFormat::Yuyv => (w * 2, w * 2 * h),
            _ => (w, w * h * 3 / 2),
        };
        Recording {
            negotiated: Negotiated {
                format,
                width,
                height,
                stride: stride as u32,
                fps: None,
            },
            frames: data.chunks_exact(size).map(<[u8]>::to_vec).collect(),
        }
    }

    /// An H.264 Annex-B stream, one access unit per buffer as an H.264 camera gives them.
    pub fn h264(data: &[u8]) -> Recording {
        let mut splitter = AnnexBSplitter::new();
        let mut pictures = Vec::new();
        // Errors leave an empty recording, which a test sees at once.
        if splitter.push(data, &mut pictures).is_ok() {
            splitter.flush(&mut pictures);
        }
        let (width, height) = pictures.first().map_or((0, 0), |p| (p.width, p.height));
        Recording {
            negotiated: Negotiated {
                format: PixelFormat::H264,
                width,
                height,
                stride: 0,
                fps: None,
            },
            frames: pictures.into_iter().map(|p| p.data.to_vec()).collect(),
        }
    }
}

/// Largest recording loaded into memory.
const MAX_RECORDING_BYTES: u64 = 512 << 20;

/// A recording named by its file's extension: `.mjpeg`/`.mjpg` (concatenated JPEG, e.g.
/// `ffmpeg -f v4l2 -input_format mjpeg -i /dev/video0 -c copy -f mjpeg cam.mjpeg`), or
/// raw `.yuyv`, `.nv12`, `.yuv` (I420) pictures of `width`x`height`.
pub fn recording_from_file(path: &Path, width: u32, height: u32) -> anyhow::Result<Recording> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let format = match ext.as_str() {
        "mjpeg" | "mjpg" => PixelFormat::Mjpeg,
        "yuyv" => PixelFormat::Yuyv,
        "nv12" => PixelFormat::Nv12,
        "yuv" => PixelFormat::Yu12,
        _ => bail!(
            "source {}: a camera recording is .mjpeg, .yuyv, .nv12 or .yuv",
            path.display()
        ),
    };
    let shown = path.display();
    let size = std::fs::metadata(path)
        .with_context(|| format!("source {shown}"))?
        .len();
    if size > MAX_RECORDING_BYTES {
        bail!(
            "source {shown}: {} MiB is more than the {} MiB a recording may have",
            size >> 20,
            MAX_RECORDING_BYTES >> 20
        );
    }
    let data = std::fs::read(path).with_context(|| format!("source {shown}"))?;
    let recording = match format {
        PixelFormat::Mjpeg => Recording::mjpeg(&data, width, height),
        raw => Recording::raw(raw, &data, width, height),
    };
    if recording.frames.is_empty() {
        bail!("source {shown}: no complete {format} picture of {width}x{height} in it");
    }
    Ok(recording)
}

/// One step of the device's life.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// Opens, delivers this many buffers, then reports the device unplugged.
    Deliver(usize),
    /// This many attempts to open find no device.
    Missing(usize),
}

/// Which recorded buffer was delivered with which timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub index: usize,
    pub capture_us: u64,
    /// Counts every buffer delivered since the first open.
    pub sequence: u32,
}

/// Deliveries remembered (over two minutes at 30 fps); older ones are forgotten, so a
/// recording replayed for days does not grow the log.
const LOG_DELIVERIES: usize = 4096;

/// Shared with the test that drives the device.
#[derive(Default)]
pub struct ReplayLog {
    /// The most recent deliveries, oldest first.
    pub delivered: Mutex<VecDeque<Delivered>>,
    pub opens: AtomicU64,
    pub keyframe_requests: AtomicU64,
}

impl ReplayLog {
    /// The recorded buffer delivered with this timestamp.
    pub fn index_at(&self, capture_us: u64) -> Option<usize> {
        let delivered = self.delivered.lock().unwrap_or_else(|e| e.into_inner());
        delivered
            .iter()
            .rev()
            .find(|d| d.capture_us == capture_us)
            .map(|d| d.index)
    }
}

pub struct ReplayOpener {
    recording: Arc<Recording>,
    period: Duration,
    script: VecDeque<Step>,
    /// Next recorded buffer and sequence number; playback goes on after a replug.
    position: Arc<Mutex<(usize, u32)>>,
    log: Arc<ReplayLog>,
}

/// How long before its buffer is ready a picture was taken (exposure and readout), so
/// timestamps visibly come from the device and not from whoever reads them.
pub const SENSOR_LEAD_US: u64 = 20_000;

impl ReplayOpener {
    /// Play `recording` at `fps`, following `script`, then deliver forever.
    pub fn new(recording: Recording, fps: u32, script: &[Step]) -> (ReplayOpener, Arc<ReplayLog>) {
        let log = Arc::new(ReplayLog::default());
        let mut recording = recording;
        recording.negotiated.fps = Some(f64::from(fps.max(1)));
        let opener = ReplayOpener {
            recording: Arc::new(recording),
            period: Duration::from_nanos(1_000_000_000 / u64::from(fps.max(1))),
            script: script.iter().copied().collect(),
            position: Arc::default(),
            log: log.clone(),
        };
        (opener, log)
    }
}

impl DeviceOpener for ReplayOpener {
    fn name(&self) -> String {
        format!("replay:{}", self.recording.negotiated.format)
    }

    fn open(&mut self) -> Result<Box<dyn CaptureDevice>, DeviceError> {
        if let Some(Step::Missing(n)) = self.script.front_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.script.pop_front();
            }
            return Err(DeviceError::Gone("replay: no such device".into()));
        }
        let budget = match self.script.pop_front() {
            Some(Step::Deliver(n)) => Some(n),
            _ => None,
        };
        if self.recording.frames.is_empty() {
            return Err(DeviceError::Unusable(
                "replay: the recording is empty".into(),
            ));
        }
        self.log.opens.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(ReplayDevice {
            recording: self.recording.clone(),
            period: self.period,
            next_due: Instant::now(),
            budget,
            position: self.position.clone(),
            log: self.log.clone(),
        }))
    }
}

struct ReplayDevice {
    recording: Arc<Recording>,
    period: Duration,
    next_due: Instant,
    budget: Option<usize>,
    position: Arc<Mutex<(usize, u32)>>,
    log: Arc<ReplayLog>,
}

impl CaptureDevice for ReplayDevice {
    fn negotiated(&self) -> Negotiated {
        self.recording.negotiated
    }

    fn next_frame(&mut self) -> Result<Frame<'_>, DeviceError> {
        if self.budget == Some(0) {
            return Err(DeviceError::Gone("replay: device unplugged".into()));
        }
        let now = Instant::now();
        if self.next_due > now {
            std::thread::sleep(self.next_due - now);
        }
        self.next_due = self.next_due.max(Instant::now() - self.period) + self.period;
        if let Some(b) = self.budget.as_mut() {
            *b -= 1;
        }
        let (index, sequence) = {
            let mut pos = self.position.lock().unwrap_or_else(|e| e.into_inner());
            let taken = (pos.0 % self.recording.frames.len(), pos.1);
            *pos = (pos.0 + 1, pos.1.wrapping_add(1));
            taken
        };
        let delivered = Delivered {
            index,
            capture_us: clock::monotonic_us().saturating_sub(SENSOR_LEAD_US),
            sequence,
        };
        {
            let mut log = self.log.delivered.lock().unwrap_or_else(|e| e.into_inner());
            if log.len() == LOG_DELIVERIES {
                log.pop_front();
            }
            log.push_back(delivered);
        }
        Ok(Frame {
            data: &self.recording.frames[index],
            capture_us: delivered.capture_us,
            sequence,
        })
    }

    fn force_keyframe(&mut self) -> Result<(), DeviceError> {
        self.log.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recordings_are_recognised_by_extension_and_checked() {
        let dir = std::env::temp_dir().join(format!("peregrine-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let other = dir.join("clip.h264");
        assert!(recording_from_file(&other, 640, 480).is_err());
        let missing = dir.join("gone.mjpeg");
        let err = recording_from_file(&missing, 640, 480).unwrap_err();
        assert!(format!("{err:#}").contains("gone.mjpeg"), "{err:#}");
        let junk = dir.join("junk.mjpeg");
        std::fs::write(&junk, b"not a jpeg at all").unwrap();
        let err = recording_from_file(&junk, 640, 480).unwrap_err();
        assert!(
            format!("{err:#}").contains("no complete MJPEG picture"),
            "{err:#}"
        );
        // Two whole YUYV pictures of 16x16 and a partial third.
        let raw = dir.join("cam.yuyv");
        std::fs::write(&raw, vec![128u8; 16 * 16 * 2 * 2 + 100]).unwrap();
        let rec = recording_from_file(&raw, 16, 16).unwrap();
        assert_eq!(rec.frames.len(), 2);
        assert_eq!(rec.negotiated.format, PixelFormat::Yuyv);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concatenated_jpegs_split_into_pictures() {
        let mut data = b"junk".to_vec();
        for body in [&b"one"[..], b"two"] {
            data.extend_from_slice(&[0xFF, 0xD8]);
            data.extend_from_slice(body);
            data.extend_from_slice(&[0xFF, 0xD9]);
        }
        let rec = Recording::mjpeg(&data, 8, 8);
        assert_eq!(rec.frames.len(), 2);
        assert_eq!(rec.frames[1], [0xFF, 0xD8, b't', b'w', b'o', 0xFF, 0xD9]);
    }
}
