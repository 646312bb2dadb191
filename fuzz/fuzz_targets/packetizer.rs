//! Access units into RTP payloads. The stream comes from a source we do not control
//! (a camera's encoder), so any Annex-B bytes must packetize within the size limit,
//! with the marker on the last payload only, and depacketize back to the same units.
//!
//! Input: `max_payload: u16 LE`, then the access unit.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use peregrine::media::h264::nal_units;
use peregrine::rtc::packetizer::packetize;
use peregrine::viewer::depacketizer::depacketize;

/// What a decoder sees of a NAL unit after the round trip: the forbidden bit is cleared
/// in fragments, and trailing zeros are indistinguishable from the next start code.
fn normalized(nal: &[u8]) -> Vec<u8> {
    let mut v = nal.to_vec();
    v[0] &= 0x7f;
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((head, au)) = data.split_at_checked(2) else {
        return;
    };
    let max_payload = usize::from(u16::from_le_bytes([head[0], head[1]]) % 1600);
    let au = Bytes::copy_from_slice(au);
    let payloads = packetize(&au, max_payload);

    let limit = max_payload.max(3);
    for (i, p) in payloads.iter().enumerate() {
        assert!(!p.payload.is_empty());
        assert!(p.payload.len() <= limit, "{} > {limit}", p.payload.len());
        assert_eq!(
            p.marker,
            i + 1 == payloads.len(),
            "marker on the last payload only"
        );
    }

    let mut annexb = BytesMut::new();
    for p in &payloads {
        depacketize(&p.payload, &mut annexb).expect("our own payloads depacketize");
    }
    let sent: Vec<Vec<u8>> = nal_units(&annexb).map(normalized).collect();
    // Bare headers and the types RTP reserves for its own packets are not sent.
    let expected: Vec<Vec<u8>> = nal_units(&au)
        .filter(|n| n.len() > 1 && matches!(n[0] & 0x1f, 1..=23))
        .map(normalized)
        .collect();
    assert_eq!(sent, expected);
});
