//! The RTCP a plain RTP sender needs: its sender reports out, and keyframe requests
//! (PLI, FIR) read back from whatever arrives on its socket. Plain data in, data out;
//! what arrives can be anything (fuzzed).

/// RTCP packet types (RFC 3550, RFC 4585).
const SENDER_REPORT: u8 = 200;
const PAYLOAD_FEEDBACK: u8 = 206;
/// Payload-specific feedback formats: Picture Loss Indication and Full Intra Request.
const FMT_PLI: u8 = 1;
const FMT_FIR: u8 = 4;

/// Seconds from the NTP era (1900) to the Unix epoch.
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// Size of a sender report without report blocks.
pub const SENDER_REPORT_LEN: usize = 28;

/// What a sender report says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderReport {
    pub ssrc: u32,
    /// Wall-clock time of the report, µs since the Unix epoch.
    pub wallclock_us: u64,
    /// The RTP timestamp of that same instant.
    pub rtp_timestamp: u32,
    pub packets: u32,
    /// Payload bytes sent.
    pub octets: u32,
}

impl SenderReport {
    pub fn to_bytes(&self) -> [u8; SENDER_REPORT_LEN] {
        let mut b = [0u8; SENDER_REPORT_LEN];
        b[0] = 0x80; // version 2, no padding, no report blocks
        b[1] = SENDER_REPORT;
        b[2..4].copy_from_slice(&((SENDER_REPORT_LEN / 4 - 1) as u16).to_be_bytes());
        b[4..8].copy_from_slice(&self.ssrc.to_be_bytes());
        b[8..16].copy_from_slice(&ntp_timestamp(self.wallclock_us).to_be_bytes());
        b[16..20].copy_from_slice(&self.rtp_timestamp.to_be_bytes());
        b[20..24].copy_from_slice(&self.packets.to_be_bytes());
        b[24..28].copy_from_slice(&self.octets.to_be_bytes());
        b
    }
}

/// NTP 32.32 fixed point of a Unix time in µs.
pub fn ntp_timestamp(unix_us: u64) -> u64 {
    let secs = unix_us / 1_000_000 + NTP_UNIX_OFFSET_S;
    let frac = ((unix_us % 1_000_000) << 32) / 1_000_000;
    (secs << 32) | frac
}

/// Keyframe requests found in one datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyframeRequests {
    pub pli: u32,
    pub fir: u32,
}

impl KeyframeRequests {
    pub fn any(&self) -> bool {
        self.pli + self.fir > 0
    }
}

/// The PLIs and FIRs of a (compound) RTCP datagram. Reading stops at the first packet
/// that is not well-formed RTCP; anything else (receiver reports, NACKs, stray RTP) is
/// passed over.
pub fn keyframe_requests(datagram: &[u8]) -> KeyframeRequests {
    let mut found = KeyframeRequests::default();
    let mut rest = datagram;
    while rest.len() >= 4 {
        if rest[0] >> 6 != 2 {
            break;
        }
        let words = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let len = (words + 1) * 4;
        let Some(packet) = rest.get(..len) else {
            break;
        };
        // A feedback message has both SSRCs (12 bytes) at least.
        if packet[1] == PAYLOAD_FEEDBACK && len >= 12 {
            match packet[0] & 0x1f {
                FMT_PLI => found.pli += 1,
                FMT_FIR => found.fir += 1,
                _ => {}
            }
        }
        rest = &rest[len..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feedback(fmt: u8, extra_words: u16) -> Vec<u8> {
        let mut p = vec![0x80 | fmt, PAYLOAD_FEEDBACK];
        p.extend_from_slice(&(2 + extra_words).to_be_bytes());
        p.extend_from_slice(&1u32.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend(std::iter::repeat_n(0, usize::from(extra_words) * 4));
        p
    }

    #[test]
    fn sender_report_fields_are_where_rfc_3550_puts_them() {
        let sr = SenderReport {
            ssrc: 0xdead_beef,
            wallclock_us: 1_500_000,
            rtp_timestamp: 90_000,
            packets: 7,
            octets: 7000,
        }
        .to_bytes();
        assert_eq!(&sr[..4], &[0x80, 200, 0, 6]);
        assert_eq!(&sr[4..8], &0xdead_beefu32.to_be_bytes());
        assert_eq!(
            u32::from_be_bytes(sr[8..12].try_into().unwrap()),
            (NTP_UNIX_OFFSET_S + 1) as u32
        );
        assert_eq!(u32::from_be_bytes(sr[12..16].try_into().unwrap()), 1 << 31);
        assert_eq!(&sr[16..20], &90_000u32.to_be_bytes());
        assert_eq!(&sr[20..24], &7u32.to_be_bytes());
        assert_eq!(&sr[24..28], &7000u32.to_be_bytes());
    }

    #[test]
    fn plis_and_firs_are_found_in_compound_packets() {
        let mut rr = vec![0x80, 201, 0, 1];
        rr.extend_from_slice(&1u32.to_be_bytes());
        let mut datagram = rr.clone();
        datagram.extend(feedback(FMT_PLI, 0));
        datagram.extend(feedback(FMT_FIR, 2));
        datagram.extend(feedback(15, 1)); // REMB-style application feedback
        assert_eq!(
            keyframe_requests(&datagram),
            KeyframeRequests { pli: 1, fir: 1 }
        );
        assert!(!keyframe_requests(&rr).any());
    }

    #[test]
    fn garbage_and_truncation_find_nothing() {
        let pli = feedback(FMT_PLI, 0);
        assert!(!keyframe_requests(&pli[..11]).any(), "cut short");
        assert!(!keyframe_requests(&[]).any());
        assert!(!keyframe_requests(&[0x41, 206, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]).any());
        // A length field of zero words: too short for feedback, and reading goes on.
        let mut short = vec![0x81, PAYLOAD_FEEDBACK, 0, 0];
        short.extend(&pli);
        assert_eq!(keyframe_requests(&short).pli, 1);
        // An RTP packet (version 2, payload type 96) is not read as feedback.
        let rtp = [0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x65];
        assert!(!keyframe_requests(&rtp).any());
    }
}
