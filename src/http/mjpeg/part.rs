//! The bytes of µStreamer's MJPEG stream: the multipart boundary, each part's headers
//! (`X-Timestamp`, and with `extra_headers` the `X-UStreamer-*` set kvmd reads), and
//! `/snapshot`'s headers. Plain data in, bytes out; the times are passed in.

use std::fmt::Write;

use super::query::StreamOptions;
use crate::media::jpeg_tap::JpegPicture;

/// µStreamer's boundary; some clients look for it by name.
pub const BOUNDARY: &str = "boundarydonotcross";

/// The `Content-Type` of `/stream`.
pub const CONTENT_TYPE: &str = "multipart/x-mixed-replace;boundary=boundarydonotcross";

/// The caching headers µStreamer sends with `/stream` and `/snapshot`.
pub const NO_CACHE: [(&str, &str); 3] = [
    (
        "cache-control",
        "no-store, no-cache, must-revalidate, proxy-revalidate, pre-check=0, post-check=0, max-age=0",
    ),
    ("pragma", "no-cache"),
    ("expires", "Mon, 3 Jan 2000 12:34:56 GMT"),
];

/// The clocks a part is stamped with, in µs.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// CLOCK_REALTIME: `X-Timestamp`.
    pub real_us: u64,
    /// CLOCK_MONOTONIC: the `X-UStreamer-*` times, as µStreamer's.
    pub mono_us: u64,
}

/// What `/state` and `X-UStreamer-Client-FPS` know about the client.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientFigures {
    pub fps: u32,
}

/// Seconds with six decimals, as µStreamer prints its times.
fn secs(out: &mut String, us: u64) {
    let _ = write!(out, "{}.{:06}", us / 1_000_000, us % 1_000_000);
}

/// What the body starts with: the first boundary, and with `advance_headers` the first
/// part's headers already.
pub fn preamble(opts: &StreamOptions, now: Now) -> String {
    let mut out = format!("--{BOUNDARY}\r\n");
    if opts.advance_headers {
        advance_headers(&mut out, now);
    }
    out
}

fn advance_headers(out: &mut String, now: Now) {
    out.push_str("Content-Type: image/jpeg\r\nX-Timestamp: ");
    secs(out, now.real_us);
    out.push_str("\r\n\r\n");
}

/// The headers in front of one picture (empty with `advance_headers`: they went out
/// after the previous picture).
pub fn head(
    opts: &StreamOptions,
    picture: &JpegPicture,
    client: ClientFigures,
    now: Now,
) -> String {
    let mut out = String::new();
    if opts.advance_headers {
        return out;
    }
    let len = if opts.zero_data {
        0
    } else {
        picture.data.len()
    };
    let _ = write!(
        out,
        "Content-Type: image/jpeg\r\nContent-Length: {len}\r\nX-Timestamp: "
    );
    secs(&mut out, now.real_us);
    out.push_str("\r\n");
    if opts.extra_headers {
        let expose_us = picture.encode_end_us;
        let times = [
            ("Grab-Begin-Time", picture.capture_us),
            ("Grab-End-Time", picture.capture_us),
            ("Encode-Begin-Time", picture.encode_begin_us),
            ("Encode-End-Time", picture.encode_end_us),
            ("Expose-Begin-Time", expose_us),
            ("Expose-Cmp-Time", expose_us),
            ("Expose-End-Time", expose_us),
            ("Send-Time", now.mono_us),
            ("Latency", now.mono_us.saturating_sub(picture.capture_us)),
        ];
        let _ = write!(
            out,
            "X-UStreamer-Online: {}\r\nX-UStreamer-Dropped: 0\r\nX-UStreamer-Width: {}\r\n\
             X-UStreamer-Height: {}\r\nX-UStreamer-Client-FPS: {}\r\n",
            picture.online, picture.width, picture.height, client.fps
        );
        for (name, us) in times {
            let _ = write!(out, "X-UStreamer-{name}: ");
            secs(&mut out, us);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out
}

/// What follows one picture: the boundary, and with `advance_headers` the next part's
/// headers.
pub fn tail(opts: &StreamOptions, now: Now) -> String {
    let mut out = format!("\r\n--{BOUNDARY}\r\n");
    if opts.advance_headers {
        advance_headers(&mut out, now);
    }
    out
}

/// `/snapshot`'s headers besides the caching ones, as µStreamer names them.
pub fn snapshot_headers(picture: &JpegPicture, now: Now) -> Vec<(&'static str, String)> {
    let s = |us: u64| {
        let mut out = String::new();
        secs(&mut out, us);
        out
    };
    vec![
        ("x-timestamp", s(now.real_us)),
        ("x-ustreamer-online", picture.online.to_string()),
        ("x-ustreamer-width", picture.width.to_string()),
        ("x-ustreamer-height", picture.height.to_string()),
        ("x-ustreamer-grab-begin-timestamp", s(picture.capture_us)),
        ("x-ustreamer-grab-end-timestamp", s(picture.capture_us)),
        (
            "x-ustreamer-encode-begin-timestamp",
            s(picture.encode_begin_us),
        ),
        ("x-ustreamer-encode-end-timestamp", s(picture.encode_end_us)),
        ("x-ustreamer-send-timestamp", s(now.mono_us)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn picture() -> JpegPicture {
        JpegPicture {
            data: Bytes::from_static(b"\xff\xd8jpeg\xff\xd9"),
            width: 640,
            height: 360,
            online: true,
            capture_us: 5_000_000,
            encode_begin_us: 5_010_000,
            encode_end_us: 5_020_000,
        }
    }

    const NOW: Now = Now {
        real_us: 1_700_000_000_123_456,
        mono_us: 5_050_000,
    };

    #[test]
    fn a_plain_part_is_what_mjpeg_readers_expect() {
        let opts = StreamOptions::default();
        let p = picture();
        let part = [
            preamble(&opts, NOW),
            head(&opts, &p, ClientFigures::default(), NOW),
            "<jpeg>".into(),
            tail(&opts, NOW),
        ]
        .concat();
        assert_eq!(
            part,
            "--boundarydonotcross\r\nContent-Type: image/jpeg\r\nContent-Length: 8\r\n\
             X-Timestamp: 1700000000.123456\r\n\r\n<jpeg>\r\n--boundarydonotcross\r\n"
        );
    }

    #[test]
    fn extra_headers_carry_what_kvmd_reads() {
        let opts = StreamOptions {
            extra_headers: true,
            ..Default::default()
        };
        let head = head(&opts, &picture(), ClientFigures { fps: 25 }, NOW);
        for line in [
            "X-UStreamer-Online: true\r\n",
            "X-UStreamer-Width: 640\r\n",
            "X-UStreamer-Height: 360\r\n",
            "X-UStreamer-Client-FPS: 25\r\n",
            "X-UStreamer-Grab-Begin-Time: 5.000000\r\n",
            "X-UStreamer-Latency: 0.050000\r\n",
        ] {
            assert!(head.contains(line), "{line:?} missing from {head:?}");
        }
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn advance_headers_move_the_headers_after_the_picture_without_a_length() {
        let opts = StreamOptions {
            advance_headers: true,
            extra_headers: true,
            ..Default::default()
        };
        assert_eq!(head(&opts, &picture(), ClientFigures::default(), NOW), "");
        let next = "Content-Type: image/jpeg\r\nX-Timestamp: 1700000000.123456\r\n\r\n";
        assert_eq!(preamble(&opts, NOW), format!("--{BOUNDARY}\r\n{next}"));
        assert_eq!(tail(&opts, NOW), format!("\r\n--{BOUNDARY}\r\n{next}"));
    }

    #[test]
    fn zero_data_announces_an_empty_picture() {
        let opts = StreamOptions {
            zero_data: true,
            ..Default::default()
        };
        let head = head(&opts, &picture(), ClientFigures::default(), NOW);
        assert!(head.contains("Content-Length: 0\r\n"), "{head}");
    }

    #[test]
    fn snapshot_headers_are_named_as_ustreamer_names_them() {
        let h = snapshot_headers(&picture(), NOW);
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("x-ustreamer-online"), Some("true"));
        assert_eq!(get("x-ustreamer-width"), Some("640"));
        assert_eq!(get("x-timestamp"), Some("1700000000.123456"));
    }
}
