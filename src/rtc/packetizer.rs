//! H.264 access unit → RTP payloads (RFC 6184), done once per access unit and shared by
//! every peer: single NAL unit packets, FU-A above the size limit, no STAP-A (the same
//! choices as the ustreamer plugin, which every Janus page already copes with).

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::h264;

/// NAL unit type of an FU-A fragment.
const FU_A: u8 = 28;

/// One RTP payload of an access unit; SSRC, sequence and extensions are added per peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpPayload {
    pub payload: Bytes,
    /// Last packet of the access unit (the RTP marker bit).
    pub marker: bool,
}

/// Split an Annex-B access unit into RTP payloads of at most `max_payload` bytes.
///
/// Single NAL units that fit are sliced out of `au` without copying; FU-A fragments need
/// their two-byte FU header in front, so they are copied once (still once per access
/// unit, never per peer). Returns nothing for an access unit without NAL units.
pub fn packetize(au: &Bytes, max_payload: usize) -> Vec<RtpPayload> {
    // An FU-A fragment needs its 2-byte header plus at least one byte of data.
    let max_payload = max_payload.max(3);
    let mut out = Vec::new();
    for nal in h264::nal_units(au) {
        if nal.len() <= 1 {
            continue; // a bare header carries nothing a decoder can use
        }
        if !is_transmittable(nal[0]) {
            continue;
        }
        if nal.len() <= max_payload {
            out.push(RtpPayload {
                payload: au.slice_ref(nal),
                marker: false,
            });
            continue;
        }
        let header = nal[0];
        let indicator = (header & 0x60) | FU_A; // F forced to 0, NRI kept
        let nal_type = header & 0x1f;
        let body = &nal[1..];
        let chunk = max_payload - 2;
        let count = body.len().div_ceil(chunk);
        for (i, part) in body.chunks(chunk).enumerate() {
            let mut fu_header = nal_type;
            if i == 0 {
                fu_header |= 0x80;
            }
            if i + 1 == count {
                fu_header |= 0x40;
            }
            let mut buf = BytesMut::with_capacity(part.len() + 2);
            buf.put_u8(indicator);
            buf.put_u8(fu_header);
            buf.put_slice(part);
            out.push(RtpPayload {
                payload: buf.freeze(),
                marker: false,
            });
        }
    }
    if let Some(last) = out.last_mut() {
        last.marker = true;
    }
    out
}

/// NAL unit types 0 and 24..=31 are unspecified in H.264 and taken by RFC 6184 for its
/// own packet types (STAP, MTAP, FU): sent as a single NAL unit packet, such a unit
/// would be read by the receiver as an aggregate or a fragment. No encoder needs them,
/// so they are dropped rather than sent.
fn is_transmittable(header: u8) -> bool {
    matches!(header & 0x1f, 1..=23)
}

/// 90 kHz RTP timestamp of a capture time in CLOCK_MONOTONIC microseconds, wrapping at
/// 32 bits. Taken from the capture time (not the send time) so jitter in our own
/// pipeline does not show up as jitter in the viewer's playout.
/// The RTP clock of H.264 video (RFC 6184), in Hz.
pub const CLOCK_RATE: u32 = 90_000;

pub fn rtp_timestamp_90k(capture_us: u64) -> u32 {
    (capture_us.wrapping_mul(9) / 100) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annexb(nals: &[&[u8]], four_byte: bool) -> Bytes {
        let mut v = Vec::new();
        for nal in nals {
            if four_byte {
                v.push(0);
            }
            v.extend_from_slice(&[0, 0, 1]);
            v.extend_from_slice(nal);
        }
        Bytes::from(v)
    }

    #[test]
    fn small_nals_go_whole_and_marker_is_on_the_last() {
        let sps = [0x67, 0x42, 0xe0, 0x1f, 0xaa];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let idr = [0x65, 1, 2, 3, 4];
        let au = annexb(&[&sps, &pps, &idr], true);
        let p = packetize(&au, 100);
        assert_eq!(p.len(), 3);
        assert_eq!(&p[0].payload[..], &sps);
        assert_eq!(&p[1].payload[..], &pps, "4-byte start code's zero trimmed");
        assert_eq!(&p[2].payload[..], &idr);
        assert_eq!(
            p.iter().map(|x| x.marker).collect::<Vec<_>>(),
            [false, false, true]
        );
    }

    #[test]
    fn large_nal_is_fragmented_as_fu_a() {
        let mut nal = vec![0x65]; // NRI 3, IDR
        nal.extend((0..250u32).map(|i| (i % 251) as u8 + 2));
        let au = annexb(&[&nal], false);
        let p = packetize(&au, 100);
        // 250 body bytes in chunks of 98: 98 + 98 + 54
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|x| x.payload.len() <= 100));
        assert_eq!(p[0].payload[0], 0x60 | 28);
        assert_eq!(p[0].payload[1], 0x80 | 5);
        assert_eq!(p[1].payload[1], 5);
        assert_eq!(p[2].payload[1], 0x40 | 5);
        assert_eq!(p[0].payload.len(), 100);
        assert_eq!(p[2].payload.len(), 56);
        let body: Vec<u8> = p.iter().flat_map(|x| x.payload[2..].to_vec()).collect();
        assert_eq!(body, nal[1..]);
        assert_eq!(
            p.iter().map(|x| x.marker).collect::<Vec<_>>(),
            [false, false, true]
        );
    }

    #[test]
    fn exact_fit_is_a_single_packet_and_one_over_is_two_fragments() {
        let nal: Vec<u8> = std::iter::once(0x41).chain((0..99).map(|_| 7)).collect();
        assert_eq!(packetize(&annexb(&[&nal], false), 100).len(), 1);
        let nal: Vec<u8> = std::iter::once(0x41).chain((0..100).map(|_| 7)).collect();
        let p = packetize(&annexb(&[&nal], false), 100);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].payload[1], 0x80 | 1);
        assert_eq!(p[1].payload[1], 0x40 | 1);
        assert_eq!(p[0].payload[0], 0x40 | 28);
    }

    #[test]
    fn forbidden_bit_is_cleared_and_tiny_nals_skipped() {
        let nal: Vec<u8> = std::iter::once(0xe5).chain((0..20).map(|_| 9)).collect();
        let au = annexb(&[&[0x09], &nal], false);
        let p = packetize(&au, 10);
        assert_eq!(
            p[0].payload[0],
            0x60 | 28,
            "F bit cleared, 1-byte AUD skipped"
        );
        assert!(p.last().is_some_and(|x| x.marker));
        assert!(packetize(&Bytes::from_static(&[1, 2, 3]), 100).is_empty());
    }

    #[test]
    fn nal_types_rtp_reserves_are_not_sent() {
        // Found by fuzzing: a type-0 unit went out whole and no receiver could read it.
        let data = [
            0xb0, 0x04, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x67, 0x4c, 0x42, 0xc0, 0x1f,
            0xd9,
        ];
        let au = Bytes::copy_from_slice(&data);
        assert!(packetize(&au, 1200).is_empty());
        for header in [0x18, 0x1c, 0x7f] {
            let au = annexb(&[&[header, 1, 2, 3], &[0x65, 4, 5]], true);
            let p = packetize(&au, 1200);
            assert_eq!(p.len(), 1, "type {}", header & 0x1f);
            assert_eq!(&p[0].payload[..], &[0x65, 4, 5]);
            assert!(p[0].marker);
        }
    }

    #[test]
    fn timestamp_is_90khz() {
        assert_eq!(rtp_timestamp_90k(1_000_000), 90_000);
        assert_eq!(rtp_timestamp_90k(33_333), 2_999);
    }
}
