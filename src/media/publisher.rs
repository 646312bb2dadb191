//! The hand-over between a WHIP publisher's WebRTC peer and its stream's source: the
//! engine pushes the publisher's decrypted video RTP into a bounded queue
//! ([`PublisherTap`]), the source reads it ([`PublisherFeed`]) and asks for keyframes
//! back through a callback the signalling side gives it. A stream whose source is
//! `whip` has one [`PublisherSlot`]: at most one publisher holds it at a time. Its sound,
//! when the stream takes it, goes straight from the engine into the stream's sound hub
//! ([`SoundOutlet`]): Opus frames need no source to be made.

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use super::audio::published::SoundOutlet;

/// RTP packets queued between the engine and the source: about a second of a
/// high-bitrate stream. A full queue drops (a stalled source must not hold the engine).
pub const PUBLISHER_QUEUE_PACKETS: usize = 2048;

/// One RTP packet of the publisher (header and payload, as it came on the wire after
/// SRTP) and the address it came from.
pub type PublishedPacket = (Bytes, SocketAddr);

/// The engine's end: where a publisher's video RTP goes, and its sound.
#[derive(Clone, Debug)]
pub struct PublisherTap {
    packets: SyncSender<PublishedPacket>,
    sound: Option<SoundOutlet>,
}

impl PublisherTap {
    /// The publisher's sound goes to `sound` (a stream without a sound source of its
    /// own); without one it is not taken.
    pub fn with_sound(self, sound: Option<SoundOutlet>) -> PublisherTap {
        PublisherTap { sound, ..self }
    }

    /// Where the publisher's sound goes, if the stream takes it.
    pub fn sound(&self) -> Option<&SoundOutlet> {
        self.sound.as_ref()
    }

    /// Hand a packet on without waiting; `false` when the queue was full (or the
    /// source is gone) and it was dropped.
    pub fn hand_on(&self, packet: PublishedPacket) -> bool {
        match self.packets.try_send(packet) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// The source's end: the publisher's packets, and how to ask it for a keyframe.
pub struct PublisherFeed {
    pub packets: Receiver<PublishedPacket>,
    pub ask_keyframe: Box<dyn Fn() + Send>,
}

/// A new hand-over: the engine's end and the source's.
pub fn channel(ask_keyframe: Box<dyn Fn() + Send>) -> (PublisherTap, PublisherFeed) {
    let (tx, rx) = mpsc::sync_channel(PUBLISHER_QUEUE_PACKETS);
    (
        PublisherTap {
            packets: tx,
            sound: None,
        },
        PublisherFeed {
            packets: rx,
            ask_keyframe,
        },
    )
}

/// Who publishes to a `whip` stream. The signalling side claims it for a session and
/// hands the feed over; the source takes the feed; releasing frees it for the next
/// publisher. The feed ends by itself when the engine drops the publisher's peer.
#[derive(Default)]
pub struct PublisherSlot {
    state: Mutex<SlotState>,
    /// Where its publishers' sound goes, when the stream has no sound source.
    sound: Option<SoundOutlet>,
}

#[derive(Default)]
struct SlotState {
    /// The session publishing now.
    holder: Option<String>,
    /// A feed not yet taken by the source.
    waiting: Option<PublisherFeed>,
}

impl PublisherSlot {
    /// The slot of a stream whose sound its publishers send.
    pub fn with_sound(sound: SoundOutlet) -> PublisherSlot {
        PublisherSlot {
            sound: Some(sound),
            ..PublisherSlot::default()
        }
    }

    /// Where its publishers' sound goes, if the stream takes it.
    pub fn sound(&self) -> Option<&SoundOutlet> {
        self.sound.as_ref()
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim the stream for `session`; `false` when another publisher holds it.
    pub fn claim(&self, session: &str) -> bool {
        let mut state = self.lock();
        if state.holder.is_some() {
            return false;
        }
        state.holder = Some(session.to_string());
        true
    }

    /// Give the source the feed of the session holding the slot.
    pub fn hand_over(&self, session: &str, feed: PublisherFeed) {
        let mut state = self.lock();
        if state.holder.as_deref() == Some(session) {
            state.waiting = Some(feed);
        }
    }

    /// Free the slot if `session` holds it.
    pub fn release(&self, session: &str) {
        let mut state = self.lock();
        if state.holder.as_deref() == Some(session) {
            state.holder = None;
            state.waiting = None;
        }
    }

    /// The feed handed over since the source last looked, if any.
    pub fn take_feed(&self) -> Option<PublisherFeed> {
        self.lock().waiting.take()
    }

    /// Whether a publisher holds the stream.
    pub fn is_held(&self) -> bool {
        self.lock().holder.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_publisher_at_a_time_and_the_next_after_release() {
        let slot = PublisherSlot::default();
        assert!(slot.claim("a"));
        assert!(!slot.claim("b"), "a second publisher is refused");
        let (_tap, feed) = channel(Box::new(|| {}));
        slot.hand_over("a", feed);
        assert!(slot.take_feed().is_some());
        slot.release("b");
        assert!(slot.is_held(), "only the holder releases");
        slot.release("a");
        assert!(slot.claim("b"));
    }

    #[test]
    fn a_full_queue_drops_instead_of_waiting() {
        let (tap, _feed) = channel(Box::new(|| {}));
        let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for _ in 0..PUBLISHER_QUEUE_PACKETS {
            assert!(tap.hand_on((Bytes::from_static(b"x"), from)));
        }
        assert!(!tap.hand_on((Bytes::from_static(b"x"), from)));
    }
}
