//! RTP H.264 payloads (RFC 6184) from a sender we do not control → pictures: the
//! receiving half of ingest, the mirror of [`crate::rtc::packetizer`].
//!
//! * Payloads: single NAL unit packets, STAP-A aggregates, FU-A fragments. STAP-B, MTAP
//!   and FU-B belong to the interleaved mode no WebRTC or ffmpeg sender uses: dropped.
//! * Access units end at the marker bit, or when the timestamp changes (a lost marker).
//! * Packets are taken in arrival order, not reordered: a sequence gap is a loss (the
//!   picture in progress and every picture up to the next IDR are dropped, and a
//!   keyframe is asked for); a packet older than the last one is late and dropped. On a
//!   LAN or loopback reordering is rare, and a jitter buffer would add its depth in
//!   latency to every picture.
//! * Each picture comes out as Annex-B with 4-byte start codes. An IDR gets the last SPS
//!   and PPS in front when it lacks them, so every key picture stands alone; nothing
//!   comes out before the first IDR with parameter sets.
//! * Memory is bounded ([`MAX_AU_BYTES`], [`MAX_NALS`]); garbage is counted, never a panic.

use crate::media::h264::{self, NalType, SpsInfo};
use crate::media::rtp::RtpPacket;
use crate::media::Picture;

/// Largest access unit kept; a bigger one is dropped (it is no picture a viewer could
/// use, and a hostile sender must not make us hold more).
pub const MAX_AU_BYTES: usize = 8 << 20;
/// Most NAL units in one access unit (slices, SEI, parameter sets).
pub const MAX_NALS: usize = 512;
/// A packet this far behind the expected sequence number is late (or a duplicate);
/// further behind, the sender restarted its numbering.
const LATE_WINDOW: u16 = 512;

/// RFC 6184 packet types carried in the NAL unit type field.
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// What was received and what was thrown away, for `/state` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DepacketizerStats {
    pub packets: u64,
    /// Packets missing from the sequence.
    pub lost_packets: u64,
    /// Packets arriving after later ones (or twice), dropped.
    pub late_packets: u64,
    /// Payloads that are not H.264 as RFC 6184 carries it.
    pub malformed_packets: u64,
    pub pictures: u64,
    /// Pictures dropped: damaged by a loss, too large, or waiting for an IDR.
    pub dropped_pictures: u64,
}

/// One sender's H.264 RTP stream into pictures.
pub struct H264Depacketizer {
    ssrc: Option<u32>,
    next_seq: Option<u16>,
    /// Timestamp of the access unit being assembled.
    timestamp: Option<u32>,
    nals: Vec<Vec<u8>>,
    au_bytes: usize,
    /// An FU-A unit being reassembled.
    fragment: Option<Vec<u8>>,
    /// The access unit being assembled is damaged (a loss, a bad payload, too large).
    broken: bool,
    /// Nothing but an IDR may come out next: the stream starts, or a picture was lost.
    wait_for_idr: bool,
    sps: Option<(Vec<u8>, SpsInfo)>,
    pps: Option<Vec<u8>>,
    keyframe_wanted: bool,
    stats: DepacketizerStats,
}

impl Default for H264Depacketizer {
    fn default() -> Self {
        H264Depacketizer::new()
    }
}

impl H264Depacketizer {
    pub fn new() -> H264Depacketizer {
        H264Depacketizer {
            ssrc: None,
            next_seq: None,
            timestamp: None,
            nals: Vec::new(),
            au_bytes: 0,
            fragment: None,
            broken: false,
            wait_for_idr: true,
            sps: None,
            pps: None,
            keyframe_wanted: false,
            stats: DepacketizerStats::default(),
        }
    }

    pub fn stats(&self) -> DepacketizerStats {
        self.stats
    }

    /// A picture was lost since the last call: the sender should send a keyframe.
    pub fn take_keyframe_request(&mut self) -> bool {
        std::mem::take(&mut self.keyframe_wanted)
    }

    /// Add one packet received at `now_us` (CLOCK_MONOTONIC µs, the pictures' capture
    /// time); the pictures it completes go to `out`.
    pub fn push(&mut self, packet: &RtpPacket, now_us: u64, out: &mut Vec<Picture>) {
        self.stats.packets += 1;
        if self.ssrc != Some(packet.ssrc) {
            if self.ssrc.is_some() {
                // A new stream (the sender restarted): its pictures refer to nothing
                // we have.
                self.discard_au();
                self.lose();
            }
            self.ssrc = Some(packet.ssrc);
            self.next_seq = None;
        }
        if let Some(expected) = self.next_seq {
            let ahead = packet.sequence.wrapping_sub(expected);
            if ahead != 0 {
                if ahead > u16::MAX - LATE_WINDOW {
                    self.stats.late_packets += 1;
                    return;
                }
                self.stats.lost_packets += u64::from(ahead.min(LATE_WINDOW));
                self.broken = true;
                self.fragment = None;
                self.lose();
            }
        }
        self.next_seq = Some(packet.sequence.wrapping_add(1));
        if self.timestamp.is_some_and(|t| t != packet.timestamp) {
            // The previous picture's last packet (with the marker) was lost or unmarked.
            self.finish(now_us, out);
        }
        self.timestamp = Some(packet.timestamp);
        self.take_payload(packet.payload);
        if packet.marker {
            self.finish(now_us, out);
        }
    }

    /// Pictures after a loss refer to what never arrived: wait for an IDR, ask for one.
    fn lose(&mut self) {
        self.wait_for_idr = true;
        self.keyframe_wanted = true;
    }

    fn take_payload(&mut self, payload: &[u8]) {
        let Some(&header) = payload.first() else {
            return self.malformed();
        };
        match header & 0x1f {
            1..=23 => {
                if self.fragment.take().is_some() {
                    // A fragmented unit never ended.
                    self.broken = true;
                }
                self.add_nal(payload.to_vec());
            }
            STAP_A => {
                let mut rest = &payload[1..];
                while !rest.is_empty() {
                    let Some((len, body)) = rest.split_first_chunk::<2>() else {
                        return self.malformed();
                    };
                    let len = usize::from(u16::from_be_bytes(*len));
                    let Some(nal) = body.get(..len) else {
                        return self.malformed();
                    };
                    if len > 0 {
                        self.add_nal(nal.to_vec());
                    }
                    rest = &body[len..];
                }
            }
            FU_A => self.take_fragment(header, payload),
            _ => self.malformed(),
        }
    }

    fn take_fragment(&mut self, indicator: u8, payload: &[u8]) {
        let Some((&fu, body)) = payload.get(1..).and_then(|p| p.split_first()) else {
            return self.malformed();
        };
        let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
        if start {
            if self.fragment.is_some() {
                self.broken = true;
            }
            let mut nal = Vec::with_capacity(body.len() * 4 + 1);
            nal.push((indicator & 0xe0) | (fu & 0x1f));
            self.fragment = Some(nal);
        }
        let Some(nal) = self.fragment.as_mut() else {
            // The start of this unit was lost (counted as a gap already, or the sender
            // is broken): nothing to append to.
            self.broken = true;
            return;
        };
        if self.au_bytes + nal.len() + body.len() > MAX_AU_BYTES {
            self.fragment = None;
            self.broken = true;
            return;
        }
        nal.extend_from_slice(body);
        if end {
            if let Some(nal) = self.fragment.take() {
                self.add_nal(nal);
            }
        }
    }

    fn add_nal(&mut self, nal: Vec<u8>) {
        if nal.len() < 2 || nal[0] & 0x80 != 0 || !matches!(nal[0] & 0x1f, 1..=23) {
            // A bare header, the forbidden bit, or a type H.264 does not define.
            return self.malformed();
        }
        if self.broken {
            return;
        }
        self.au_bytes += nal.len() + 4;
        if self.au_bytes > MAX_AU_BYTES || self.nals.len() >= MAX_NALS {
            self.broken = true;
            return;
        }
        match h264::nal_type(&nal) {
            Some(NalType::Sps) => match h264::parse_sps(&nal) {
                Ok(info) => self.sps = Some((nal.clone(), info)),
                Err(e) => {
                    tracing::debug!("skipping an unreadable SPS: {e}");
                    return self.malformed();
                }
            },
            Some(NalType::Pps) => self.pps = Some(nal.clone()),
            _ => {}
        }
        self.nals.push(nal);
    }

    fn malformed(&mut self) {
        self.stats.malformed_packets += 1;
        self.broken = true;
    }

    fn discard_au(&mut self) {
        self.nals.clear();
        self.au_bytes = 0;
        self.fragment = None;
        self.broken = false;
        self.timestamp = None;
    }

    /// Close the access unit being assembled; emit it when it is a usable picture.
    fn finish(&mut self, now_us: u64, out: &mut Vec<Picture>) {
        let nals = std::mem::take(&mut self.nals);
        let (broken, unfinished) = (self.broken, self.fragment.is_some());
        self.discard_au();
        let has = |t: NalType| nals.iter().any(|n| h264::nal_type(n) == Some(t));
        let has_slice = nals.iter().any(|n| matches!(n[0] & 0x1f, 1..=5));
        if broken || unfinished {
            self.stats.dropped_pictures += 1;
            self.lose();
            return;
        }
        if !has_slice {
            // Parameter sets or SEI alone: the cache keeps them, nothing to show.
            return;
        }
        let key = has(NalType::Idr);
        if self.wait_for_idr && !key {
            self.stats.dropped_pictures += 1;
            self.keyframe_wanted = true;
            return;
        }
        let (Some((sps, info)), Some(pps)) = (&self.sps, &self.pps) else {
            // An IDR we cannot decode: the sender never sent its parameter sets.
            self.stats.dropped_pictures += 1;
            self.keyframe_wanted = true;
            return;
        };
        self.wait_for_idr = false;
        let needs_params = key && !(has(NalType::Sps) && has(NalType::Pps));
        let params = needs_params.then_some((sps.as_slice(), pps.as_slice()));
        let data = h264::annex_b_access_unit(&nals, params);
        self.stats.pictures += 1;
        out.push(Picture::video(data, key, (info.width, info.height), now_us));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtc::packetizer::packetize;
    use bytes::Bytes;

    /// A 160x120 baseline SPS and its PPS, as x264 writes them.
    const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x0b, 0xd9, 0x02, 0x84, 0x7e, 0x5c, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00,
        0x40, 0x00, 0x00, 0x0f, 0x03, 0xc5, 0x0a, 0x92,
    ];
    const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];

    fn annexb(nals: &[&[u8]]) -> Bytes {
        let mut v = Vec::new();
        for nal in nals {
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(nal);
        }
        Bytes::from(v)
    }

    fn slice(idr: bool, len: usize, fill: u8) -> Vec<u8> {
        let mut nal = vec![if idr { 0x65 } else { 0x41 }, 0x88];
        nal.extend((0..len).map(|i| fill.wrapping_add(i as u8) | 1));
        nal
    }

    /// Sends access units as RTP through our own packetizer.
    struct Sender {
        seq: u16,
        ts: u32,
        max_payload: usize,
    }

    impl Sender {
        fn new(max_payload: usize) -> Sender {
            Sender {
                seq: 65_530, // wraps during the tests
                ts: 1000,
                max_payload,
            }
        }

        /// The payloads of one access unit, as (marker, sequence, timestamp, payload).
        fn packets(&mut self, au: &Bytes) -> Vec<(bool, u16, u32, Bytes)> {
            self.ts = self.ts.wrapping_add(3000);
            packetize(au, self.max_payload)
                .into_iter()
                .map(|p| {
                    self.seq = self.seq.wrapping_add(1);
                    (p.marker, self.seq, self.ts, p.payload)
                })
                .collect()
        }
    }

    fn feed(d: &mut H264Depacketizer, packets: &[(bool, u16, u32, Bytes)]) -> Vec<Picture> {
        let mut out = Vec::new();
        for (marker, sequence, timestamp, payload) in packets {
            let packet = RtpPacket {
                marker: *marker,
                payload_type: 96,
                sequence: *sequence,
                timestamp: *timestamp,
                ssrc: 42,
                payload,
            };
            d.push(&packet, 7, &mut out);
        }
        out
    }

    #[test]
    fn our_own_packets_round_trip_at_every_size() {
        let idr = slice(true, 3000, 3);
        let p1 = slice(false, 700, 9);
        let p2 = slice(false, 20, 200);
        let aus = [
            annexb(&[&[0x09, 0xf0], SPS, PPS, &idr]),
            annexb(&[&p1]),
            annexb(&[&p2, &p2]),
        ];
        for max_payload in [3, 100, 600, 1200, 5000] {
            let mut sender = Sender::new(max_payload);
            let mut d = H264Depacketizer::new();
            for _ in 0..2 {
                for au in &aus {
                    let got = feed(&mut d, &sender.packets(au));
                    assert_eq!(got.len(), 1, "max_payload {max_payload}");
                    assert_eq!(got[0].data, au, "max_payload {max_payload}");
                    assert_eq!(got[0].key, au == &aus[0]);
                    assert_eq!((got[0].width, got[0].height), (160, 120));
                    assert_eq!(got[0].capture_us, 7);
                }
            }
            assert!(!d.take_keyframe_request());
            let stats = d.stats();
            assert_eq!((stats.pictures, stats.lost_packets), (6, 0));
        }
    }

    #[test]
    fn stap_a_is_unpacked_and_an_idr_without_parameter_sets_gets_them() {
        let idr = slice(true, 50, 1);
        let mut stap = vec![STAP_A];
        for nal in [SPS, PPS] {
            stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            stap.extend_from_slice(nal);
        }
        let mut d = H264Depacketizer::new();
        let params_only = feed(&mut d, &[(true, 1, 10, Bytes::from(stap))]);
        assert!(
            params_only.is_empty(),
            "parameter sets alone are no picture"
        );
        let got = feed(&mut d, &[(true, 2, 20, Bytes::from(idr.clone()))]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, annexb(&[SPS, PPS, &idr]));
        assert!(got[0].key);
    }

    #[test]
    fn nothing_before_the_first_idr_and_an_idr_without_any_parameter_sets_is_dropped() {
        let mut d = H264Depacketizer::new();
        let p = slice(false, 10, 1);
        assert!(feed(&mut d, &[(true, 1, 10, Bytes::from(p))]).is_empty());
        assert!(d.take_keyframe_request());
        let idr = slice(true, 10, 1);
        assert!(feed(&mut d, &[(true, 2, 20, Bytes::from(idr))]).is_empty());
        assert!(d.take_keyframe_request());
    }

    #[test]
    fn a_lost_fragment_drops_pictures_until_the_next_idr_and_asks_for_one() {
        let key = annexb(&[SPS, PPS, &slice(true, 2000, 5)]);
        let delta = annexb(&[&slice(false, 2000, 6)]);
        let mut sender = Sender::new(600);
        let mut d = H264Depacketizer::new();
        assert_eq!(feed(&mut d, &sender.packets(&key)).len(), 1);

        let mut broken = sender.packets(&delta);
        broken.remove(1); // a middle FU-A fragment
        assert!(feed(&mut d, &broken).is_empty());
        assert!(d.take_keyframe_request(), "a loss asks for a keyframe");
        assert_eq!(d.stats().lost_packets, 1);

        // Whole, but referring to the lost picture: still dropped.
        assert!(feed(&mut d, &sender.packets(&delta)).is_empty());
        let got = feed(&mut d, &sender.packets(&key));
        assert_eq!(got.len(), 1);
        assert!(got[0].key);
        assert_eq!(feed(&mut d, &sender.packets(&delta)).len(), 1);
    }

    #[test]
    fn a_lost_marker_ends_the_picture_at_the_next_timestamp() {
        let key = annexb(&[SPS, PPS, &slice(true, 100, 5)]);
        let mut sender = Sender::new(1200);
        let mut d = H264Depacketizer::new();
        let mut packets = sender.packets(&key);
        packets[2].0 = false; // the marker is missing, nothing lost
        assert!(feed(&mut d, &packets).is_empty());
        let delta = annexb(&[&slice(false, 100, 6)]);
        let got = feed(&mut d, &sender.packets(&delta));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].data, key);
        assert_eq!(got[1].data, delta);
    }

    #[test]
    fn late_and_duplicate_packets_are_dropped_without_breaking_the_stream() {
        let key = annexb(&[SPS, PPS, &slice(true, 100, 5)]);
        let mut sender = Sender::new(1200);
        let mut d = H264Depacketizer::new();
        let first = sender.packets(&key);
        assert_eq!(feed(&mut d, &first).len(), 1);
        assert!(feed(&mut d, &first[2..]).is_empty(), "a duplicate");
        assert_eq!(d.stats().late_packets, 1);
        let delta = annexb(&[&slice(false, 100, 6)]);
        assert_eq!(feed(&mut d, &sender.packets(&delta)).len(), 1);
        assert!(!d.take_keyframe_request());
    }

    #[test]
    fn a_picture_over_the_size_limit_is_dropped() {
        let huge = annexb(&[SPS, PPS, &slice(true, MAX_AU_BYTES, 5)]);
        let mut sender = Sender::new(60_000);
        let mut d = H264Depacketizer::new();
        assert!(feed(&mut d, &sender.packets(&huge)).is_empty());
        assert_eq!(d.stats().dropped_pictures, 1);
        let key = annexb(&[SPS, PPS, &slice(true, 100, 5)]);
        assert_eq!(feed(&mut d, &sender.packets(&key)).len(), 1);
    }

    #[test]
    fn garbage_payloads_are_counted_not_fatal() {
        let mut d = H264Depacketizer::new();
        let garbage: Vec<&[u8]> = vec![
            &[],
            &[0x00, 1, 2],
            &[0x80 | 0x65, 1],
            &[STAP_A, 0, 9, 1],
            &[STAP_A, 0],
            &[FU_A],
            &[FU_A, 0x45, 1, 2],
            &[25, 1, 2, 3],
            &[0x7c, 0x85],
        ];
        let mut out = Vec::new();
        for (i, payload) in garbage.iter().enumerate() {
            let packet = RtpPacket {
                marker: i % 2 == 0,
                payload_type: 96,
                sequence: i as u16,
                timestamp: i as u32 / 3,
                ssrc: 1,
                payload,
            };
            d.push(&packet, 0, &mut out);
        }
        assert!(out.is_empty());
        assert!(d.stats().malformed_packets >= 7, "{:?}", d.stats());
    }

    #[test]
    fn random_packets_never_panic_and_what_comes_out_is_a_picture() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut d = H264Depacketizer::new();
        let mut out = Vec::new();
        let mut payload = Vec::new();
        for i in 0..20_000u32 {
            let r = next();
            payload.clear();
            // Mostly the packet types the depacketizer parses, with random bodies.
            let header =
                [0x65, 0x41, 0x67, 0x68, STAP_A, FU_A | 0x60, r as u8][(r >> 8) as usize % 7];
            payload.push(header);
            payload.extend((0..(r >> 16) % 64).map(|_| next() as u8));
            let packet = RtpPacket {
                marker: r & 1 == 1,
                payload_type: 96,
                sequence: (i + (r >> 32) as u32 % 3) as u16,
                timestamp: i / 4,
                ssrc: u32::from(r >> 40 & 0xff == 0),
                payload: &payload,
            };
            d.push(&packet, 0, &mut out);
        }
        for picture in &out {
            assert!(picture.data.starts_with(&[0, 0, 0, 1]));
            assert!(!picture.key || h264::access_unit_is_key(&picture.data));
        }
        assert_eq!(d.stats().pictures, out.len() as u64);
    }
}
