//! What the camera source needs from a capture device, so that everything after the
//! driver (format conversion, encoding, timestamps, unplug and replug) runs the same
//! against a real V4L2 device and against recorded frames.

use std::fmt;
use std::time::Duration;

/// Pixel formats the camera source can use, in the order `auto` prefers them: the
/// camera's own H.264 first (no encoding here at all), then MJPEG (small buffers even
/// at high resolutions over USB), then the raw formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    H264,
    Mjpeg,
    Yuyv,
    Nv12,
    /// Planar 4:2:0 (I420), V4L2's `YU12`.
    Yu12,
}

impl PixelFormat {
    pub const PREFERRED: [PixelFormat; 5] = [
        PixelFormat::H264,
        PixelFormat::Mjpeg,
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::Yu12,
    ];

    /// The V4L2 four-character code.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::H264 => *b"H264",
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Yu12 => *b"YU12",
        }
    }

    pub fn from_fourcc(code: [u8; 4]) -> Option<PixelFormat> {
        // Cameras also label Motion-JPEG as plain JPEG.
        match &code {
            b"JPEG" => Some(PixelFormat::Mjpeg),
            _ => Self::PREFERRED.into_iter().find(|f| f.fourcc() == code),
        }
    }

    /// Parse `--format` (case-insensitive; `MJPG`/`JPEG`, `I420` and `YUV420` are accepted too).
    pub fn parse(name: &str) -> Option<PixelFormat> {
        match name.to_ascii_uppercase().as_str() {
            "H264" => Some(PixelFormat::H264),
            "MJPEG" | "MJPG" | "JPEG" => Some(PixelFormat::Mjpeg),
            "YUYV" | "YUY2" => Some(PixelFormat::Yuyv),
            "NV12" => Some(PixelFormat::Nv12),
            // YUV420: µStreamer's name for it.
            "YU12" | "I420" | "YUV420" => Some(PixelFormat::Yu12),
            _ => None,
        }
    }

    /// Whether pictures arrive already encoded as H.264.
    pub fn is_h264(self) -> bool {
        self == PixelFormat::H264
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PixelFormat::H264 => "H264",
            PixelFormat::Mjpeg => "MJPEG",
            PixelFormat::Yuyv => "YUYV",
            PixelFormat::Nv12 => "NV12",
            PixelFormat::Yu12 => "YU12",
        })
    }
}

/// What the device agreed to deliver (drivers adjust what is asked for).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Negotiated {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Bytes per line of raw formats (for NV12/YU12 the luma line; 0 for compressed).
    pub stride: u32,
    /// The frame rate the driver reports, if it reports one.
    pub fps: Option<f64>,
}

/// One captured buffer, borrowed from the device until the next call.
pub struct Frame<'a> {
    pub data: &'a [u8],
    /// When the sensor captured it, in CLOCK_MONOTONIC microseconds (the driver's
    /// timestamp where it gives one, else the time the buffer was dequeued).
    pub capture_us: u64,
    /// The driver's frame counter; gaps mean frames it dropped.
    pub sequence: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The device is not there (not plugged in, unplugged, wrong path).
    #[error("{0}")]
    Gone(String),
    /// No frame arrived for this long although the device is open.
    #[error("no frame from the device for {} ms", .0.as_millis())]
    Stalled(Duration),
    /// The device exists but cannot be used as configured (no usable format, busy...).
    #[error("{0}")]
    Unusable(String),
}

/// An open, streaming capture device.
pub trait CaptureDevice: Send {
    fn negotiated(&self) -> Negotiated;

    /// Wait for the next frame.
    fn next_frame(&mut self) -> Result<Frame<'_>, DeviceError>;

    /// Ask an H.264 device for an IDR soon. Errors mean it cannot.
    fn force_keyframe(&mut self) -> Result<(), DeviceError>;
}

/// Opens the device, again after each loss.
pub trait DeviceOpener: Send {
    /// For logs and `/state`, e.g. `/dev/video0`.
    fn name(&self) -> String;

    fn open(&mut self) -> Result<Box<dyn CaptureDevice>, DeviceError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_from_flags_and_fourccs() {
        assert_eq!(PixelFormat::parse("mjpeg"), Some(PixelFormat::Mjpeg));
        assert_eq!(PixelFormat::parse("MJPG"), Some(PixelFormat::Mjpeg));
        assert_eq!(PixelFormat::parse("i420"), Some(PixelFormat::Yu12));
        assert_eq!(PixelFormat::parse("RGB3"), None);
        assert_eq!(PixelFormat::from_fourcc(*b"JPEG"), Some(PixelFormat::Mjpeg));
        assert_eq!(PixelFormat::from_fourcc(*b"NV12"), Some(PixelFormat::Nv12));
        assert_eq!(PixelFormat::from_fourcc(*b"BA81"), None);
        for f in PixelFormat::PREFERRED {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
            assert_eq!(PixelFormat::parse(&f.to_string()), Some(f));
        }
    }
}
