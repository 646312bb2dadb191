//! A picture packetized once, ready to be stamped for each viewer: its RTP payloads and
//! what every viewer's packets of it share (timestamp, header extension values).

use bytes::Bytes;

use super::{extensions, packetizer};
use crate::media::{clock, Picture};

/// RTP header without CSRCs.
const RTP_HEADER: usize = 12;

#[derive(Debug)]
pub struct OutFrame {
    pub payloads: Vec<packetizer::RtpPayload>,
    pub timestamp: u32,
    pub key: bool,
    pub playout_delay: Bytes,
    pub abs_capture_time: Bytes,
}

impl OutFrame {
    /// Packetize `au` into packets of at most `rtp_packet_size` bytes (header and
    /// extensions included); `None` for an access unit with nothing to send.
    pub fn packetize(au: &Picture, rtp_packet_size: usize) -> Option<OutFrame> {
        let max_payload =
            rtp_packet_size.saturating_sub(RTP_HEADER + extensions::MAX_EXTENSION_BYTES);
        let payloads = packetizer::packetize(&au.data, max_payload);
        if payloads.is_empty() {
            return None;
        }
        let ntp = clock::realtime_us_to_ntp(clock::monotonic_to_realtime_us(au.capture_us));
        Some(OutFrame {
            payloads,
            timestamp: packetizer::rtp_timestamp_90k(au.capture_us),
            key: au.key,
            playout_delay: extensions::playout_delay(0, 0),
            abs_capture_time: extensions::abs_capture_time(ntp),
        })
    }
}
