//! The query string of `/stream` and `/snapshot`: peregrine's `stream` (which stream) and
//! µStreamer's client options. µStreamer reads an option as on when its value starts
//! with `1` or is `true` or `yes` (any case), and as off otherwise, so values it would
//! not understand switch the option off rather than failing; peregrine does the same.

/// Longest `key` accepted: it travels in a cookie and in `/state`.
pub const MAX_KEY_LEN: usize = 256;

/// What a `/stream` client asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamOptions {
    /// The peregrine stream; `None` is the default one.
    #[serde(skip)]
    pub stream: Option<String>,
    /// The client's own label, percent-encoded as µStreamer stores it.
    pub key: Option<String>,
    /// `X-UStreamer-*` headers on every part.
    pub extra_headers: bool,
    /// The next part's headers right after each picture (for Blink's one-picture lag);
    /// no `Content-Length` and no `X-UStreamer-*` headers then.
    pub advance_headers: bool,
    /// With `--drop-same-frames`: the last picture of a change is sent twice.
    pub dual_final_frames: bool,
    /// Parts without the picture (`Content-Length: 0`), for measuring.
    pub zero_data: bool,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Raw {
    stream: Option<String>,
    key: Option<String>,
    extra_headers: Option<String>,
    advance_headers: Option<String>,
    dual_final_frames: Option<String>,
    zero_data: Option<String>,
}

/// Why a query is refused (400).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("bad query string: {0}")]
    Syntax(String),
    #[error("key is longer than {MAX_KEY_LEN} bytes")]
    KeyTooLong,
}

impl StreamOptions {
    /// Parse a query string (without `?`). Unknown parameters are ignored.
    pub fn parse(query: &str) -> Result<StreamOptions, QueryError> {
        let raw: Raw =
            serde_urlencoded::from_str(query).map_err(|e| QueryError::Syntax(e.to_string()))?;
        let key = match raw.key {
            Some(key) if key.len() > MAX_KEY_LEN => return Err(QueryError::KeyTooLong),
            Some(key) => Some(encode_uri(&key)),
            None => None,
        };
        let on = |v: &Option<String>| v.as_deref().is_some_and(is_true);
        Ok(StreamOptions {
            stream: raw.stream,
            key,
            extra_headers: on(&raw.extra_headers),
            advance_headers: on(&raw.advance_headers),
            dual_final_frames: on(&raw.dual_final_frames),
            zero_data: on(&raw.zero_data),
        })
    }
}

/// µStreamer's reading of a boolean parameter.
fn is_true(value: &str) -> bool {
    value.starts_with('1')
        || value.eq_ignore_ascii_case("true")
        || value.eq_ignore_ascii_case("yes")
}

/// Percent-encode all but RFC 3986's unreserved characters, so the key is safe in a
/// header and in JSON as it is.
fn encode_uri(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_read_as_ustreamer_reads_them() {
        let o = StreamOptions::parse(
            "extra_headers=1&advance_headers=TRUE&dual_final_frames=yes&zero_data=10&key=a b/c",
        )
        .unwrap();
        assert!(o.extra_headers && o.advance_headers && o.dual_final_frames && o.zero_data);
        assert_eq!(o.key.as_deref(), Some("a%20b%2Fc"));
        assert_eq!(o.stream, None);
        for off in ["0", "false", "on", "", "y", "2"] {
            let o = StreamOptions::parse(&format!("extra_headers={off}")).unwrap();
            assert!(!o.extra_headers, "{off:?} is off, as in µStreamer");
        }
        assert_eq!(StreamOptions::parse("").unwrap(), StreamOptions::default());
    }

    #[test]
    fn stream_names_pass_and_unknown_parameters_are_ignored() {
        let o = StreamOptions::parse("stream=cam2&foo=bar&_=123").unwrap();
        assert_eq!(o.stream.as_deref(), Some("cam2"));
    }

    #[test]
    fn bad_queries_are_refused_with_a_reason() {
        let long = format!("key={}", "k".repeat(MAX_KEY_LEN + 1));
        assert_eq!(StreamOptions::parse(&long), Err(QueryError::KeyTooLong));
        assert!(StreamOptions::parse(&format!("key={}", "k".repeat(MAX_KEY_LEN))).is_ok());
        let twice = StreamOptions::parse("stream=a&stream=b").unwrap_err();
        assert!(twice.to_string().contains("duplicate"), "{twice}");
        // Bad percent-encoding is read leniently, never a panic.
        assert!(StreamOptions::parse("key=%ff%zz&stream=%00").is_ok());
    }
}
