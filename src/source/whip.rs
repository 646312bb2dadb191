//! `source = "whip"`: the stream's pictures come from a WHIP publisher (a browser, OBS,
//! GStreamer, aiortc) that POSTs its offer to `/STREAM/whip`. Until one does, and after
//! it leaves, viewers see NO SIGNAL. The RTP the engine decrypted is handed over through
//! the stream's [`PublisherSlot`] and made into pictures by the same depacketizing
//! source as `rtp-listen://` ([`RtpListenSource`]); its keyframe requests go back to the
//! publisher as RTCP PLI sent by the engine.

use std::net::SocketAddr;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rtp_listen::{RtpInput, RtpListenSource};
use crate::media::publisher::{PublisherFeed, PublisherSlot};

/// Longest wait in one receive call, so a new publisher's feed is picked up soon.
const RECEIVE_SLICE: Duration = Duration::from_millis(50);

/// The RTP of whoever publishes to the stream.
pub struct WhipInput {
    slot: Arc<PublisherSlot>,
    feed: Option<PublisherFeed>,
}

impl WhipInput {
    pub fn new(slot: Arc<PublisherSlot>) -> WhipInput {
        WhipInput { slot, feed: None }
    }
}

impl RtpInput for WhipInput {
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Option<(usize, SocketAddr)> {
        if let Some(feed) = self.slot.take_feed() {
            self.feed = Some(feed);
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), RECEIVE_SLICE);
        let Some(feed) = &self.feed else {
            std::thread::sleep(wait);
            return None;
        };
        match feed.packets.recv_timeout(wait) {
            Ok((packet, from)) => {
                let len = packet.len().min(buf.len());
                buf[..len].copy_from_slice(&packet[..len]);
                Some((len, from))
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // The publisher's peer is gone: its silence ends its turn.
                self.feed = None;
                None
            }
        }
    }

    fn send_feedback(&mut self, _to: SocketAddr, _rtcp: &[u8]) {
        // The engine writes the PLI itself, under the publisher's own SRTP context.
        if let Some(feed) = &self.feed {
            (feed.ask_keyframe)();
        }
    }
}

/// The source of a `whip` stream.
pub fn source(slot: Arc<PublisherSlot>) -> RtpListenSource {
    RtpListenSource::new(Box::new(WhipInput::new(slot)), "whip".to_string(), &[])
}
