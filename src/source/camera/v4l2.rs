//! Real V4L2 devices through the `v4l` crate: opening and negotiating a format,
//! streaming with mmap buffers, the H.264 encoder controls, and the listings behind
//! `--list-devices` and `--list-formats`.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use v4l::buffer::{Flags as BufferFlags, Type};
use v4l::capability::Flags as CapFlags;
use v4l::control::{Control, Value};
use v4l::format::description::Flags as FormatFlags;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC};

use super::device::{CaptureDevice, DeviceError, DeviceOpener, Frame, Negotiated, PixelFormat};
use crate::media::clock;
use crate::media::VideoSettings;

/// Buffers the driver fills in turn: enough that a slow picture does not make it drop
/// one, few enough that nothing waits in them.
const BUFFERS: u32 = 4;
/// A device that delivers nothing for this long is treated as lost.
const FRAME_TIMEOUT: Duration = Duration::from_secs(2);
/// A driver timestamp further from now than this is not trusted.
const TIMESTAMP_TOLERANCE_US: u64 = 1_000_000;

// Codec controls (linux/v4l2-controls.h, V4L2_CID_CODEC_BASE + n).
const CID_CODEC_BASE: u32 = 0x0099_0900;
const CID_VIDEO_BITRATE: u32 = CID_CODEC_BASE + 207;
const CID_REPEAT_SEQ_HEADER: u32 = CID_CODEC_BASE + 226;
const CID_FORCE_KEY_FRAME: u32 = CID_CODEC_BASE + 229;
const CID_H264_I_PERIOD: u32 = CID_CODEC_BASE + 358;

/// What to ask the device for.
#[derive(Clone, Debug)]
pub struct V4l2Settings {
    pub path: PathBuf,
    /// `None`: the best format the device offers ([`PixelFormat::PREFERRED`]).
    pub format: Option<PixelFormat>,
    /// The bitrate and keyframe interval go to H.264 devices that take encoder controls.
    pub video: VideoSettings,
}

pub struct V4l2Opener {
    settings: V4l2Settings,
}

impl V4l2Opener {
    pub fn new(settings: V4l2Settings) -> V4l2Opener {
        V4l2Opener { settings }
    }
}

impl DeviceOpener for V4l2Opener {
    fn name(&self) -> String {
        self.settings.path.display().to_string()
    }

    fn open(&mut self) -> Result<Box<dyn CaptureDevice>, DeviceError> {
        let s = &self.settings;
        let path = s.path.display();
        let dev = Device::with_path(&s.path).map_err(|e| open_error(&s.path, &e))?;
        let caps = dev
            .query_caps()
            .map_err(|e| DeviceError::Unusable(format!("{path}: not a V4L2 device ({e})")))?;
        if !caps.capabilities.contains(CapFlags::VIDEO_CAPTURE)
            || !caps.capabilities.contains(CapFlags::STREAMING)
        {
            return Err(DeviceError::Unusable(format!(
                "{path} ({}) is not a streaming video capture device",
                caps.card
            )));
        }
        let offered: Vec<FourCC> = dev
            .enum_formats()
            .map_err(|e| gone_or_unusable(&s.path, "listing formats", &e))?
            .into_iter()
            .map(|d| d.fourcc)
            .collect();
        let format = choose_format(s.format, &offered)
            .map_err(|why| DeviceError::Unusable(format!("{path} ({}): {why}", caps.card)))?;
        let wanted = Format::new(s.video.width, s.video.height, FourCC::new(&format.fourcc()));
        let got = dev
            .set_format(&wanted)
            .map_err(|e| gone_or_unusable(&s.path, "setting the format", &e))?;
        if got.fourcc.repr != format.fourcc() {
            return Err(DeviceError::Unusable(format!(
                "{path} would not deliver {format} (it switched to {})",
                got.fourcc
            )));
        }
        let fps = match dev.set_params(&Parameters::with_fps(s.video.fps)) {
            Ok(p) if p.interval.numerator > 0 && p.interval.denominator > 0 => {
                Some(f64::from(p.interval.denominator) / f64::from(p.interval.numerator))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!("{path}: frame rate not set: {e}");
                None
            }
        };
        if format.is_h264() {
            set_encoder_controls(&dev, s);
        }
        let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, BUFFERS)
            .map_err(|e| gone_or_unusable(&s.path, "allocating capture buffers", &e))?;
        stream.set_timeout(FRAME_TIMEOUT);
        let negotiated = Negotiated {
            format,
            width: got.width,
            height: got.height,
            stride: if format == PixelFormat::Mjpeg || format.is_h264() {
                0
            } else {
                got.stride
            },
            fps,
        };
        tracing::info!(
            device = %path,
            card = %caps.card,
            driver = %caps.driver,
            format = %format,
            width = got.width,
            height = got.height,
            fps = ?fps,
            "camera opened"
        );
        Ok(Box::new(V4l2Device {
            path: s.path.clone(),
            stream: Some(stream),
            dev,
            negotiated,
        }))
    }
}

/// The wanted format if offered, else the best offered one.
fn choose_format(wanted: Option<PixelFormat>, offered: &[FourCC]) -> Result<PixelFormat, String> {
    let usable: Vec<PixelFormat> = offered
        .iter()
        .filter_map(|f| PixelFormat::from_fourcc(f.repr))
        .collect();
    let list = || {
        offered
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(f) if usable.contains(&f) => Ok(f),
        Some(f) => Err(format!("does not offer {f}; it offers {}", list())),
        None => PixelFormat::PREFERRED
            .into_iter()
            .find(|f| usable.contains(f))
            .ok_or_else(|| {
                format!(
                    "offers no format peregrine can use (H264, MJPEG, YUYV, NV12, YU12); \
                     it offers {}",
                    list()
                )
            }),
    }
}

/// Best effort: not every H.264 device has every control.
fn set_encoder_controls(dev: &Device, s: &V4l2Settings) {
    let controls = [
        (CID_REPEAT_SEQ_HEADER, 1, "repeat SPS/PPS"),
        (
            CID_H264_I_PERIOD,
            i64::from(s.video.gop),
            "keyframe interval",
        ),
        (
            CID_VIDEO_BITRATE,
            i64::from(s.video.bitrate_kbps) * 1000,
            "bitrate",
        ),
    ];
    for (id, value, what) in controls {
        let control = Control {
            id,
            value: Value::Integer(value),
        };
        if let Err(e) = dev.set_control(control) {
            tracing::debug!("{}: {what} not set: {e}", s.path.display());
        }
    }
}

struct V4l2Device {
    path: PathBuf,
    // Dropped before `dev`, and through `Drop for V4l2Device`.
    stream: Option<Stream<'static>>,
    dev: Device,
    negotiated: Negotiated,
}

impl CaptureDevice for V4l2Device {
    fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    fn next_frame(&mut self) -> Result<Frame<'_>, DeviceError> {
        let path = &self.path;
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| DeviceError::Gone(format!("{} is closed", path.display())))?;
        let (buf, meta) = match stream.next() {
            Ok(next) => next,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(DeviceError::Stalled(FRAME_TIMEOUT))
            }
            Err(e) => return Err(gone_or_unusable(path, "capturing", &e)),
        };
        let used = (meta.bytesused as usize).min(buf.len());
        let now = clock::monotonic_us();
        let driver_us = u64::try_from(meta.timestamp.sec)
            .ok()
            .zip(u64::try_from(meta.timestamp.usec).ok())
            .map(|(s, us)| s * 1_000_000 + us);
        let monotonic =
            meta.flags & BufferFlags::TIMESTAMP_MASK == BufferFlags::TIMESTAMP_MONOTONIC;
        let capture_us = match driver_us {
            Some(t) if monotonic && t > 0 && t <= now && now - t < TIMESTAMP_TOLERANCE_US => t,
            _ => now,
        };
        Ok(Frame {
            data: &buf[..used],
            capture_us,
            sequence: meta.sequence,
        })
    }

    fn force_keyframe(&mut self) -> Result<(), DeviceError> {
        self.dev
            .set_control(Control {
                id: CID_FORCE_KEY_FRAME,
                value: Value::None,
            })
            .map_err(|e| {
                DeviceError::Unusable(format!(
                    "{}: cannot force a keyframe: {e}",
                    self.path.display()
                ))
            })
    }
}

impl Drop for V4l2Device {
    fn drop(&mut self) {
        // The crate panics when stopping the stream fails for any reason but an
        // unplugged device; a broken device must not take the source thread with it.
        if let Some(stream) = self.stream.take() {
            let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(stream)));
            if dropped.is_err() {
                tracing::warn!("{}: stopping the capture failed", self.path.display());
            }
        }
    }
}

fn open_error(path: &Path, e: &io::Error) -> DeviceError {
    let shown = path.display();
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
            DeviceError::Gone(format!("{shown}: no such device"))
        }
        Some(libc::EACCES) | Some(libc::EPERM) => DeviceError::Unusable(format!(
            "{shown}: permission denied (add the user to the `video` group)"
        )),
        Some(libc::EBUSY) => {
            DeviceError::Unusable(format!("{shown} is busy (another program is using it)"))
        }
        _ => DeviceError::Unusable(format!("{shown}: {e}")),
    }
}

fn gone_or_unusable(path: &Path, doing: &str, e: &io::Error) -> DeviceError {
    match e.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::ENXIO) | Some(libc::EIO) => DeviceError::Gone(format!(
            "{}: device lost while {doing}: {e}",
            path.display()
        )),
        _ => DeviceError::Unusable(format!("{}: {doing}: {e}", path.display())),
    }
}

/// `--list-devices`: every `/dev/video*` node with its name and what it can capture.
pub fn list_devices() -> String {
    let mut nodes: Vec<PathBuf> = std::fs::read_dir("/dev")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("video"))
                })
                .collect()
        })
        .unwrap_or_default();
    nodes.sort_by_key(|p| video_index(p));
    if nodes.is_empty() {
        return "no video devices (/dev/video*) found\n".to_string();
    }
    let mut out = String::new();
    for path in nodes {
        let _ = writeln!(out, "{}", describe_device(&path));
    }
    out
}

fn video_index(path: &Path) -> (u64, String) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let digits: String = name.chars().filter(char::is_ascii_digit).collect();
    (digits.parse().unwrap_or(u64::MAX), name.to_string())
}

fn describe_device(path: &Path) -> String {
    let shown = path.display();
    let dev = match Device::with_path(path) {
        Ok(dev) => dev,
        Err(e) => return format!("{shown}: cannot open: {e}"),
    };
    let caps = match dev.query_caps() {
        Ok(caps) => caps,
        Err(e) => return format!("{shown}: not a V4L2 device: {e}"),
    };
    let capture = caps.capabilities.contains(CapFlags::VIDEO_CAPTURE);
    let formats = if capture {
        dev.enum_formats()
            .map(|fs| {
                fs.iter()
                    .map(|f| f.fourcc.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    let usable = if formats.is_empty() {
        "no capture formats".to_string()
    } else {
        format!("capture: {formats}")
    };
    format!(
        "{shown}: {} ({}, {}) {usable}",
        caps.card, caps.driver, caps.bus
    )
}

/// `--list-formats`: formats, sizes and frame intervals, as `v4l2-ctl --list-formats-ext`.
pub fn list_formats(path: &Path) -> anyhow::Result<String> {
    let shown = path.display();
    let dev = Device::with_path(path).map_err(|e| anyhow::anyhow!("{}", open_error(path, &e)))?;
    let caps = dev
        .query_caps()
        .map_err(|e| anyhow::anyhow!("{shown}: not a V4L2 device: {e}"))?;
    let mut out = format!("{shown}: {} ({}, {})\n", caps.card, caps.driver, caps.bus);
    let formats = dev
        .enum_formats()
        .map_err(|e| anyhow::anyhow!("{shown}: cannot list formats: {e}"))?;
    if formats.is_empty() {
        out.push_str("\t(no capture formats)\n");
    }
    for f in formats {
        let compressed = if f.flags.contains(FormatFlags::COMPRESSED) {
            ", compressed"
        } else {
            ""
        };
        let usable = if PixelFormat::from_fourcc(f.fourcc.repr).is_some() {
            ""
        } else {
            " [not usable by peregrine]"
        };
        let _ = writeln!(
            out,
            "\t[{}]: '{}' ({}{compressed}){usable}",
            f.index, f.fourcc, f.description
        );
        for size in dev.enum_framesizes(f.fourcc).unwrap_or_default() {
            match size.size {
                FrameSizeEnum::Discrete(d) => {
                    let _ = writeln!(out, "\t\tSize: Discrete {}x{}", d.width, d.height);
                    for interval in dev
                        .enum_frameintervals(f.fourcc, d.width, d.height)
                        .unwrap_or_default()
                    {
                        write_interval(&mut out, &interval.interval);
                    }
                }
                FrameSizeEnum::Stepwise(s) => {
                    let _ = writeln!(
                        out,
                        "\t\tSize: Stepwise {}x{} - {}x{} with step {}/{}",
                        s.min_width,
                        s.min_height,
                        s.max_width,
                        s.max_height,
                        s.step_width,
                        s.step_height
                    );
                }
            }
        }
    }
    Ok(out)
}

fn write_interval(out: &mut String, interval: &FrameIntervalEnum) {
    match interval {
        FrameIntervalEnum::Discrete(f) if f.numerator > 0 && f.denominator > 0 => {
            let seconds = f64::from(f.numerator) / f64::from(f.denominator);
            let _ = writeln!(
                out,
                "\t\t\tInterval: Discrete {seconds:.3}s ({:.3} fps)",
                1.0 / seconds
            );
        }
        other => {
            let _ = writeln!(out, "\t\t\tInterval: {other}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fourccs(codes: &[&[u8; 4]]) -> Vec<FourCC> {
        codes.iter().map(|c| FourCC::new(c)).collect()
    }

    #[test]
    fn auto_prefers_h264_then_mjpeg_then_raw() {
        let offered = fourccs(&[b"YUYV", b"MJPG", b"H264"]);
        assert_eq!(choose_format(None, &offered), Ok(PixelFormat::H264));
        let offered = fourccs(&[b"YUYV", b"MJPG"]);
        assert_eq!(choose_format(None, &offered), Ok(PixelFormat::Mjpeg));
        assert_eq!(
            choose_format(Some(PixelFormat::Yuyv), &offered),
            Ok(PixelFormat::Yuyv)
        );
        let err = choose_format(Some(PixelFormat::Nv12), &offered).unwrap_err();
        assert!(
            err.contains("does not offer NV12") && err.contains("MJPG"),
            "{err}"
        );
        let err = choose_format(None, &fourccs(&[b"BA81", b"pRAA"])).unwrap_err();
        assert!(err.contains("no format peregrine can use"), "{err}");
    }

    #[test]
    fn missing_and_non_v4l2_devices_are_clear_errors() {
        let mut opener = V4l2Opener::new(V4l2Settings {
            path: "/dev/peregrine-no-such-video".into(),
            format: None,
            video: VideoSettings {
                width: 640,
                height: 480,
                fps: 30,
                bitrate_kbps: 1000,
                gop: 60,
            },
        });
        let err = opener.open().err().unwrap();
        assert!(matches!(err, DeviceError::Gone(_)), "{err}");
        assert!(err.to_string().contains("no such device"), "{err}");
        opener.settings.path = "/dev/null".into();
        let err = opener.open().err().unwrap();
        assert!(matches!(err, DeviceError::Unusable(_)), "{err}");
        assert!(err.to_string().contains("not a V4L2 device"), "{err}");
        let err = list_formats(Path::new("/dev/null")).unwrap_err();
        assert!(err.to_string().contains("not a V4L2 device"), "{err}");
    }
}
