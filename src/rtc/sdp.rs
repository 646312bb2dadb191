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

/// An H.264 payload type a viewer's offer lists, with its fmtp line as offered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferedH264 {
    pub payload_type: u8,
    pub fmtp: String,
}

/// What a viewer's offer (WHEP) lets us send: the H.264 payload type to send the stream
/// under, and Opus's payload type when the offer has an audio section that takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferedMedia {
    pub video: OfferedH264,
    pub opus: Option<u8>,
}

/// Read a viewer's offer: its video section must list H.264 with
/// packetization-mode=1 (we send FU-A fragments). Of those, the one whose
/// `profile-level-id` fits `stream_profile` best is chosen (see [`h264_fit`]), the
/// offer's order breaking ties. An error says why nothing fits.
pub fn read_offer(offer: &str, stream_profile: &str) -> Result<OfferedMedia, String> {
    if !offer.trim_start().starts_with("v=0") {
        return Err("not an SDP offer: does not start with v=0".into());
    }
    for key in ["a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:"] {
        if !offer.lines().any(|l| l.trim_end().starts_with(key)) {
            return Err(format!("the offer lacks {}", key.trim_end_matches(':')));
        }
    }
    let all = sections(offer);
    let video = all
        .iter()
        .find(|s| s.kind == "video" && s.port != "0")
        .ok_or("the offer has no video section")?;
    let h264: Vec<OfferedH264> = video
        .formats
        .iter()
        .filter(|pt| rtpmap_of(video, **pt).is_some_and(|m| m.eq_ignore_ascii_case("H264/90000")))
        .map(|&pt| OfferedH264 {
            payload_type: pt,
            fmtp: fmtp_of(video, pt).unwrap_or_default().to_string(),
        })
        .collect();
    if h264.is_empty() {
        return Err("the offer's video section has no H.264".into());
    }
    let stream_profile = stream_profile.to_ascii_lowercase();
    let video = h264
        .iter()
        .filter(|c| fmtp_param(&c.fmtp, "packetization-mode") == Some("1"))
        .enumerate()
        .max_by_key(|(i, c)| {
            (
                h264_fit(&stream_profile, fmtp_param(&c.fmtp, "profile-level-id")),
                std::cmp::Reverse(*i),
            )
        })
        .map(|(_, c)| c.clone())
        .ok_or("the offer has H.264 only without packetization-mode=1")?;
    let opus = all
        .iter()
        .find(|s| s.kind == "audio" && s.port != "0")
        .and_then(|audio| {
            audio.formats.iter().copied().find(|pt| {
                rtpmap_of(audio, *pt)
                    .is_some_and(|m| m.to_ascii_lowercase().starts_with("opus/48000"))
            })
        });
    Ok(OfferedMedia { video, opus })
}

/// `offer` with its video sections' formats cut down to `video` and its audio sections'
/// to `opus` (when given), with the lines of the other payload types left out.
///
/// A browser offers some 30 video payload types (VP8, VP9, AV1, H.265, H.264 variants,
/// their RTX, RED, FEC). The WebRTC stack reads every one of them several times while
/// answering, which made an answer cost about 6 ms of CPU; the answer keeps only the
/// payload type chosen from it anyway ([`read_offer`]). A section that does not list the
/// payload type is left as it is, as is everything not tied to one payload type.
pub fn offer_cut_to(offer: &str, video: u8, opus: Option<u8>) -> String {
    let mut out = String::with_capacity(offer.len());
    let mut keep: Option<u8> = None;
    for line in offer.split_inclusive('\n') {
        let text = line.trim_end();
        if let Some(m) = text.strip_prefix("m=") {
            let fields: Vec<&str> = m.split_whitespace().collect();
            let chosen = match fields.first() {
                Some(&"video") => Some(video),
                Some(&"audio") => opus,
                _ => None,
            };
            let listed = |pt: u8| fields.iter().skip(3).any(|f| f.parse() == Ok(pt));
            keep = chosen.filter(|pt| fields.len() > 3 && listed(*pt));
            if let Some(pt) = keep {
                let ending = &line[text.len()..];
                out.push_str(&format!("m={} {pt}{ending}", fields[..3].join(" ")));
                continue;
            }
        } else if let Some(pt) = keep {
            let other = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"].iter().any(|prefix| {
                text.strip_prefix(prefix)
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|id| id.parse::<u8>().ok())
                    .is_some_and(|id| id != pt)
            });
            if other {
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// How well an offered `profile-level-id` carries a stream of `stream`: 3 the same
/// profile and constraints, 2 the same profile, 1 Constrained Baseline (what browsers
/// decode any stream under, as the offer path relies on), 0 anything else. Without a
/// `profile-level-id` the offer means Baseline (RFC 6184 §8.1: 420010).
pub fn h264_fit(stream: &str, offered: Option<&str>) -> u8 {
    let offered = offered.unwrap_or("42000a").to_ascii_lowercase();
    let byte = |s: &str, i: usize| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok());
    if byte(stream, 0).is_some() && byte(stream, 0) == byte(&offered, 0) {
        if byte(stream, 2) == byte(&offered, 2) {
            3
        } else {
            2
        }
    } else if is_constrained_baseline(&offered) {
        1
    } else {
        0
    }
}

/// The encoding name of `pt` in `section` (`a=rtpmap:PT NAME/RATE[/CH]`).
fn rtpmap_of<'a>(section: &Section<'a>, pt: u8) -> Option<&'a str> {
    attribute_of(section, "a=rtpmap:", pt)
}

/// The fmtp parameters of `pt` in `section`.
fn fmtp_of<'a>(section: &Section<'a>, pt: u8) -> Option<&'a str> {
    attribute_of(section, "a=fmtp:", pt)
}

fn attribute_of<'a>(section: &Section<'a>, prefix: &str, pt: u8) -> Option<&'a str> {
    section.lines.iter().find_map(|l| {
        let (id, value) = l.strip_prefix(prefix)?.split_once(' ')?;
        (id.parse::<u8>().ok()? == pt).then(|| value.trim())
    })
}

/// A `key=value` parameter of an fmtp line (keys compared without case).
fn fmtp_param<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
    })
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

    const CHROMIUM_LIKE_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 102 103 104 106 112\r\n\
        a=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
        a=fingerprint:sha-256 00:11\r\na=recvonly\r\n\
        a=rtpmap:96 VP8/90000\r\n\
        a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
        a=rtpmap:103 H264/90000\r\na=fmtp:103 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
        a=rtpmap:104 H264/90000\r\na=fmtp:104 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f\r\n\
        a=rtpmap:106 H264/90000\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
        a=rtpmap:112 H264/90000\r\na=fmtp:112 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\na=mid:1\r\na=recvonly\r\n\
        a=rtpmap:63 red/48000/2\r\na=rtpmap:111 opus/48000/2\r\n";

    #[test]
    fn the_offered_h264_that_fits_the_stream_best_is_chosen() {
        let chosen =
            |profile: &str| read_offer(CHROMIUM_LIKE_OFFER, profile).map(|m| m.video.payload_type);
        // Constrained Baseline: the offer's first packetization-mode=1 42e0 entry.
        assert_eq!(chosen("42e01f"), Ok(103));
        assert_eq!(chosen("42c01e"), Ok(103));
        assert_eq!(chosen("4d0028"), Ok(104), "Main under Main");
        assert_eq!(chosen("640028"), Ok(112), "High under High");
        assert_eq!(chosen("42001f"), Ok(106), "Baseline under Baseline");
        // A profile the offer lacks goes under Constrained Baseline.
        assert_eq!(chosen("f4001f"), Ok(103));
        let media = read_offer(CHROMIUM_LIKE_OFFER, "42e01f").expect("offer");
        assert_eq!(media.opus, Some(111));
        assert!(media.video.fmtp.contains("profile-level-id=42e01f"));
    }

    #[test]
    fn offers_we_cannot_send_to_are_refused_with_a_reason() {
        assert!(read_offer("hello", "42e01f").unwrap_err().contains("v=0"));
        let vp8_only = CHROMIUM_LIKE_OFFER
            .lines()
            .filter(|l| !l.contains("H264") && !l.starts_with("a=fmtp"))
            .collect::<Vec<_>>()
            .join("\r\n");
        assert!(read_offer(&vp8_only, "42e01f")
            .unwrap_err()
            .contains("no H.264"));
        let mode0 = CHROMIUM_LIKE_OFFER.replace("packetization-mode=1", "packetization-mode=0");
        assert!(read_offer(&mode0, "42e01f")
            .unwrap_err()
            .contains("packetization-mode=1"));
        let audio_only = CHROMIUM_LIKE_OFFER.replace("m=video 9", "m=video 0");
        assert!(read_offer(&audio_only, "42e01f")
            .unwrap_err()
            .contains("no video"));
        let no_ice = CHROMIUM_LIKE_OFFER.replace("a=ice-pwd", "a=x-pwd");
        assert!(read_offer(&no_ice, "42e01f")
            .unwrap_err()
            .contains("ice-pwd"));
    }

    #[test]
    fn garbage_answers_are_rejected() {
        assert!(check_answer("hello").is_err());
        assert!(check_answer("v=0\r\nm=audio 9 x 0\r\n").is_err());
    }
    #[test]
    fn an_offer_cut_to_the_chosen_payload_types_keeps_the_rest() {
        let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103\r\na=mid:0\r\na=rtcp-fb:* transport-cc\r\n\
            a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
            a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack pli\r\n\
            a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
            a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\na=recvonly\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9\r\na=mid:1\r\na=rtpmap:111 opus/48000/2\r\n\
            a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n\
            a=rtpmap:9 G722/8000\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\na=sctp-port:5000\r\n";
        let cut = offer_cut_to(offer, 102, Some(111));
        let expected =
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=rtcp-fb:* transport-cc\r\n\
            a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack pli\r\n\
            a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
            a=recvonly\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=rtpmap:111 opus/48000/2\r\n\
            a=fmtp:111 minptime=10;useinbandfec=1\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\na=sctp-port:5000\r\n";
        assert_eq!(cut, expected);
        // What was chosen from the offer is chosen from the cut one.
        let offered = read_offer(
            &format!("{offer}a=ice-ufrag:u\r\na=ice-pwd:p\r\na=fingerprint:x\r\n"),
            "42e01f",
        )
        .unwrap();
        assert_eq!((offered.video.payload_type, offered.opus), (102, Some(111)));
        // Without Opus, or with a payload type a section does not list, it stays whole.
        let no_opus = offer_cut_to(offer, 102, None);
        assert!(no_opus.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9\r\n"));
        assert_eq!(offer_cut_to(offer, 50, Some(50)), offer);
    }
}
