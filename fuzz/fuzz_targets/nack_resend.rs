//! A viewer's RTCP, any bytes: what its NACKs name is sent again only if the viewer's
//! history still holds it, each packet once per NACK, and never more than the allowance.
#![no_main]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use peregrine::rtc::frame::OutFrame;
use peregrine::rtc::packetizer::RtpPayload;
use peregrine::rtc::resend::{SentHistory, HISTORY_PACKETS};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

fn frame(packets: usize) -> Arc<OutFrame> {
    Arc::new(OutFrame {
        payloads: (0..packets)
            .map(|i| RtpPayload {
                payload: Bytes::from_static(b"x"),
                marker: i + 1 == packets,
            })
            .collect(),
        timestamp: 0,
        key: false,
        playout_delay: Bytes::new(),
        abs_capture_time: Bytes::new(),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    // Pictures of 1..=16 packets sent from a sequence number the input picks, across the
    // wrap for some inputs.
    let mut history = SentHistory::default();
    let mut seq = u16::from(first) << 8 | 0xf0;
    for n in 0..40 {
        let f = frame(1 + (n * 7 + usize::from(first)) % 16);
        history.record(seq, &f);
        seq = seq.wrapping_add(f.payloads.len() as u16);
    }
    let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &rest[..]) else {
        return;
    };
    let now = Instant::now();
    let mut total = 0;
    for packet in &packets {
        let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() else {
            continue;
        };
        let seqs = history.take_resends(now, nack);
        let mut seen = seqs.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), seqs.len(), "a packet resent twice for one NACK");
        for s in &seqs {
            assert!(history.find(*s).is_some(), "resent {s}, which is not kept");
        }
        total += seqs.len();
    }
    assert!(total <= HISTORY_PACKETS, "{total} resends at once");
});
