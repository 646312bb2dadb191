//! What a viewer was sent lately, for answering its NACKs: the shared frames
//! themselves and the sequence number each started at, not a copy of every packet.
//!
//! Every viewer's packets of a picture are the same payloads (see [`OutFrame`]) under
//! its own sequence numbers, so one reference per picture (about 30 a second) is all a
//! viewer needs to rebuild any packet it lost. A per-packet history (what the WebRTC
//! stack's NACK responder keeps) costs a header copy per packet sent and tens of KiB per
//! viewer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use super::frame::OutFrame;

/// Packets kept per viewer: about a second of a 2 Mbit/s stream, more than a NACK
/// needs to arrive in time to be useful.
pub const HISTORY_PACKETS: usize = 256;

/// Packets resent per viewer per second at most: a viewer (or someone who took over
/// its address) must not turn NACKs into an amplifier.
const RESENDS_PER_SECOND: u32 = HISTORY_PACKETS as u32;

struct Sent {
    first_seq: u16,
    frame: Arc<OutFrame>,
}

pub struct SentHistory {
    frames: VecDeque<Sent>,
    /// Packets of the frames kept.
    held: usize,
    /// Resends allowed now, refilled at [`RESENDS_PER_SECOND`].
    allowance: u32,
    refilled: Option<Instant>,
}

impl Default for SentHistory {
    fn default() -> Self {
        SentHistory {
            frames: VecDeque::new(),
            held: 0,
            allowance: RESENDS_PER_SECOND,
            refilled: None,
        }
    }
}

impl SentHistory {
    /// `frame` went out under sequence numbers from `first_seq` on.
    pub fn record(&mut self, first_seq: u16, frame: &Arc<OutFrame>) {
        self.held += frame.payloads.len();
        self.frames.push_back(Sent {
            first_seq,
            frame: frame.clone(),
        });
        while let Some(front) = self.frames.front() {
            let len = front.frame.payloads.len();
            if self.held - len < HISTORY_PACKETS {
                break;
            }
            self.held -= len;
            self.frames.pop_front();
        }
    }

    /// The frame and packet index that went out as `seq`, if still kept.
    pub fn find(&self, seq: u16) -> Option<(&Arc<OutFrame>, usize)> {
        self.frames.iter().rev().find_map(|sent| {
            let index = usize::from(seq.wrapping_sub(sent.first_seq));
            (index < sent.frame.payloads.len()).then_some((&sent.frame, index))
        })
    }

    /// The sequence numbers `nack` names that are kept and within the resend allowance
    /// at `now`, each once, oldest first as named.
    pub fn take_resends(&mut self, now: Instant, nack: &TransportLayerNack) -> Vec<u16> {
        self.refill(now);
        let mut seqs: Vec<u16> = Vec::new();
        for seq in named(nack) {
            if self.allowance == 0 {
                break;
            }
            if seqs.contains(&seq) || self.find(seq).is_none() {
                continue;
            }
            self.allowance -= 1;
            seqs.push(seq);
        }
        seqs
    }

    fn refill(&mut self, now: Instant) {
        let Some(last) = self.refilled else {
            self.refilled = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(last);
        let earned = (elapsed.as_secs_f64() * f64::from(RESENDS_PER_SECOND)) as u32;
        if earned > 0 || elapsed >= Duration::from_secs(1) {
            self.allowance = self
                .allowance
                .saturating_add(earned)
                .min(RESENDS_PER_SECOND);
            self.refilled = Some(now);
        }
    }

    /// Frames kept (for memory accounting in tests).
    #[cfg(test)]
    fn frames_kept(&self) -> usize {
        self.frames.len()
    }
}

/// Every sequence number a NACK names: each pair's packet id and the following ones its
/// bitmask marks.
fn named(nack: &TransportLayerNack) -> impl Iterator<Item = u16> + '_ {
    nack.nacks.iter().flat_map(|pair| {
        let following = (0..16u16)
            .filter(move |i| pair.lost_packets & (1 << i) != 0)
            .map(move |i| pair.packet_id.wrapping_add(i + 1));
        std::iter::once(pair.packet_id).chain(following)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtc::packetizer::RtpPayload;
    use bytes::Bytes;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    fn frame(packets: usize) -> Arc<OutFrame> {
        Arc::new(OutFrame {
            payloads: (0..packets)
                .map(|i| RtpPayload {
                    payload: Bytes::from(vec![i as u8; 4]),
                    marker: i + 1 == packets,
                })
                .collect(),
            timestamp: 0,
            key: false,
            playout_delay: Bytes::new(),
            abs_capture_time: Bytes::new(),
        })
    }

    fn nack(pairs: &[(u16, u16)]) -> TransportLayerNack {
        TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 2,
            nacks: pairs
                .iter()
                .map(|&(packet_id, lost_packets)| NackPair {
                    packet_id,
                    lost_packets,
                })
                .collect(),
        }
    }

    #[test]
    fn a_kept_sequence_number_finds_its_frame_and_packet_across_the_wrap() {
        let mut history = SentHistory::default();
        let (a, b) = (frame(3), frame(5));
        history.record(65534, &a); // 65534, 65535, 0
        history.record(1, &b); // 1..=5
        let (found, index) = history.find(0).expect("kept");
        assert!(Arc::ptr_eq(found, &a));
        assert_eq!(index, 2);
        let (found, index) = history.find(4).expect("kept");
        assert!(Arc::ptr_eq(found, &b));
        assert_eq!(index, 3);
        assert!(history.find(6).is_none(), "never sent");
        assert!(history.find(65533).is_none(), "never sent");
    }

    #[test]
    fn old_frames_leave_once_newer_ones_cover_the_history() {
        let mut history = SentHistory::default();
        let mut seq = 0u16;
        for _ in 0..100 {
            history.record(seq, &frame(10));
            seq = seq.wrapping_add(10);
        }
        // 256 packets need 26 frames of 10; nothing older is kept.
        assert_eq!(history.frames_kept(), 26);
        assert!(history.find(seq.wrapping_sub(256)).is_some());
        assert!(history.find(seq.wrapping_sub(261)).is_none());
    }

    #[test]
    fn a_nack_resends_what_is_kept_once_each_within_the_allowance() {
        let mut history = SentHistory::default();
        history.record(100, &frame(20)); // 100..=119
        let now = Instant::now();
        // 118 and its following 119, 120 (never sent), 121; 100 twice; 99 never sent.
        let seqs = history.take_resends(now, &nack(&[(118, 0b111), (100, 0), (100, 0), (99, 0)]));
        assert_eq!(seqs, vec![118, 119, 100]);

        // A flood of NACKs gets no more than the allowance per second.
        let mut total = seqs.len();
        for _ in 0..100 {
            total += history.take_resends(now, &nack(&[(100, 0xffff)])).len();
        }
        assert_eq!(total, RESENDS_PER_SECOND as usize);
        assert!(history
            .take_resends(now + Duration::from_millis(100), &nack(&[(100, 0)]))
            .contains(&100));
    }
}
