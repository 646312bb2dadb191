//! The RTP and RTCP wire facts a receiver of pushed media needs (RFC 3550, RFC 4585):
//! reading an RTP header from a datagram anyone may have sent, telling RTCP sent on the
//! same port apart from it, and writing the picture loss indication that asks the
//! sender for a keyframe. Plain data in, data out.

/// Shortest RTP header: no CSRCs, no extension.
const FIXED_HEADER: usize = 12;
/// RTCP packet types (SR 200 … APP 204, RTPFB 205, PSFB 206, XR 207), which share the
/// byte where RTP has marker and payload type (RFC 5761 section 4).
const RTCP_TYPES: std::ops::RangeInclusive<u8> = 192..=223;
/// Payload-specific feedback, and its picture loss indication format.
const RTCP_PSFB: u8 = 206;
const FMT_PLI: u8 = 1;

/// One RTP packet, borrowed from the datagram it came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Without header, CSRCs, extension and padding.
    pub payload: &'a [u8],
}

/// What a datagram on an RTP port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    Rtp(RtpPacket<'a>),
    /// RTCP multiplexed on the RTP port (sender reports and the like): not media.
    Rtcp,
    /// Not RTP version 2, or cut short: garbage.
    Invalid,
}

/// Read a datagram received on an RTP port.
pub fn parse(data: &[u8]) -> Datagram<'_> {
    if data.len() < FIXED_HEADER || data[0] >> 6 != 2 {
        return Datagram::Invalid;
    }
    if RTCP_TYPES.contains(&data[1]) {
        return Datagram::Rtcp;
    }
    let padding = data[0] & 0x20 != 0;
    let extension = data[0] & 0x10 != 0;
    let csrc_count = usize::from(data[0] & 0x0f);
    let mut start = FIXED_HEADER + 4 * csrc_count;
    if extension {
        let Some(ext) = data.get(start..start + 4) else {
            return Datagram::Invalid;
        };
        start += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    let mut end = data.len();
    if padding {
        let pad = usize::from(data[end - 1]);
        if pad == 0 {
            return Datagram::Invalid;
        }
        end = end.saturating_sub(pad);
    }
    let Some(payload) = data.get(start..end) else {
        return Datagram::Invalid;
    };
    Datagram::Rtp(RtpPacket {
        marker: data[1] & 0x80 != 0,
        payload_type: data[1] & 0x7f,
        sequence: u16::from_be_bytes([data[2], data[3]]),
        timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
        payload,
    })
}

/// An RTCP picture loss indication (RFC 4585 6.3.1) from `sender_ssrc` about the media
/// sender `media_ssrc`: "send a keyframe".
pub fn picture_loss_indication(sender_ssrc: u32, media_ssrc: u32) -> [u8; 12] {
    let mut pli = [0u8; 12];
    pli[0] = 0x80 | FMT_PLI;
    pli[1] = RTCP_PSFB;
    // Length in 32-bit words minus one.
    pli[2..4].copy_from_slice(&2u16.to_be_bytes());
    pli[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    pli[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
    pli
}

/// Write an RTP packet (no CSRCs, no extension): for tests and tools that send RTP.
pub fn write(packet: &RtpPacket, out: &mut Vec<u8>) {
    out.push(0x80);
    out.push(u8::from(packet.marker) << 7 | (packet.payload_type & 0x7f));
    out.extend_from_slice(&packet.sequence.to_be_bytes());
    out.extend_from_slice(&packet.timestamp.to_be_bytes());
    out.extend_from_slice(&packet.ssrc.to_be_bytes());
    out.extend_from_slice(packet.payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_packet_reads_back() {
        let sent = RtpPacket {
            marker: true,
            payload_type: 96,
            sequence: 65535,
            timestamp: 0xdead_beef,
            ssrc: 0x1234_5678,
            payload: &[0x65, 1, 2, 3],
        };
        let mut wire = Vec::new();
        write(&sent, &mut wire);
        assert_eq!(parse(&wire), Datagram::Rtp(sent));
    }

    #[test]
    fn csrcs_extension_and_padding_are_skipped() {
        let mut wire = vec![0x80 | 0x20 | 0x10 | 1, 96, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7];
        wire.extend_from_slice(&[0xaa; 4]); // one CSRC
        wire.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]); // one-word extension
        wire.extend_from_slice(&[0x41, 5, 6]);
        wire.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let Datagram::Rtp(p) = parse(&wire) else {
            panic!("not read as RTP");
        };
        assert_eq!(p.payload, &[0x41, 5, 6]);
        assert_eq!((p.sequence, p.timestamp, p.ssrc), (1, 9, 7));
    }

    #[test]
    fn rtcp_and_garbage_are_told_apart() {
        let pli = picture_loss_indication(1, 2);
        assert_eq!(parse(&pli), Datagram::Rtcp);
        assert_eq!(pli, [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
        let sender_report = [0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(parse(&sender_report), Datagram::Rtcp);
        for bad in [
            &b""[..],
            b"hello world!",
            &[0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0][..],
            &[0x8f, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0][..], // 15 CSRCs promised
            &[0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0xff, 0xff][..],
            &[0xa0, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0x41, 200][..], // padding > packet
            &[0xa0, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0x41, 0][..],
        ] {
            assert_eq!(parse(bad), Datagram::Invalid, "{bad:?}");
        }
    }
}
