//! The engine's timers in time order: each peer's next protocol timer and its offer's
//! expiry, so the next wake-up is read off the front instead of found by looking at
//! every peer. An entry that no longer holds (its peer is gone, its timer moved, its
//! offer was answered) is not searched out when that happens: it is dropped when it
//! reaches the front, or when stale entries come to outnumber live ones.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::PeerId;

/// What falls due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Due {
    /// The peer connection's own timer (ICE checks, DTLS retransmission, RTCP reports).
    Timer,
    /// The offer has waited too long for its answer.
    OfferExpiry,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    pub at: Instant,
    pub peer: PeerId,
    pub due: Due,
}

/// Live deadlines per peer at most: its timer and its offer's expiry.
const PER_PEER: usize = 2;
/// Stale entries tolerated before a sweep, beyond a constant factor of the live ones.
const SLACK: usize = 64;

#[derive(Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<Deadline>>,
}

impl Deadlines {
    pub fn push(&mut self, deadline: Deadline) {
        self.heap.push(Reverse(deadline));
    }

    /// When the earliest deadline that still `holds` falls due; the stale ones in front
    /// of it are dropped.
    pub fn next(&mut self, holds: impl Fn(&Deadline) -> bool) -> Option<Instant> {
        while let Some(Reverse(front)) = self.heap.peek() {
            if holds(front) {
                return Some(front.at);
            }
            self.heap.pop();
        }
        None
    }

    /// Take the earliest deadline that is due at `now` and still `holds`.
    pub fn pop_due(&mut self, now: Instant, holds: impl Fn(&Deadline) -> bool) -> Option<Deadline> {
        while let Some(Reverse(front)) = self.heap.peek() {
            if front.at > now {
                return None;
            }
            let front = *front;
            self.heap.pop();
            if holds(&front) {
                return Some(front);
            }
        }
        None
    }

    /// Sweep out the stale entries once they outnumber what `peers` peers can have
    /// live, so the heap stays within a constant factor of the peers whatever the
    /// timers do; each sweep is paid for by the pushes that grew the heap.
    pub fn compact(&mut self, peers: usize, holds: impl Fn(&Deadline) -> bool) {
        if self.heap.len() > 2 * PER_PEER * peers + SLACK {
            self.heap.retain(|Reverse(d)| holds(d));
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn at(t0: Instant, ms: u64, peer: PeerId) -> Deadline {
        Deadline {
            at: t0 + Duration::from_millis(ms),
            peer,
            due: Due::Timer,
        }
    }

    #[test]
    fn earliest_live_deadline_first_and_stale_ones_skipped() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        // Peer 1's timer moved from 10 ms to 30 ms; peer 2 is gone.
        let current: HashMap<PeerId, Instant> = HashMap::from([
            (1, t0 + Duration::from_millis(30)),
            (3, t0 + Duration::from_millis(20)),
        ]);
        let holds = |d: &Deadline| current.get(&d.peer) == Some(&d.at);
        for (ms, peer) in [(10, 1), (5, 2), (30, 1), (20, 3)] {
            d.push(at(t0, ms, peer));
        }
        assert_eq!(d.next(holds), Some(t0 + Duration::from_millis(20)));
        assert_eq!(d.len(), 2, "the stale fronts were dropped");
        assert_eq!(d.pop_due(t0 + Duration::from_millis(19), holds), None);
        let due = d.pop_due(t0 + Duration::from_millis(40), holds);
        assert_eq!(due.map(|d| d.peer), Some(3));
        let due = d.pop_due(t0 + Duration::from_millis(40), holds);
        assert_eq!(due.map(|d| d.peer), Some(1));
        assert_eq!(d.pop_due(t0 + Duration::from_millis(40), holds), None);
        assert_eq!(d.next(holds), None);
    }

    #[test]
    fn stale_entries_are_swept_once_they_outnumber_live_ones() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        // One peer whose timer keeps moving later: every old entry goes stale.
        let mut latest = t0;
        for ms in 0..10_000 {
            let deadline = at(t0, 1000 + ms, 1);
            latest = deadline.at;
            d.push(deadline);
            d.compact(1, |d| d.at == latest);
            assert!(d.len() <= 2 * PER_PEER + SLACK + 1, "{} entries", d.len());
        }
        assert_eq!(d.next(|d| d.at == latest), Some(latest));
    }
}
