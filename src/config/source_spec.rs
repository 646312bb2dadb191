//! What a stream's `source` names, parsed once when the configuration is read: every
//! form `--source` takes becomes a [`SourceSpec`], and a form peregrine does not take
//! is refused then, with the forms that work.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::source::camera::device::PixelFormat;

/// Every form `--source` takes, for error messages.
pub const SOURCE_FORMS: &str = "v4l2 (the camera at --device), testsrc, memsink:NAME, \
tcp://HOST:PORT, tcp-listen://IP:PORT, rtp-listen://IP:PORT, whip (a WHIP publisher), - (stdin), an H.264 file (.h264) \
or a camera recording (.mjpeg, .yuyv, .nv12, .yuv)";

/// Where a stream's pictures come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// The generated test pattern.
    Testsrc,
    /// A V4L2 camera; `format` `None` picks the best the camera offers.
    V4l2 {
        device: PathBuf,
        format: Option<PixelFormat>,
    },
    /// A µStreamer H.264 memsink, by its shared-memory name.
    Memsink { name: String },
    /// An encoder to connect to, `HOST:PORT`, read as a raw H.264 byte stream.
    Tcp(String),
    /// Where to accept an encoder pushing a raw H.264 byte stream.
    TcpListen(SocketAddr),
    /// Where to receive H.264 pushed as RTP over UDP.
    RtpListen(SocketAddr),
    /// A WHIP publisher, POSTing its offer to the stream's `/whip` URL.
    Whip,
    /// A raw H.264 byte stream on standard input.
    Stdin,
    /// A raw H.264 file, played at the stream's frame rate, looping.
    H264File(PathBuf),
    /// A camera's recording (MJPEG or raw pictures), replayed through the camera path.
    Recording(PathBuf),
}

impl SourceSpec {
    /// Parse a `source` value; `device` and `format` are the stream's camera settings,
    /// which `v4l2` takes.
    pub fn parse(text: &str, device: &Path, format: Option<PixelFormat>) -> Result<SourceSpec> {
        match text {
            "testsrc" => return Ok(SourceSpec::Testsrc),
            "v4l2" => {
                return Ok(SourceSpec::V4l2 {
                    device: device.to_path_buf(),
                    format,
                })
            }
            "-" => return Ok(SourceSpec::Stdin),
            "whip" => return Ok(SourceSpec::Whip),
            _ => {}
        }
        if let Some(name) = text.strip_prefix("memsink:") {
            if name.is_empty() {
                bail!("source {text:?}: memsink: needs the sink's name, e.g. memsink:demo::ustreamer::h264");
            }
            return Ok(SourceSpec::Memsink {
                name: name.to_string(),
            });
        }
        if let Some(rest) = text.strip_prefix("tcp-listen://") {
            let addr: SocketAddr = rest.trim_end_matches('/').parse().with_context(|| {
                format!(
                    "source {text:?}: tcp-listen:// needs IP:PORT, e.g. tcp-listen://0.0.0.0:8000"
                )
            })?;
            return Ok(SourceSpec::TcpListen(addr));
        }
        if let Some(rest) = text.strip_prefix("rtp-listen://") {
            let addr: SocketAddr = rest.trim_end_matches('/').parse().with_context(|| {
                format!(
                    "source {text:?}: rtp-listen:// needs IP:PORT, e.g. rtp-listen://0.0.0.0:5004"
                )
            })?;
            return Ok(SourceSpec::RtpListen(addr));
        }
        if let Some(rest) = text.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            match rest.rsplit_once(':').map(|(_, p)| p.parse::<u16>()) {
                Some(Ok(port)) if port != 0 => {}
                _ => bail!("source {text:?}: tcp:// needs HOST:PORT, e.g. tcp://raspberrypi:8000"),
            }
            return Ok(SourceSpec::Tcp(rest.to_string()));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            let hint = if scheme == "rtp" {
                "; to receive RTP, listen for it with rtp-listen://IP:PORT"
            } else if matches!(
                scheme,
                "rtsp" | "rtsps" | "http" | "https" | "rtmp" | "srt" | "udp"
            ) {
                "; let ffmpeg pull it and push H.264 in, e.g. `ffmpeg -i URL -c:v copy -f h264 \
                 tcp://127.0.0.1:8000` with --source tcp-listen://127.0.0.1:8000"
            } else {
                ""
            };
            bail!("source {text:?}: {scheme}:// is not supported{hint}. Supported sources: {SOURCE_FORMS}");
        }
        let path = Path::new(text);
        if !path.is_file() {
            let what = if path.exists() {
                "not a file"
            } else {
                "no such file"
            };
            bail!("source {text:?}: {what}. Supported sources: {SOURCE_FORMS}");
        }
        if is_recording(path) {
            return Ok(SourceSpec::Recording(path.to_path_buf()));
        }
        Ok(SourceSpec::H264File(path.to_path_buf()))
    }

    /// The kind of source, as the `kind` label of metrics names it.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Testsrc => "testsrc",
            SourceSpec::V4l2 { .. } => "v4l2",
            SourceSpec::Memsink { .. } => "memsink",
            SourceSpec::Tcp(_) => "tcp",
            SourceSpec::TcpListen(_) => "tcp-listen",
            SourceSpec::RtpListen(_) => "rtp-listen",
            SourceSpec::Whip => "whip",
            SourceSpec::Stdin => "stdin",
            SourceSpec::H264File(_) | SourceSpec::Recording(_) => "file",
        }
    }

    /// What only one stream can read (a camera, standard input, a listening address),
    /// in words; `None` for inputs any number of streams may share.
    pub fn exclusive_input(&self) -> Option<String> {
        match self {
            SourceSpec::V4l2 { device, .. } => Some(format!("the camera {}", device.display())),
            SourceSpec::Stdin => Some("stdin".to_string()),
            SourceSpec::TcpListen(addr) => Some(format!("tcp-listen://{addr}")),
            SourceSpec::RtpListen(addr) => Some(format!("rtp-listen://{addr}")),
            _ => None,
        }
    }
}

/// A camera recording is named by its extension.
fn is_recording(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    matches!(ext.as_str(), "mjpeg" | "mjpg" | "yuyv" | "nv12" | "yuv")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SourceSpec> {
        SourceSpec::parse(text, Path::new("/dev/video0"), None)
    }

    #[test]
    fn kinds_label_metrics_by_what_was_configured() {
        for (source, kind) in [
            ("v4l2", "v4l2"),
            ("testsrc", "testsrc"),
            ("memsink:kvmd::ustreamer::h264", "memsink"),
            ("tcp://127.0.0.1:8000", "tcp"),
            ("tcp-listen://0.0.0.0:8000", "tcp-listen"),
            ("rtp-listen://0.0.0.0:5004", "rtp-listen"),
            ("-", "stdin"),
        ] {
            assert_eq!(parse(source).unwrap().kind(), kind, "{source}");
        }
        let file = SourceSpec::H264File(std::path::PathBuf::from("clip.h264"));
        assert_eq!(file.kind(), "file");
    }

    #[test]
    fn every_form_parses_into_its_spec() {
        assert_eq!(parse("testsrc").unwrap(), SourceSpec::Testsrc);
        assert_eq!(
            SourceSpec::parse("v4l2", Path::new("/dev/video2"), Some(PixelFormat::Mjpeg)).unwrap(),
            SourceSpec::V4l2 {
                device: "/dev/video2".into(),
                format: Some(PixelFormat::Mjpeg)
            }
        );
        assert_eq!(
            parse("memsink:demo::ustreamer::h264").unwrap(),
            SourceSpec::Memsink {
                name: "demo::ustreamer::h264".into()
            }
        );
        assert_eq!(
            parse("tcp-listen://127.0.0.1:8000").unwrap(),
            SourceSpec::TcpListen("127.0.0.1:8000".parse().unwrap())
        );
        assert_eq!(
            parse("rtp-listen://127.0.0.1:5004/").unwrap(),
            SourceSpec::RtpListen("127.0.0.1:5004".parse().unwrap())
        );
        assert_eq!(
            parse("tcp://raspberrypi.local:8000").unwrap(),
            SourceSpec::Tcp("raspberrypi.local:8000".into())
        );
        assert_eq!(parse("-").unwrap(), SourceSpec::Stdin);
        let dir = std::env::temp_dir().join(format!("peregrine-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (clip, cam) = (dir.join("clip.h264"), dir.join("cam.MJPEG"));
        std::fs::write(&clip, b"").unwrap();
        std::fs::write(&cam, b"").unwrap();
        let text = |p: &Path| p.to_str().unwrap().to_string();
        assert_eq!(parse(&text(&clip)).unwrap(), SourceSpec::H264File(clip));
        assert_eq!(parse(&text(&cam)).unwrap(), SourceSpec::Recording(cam));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_forms_are_refused_naming_what_was_given() {
        for bad in [
            "tcp-listen://nohost",
            "rtp-listen://nohost",
            "rtp://127.0.0.1:5004",
            "tcp://host",
            "tcp://host:0",
            "missing.h264",
            "memsink:",
            "rtsp://cam/1",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(format!("{err:#}").contains(bad), "{err:#}");
        }
    }
}
