//! SDP text helpers around what the `rtc` crate produces and accepts.

use std::net::IpAddr;

/// Used until the stream has carried an SPS: Constrained Baseline 3.1, the value the
/// ustreamer plugin always advertises.
pub const DEFAULT_PROFILE_LEVEL_ID: &str = "42e01f";

/// `profile-level-id` (RFC 6184 §8.1) from an SPS NAL unit (header byte included):
/// profile_idc, the constraint flags byte and level_idc are bytes 1..4.
pub fn profile_level_id(sps: &[u8]) -> Option<String> {
    let b = sps.get(1..4)?;
    if sps[0] & 0x1f != 7 || b[0] == 0 {
        return None;
    }
    Some(format!("{:02x}{:02x}{:02x}", b[0], b[1], b[2]))
}

/// The fmtp line of our H.264 payload type.
pub fn h264_fmtp(profile_level_id: &str) -> String {
    format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile_level_id}")
}

/// Drop `a=candidate` lines whose address is not loopback. A loopback-bound socket
/// cannot reach them, and checks towards them would only delay connecting.
pub fn keep_loopback_candidates(sdp: &str) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines() {
        if let Some(candidate) = line.strip_prefix("a=") {
            if candidate.starts_with("candidate:") && !candidate_is_loopback(candidate) {
                continue;
            }
        }
        out.push_str(line);
        out.push_str(eol);
    }
    out
}

/// Whether a `candidate:` attribute value names a loopback address. Names that are not
/// IP addresses (mDNS `.local` hosts) count as not loopback.
pub fn candidate_is_loopback(candidate: &str) -> bool {
    candidate_address(candidate).is_some_and(|ip| ip.is_loopback())
}

/// The connection address of a `candidate:` value (`a=` prefix allowed).
pub fn candidate_address(candidate: &str) -> Option<IpAddr> {
    let value = candidate.trim().trim_start_matches("a=");
    let value = value.strip_prefix("candidate:").unwrap_or(value);
    // foundation component transport priority address port typ ...
    value.split_whitespace().nth(4)?.parse().ok()
}

/// Quick structural check before handing an answer to the engine, so garbage gets a
/// clear error instead of whatever the parser makes of it.
pub fn check_answer(sdp: &str) -> Result<(), String> {
    if !sdp.trim_start().starts_with("v=0") {
        return Err("does not start with v=0".into());
    }
    if !sdp.lines().any(|l| l.starts_with("m=video")) {
        return Err("no m=video section".into());
    }
    for key in ["a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:"] {
        if !sdp.lines().any(|l| l.starts_with(key)) {
            return Err(format!("missing {}", key.trim_end_matches(':')));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_level_id_from_sps_bytes() {
        assert_eq!(
            profile_level_id(&[0x67, 0x42, 0xc0, 0x1f, 0x8c]).as_deref(),
            Some("42c01f")
        );
        assert_eq!(
            profile_level_id(&[0x27, 0x64, 0x00, 0x28]).as_deref(),
            Some("640028")
        );
        assert_eq!(profile_level_id(&[0x67, 0x42]), None);
        assert_eq!(
            profile_level_id(&[0x68, 0x42, 0xc0, 0x1f]),
            None,
            "not an SPS"
        );
    }

    #[test]
    fn non_loopback_candidates_are_dropped() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
            a=candidate:1 1 udp 2130706431 192.168.1.5 50000 typ host\r\n\
            a=candidate:2 1 udp 2130706431 127.0.0.1 50001 typ host\r\n\
            a=candidate:3 1 udp 2130706431 abcd.local 50002 typ host\r\n\
            a=end-of-candidates\r\n";
        let out = keep_loopback_candidates(sdp);
        assert!(!out.contains("192.168.1.5"));
        assert!(!out.contains("abcd.local"));
        assert!(out.contains("127.0.0.1 50001"));
        assert!(out.contains("a=end-of-candidates\r\n"));
    }

    #[test]
    fn candidate_address_parses_with_or_without_prefixes() {
        let c = "candidate:1 1 udp 2130706431 127.0.0.1 50001 typ host";
        assert_eq!(candidate_address(c), Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(
            candidate_address(&format!("a={c}")),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(candidate_address("candidate:garbage"), None);
    }

    #[test]
    fn garbage_answers_are_rejected() {
        assert!(check_answer("hello").is_err());
        assert!(check_answer("v=0\r\nm=audio 9 x 0\r\n").is_err());
    }
}
