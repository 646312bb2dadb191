//! An MJPEG `/stream` body as the load generator's clients read it: the boundary from
//! a Content-Type, then the body fed in pieces of the sizes the input names.
//!
//! Input: first byte = how many bytes of Content-Type follow; the rest is the body,
//! fed in pieces of 1 + (byte at the piece's start) bytes, so splits land anywhere.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::viewer::multipart::{boundary_of, MultipartReader, MAX_PART};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (content_type, mut body) = rest.split_at(usize::from(n).min(rest.len()));
    let Ok(boundary) = boundary_of(&String::from_utf8_lossy(content_type)) else {
        return;
    };
    assert!(!boundary.is_empty() && boundary.len() <= 70);
    let whole = {
        let mut reader = MultipartReader::new(&boundary);
        let mut parts = Vec::new();
        let result = reader.push(body, |p| parts.push(p));
        (parts, result)
    };
    let mut reader = MultipartReader::new(&boundary);
    let mut parts = Vec::new();
    let mut result = Ok(());
    while let Some(&first) = body.first() {
        let (piece, more) = body.split_at((usize::from(first) + 1).min(body.len()));
        body = more;
        result = reader.push(piece, |p| parts.push(p));
        if result.is_err() {
            break;
        }
    }
    // Splitting changes nothing: the same parts, the same outcome.
    assert_eq!(parts, whole.0);
    assert_eq!(result, whole.1);
    for p in &parts {
        assert!(p.head.len <= MAX_PART);
        assert!(!p.is_jpeg || p.head.len >= 4);
    }
});
