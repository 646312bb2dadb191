//! An MJPEG `/stream` body (`multipart/x-mixed-replace`) as a client reads it: the
//! boundary from the `Content-Type`, then parts cut by their `Content-Length`, as
//! µStreamer and peregrine send them. Plain data in, parts out; bytes may arrive split
//! anywhere.
//!
//! A part's picture is never kept: the reader counts its bytes and looks only at its
//! first and last two (to tell a JPEG), so memory stays at one part's headers
//! ([`MAX_HEAD`]) however large the pictures are. A part without `Content-Length`
//! (µStreamer's `advance_headers`) cannot be cut this way and is refused.

use std::fmt::Write;

/// Longest delimiter line plus part headers kept while they arrive.
pub const MAX_HEAD: usize = 16 * 1024;

/// Largest `Content-Length` believed; a 4K JPEG is a few MiB.
pub const MAX_PART: usize = 64 << 20;

/// Longest boundary (RFC 2046).
const MAX_BOUNDARY: usize = 70;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("the answer is {0:?}, not multipart/x-mixed-replace")]
    NotMultipart(String),
    #[error("the Content-Type {0:?} has no usable boundary")]
    NoBoundary(String),
    #[error("expected the boundary {expected:?} where a part starts, got {got:?}")]
    MissingDelimiter { expected: String, got: String },
    #[error("part headers longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    #[error("a part header line without a colon: {0:?}")]
    BadHeader(String),
    #[error("a part without Content-Length (advance_headers?); parts cannot be cut")]
    NoContentLength,
    #[error("a part's Content-Length is not a number: {0:?}")]
    BadContentLength(String),
    #[error("a part's Content-Length {0} is over {MAX_PART}")]
    PartTooLarge(usize),
    #[error("data after the closing boundary")]
    AfterClose,
}

/// The boundary named by a `multipart/x-mixed-replace` Content-Type.
pub fn boundary_of(content_type: &str) -> Result<String, MultipartError> {
    let mut params = content_type.split(';');
    let kind = params.next().unwrap_or_default().trim();
    if !kind.eq_ignore_ascii_case("multipart/x-mixed-replace") {
        return Err(MultipartError::NotMultipart(content_type.to_string()));
    }
    let no_boundary = || MultipartError::NoBoundary(content_type.to_string());
    let boundary = params
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim().trim_matches('"'))
        .ok_or_else(no_boundary)?;
    let usable =
        |b: &str| (1..=MAX_BOUNDARY).contains(&b.len()) && b.bytes().all(|c| c.is_ascii_graphic());
    if !usable(boundary) {
        return Err(no_boundary());
    }
    Ok(boundary.to_string())
}

/// What a part said about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartHead {
    pub len: usize,
    /// `X-Timestamp` (CLOCK_REALTIME when the part was sent), µs.
    pub sent_us: Option<u64>,
    /// `X-UStreamer-Grab-End-Time` (CLOCK_MONOTONIC capture time, with `extra_headers`), µs.
    pub captured_us: Option<u64>,
}

/// One whole part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub head: PartHead,
    /// The body starts with a JPEG SOI and ends with an EOI marker.
    pub is_jpeg: bool,
}

#[derive(Debug)]
enum State {
    /// Waiting for `--boundary` (after a body: `\r\n--boundary`), then `\r\n` or `--`.
    Delimiter {
        first: bool,
    },
    /// Part headers, up to the blank line.
    Head,
    Body(Body),
    /// The closing delimiter came.
    Closed,
    Failed(MultipartError),
}

#[derive(Debug)]
struct Body {
    head: PartHead,
    left: usize,
    first: [u8; 2],
    last: [u8; 2],
    seen: usize,
}

impl Body {
    fn take(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(2usize.saturating_sub(self.seen)) {
            self.first[self.seen.min(1)] = b;
            self.seen += 1;
        }
        // Only the last two bytes of the body matter; keep the newest two seen.
        match bytes {
            [.., a, b] => self.last = [*a, *b],
            [b] => self.last = [self.last[1], *b],
            [] => {}
        }
        self.left -= bytes.len();
    }

    fn part(self) -> Part {
        let is_jpeg = self.head.len >= 4 && self.first == [0xFF, 0xD8] && self.last == [0xFF, 0xD9];
        Part {
            head: self.head,
            is_jpeg,
        }
    }
}

/// Reads one `/stream` body.
#[derive(Debug)]
pub struct MultipartReader {
    /// `--boundary`.
    dash_boundary: Vec<u8>,
    state: State,
    /// The delimiter line or part headers received so far.
    pending: Vec<u8>,
}

impl MultipartReader {
    pub fn new(boundary: &str) -> MultipartReader {
        MultipartReader {
            dash_boundary: format!("--{boundary}").into_bytes(),
            state: State::Delimiter { first: true },
            pending: Vec::new(),
        }
    }

    /// The closing delimiter was read: the server ended the stream on purpose.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Read `data`, the next bytes of the body; `on_part` gets each part as it ends.
    /// After an error every later call returns it again.
    pub fn push(
        &mut self,
        mut data: &[u8],
        mut on_part: impl FnMut(Part),
    ) -> Result<(), MultipartError> {
        while !data.is_empty() {
            let used = match self.step(data, &mut on_part) {
                Ok(used) => used,
                Err(e) => {
                    self.state = State::Failed(e.clone());
                    self.pending = Vec::new();
                    return Err(e);
                }
            };
            data = &data[used..];
        }
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// Consume a prefix of `data`; returns its length.
    fn step(
        &mut self,
        data: &[u8],
        on_part: &mut impl FnMut(Part),
    ) -> Result<usize, MultipartError> {
        match &mut self.state {
            State::Failed(e) => Err(e.clone()),
            State::Closed => Err(MultipartError::AfterClose),
            State::Body(body) => {
                let n = body.left.min(data.len());
                body.take(&data[..n]);
                self.end_part_if_whole(on_part);
                Ok(n)
            }
            State::Delimiter { first } => {
                let first = *first;
                let lead: &[u8] = if first { b"" } else { b"\r\n" };
                // The line is the lead, `--boundary`, then `\r\n` or `--`.
                let want = lead.len() + self.dash_boundary.len() + 2;
                let n = (want - self.pending.len()).min(data.len());
                self.pending.extend_from_slice(&data[..n]);
                if self.pending.len() < want {
                    return Ok(n);
                }
                let (start, end) = self.pending.split_at(want - 2);
                let expected = [lead, &self.dash_boundary].concat();
                if start != expected.as_slice() || (end != b"\r\n" && end != b"--") {
                    return Err(MultipartError::MissingDelimiter {
                        expected: printable(&expected),
                        got: printable(&self.pending),
                    });
                }
                self.state = if end == b"--" {
                    State::Closed
                } else {
                    State::Head
                };
                self.pending.clear();
                Ok(n)
            }
            State::Head => {
                // Look for the blank line only where it can newly end.
                let from = self.pending.len().saturating_sub(3);
                let room = MAX_HEAD - self.pending.len();
                let n = data.len().min(room);
                self.pending.extend_from_slice(&data[..n]);
                let Some(end) = find(&self.pending[from..], b"\r\n\r\n").map(|i| from + i) else {
                    if self.pending.len() >= MAX_HEAD {
                        return Err(MultipartError::HeadTooLong);
                    }
                    return Ok(n);
                };
                // Bytes past the blank line belong to the body: give them back.
                let given_back = self.pending.len() - (end + 4);
                let head = parse_head(&self.pending[..end])?;
                self.pending.clear();
                self.state = State::Body(Body {
                    left: head.len,
                    head,
                    first: [0; 2],
                    last: [0; 2],
                    seen: 0,
                });
                self.end_part_if_whole(on_part);
                Ok(n - given_back)
            }
        }
    }

    /// A body with nothing left to read is a whole part: hand it over.
    fn end_part_if_whole(&mut self, on_part: &mut impl FnMut(Part)) {
        if !matches!(&self.state, State::Body(body) if body.left == 0) {
            return;
        }
        if let State::Body(body) =
            std::mem::replace(&mut self.state, State::Delimiter { first: false })
        {
            on_part(body.part());
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(block: &[u8]) -> Result<PartHead, MultipartError> {
    let mut head = PartHead::default();
    let mut len = None;
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(line);
        let Some((name, value)) = text.split_once(':') else {
            return Err(MultipartError::BadHeader(truncated(&text)));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            len = Some(parse_len(value)?);
        } else if name.eq_ignore_ascii_case("x-timestamp") {
            head.sent_us = parse_seconds(value);
        } else if name.eq_ignore_ascii_case("x-ustreamer-grab-end-time") {
            head.captured_us = parse_seconds(value);
        }
    }
    head.len = len.ok_or(MultipartError::NoContentLength)?;
    Ok(head)
}

fn parse_len(value: &str) -> Result<usize, MultipartError> {
    let bad = || MultipartError::BadContentLength(truncated(value));
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let len: usize = value.parse().map_err(|_| bad())?;
    if len > MAX_PART {
        return Err(MultipartError::PartTooLarge(len));
    }
    Ok(len)
}

/// `1234.567890` (seconds, as µStreamer prints times) in µs.
fn parse_seconds(value: &str) -> Option<u64> {
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let micros: u64 = format!("{frac:0<6}").parse().ok()?;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

fn truncated(text: &str) -> String {
    text.chars().take(80).collect()
}

/// Bytes for an error message: text as is, the rest escaped, at most 80 bytes.
fn printable(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(80) {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const JPEG: &[u8] = b"\xff\xd8 picture \xff\xd9";

    fn part(body: &[u8], extra: &str) -> Vec<u8> {
        let mut p = format!(
            "Content-Type: image/jpeg\r\nContent-Length: {}\r\nX-Timestamp: 12.5\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        p.extend_from_slice(body);
        p
    }

    /// A body as peregrine and µStreamer send it.
    fn stream(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut out = b"--b\r\n".to_vec();
        for p in parts {
            out.extend_from_slice(p);
            out.extend_from_slice(b"\r\n--b\r\n");
        }
        out
    }

    fn read_in_pieces(data: &[u8], piece: usize) -> Result<Vec<Part>, MultipartError> {
        let mut reader = MultipartReader::new("b");
        let mut parts = Vec::new();
        for chunk in data.chunks(piece) {
            reader.push(chunk, |p| parts.push(p))?;
        }
        Ok(parts)
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        assert_eq!(
            boundary_of("multipart/x-mixed-replace;boundary=boundarydonotcross").unwrap(),
            "boundarydonotcross"
        );
        assert_eq!(
            boundary_of("Multipart/X-Mixed-Replace; charset=x; Boundary=\"frame\"").unwrap(),
            "frame"
        );
        assert!(matches!(
            boundary_of("image/jpeg"),
            Err(MultipartError::NotMultipart(_))
        ));
        assert!(matches!(
            boundary_of("multipart/x-mixed-replace"),
            Err(MultipartError::NoBoundary(_))
        ));
        assert!(matches!(
            boundary_of("multipart/x-mixed-replace;boundary="),
            Err(MultipartError::NoBoundary(_))
        ));
    }

    #[test]
    fn parts_split_anywhere_are_read_whole() {
        let data = stream(&[
            part(JPEG, ""),
            part(b"not a picture", "X-UStreamer-Grab-End-Time: 3.000007\r\n"),
            part(JPEG, ""),
        ]);
        let whole = read_in_pieces(&data, data.len()).unwrap();
        for piece in 1..data.len() {
            assert_eq!(
                read_in_pieces(&data, piece).unwrap(),
                whole,
                "pieces of {piece}"
            );
        }
        assert_eq!(whole.len(), 3);
        assert!(whole[0].is_jpeg && !whole[1].is_jpeg && whole[2].is_jpeg);
        assert_eq!(whole[0].head.len, JPEG.len());
        assert_eq!(whole[0].head.sent_us, Some(12_500_000));
        assert_eq!(whole[1].head.captured_us, Some(3_000_007));
    }

    #[test]
    fn an_empty_part_and_the_closing_boundary_are_understood() {
        let mut data = stream(&[part(b"", "")]);
        data.truncate(data.len() - 2);
        data.extend_from_slice(b"--");
        let mut reader = MultipartReader::new("b");
        let mut parts = Vec::new();
        reader.push(&data, |p| parts.push(p)).unwrap();
        assert_eq!(parts.len(), 1);
        assert!(!parts[0].is_jpeg);
        assert!(reader.is_closed());
        assert_eq!(reader.push(b"x", |_| {}), Err(MultipartError::AfterClose));
    }

    #[test]
    fn a_bad_content_length_is_a_clear_error() {
        for bad in ["-1", "+5", "12a", "", "99999999999999999999999"] {
            let data = format!("--b\r\nContent-Length: {bad}\r\n\r\n");
            let err = read_in_pieces(data.as_bytes(), 7).unwrap_err();
            assert_eq!(err, MultipartError::BadContentLength(bad.into()), "{bad}");
        }
        let huge = format!("--b\r\nContent-Length: {}\r\n\r\n", MAX_PART + 1);
        assert_eq!(
            read_in_pieces(huge.as_bytes(), 100).unwrap_err(),
            MultipartError::PartTooLarge(MAX_PART + 1)
        );
        let none = b"--b\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8";
        assert_eq!(
            read_in_pieces(none, 3).unwrap_err(),
            MultipartError::NoContentLength
        );
    }

    #[test]
    fn a_missing_boundary_is_a_clear_error() {
        // Not where the stream starts...
        let err = read_in_pieces(b"HTTP/1.1 200 OK\r\n", 4).unwrap_err();
        assert!(
            err.to_string().contains("expected the boundary \"--b\""),
            "{err}"
        );
        // ...nor after a picture (its Content-Length was a lie).
        let mut data = b"--b\r\n".to_vec();
        data.extend_from_slice(&part(JPEG, ""));
        data.extend_from_slice(b"more picture\r\n--b\r\n");
        let err = read_in_pieces(&data, 5).unwrap_err();
        assert!(
            matches!(&err, MultipartError::MissingDelimiter { got, .. } if got.starts_with("mo")),
            "{err}"
        );
        // The error stays.
        let mut reader = MultipartReader::new("b");
        assert!(reader.push(b"nope--b\r\n", |_| {}).is_err());
        assert!(reader.push(b"--b\r\n", |_| {}).is_err());
    }

    #[test]
    fn memory_stays_bounded_whatever_comes() {
        // Headers that never end are refused at MAX_HEAD...
        let mut reader = MultipartReader::new("b");
        reader.push(b"--b\r\n", |_| {}).unwrap();
        let junk = vec![b'x'; 1000];
        let mut result = Ok(());
        for _ in 0..(MAX_HEAD / junk.len() + 2) {
            result = reader.push(&junk, |_| {});
            assert!(reader.pending.capacity() <= 2 * MAX_HEAD);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(MultipartError::HeadTooLong));
        // ...and a large picture is counted, never kept.
        let mut reader = MultipartReader::new("b");
        let big = 8 << 20;
        let head = format!("--b\r\nContent-Length: {big}\r\n\r\n");
        reader.push(head.as_bytes(), |_| {}).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut parts = 0;
        for _ in 0..(big / chunk.len()) {
            reader.push(&chunk, |_| parts += 1).unwrap();
            assert!(reader.pending.capacity() <= MAX_HEAD);
        }
        reader.push(b"\r\n--b\r\n", |_| parts += 1).unwrap();
        assert_eq!(parts, 1);
    }

    #[test]
    fn timestamps_are_read_as_seconds() {
        assert_eq!(
            parse_seconds("1700000000.123456"),
            Some(1_700_000_000_123_456)
        );
        assert_eq!(parse_seconds("5"), Some(5_000_000));
        assert_eq!(parse_seconds("5.1"), Some(5_100_000));
        assert_eq!(parse_seconds("5.1234567"), None);
        assert_eq!(parse_seconds("x.1"), None);
        assert_eq!(parse_seconds("99999999999999999999.0"), None);
    }
}
