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

/// The `profile-level-id`s to offer for a stream, preferred first: the stream's own, and
/// when that is not Constrained Baseline also Constrained Baseline at the stream's level.
///
/// A browser answers with the payload types it can decode and drops the others; some
/// (Debian's Chromium among them) decline High outright although their decoder handles
/// it. Sending a Main or High stream under Constrained Baseline is what the ustreamer
/// plugin does for every stream, and browsers decode it: their H.264 decoder takes any
/// of the 8-bit 4:2:0 profiles, whatever the SDP said.
pub fn h264_offer_profiles(profile_level_id: &str) -> Vec<String> {
    let own = profile_level_id.to_ascii_lowercase();
    if is_constrained_baseline(&own) {
        return vec![own];
    }
    let level = own.get(4..6).unwrap_or("1f");
    vec![own.clone(), format!("42e0{level}")]
}

/// Constrained Baseline: profile_idc 66 with constraint_set1 (RFC 6184 §8.1 table 5).
fn is_constrained_baseline(profile_level_id: &str) -> bool {
    let bytes = u32::from_str_radix(profile_level_id, 16).unwrap_or(0);
    let (profile_idc, constraints) = ((bytes >> 16) as u8, (bytes >> 8) as u8);
    profile_level_id.len() == 6 && profile_idc == 0x42 && constraints & 0x40 != 0
}

/// The fmtp line of our H.264 payload type.
pub fn h264_fmtp(profile_level_id: &str) -> String {
    format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile_level_id}")
}

/// Drop `a=candidate` lines whose address is not loopback. A loopback-bound socket
/// cannot reach them, and checks towards them would only delay connecting.
pub fn keep_loopback_candidates(sdp: &str) -> String {
    retain_candidates(sdp, candidate_is_loopback)
}

/// The SDP with only the `a=candidate` lines `keep` says yes to (given the value after
/// `a=`), in order; other lines untouched.
pub fn retain_candidates(sdp: &str, mut keep: impl FnMut(&str) -> bool) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines() {
        if let Some(candidate) = line.strip_prefix("a=") {
            if candidate.starts_with("candidate:") && !keep(candidate) {
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

/// The fmtp of our Opus payload type: 10 ms packets allowed, in-band FEC, and a stereo
/// sender (the plugin's `sprop-stereo=1`). Chromium answers `minptime=10;useinbandfec=1`
/// and kvmd adds `stereo=1`; any answer fmtp is accepted.
pub const OPUS_FMTP: &str = "minptime=10;useinbandfec=1;sprop-stereo=1";

/// One media section (`m=` line and the attribute lines up to the next one).
struct Section<'a> {
    kind: &'a str,
    port: &'a str,
    formats: Vec<u8>,
    lines: Vec<&'a str>,
}

fn sections(sdp: &str) -> Vec<Section<'_>> {
    let mut out: Vec<Section> = Vec::new();
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            let mut fields = m.split_whitespace();
            let kind = fields.next().unwrap_or_default();
            let port = fields.next().unwrap_or_default();
            let formats = fields.skip(1).filter_map(|f| f.parse().ok()).collect();
            out.push(Section {
                kind,
                port,
                formats,
                lines: Vec::new(),
            });
        } else if let Some(section) = out.last_mut() {
            section.lines.push(line);
        }
    }
    out
}

/// The first of `ours` (payload types in preference order) that the answer's video
/// section keeps. An error says why none is there: the section is declined (port 0, as
/// a browser answers an offer it cannot decode) or lists none of ours.
pub fn chosen_payload_type(answer: &str, ours: &[u8]) -> Result<u8, String> {
    let all = sections(answer);
    let video = all
        .iter()
        .find(|s| s.kind == "video")
        .ok_or("no m=video section")?;
    if video.port == "0" {
        return Err(
            "the answer declines the video section (m=video 0): the browser \
                    cannot decode any of the offered H.264 profiles"
                .into(),
        );
    }
    ours.iter()
        .copied()
        .find(|pt| video.formats.contains(pt))
        .ok_or_else(|| format!("the answer keeps none of the offered payload types {ours:?}"))
}

/// The `a=mid` of the first `kind` section (`audio`, `video`).
pub fn mid_of<'a>(sdp: &'a str, kind: &str) -> Option<&'a str> {
    let all = sections(sdp);
    let section = all.iter().find(|s| s.kind == kind)?;
    section.lines.iter().find_map(|l| l.strip_prefix("a=mid:"))
}

/// What the viewer's answer did with the audio section of our offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioAnswer {
    /// No audio section, or one declined (`m=audio 0`), or one without our payload
    /// type: no sound either way, the video plays on.
    Declined,
    /// The section is kept with `payload_type`; `receives` when the viewer takes our
    /// sound, `sends` when it sends its microphone (its direction, from its side).
    Accepted {
        payload_type: u8,
        receives: bool,
        sends: bool,
    },
}

/// How the answer's audio section treats our Opus payload type `ours`.
pub fn audio_answer(answer: &str, ours: u8) -> AudioAnswer {
    let all = sections(answer);
    let Some(audio) = all.iter().find(|s| s.kind == "audio") else {
        return AudioAnswer::Declined;
    };
    if audio.port == "0" || !audio.formats.contains(&ours) {
        return AudioAnswer::Declined;
    }
    // RFC 4566: sendrecv when no direction is given.
    let direction = audio
        .lines
        .iter()
        .find_map(|l| match *l {
            "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive" => Some(&l[2..]),
            _ => None,
        })
        .unwrap_or("sendrecv");
    AudioAnswer::Accepted {
        payload_type: ours,
        receives: matches!(direction, "sendrecv" | "recvonly"),
        sends: matches!(direction, "sendrecv" | "sendonly"),
    }
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
    fn non_baseline_streams_are_also_offered_as_constrained_baseline() {
        assert_eq!(h264_offer_profiles("42e01f"), vec!["42e01f"]);
        assert_eq!(h264_offer_profiles("42C01F"), vec!["42c01f"]);
        assert_eq!(h264_offer_profiles("64001e"), vec!["64001e", "42e01e"]);
        assert_eq!(h264_offer_profiles("4d0028"), vec!["4d0028", "42e028"]);
        assert_eq!(h264_offer_profiles("42001f"), vec!["42001f", "42e01f"]);
    }

    #[test]
    fn payload_type_is_the_first_of_ours_the_answer_keeps() {
        let answer = |m: &str| format!("v=0\r\n{m}\r\na=rtpmap:97 H264/90000\r\n");
        let ours = [96, 97];
        assert_eq!(
            chosen_payload_type(&answer("m=video 9 UDP/TLS/RTP/SAVPF 97"), &ours),
            Ok(97)
        );
        assert_eq!(
            chosen_payload_type(&answer("m=video 9 UDP/TLS/RTP/SAVPF 97 96"), &ours),
            Ok(96)
        );
        let declined = chosen_payload_type(&answer("m=video 0 UDP/TLS/RTP/SAVPF 0"), &ours);
        assert!(declined.unwrap_err().contains("m=video 0"));
        assert!(chosen_payload_type(&answer("m=video 9 UDP/TLS/RTP/SAVPF 102"), &ours).is_err());
        assert!(chosen_payload_type("v=0\r\n", &ours).is_err());
    }

    #[test]
    fn the_audio_answer_says_what_the_viewer_takes_and_sends() {
        let answer = |audio: &str| {
            format!("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=recvonly\r\n{audio}")
        };
        let accepted = |receives, sends| AudioAnswer::Accepted {
            payload_type: 111,
            receives,
            sends,
        };
        let m = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n";
        assert_eq!(
            audio_answer(&answer(&format!("{m}a=recvonly\r\n")), 111),
            accepted(true, false)
        );
        assert_eq!(
            audio_answer(&answer(&format!("{m}a=sendrecv\r\n")), 111),
            accepted(true, true)
        );
        assert_eq!(
            audio_answer(&answer(&format!("{m}a=sendonly\r\n")), 111),
            accepted(false, true)
        );
        assert_eq!(
            audio_answer(&answer(&format!("{m}a=inactive\r\n")), 111),
            accepted(false, false)
        );
        assert_eq!(
            audio_answer(&answer(m), 111),
            accepted(true, true),
            "default"
        );
        // Declined, absent, or without our payload type: no sound, and the video's own
        // direction line is not taken for the audio's.
        let declined = "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n";
        assert_eq!(audio_answer(&answer(declined), 111), AudioAnswer::Declined);
        assert_eq!(audio_answer(&answer(""), 111), AudioAnswer::Declined);
        let other = "m=audio 9 UDP/TLS/RTP/SAVPF 109\r\na=sendrecv\r\n";
        assert_eq!(audio_answer(&answer(other), 111), AudioAnswer::Declined);
        // A declined audio section leaves the video's payload type as it was.
        assert_eq!(chosen_payload_type(&answer(declined), &[96]), Ok(96));
        assert_eq!(mid_of(&answer(m), "audio"), Some("1"));
        assert_eq!(mid_of(&answer(m), "video"), Some("0"));
        assert_eq!(mid_of(&answer(""), "audio"), None);
    }

    #[test]
    fn garbage_answers_are_rejected() {
        assert!(check_answer("hello").is_err());
        assert!(check_answer("v=0\r\nm=audio 9 x 0\r\n").is_err());
    }
}
