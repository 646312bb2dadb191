//! `--rtp-forward` targets: `HOST:PORT`, or `video=HOST:PORT,audio=HOST:PORT,rtcp=PORT`.

use std::fmt;

/// A host (name or address) and a UDP port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// Without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
}

impl HostPort {
    fn parse(s: &str) -> Result<HostPort, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() || host.contains(':') && !s.starts_with('[') {
            return Err(format!(
                "{s:?} is not HOST:PORT (write an IPv6 address as [ADDR]:PORT)"
            ));
        }
        Ok(HostPort {
            host: host.to_string(),
            port: parse_port(port)?,
        })
    }

    /// `host:port`, as `lookup_host` takes it.
    pub fn lookup_form(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lookup_form())
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{s:?} is not a UDP port (1-65535)")),
    }
}

/// Where one forward sends a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpForwardTarget {
    /// H.264 RTP goes here.
    pub video: HostPort,
    /// The video's RTCP port on the same host: sender reports go there, and a receiver
    /// such as Janus learns from them where to send its keyframe requests.
    pub video_rtcp_port: u16,
    /// Opus RTP goes here, if the stream's sound is forwarded too.
    pub audio: Option<HostPort>,
}

impl RtpForwardTarget {
    /// `HOST:PORT`, or comma-separated `video=HOST:PORT`, `audio=HOST:PORT` and
    /// `rtcp=PORT` (default: the video port + 1, as RFC 3550 has it).
    pub fn parse(s: &str) -> Result<RtpForwardTarget, String> {
        let mut video = None;
        let mut audio = None;
        let mut rtcp = None;
        for part in s.split(',').map(str::trim) {
            match part.split_once('=') {
                None if video.is_none() => video = Some(HostPort::parse(part)?),
                Some(("video", v)) if video.is_none() => video = Some(HostPort::parse(v)?),
                Some(("audio", v)) if audio.is_none() => audio = Some(HostPort::parse(v)?),
                Some(("rtcp", v)) if rtcp.is_none() => rtcp = Some(parse_port(v)?),
                _ => {
                    return Err(format!(
                        "{part:?} is not understood; write HOST:PORT or \
                         video=HOST:PORT[,audio=HOST:PORT][,rtcp=PORT], each once"
                    ))
                }
            }
        }
        let video = video.ok_or_else(|| format!("{s:?} names no video HOST:PORT"))?;
        let video_rtcp_port = match rtcp {
            Some(p) => p,
            None => video.port.checked_add(1).ok_or_else(|| {
                "the video port is 65535, so its RTCP port needs rtcp=PORT".to_string()
            })?,
        };
        Ok(RtpForwardTarget {
            video,
            video_rtcp_port,
            audio,
        })
    }
}

impl fmt::Display for RtpForwardTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.video)?;
        if let Some(audio) = &self.audio {
            write!(f, " audio {audio}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_alone_is_the_video_with_rtcp_on_the_next_port() {
        let t = RtpForwardTarget::parse("10.0.0.2:5004").unwrap();
        assert_eq!(t.video.host, "10.0.0.2");
        assert_eq!((t.video.port, t.video_rtcp_port), (5004, 5005));
        assert_eq!(t.audio, None);
        let t = RtpForwardTarget::parse("[::1]:6000").unwrap();
        assert_eq!(t.video.host, "::1");
        assert_eq!(t.video.lookup_form(), "[::1]:6000");
    }

    #[test]
    fn keys_name_video_audio_and_rtcp() {
        let t = RtpForwardTarget::parse("video=janus.lan:5004, audio=janus.lan:5002,rtcp=5104")
            .unwrap();
        assert_eq!(t.video.lookup_form(), "janus.lan:5004");
        assert_eq!(t.video_rtcp_port, 5104);
        assert_eq!(t.audio.unwrap().port, 5002);
    }

    #[test]
    fn mistakes_are_refused_with_the_form() {
        for bad in [
            "",
            "host",
            "host:0",
            "host:x",
            ":5004",
            "::1:5004",
            "audio=h:1",
            "h:1,h:2",
            "h:1,colour=red",
            "h:65535",
        ] {
            assert!(RtpForwardTarget::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
