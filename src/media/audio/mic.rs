//! The browsers' microphones on their way to the speaker: what the WebRTC engine hands
//! over for each Opus packet a viewer sends. The engine never waits here: packets go
//! into a bounded queue, and when the playback side falls behind, packets are dropped
//! (a gap in one talker's sound) rather than delaying any viewer's video.

use bytes::Bytes;
use tokio::sync::mpsc;

/// Packets queued between the engine and the playback at most: about a second of
/// sound from each of a dozen talking browsers.
pub const MIC_QUEUE: usize = 512;

/// Names a talking browser; the engine's peer id.
pub type TalkerId = u64;

/// One Opus RTP packet from a browser's microphone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MicPacket {
    pub talker: TalkerId,
    pub seq: u16,
    /// RTP timestamp (48 kHz).
    pub timestamp: u32,
    pub payload: Bytes,
}

/// What the playback side hears of the talkers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MicEvent {
    Packet(MicPacket),
    /// The talker's connection is gone: forget it now rather than after its silence.
    Left(TalkerId),
}

/// The engine's end of a stream's microphone playback; cheap to clone.
#[derive(Clone, Debug)]
pub struct MicInput {
    tx: mpsc::Sender<MicEvent>,
}

impl MicInput {
    /// A new input and the receiving end for the playback.
    pub fn channel(capacity: usize) -> (MicInput, mpsc::Receiver<MicEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (MicInput { tx }, rx)
    }

    /// Hand over one packet; false when it was dropped (queue full or playback gone).
    pub fn packet(&self, packet: MicPacket) -> bool {
        self.tx.try_send(MicEvent::Packet(packet)).is_ok()
    }

    /// The talker is gone. Dropped like a packet when the queue is full: the playback
    /// then forgets the talker after its silence instead.
    pub fn left(&self, talker: TalkerId) {
        let _ = self.tx.try_send(MicEvent::Left(talker));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_instead_of_waiting() {
        let (input, mut rx) = MicInput::channel(2);
        let packet = |seq| MicPacket {
            talker: 7,
            seq,
            timestamp: u32::from(seq) * 960,
            payload: Bytes::from_static(b"opus"),
        };
        assert!(input.packet(packet(1)));
        assert!(input.packet(packet(2)));
        assert!(!input.packet(packet(3)), "the third does not fit");
        assert_eq!(rx.try_recv().unwrap(), MicEvent::Packet(packet(1)));
        input.left(7);
        assert_eq!(rx.try_recv().unwrap(), MicEvent::Packet(packet(2)));
        assert_eq!(rx.try_recv().unwrap(), MicEvent::Left(7));
        drop(rx);
        assert!(!input.packet(packet(4)), "nobody plays any more");
    }
}
