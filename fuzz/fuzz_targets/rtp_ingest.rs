//! Pushed RTP (an ingest source's UDP port, a WHIP publisher) into pictures: any
//! datagram is read as RTP, and H.264 payloads go through the ingest depacketizer; the
//! same packets as a WHIP publisher's sound become bounded audio frames.
//!
//! Input: records of `len: u16 LE` then `len` bytes. A record that does not parse as
//! RTP is used as a payload under a header made from its first bytes, so the
//! depacketizer gets exercised either way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::media::audio::published::{PublishedSound, SoundOutlet};
use peregrine::media::depacketizer::{H264Depacketizer, MAX_AU_BYTES};
use peregrine::media::h264::{nal_type, nal_units, NalType};
use peregrine::media::rtp::{parse, Datagram, RtpPacket};
use peregrine::media::Hub;
use peregrine::source::audio::AudioStatusHandle;

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

/// flags (marker, SSRC switch), sequence (u16), timestamp (low byte only, so pictures
/// span packets), then the payload.
fn synthetic(record: &[u8]) -> Option<RtpPacket<'_>> {
    let (head, payload) = record.split_at_checked(4)?;
    Some(RtpPacket {
        marker: head[0] & 1 == 1,
        payload_type: 96,
        sequence: u16::from_be_bytes([head[1], head[2]]),
        timestamp: u32::from(head[3]),
        ssrc: u32::from(head[0] >> 7),
        payload,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut depacketizer = H264Depacketizer::new();
    let mut out = Vec::new();
    let hub = Hub::new(4096);
    let outlet = SoundOutlet {
        hub: hub.clone(),
        status: AudioStatusHandle::new("whip"),
    };
    let mut sound = PublishedSound::new(outlet, 111);
    let mut packets = 0u64;
    for (n, record) in records(data).enumerate() {
        let packet = match parse(record) {
            Datagram::Rtp(p) => p,
            Datagram::Rtcp => continue,
            Datagram::Invalid => match synthetic(record) {
                Some(p) => p,
                None => continue,
            },
        };
        depacketizer.push(&packet, 1, &mut out);
        let _ = depacketizer.take_keyframe_request();
        let now_us = 1_000_000 + n as u64 * 20_000;
        // Never panics; frames over its bound are counted dropped.
        sound.take(packet.ssrc, packet.timestamp, packet.payload, now_us);
        packets += 1;
    }
    assert_eq!(sound.frames + sound.dropped, packets);
    assert_eq!(hub.info().frames, sound.frames);

    let stats = depacketizer.stats();
    assert_eq!(stats.pictures, out.len() as u64);
    for picture in &out {
        assert!(picture.data.len() <= MAX_AU_BYTES + 1024);
        assert!(picture.data.starts_with(&[0, 0, 0, 1]));
        let types: Vec<_> = nal_units(&picture.data).filter_map(nal_type).collect();
        assert!(types
            .iter()
            .any(|t| matches!(t, NalType::Slice | NalType::Idr | NalType::Other(2..=4))));
        if picture.key {
            assert!(types.contains(&NalType::Sps) && types.contains(&NalType::Pps));
            assert!(picture.width > 0 && picture.height > 0);
        }
    }
});
