//! The query string of µStreamer's `/stream` and `/snapshot`, then the part headers
//! made from what it asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::http::mjpeg::part::{self, ClientFigures, Now};
use peregrine::http::mjpeg::query::{StreamOptions, MAX_KEY_LEN};
use peregrine::media::jpeg_tap::JpegPicture;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(opts) = StreamOptions::parse(query) else {
        return;
    };
    if let Some(key) = &opts.key {
        // Safe as it is in a header and in JSON: percent-encoded, bounded.
        assert!(key.len() <= 3 * MAX_KEY_LEN);
        assert!(key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
    }
    let picture = JpegPicture {
        data: bytes::Bytes::from_static(b"\xff\xd8\xff\xd9"),
        width: 640,
        height: 360,
        online: data.len() % 2 == 0,
        capture_us: 1,
        encode_begin_us: 2,
        encode_end_us: 3,
    };
    let now = Now {
        real_us: u64::MAX,
        mono_us: 0,
    };
    let head = part::head(&opts, &picture, ClientFigures { fps: u32::MAX }, now);
    assert!(head.is_empty() || head.ends_with("\r\n\r\n"));
    assert_eq!(head.contains("Content-Length"), !opts.advance_headers);
    let _ = (part::preamble(&opts, now), part::tail(&opts, now));
});
