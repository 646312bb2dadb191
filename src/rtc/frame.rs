//! A picture packetized once, ready to be stamped for each viewer: its RTP payloads and
//! what every viewer's packets of it share (timestamp, header extension values); and
//! the same for an audio frame.

use bytes::Bytes;

use super::{extensions, packetizer};
use crate::media::{audio, clock, Picture};

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

/// One Opus frame, ready to be stamped for each listener: its payload (shared, never
/// copied) and its RTP timestamp, worked out once for all of them.
#[derive(Debug)]
pub struct OutAudio {
    pub payload: Bytes,
    pub timestamp: u32,
}

impl OutAudio {
    /// The frame `frame` as one RTP payload of at most `rtp_packet_size` bytes with its
    /// header; `None` for an empty frame or one too big for a packet (Opus never makes
    /// those at the bitrates sources use).
    pub fn from_frame(frame: &Picture, rtp_packet_size: usize) -> Option<OutAudio> {
        let room = rtp_packet_size.saturating_sub(RTP_HEADER);
        if frame.data.is_empty() || frame.data.len() > room {
            return None;
        }
        Some(OutAudio {
            payload: frame.data.clone(),
            timestamp: audio::rtp_timestamp_48k(frame.capture_us),
        })
    }
}
