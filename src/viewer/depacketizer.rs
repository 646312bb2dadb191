//! RTP back into pictures: H.264 payloads (single NAL unit, STAP-A, FU-A) into Annex-B,
//! the packets of one timestamp into one access unit, and the header extension values
//! a receiver reads. Plain data in, data out (fuzzed), apart from the peer's I/O.

use bytes::{BufMut, Bytes, BytesMut};

/// One access unit as received.
#[derive(Clone, Debug)]
pub struct ReceivedFrame {
    /// Annex-B bytes (4-byte start codes) of every NAL unit of the picture; empty when
    /// the receiver only counts pictures ([`FrameCounter`]).
    pub data: Bytes,
    /// It holds an IDR slice.
    pub keyframe: bool,
    pub rtp_timestamp: u32,
    /// abs-capture-time (NTP 32.32) of the picture, when the sender wrote it.
    pub abs_capture_time: Option<u64>,
    /// Video orientation (CVO byte) carried by the last packet, if any.
    pub video_orientation: Option<u8>,
    /// Size of each RTP packet (header with extensions, plus payload), in order.
    pub packet_sizes: Vec<usize>,
    /// Marker bit of each RTP packet, in order.
    pub markers: Vec<bool>,
}

/// Header extension values read from one packet.
#[derive(Clone, Copy, Debug, Default)]
pub struct PacketExtensions {
    pub abs_capture_time: Option<u64>,
    pub video_orientation: Option<u8>,
}

/// Reassembles access units: packets of one RTP timestamp up to the marker, in sequence.
/// A gap in sequence numbers drops the picture being assembled.
#[derive(Default)]
pub struct Assembler {
    current: Option<Partial>,
}

struct Partial {
    timestamp: u32,
    next_seq: u16,
    data: BytesMut,
    broken: bool,
    abs: Option<u64>,
    cvo: Option<u8>,
    sizes: Vec<usize>,
    markers: Vec<bool>,
}

impl Assembler {
    /// Add one packet (`size` is its full RTP size); returns a picture when one completes.
    pub fn push(
        &mut self,
        packet: &rtc::rtp::Packet,
        size: usize,
        ext: PacketExtensions,
    ) -> Option<ReceivedFrame> {
        let h = &packet.header;
        let continues = self
            .current
            .as_ref()
            .is_some_and(|p| p.timestamp == h.timestamp);
        if !continues {
            self.current = Some(Partial {
                timestamp: h.timestamp,
                next_seq: h.sequence_number,
                data: BytesMut::new(),
                broken: false,
                abs: None,
                cvo: None,
                sizes: Vec::new(),
                markers: Vec::new(),
            });
        }
        let p = self.current.as_mut()?;
        if h.sequence_number != p.next_seq {
            p.broken = true;
        }
        p.next_seq = h.sequence_number.wrapping_add(1);
        p.abs = p.abs.or(ext.abs_capture_time);
        p.cvo = ext.video_orientation;
        p.sizes.push(size);
        p.markers.push(h.marker);
        if depacketize(&packet.payload, &mut p.data).is_err() {
            p.broken = true;
        }
        if !h.marker {
            return None;
        }
        let p = self.current.take()?;
        if p.broken || p.data.is_empty() {
            return None;
        }
        Some(ReceivedFrame {
            keyframe: crate::media::h264::access_unit_is_key(&p.data),
            data: p.data.freeze(),
            rtp_timestamp: p.timestamp,
            abs_capture_time: p.abs,
            video_orientation: p.cvo,
            packet_sizes: p.sizes,
            markers: p.markers,
        })
    }
}

/// Counts access units without putting them together, for viewers that only measure
/// (a load generator's many): the packets of one timestamp up to the marker, in
/// sequence, are one picture, a key one when a payload carries an IDR slice. The
/// pictures it returns have no data and no per-packet lists.
#[derive(Default)]
pub struct FrameCounter {
    current: Option<Counted>,
}

struct Counted {
    timestamp: u32,
    next_seq: u16,
    broken: bool,
    key: bool,
    abs: Option<u64>,
    cvo: Option<u8>,
}

impl FrameCounter {
    /// Add one packet; returns the picture when its last packet completes it whole.
    pub fn push(
        &mut self,
        header: &rtc::rtp::header::Header,
        payload: &[u8],
        ext: PacketExtensions,
    ) -> Option<ReceivedFrame> {
        let continues = self
            .current
            .as_ref()
            .is_some_and(|p| p.timestamp == header.timestamp);
        if !continues {
            self.current = Some(Counted {
                timestamp: header.timestamp,
                next_seq: header.sequence_number,
                broken: false,
                key: false,
                abs: None,
                cvo: None,
            });
        }
        let p = self.current.as_mut()?;
        p.broken |= header.sequence_number != p.next_seq || payload.is_empty();
        p.next_seq = header.sequence_number.wrapping_add(1);
        p.key |= payload_starts_keyframe(payload);
        p.abs = p.abs.or(ext.abs_capture_time);
        p.cvo = ext.video_orientation;
        if !header.marker {
            return None;
        }
        let p = self.current.take()?;
        (!p.broken).then(|| ReceivedFrame {
            data: Bytes::new(),
            keyframe: p.key,
            rtp_timestamp: p.timestamp,
            abs_capture_time: p.abs,
            video_orientation: p.cvo,
            packet_sizes: Vec::new(),
            markers: Vec::new(),
        })
    }
}

impl FrameCounter {
    /// Add a packet whose payload was not read (it is still encrypted): it continues a
    /// picture, so it neither starts a keyframe nor breaks one by being empty.
    pub fn push_unread(
        &mut self,
        header: &rtc::rtp::header::Header,
        ext: PacketExtensions,
    ) -> Option<ReceivedFrame> {
        const FU_A_MIDDLE: [u8; 2] = [28, 0];
        self.push(header, &FU_A_MIDDLE, ext)
    }
}

/// The H.264 RTP payload is, or begins (FU-A) or holds (STAP-A), an IDR slice or a
/// sequence parameter set: senders put the SPS in front of every IDR (an SDP without
/// `sprop-parameter-sets` needs it in band), so a picture's first packet tells.
fn payload_starts_keyframe(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    let starts = |nal_type: u8| nal_type == IDR || nal_type == SPS;
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        24 => {
            let mut rest = &payload[1..];
            while rest.len() >= 3 {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if starts(rest[2] & 0x1f) {
                    return true;
                }
                rest = rest.get(2 + len..).unwrap_or_default();
            }
            false
        }
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && starts(fu & 0x1f)),
        t => starts(t),
    }
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Append the NAL units of one H.264 RTP payload to `out` in Annex-B form.
pub fn depacketize(payload: &[u8], out: &mut BytesMut) -> Result<(), &'static str> {
    let header = *payload.first().ok_or("empty payload")?;
    match header & 0x1f {
        1..=23 => {
            out.put_slice(&START_CODE);
            out.put_slice(payload);
        }
        24 => {
            let mut rest = &payload[1..];
            while rest.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let nal = rest.get(2..2 + len).ok_or("STAP-A unit cut short")?;
                out.put_slice(&START_CODE);
                out.put_slice(nal);
                rest = &rest[2 + len..];
            }
        }
        28 => {
            let fu = *payload.get(1).ok_or("FU-A without header")?;
            if fu & 0x80 != 0 {
                out.put_slice(&START_CODE);
                out.put_u8((header & 0xe0) | (fu & 0x1f));
            }
            out.put_slice(&payload[2..]);
        }
        _ => return Err("unsupported NAL unit type"),
    }
    Ok(())
}

/// Read an abs-capture-time value (8 bytes, or 16 with the clock offset).
pub fn parse_abs_capture_time(payload: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depacketizes_single_stap_and_fu() {
        let mut out = BytesMut::new();
        depacketize(&[0x67, 1, 2], &mut out).unwrap();
        depacketize(&[0x18, 0, 2, 0x68, 9, 0, 1, 0x06], &mut out).unwrap();
        depacketize(&[0x7c, 0x85, 1, 2], &mut out).unwrap();
        depacketize(&[0x7c, 0x45, 3], &mut out).unwrap();
        assert_eq!(
            &out[..],
            &[
                0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 9, 0, 0, 0, 1, 0x06, 0, 0, 0, 1, 0x65, 1,
                2, 3
            ]
        );
        assert!(depacketize(&[], &mut out).is_err());
        assert!(depacketize(&[0x18, 0, 9, 1], &mut out).is_err());
    }

    fn header(seq: u16, timestamp: u32, marker: bool) -> rtc::rtp::header::Header {
        rtc::rtp::header::Header {
            sequence_number: seq,
            timestamp,
            marker,
            ..Default::default()
        }
    }

    #[test]
    fn counter_counts_whole_pictures_and_tells_key_ones() {
        let mut c = FrameCounter::default();
        let none = PacketExtensions::default();
        // A keyframe: SPS+PPS in a STAP-A, then an IDR in two FU-A fragments.
        assert!(c
            .push(
                &header(1, 100, false),
                &[0x18, 0, 1, 0x67, 0, 1, 0x68],
                none
            )
            .is_none());
        assert!(c
            .push(&header(2, 100, false), &[0x7c, 0x85, 1], none)
            .is_none());
        let key = c
            .push(&header(3, 100, true), &[0x7c, 0x45, 2], none)
            .unwrap();
        assert!(key.keyframe && key.data.is_empty());
        // A delta picture in one packet.
        let delta = c.push(&header(4, 200, true), &[0x41, 9], none).unwrap();
        assert!(!delta.keyframe);
        assert_eq!(delta.rtp_timestamp, 200);
        // A picture missing a packet is not counted; the next whole one is.
        assert!(c
            .push(&header(5, 300, false), &[0x7c, 0x81, 1], none)
            .is_none());
        assert!(c
            .push(&header(7, 300, true), &[0x7c, 0x41, 1], none)
            .is_none());
        assert!(c.push(&header(8, 400, true), &[0x41, 9], none).is_some());
    }

    #[test]
    fn abs_capture_time_is_read_with_or_without_the_clock_offset() {
        let ntp = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
        assert_eq!(parse_abs_capture_time(&ntp), Some(0x0123_4567_89ab_cdef));
        let with_offset = [ntp, [0; 8]].concat();
        assert_eq!(
            parse_abs_capture_time(&with_offset),
            Some(0x0123_4567_89ab_cdef)
        );
        assert_eq!(parse_abs_capture_time(&[1, 2, 3]), None);
    }
}
