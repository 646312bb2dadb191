//! One talker's jitter buffer: Opus packets put back in RTP sequence order and handed
//! out one per playback tick. It holds a few packets at most, so a talker can neither
//! delay the sound much nor make the server hold more than a bound; packets too late
//! for their turn, duplicates and overflow are dropped. Time is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Packets held at most: 200 ms of 20 ms packets.
pub const CAPACITY: usize = 10;
/// Packets buffered (counted from the play point to the newest) before a talker
/// starts playing: about 40 ms of cushion against network jitter.
pub const TARGET: usize = 2;
/// More than this after a turn means the sender's clock runs ahead of ours (or it
/// floods): one packet is skipped, so its delay does not creep up to [`CAPACITY`].
pub const HIGH_WATER: usize = 5;
/// A packet this far behind the play point or further is a sender that started over
/// (or wrapped round): the plugin's rule.
pub const RESTART_DISTANCE: u16 = 50;
/// A talker with no packet for this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(200);

/// What a talker has for one playback tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Turn {
    /// The packet due now.
    Packet(Bytes),
    /// The packet due now is lost or late: conceal it.
    Missing,
    /// Still gathering the first packets: nothing to play yet.
    Waiting,
}

/// A talker's packets, in sequence order from the play point on.
#[derive(Debug)]
pub struct JitterBuffer {
    /// `slots[i]` holds the packet of sequence number `next_seq + i`, if it came.
    /// The last slot always holds a packet, so the length is the span buffered.
    slots: VecDeque<Option<Bytes>>,
    /// The sequence number played at the next turn.
    next_seq: u16,
    /// Past the start-up cushion: every turn now plays or conceals one packet.
    playing: bool,
    /// The sequence number of the last packet played, to tell a late packet that was
    /// never heard from a copy of one that was.
    last_played: Option<u16>,
    last_arrival: Instant,
}

impl JitterBuffer {
    /// A buffer holding its talker's first packet.
    pub fn new(seq: u16, payload: Bytes, now: Instant) -> JitterBuffer {
        let mut buffer = JitterBuffer {
            slots: VecDeque::with_capacity(CAPACITY),
            next_seq: seq,
            playing: false,
            last_played: None,
            last_arrival: now,
        };
        buffer.slots.push_back(Some(payload));
        buffer
    }

    /// Take in a packet; returns how many packets were dropped (this one, when it
    /// is a duplicate or too late, or older ones it pushed out).
    pub fn push(&mut self, seq: u16, payload: Bytes, now: Instant) -> usize {
        self.last_arrival = now;
        let ahead = seq.wrapping_sub(self.next_seq);
        if ahead >= 0x8000 {
            let behind = ahead.wrapping_neg();
            if behind > RESTART_DISTANCE || self.fell_behind(seq) {
                return self.restart(seq, payload);
            }
            // Its turn has passed (or it was played already).
            return 1;
        }
        let ahead = usize::from(ahead);
        let mut dropped = 0;
        if ahead >= CAPACITY {
            // Keep the newest: the oldest packets make room, as if played.
            let skip = ahead - CAPACITY + 1;
            if skip >= self.slots.len() {
                return self.restart(seq, payload);
            }
            dropped = self.skip(skip);
        }
        let index = usize::from(seq.wrapping_sub(self.next_seq));
        if self.slots.len() <= index {
            self.slots.resize(index + 1, None);
        }
        match &mut self.slots[index] {
            Some(_) => dropped + 1,
            slot => {
                *slot = Some(payload);
                dropped
            }
        }
    }

    /// The packet for this tick; returns it with how many packets were skipped to
    /// keep the delay down.
    pub fn turn(&mut self) -> (Turn, usize) {
        if !self.playing {
            if self.slots.len() < TARGET {
                return (Turn::Waiting, 0);
            }
            self.playing = true;
        }
        // An empty buffer still advances: the sender's clock and ours keep step, so
        // its next packets keep the cushion they had, and the late ones are dropped.
        let turn = match self.slots.pop_front().flatten() {
            Some(packet) => {
                self.last_played = Some(self.next_seq);
                Turn::Packet(packet)
            }
            None => Turn::Missing,
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        let dropped = match self.slots.len() > HIGH_WATER {
            true => self.skip(1),
            false => 0,
        };
        (turn, dropped)
    }

    /// Packets held now.
    pub fn held(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Nothing came for [`IDLE_TIMEOUT`]: the talker stopped sending.
    pub fn idle(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_arrival) >= IDLE_TIMEOUT
    }

    /// A packet whose turn has passed while nothing newer waits, and that was not
    /// played: the sender's packets now take longer to come (a slower path, a busy
    /// sender). Dropping it would drop every packet after it too, each one turn
    /// late, so the play point moves back to it instead, with the cushion again.
    fn fell_behind(&self, seq: u16) -> bool {
        self.slots.is_empty()
            && self
                .last_played
                .is_none_or(|played| seq.wrapping_sub(played).wrapping_sub(1) < 0x8000)
    }

    /// Drop the `n` oldest slots (at most all of them); returns the packets dropped.
    fn skip(&mut self, n: usize) -> usize {
        let n = n.min(self.slots.len());
        let dropped = self.slots.drain(..n).filter(Option::is_some).count();
        self.next_seq = self.next_seq.wrapping_add(n as u16);
        dropped
    }

    /// Start over from `seq`, with the start-up cushion again; returns the packets
    /// dropped.
    fn restart(&mut self, seq: u16, payload: Bytes) -> usize {
        let dropped = self.held();
        self.slots.clear();
        self.slots.push_back(Some(payload));
        self.next_seq = seq;
        self.playing = false;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16) -> Bytes {
        Bytes::from(seq.to_be_bytes().to_vec())
    }

    /// The sequence numbers of the next `n` turns (`None` for missing, waiting
    /// turns are an error).
    fn play(buffer: &mut JitterBuffer, n: usize) -> Vec<Option<u16>> {
        (0..n)
            .map(|_| match buffer.turn().0 {
                Turn::Packet(p) => Some(u16::from_be_bytes([p[0], p[1]])),
                Turn::Missing => None,
                Turn::Waiting => panic!("still waiting"),
            })
            .collect()
    }

    fn start(seq: u16, t: Instant) -> JitterBuffer {
        JitterBuffer::new(seq, packet(seq), t)
    }

    #[test]
    fn waits_for_the_cushion_then_plays_in_order() {
        let t = Instant::now();
        let mut b = start(100, t);
        assert_eq!(b.turn().0, Turn::Waiting);
        assert_eq!(b.push(101, packet(101), t), 0);
        assert_eq!(play(&mut b, 2), [Some(100), Some(101)]);
        // Nothing more came: its turn is missing, and the play point moves on.
        assert_eq!(play(&mut b, 1), [None]);
        assert_eq!(b.push(103, packet(103), t), 0);
        assert_eq!(play(&mut b, 1), [Some(103)]);
    }

    #[test]
    fn reorders_and_drops_duplicates_and_late_packets() {
        let t = Instant::now();
        let mut b = start(10, t);
        assert_eq!(b.push(12, packet(12), t), 0);
        assert_eq!(b.push(11, packet(11), t), 0, "out of order, in time");
        assert_eq!(b.push(12, packet(12), t), 1, "duplicate");
        assert_eq!(b.held(), 3);
        assert_eq!(play(&mut b, 3), [Some(10), Some(11), Some(12)]);
        assert_eq!(b.push(11, packet(11), t), 1, "played already");
        assert_eq!(b.push(13, packet(13), t), 0);
        assert_eq!(b.push(15, packet(15), t), 0);
        assert_eq!(play(&mut b, 1), [Some(13)]);
        assert_eq!(b.push(14, packet(14), t), 0, "its turn is still to come");
        assert_eq!(play(&mut b, 2), [Some(14), Some(15)]);
    }

    #[test]
    fn sequence_numbers_wrap_round() {
        let t = Instant::now();
        let mut b = start(65534, t);
        assert_eq!(b.push(0, packet(0), t), 0);
        assert_eq!(b.push(65535, packet(65535), t), 0);
        assert_eq!(b.push(1, packet(1), t), 0);
        assert_eq!(
            play(&mut b, 4),
            [Some(65534), Some(65535), Some(0), Some(1)]
        );
        assert_eq!(b.push(65535, packet(65535), t), 1, "late across the wrap");
    }

    #[test]
    fn a_sender_far_behind_or_far_ahead_starts_over() {
        let t = Instant::now();
        let mut b = start(1000, t);
        b.push(1001, packet(1001), t);
        assert_eq!(play(&mut b, 1), [Some(1000)]);
        assert_eq!(b.push(1001 - 50, packet(951), t), 1, "50 behind: late");
        assert_eq!(b.push(900, packet(900), t), 1, "restarted: 1001 dropped");
        assert_eq!(b.turn().0, Turn::Waiting, "the cushion again");
        b.push(901, packet(901), t);
        assert_eq!(play(&mut b, 2), [Some(900), Some(901)]);
        assert_eq!(b.push(30_000, packet(30_000), t), 0);
        assert_eq!(b.turn().0, Turn::Waiting);
    }

    #[test]
    fn a_sender_whose_packets_come_later_is_followed_not_dropped() {
        let t = Instant::now();
        let mut b = start(0, t);
        b.push(1, packet(1), t);
        assert_eq!(play(&mut b, 2), [Some(0), Some(1)]);
        // The path got slower: two turns pass with nothing, then every packet comes
        // a turn or two after its time.
        assert_eq!(play(&mut b, 2), [None, None]);
        assert_eq!(b.push(2, packet(2), t), 0, "late, but never heard: kept");
        assert_eq!(b.turn().0, Turn::Waiting, "the cushion again");
        for seq in 3..20u16 {
            assert_eq!(b.push(seq, packet(seq), t), 0);
            assert_eq!(play(&mut b, 1), [Some(seq - 1)]);
        }
        // A copy of a packet heard already is still dropped, and so is a straggler
        // whose turn passed while newer packets wait.
        assert_eq!(play(&mut b, 1), [Some(19)]);
        assert_eq!(b.push(18, packet(18), t), 1, "heard already");
        b.push(21, packet(21), t);
        assert_eq!(play(&mut b, 1), [None]);
        b.push(22, packet(22), t);
        assert_eq!(b.push(20, packet(20), t), 1, "newer packets wait");
    }

    #[test]
    fn a_flood_is_bounded_keeping_the_newest() {
        let t = Instant::now();
        let mut b = start(0, t);
        let mut dropped = 0;
        for seq in 1..1000u16 {
            dropped += b.push(seq, packet(seq), t);
            assert!(b.held() <= CAPACITY);
        }
        assert_eq!(dropped, 1000 - CAPACITY);
        assert_eq!(play(&mut b, 1), [Some(990)]);
        // The delay comes down by a packet per turn, to the high-water mark.
        let (turn, skipped) = b.turn();
        assert_eq!((turn, skipped), (Turn::Packet(packet(992)), 1));
        while b.turn().1 > 0 {}
        assert_eq!(b.held(), HIGH_WATER);
    }

    #[test]
    fn a_gap_ahead_is_concealed_not_waited_for() {
        let t = Instant::now();
        let mut b = start(5, t);
        b.push(8, packet(8), t);
        assert_eq!(play(&mut b, 4), [Some(5), None, None, Some(8)]);
        // Ahead of the window by a little: the oldest make room.
        let mut b = start(5, t);
        b.push(6, packet(6), t);
        assert_eq!(b.push(5 + CAPACITY as u16, packet(15), t), 1);
        assert_eq!(play(&mut b, 1), [Some(6)]);
    }

    #[test]
    fn idle_after_the_timeout_since_the_last_packet() {
        let t = Instant::now();
        let mut b = start(1, t);
        assert!(!b.idle(t + IDLE_TIMEOUT - Duration::from_millis(1)));
        assert!(b.idle(t + IDLE_TIMEOUT));
        // Any packet counts as a sign of life, even a late one.
        b.push(0, packet(0), t + IDLE_TIMEOUT);
        assert!(!b.idle(t + IDLE_TIMEOUT + Duration::from_millis(10)));
    }
}
