//! `application/trickle-ice-sdpfrag` bodies (RFC 8840 §4.4, as WHIP/WHEP use them): the
//! ICE credentials, candidates and end-of-candidates a client sends in a PATCH. Plain
//! text in, data out; nothing here trusts the input.

/// Most candidates one fragment may carry; more is refused rather than read.
pub const MAX_FRAG_CANDIDATES: usize = 64;

/// What a fragment says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SdpFrag {
    /// `a=ice-ufrag` and `a=ice-pwd`, when given (an ICE restart gives new ones).
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    /// `candidate:...` values (without `a=`), in order.
    pub candidates: Vec<String>,
    /// `a=end-of-candidates` was there.
    pub end_of_candidates: bool,
}

/// Why a fragment is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FragError {
    #[error("more than {MAX_FRAG_CANDIDATES} candidates")]
    TooManyCandidates,
    #[error("a line is not SDP: {0:?}")]
    NotSdp(String),
}

/// Read a fragment. Lines other than the ICE ones (`m=`, `a=mid`, `a=ice-options`, ...)
/// are allowed and ignored, as RFC 8840 fragments carry them; a line that is not
/// `x=...` at all makes the body garbage.
pub fn parse(body: &str) -> Result<SdpFrag, FragError> {
    let mut frag = SdpFrag::default();
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let bytes = line.as_bytes();
        if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
            return Err(FragError::NotSdp(line.chars().take(40).collect()));
        }
        let Some(attr) = line.strip_prefix("a=") else {
            continue;
        };
        if let Some(v) = attr.strip_prefix("ice-ufrag:") {
            frag.ufrag = Some(v.trim().to_string());
        } else if let Some(v) = attr.strip_prefix("ice-pwd:") {
            frag.pwd = Some(v.trim().to_string());
        } else if attr.starts_with("candidate:") {
            if frag.candidates.len() == MAX_FRAG_CANDIDATES {
                return Err(FragError::TooManyCandidates);
            }
            frag.candidates.push(attr.to_string());
        } else if attr == "end-of-candidates" {
            frag.end_of_candidates = true;
        }
    }
    Ok(frag)
}

/// The `a=ice-ufrag` of an SDP (session level or the first media section's).
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}

/// Whether ICE credentials are well formed (RFC 8839 §5.4: `ice-char`s, a ufrag of 4
/// to 256 and a password of 22 to 256): only such go into an SDP we hand the stack.
pub fn credentials_valid(ufrag: &str, pwd: &str) -> bool {
    let ice_chars = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    };
    (4..=256).contains(&ufrag.len())
        && (22..=256).contains(&pwd.len())
        && ice_chars(ufrag)
        && ice_chars(pwd)
}

/// Our side of a restarted ICE session as a PATCH answers it: credentials, candidates
/// and end-of-candidates (we gather nothing more).
pub fn restart_frag(ufrag: &str, pwd: &str, candidates: &[String]) -> String {
    let mut frag = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    for candidate in candidates {
        frag.push_str(&format!("a={candidate}\r\n"));
    }
    frag.push_str("a=end-of-candidates\r\n");
    frag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickle_fragment_is_read() {
        let body = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
            a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n\
            a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0\r\n\
            a=end-of-candidates\r\n";
        let frag = parse(body).expect("parses");
        assert_eq!(frag.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(frag.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(frag.candidates.len(), 2);
        assert!(frag.candidates[0].starts_with("candidate:1387637174 1 udp"));
        assert!(frag.end_of_candidates);
    }

    #[test]
    fn garbage_and_floods_are_refused() {
        assert!(matches!(parse("hello world"), Err(FragError::NotSdp(_))));
        assert!(parse("").is_ok_and(|f| f == SdpFrag::default()));
        let flood = "a=candidate:1 1 udp 1 127.0.0.1 9 typ host\n".repeat(MAX_FRAG_CANDIDATES + 1);
        assert_eq!(parse(&flood), Err(FragError::TooManyCandidates));
    }

    #[test]
    fn only_well_formed_credentials_are_taken() {
        assert!(credentials_valid("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1"));
        assert!(credentials_valid("a+/b", "+/+/+/+/+/+/+/+/+/+/+/"));
        assert!(
            !credentials_valid("abc", "P2uYro0UCOQ4zxjKXaWCBui1"),
            "short ufrag"
        );
        assert!(!credentials_valid("EsAw", "short"), "short pwd");
        assert!(!credentials_valid("Es\r\nAw", "P2uYro0UCOQ4zxjKXaWCBui1"));
        assert!(!credentials_valid("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1 x"));
        assert!(!credentials_valid(
            &"a".repeat(257),
            "P2uYro0UCOQ4zxjKXaWCBui1"
        ));
    }

    #[test]
    fn the_restart_answer_lists_credentials_candidates_and_the_end() {
        let frag = restart_frag(
            "abcd",
            "p".repeat(22).as_str(),
            &["candidate:1 1 udp 1 127.0.0.1 9 typ host".into()],
        );
        let read = parse(&frag).expect("our own fragment parses");
        assert_eq!(read.ufrag.as_deref(), Some("abcd"));
        assert_eq!(read.candidates.len(), 1);
        assert!(read.end_of_candidates);
    }

    #[test]
    fn the_offer_ufrag_is_found() {
        assert_eq!(
            ice_ufrag("v=0\r\nm=video 9 x 96\r\na=ice-ufrag:abc \r\n"),
            Some("abc")
        );
        assert_eq!(ice_ufrag("v=0\r\n"), None);
    }
}
