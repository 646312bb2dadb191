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
    /// The publisher's feed ended or another's replaced it, not yet told.
    left: bool,
}

impl WhipInput {
    pub fn new(slot: Arc<PublisherSlot>) -> WhipInput {
        WhipInput {
            slot,
            feed: None,
            left: false,
        }
    }
}

impl RtpInput for WhipInput {
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Option<(usize, SocketAddr)> {
        if let Some(feed) = self.slot.take_feed() {
            self.left |= self.feed.replace(feed).is_some();
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
                // The publisher's peer is gone: its turn ends now.
                self.feed = None;
                self.left = true;
                None
            }
        }
    }

    fn sender_left(&mut self) -> bool {
        std::mem::take(&mut self.left)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::publisher;
    use bytes::Bytes;

    #[test]
    fn the_publishers_packets_come_in_and_its_leaving_is_told() {
        let slot = Arc::new(PublisherSlot::default());
        let mut input = WhipInput::new(slot.clone());
        let mut buf = [0u8; 64];
        let soon = || Instant::now() + Duration::from_millis(5);
        assert_eq!(input.recv(&mut buf, soon()), None, "nobody publishes");

        assert!(slot.claim("a"));
        let (tap, feed) = publisher::channel(Box::new(|| {}));
        slot.hand_over("a", feed);
        let from: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert!(tap.hand_on((Bytes::from_static(b"rtp"), from)));
        assert_eq!(input.recv(&mut buf, soon()), Some((3, from)));
        assert_eq!(&buf[..3], b"rtp");
        assert!(!input.sender_left());

        drop(tap); // the engine dropped the publisher's peer
        assert_eq!(input.recv(&mut buf, soon()), None);
        assert!(input.sender_left(), "its turn ends at once");
        assert!(!input.sender_left(), "told once");
    }
}
