//! RTP from a peer: H.264 payloads (single NAL, STAP-A, FU-A) into Annex-B, packets of
//! one timestamp into pictures, and the header extensions read along the way.
//!
//! Input: records of `len: u16 LE` then `len` bytes. Each record is first parsed as a
//! whole RTP packet; records that do not parse are used as a payload under a header
//! made from their first bytes, so the assembler gets exercised either way.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use peregrine::viewer::depacketizer::{
    depacketize, parse_abs_capture_time, Assembler, PacketExtensions,
};
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::shared::marshal::Unmarshal;

fn records(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if data.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
        let (record, rest) = data[2..].split_at(len);
        data = rest;
        Some(record)
    })
}

fn synthetic(record: &[u8]) -> Option<Packet> {
    // flags (marker), sequence (u16), timestamp (low byte only, so pictures span packets)
    let (head, payload) = record.split_at_checked(4)?;
    Some(Packet {
        header: Header {
            version: 2,
            marker: head[0] & 1 == 1,
            payload_type: 96,
            sequence_number: u16::from_be_bytes([head[1], head[2]]),
            timestamp: u32::from(head[3]),
            ..Default::default()
        },
        payload: Bytes::copy_from_slice(payload),
    })
}

fuzz_target!(|data: &[u8]| {
    let mut assembler = Assembler::default();
    for record in records(data) {
        let mut out = BytesMut::new();
        if depacketize(record, &mut out).is_ok() && !record.is_empty() {
            assert!(out.len() >= 4 || record[0] & 0x1f == 24 || record[0] & 0x1f == 28);
        }

        let mut buf = record;
        let packet = match Packet::unmarshal(&mut buf) {
            Ok(p) => p,
            Err(_) => match synthetic(record) {
                Some(p) => p,
                None => continue,
            },
        };
        let mut ext = PacketExtensions::default();
        for id in packet.header.get_extension_ids() {
            if let Some(value) = packet.header.get_extension(id) {
                ext.abs_capture_time = ext.abs_capture_time.or(parse_abs_capture_time(&value));
                ext.video_orientation = value.first().copied();
            }
        }
        if let Some(frame) = assembler.push(&packet, record.len(), ext) {
            assert!(!frame.data.is_empty());
            assert_eq!(frame.packet_sizes.len(), frame.markers.len());
            assert_eq!(frame.markers.last(), Some(&true));
            assert!(frame.markers[..frame.markers.len() - 1].iter().all(|m| !m));
        }
    }
});
