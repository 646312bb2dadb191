//! What one engine shard is and what the shards share. Each shard is an engine of its
//! own (its peers, router, fan-out, timers) on a thread of its own; a peer's id says
//! which shard holds it, so a command finds its shard without a shared map.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::frame_cache::FrameCache;
use super::steering::Steering;
use super::PeerId;

/// Low bits of a [`PeerId`] that name its shard.
const SHARD_BITS: u32 = 8;

/// Most shards an engine runs (what the id's shard bits can name).
pub const MAX_SHARDS: usize = 1 << SHARD_BITS;

/// The shard holding the peer `id`.
pub fn shard_of(id: PeerId) -> usize {
    (id & (MAX_SHARDS as u64 - 1)) as usize
}

/// Gauges of one shard, for `/state` and `/metrics`.
#[derive(Debug, Default)]
pub struct ShardCounters {
    pub peers: AtomicUsize,
    pub connected: AtomicUsize,
    /// Seats this shard holds: its peers and those it is making. Given back all at once
    /// if the shard's loop dies, even for a peer that died half made.
    pub seats: AtomicUsize,
}

/// One shard's place among the others: its number and what it shares with them.
#[derive(Clone)]
pub struct Shard {
    pub index: usize,
    /// Peer numbers of this shard; outlives a shard that panicked, so an id is never
    /// given twice.
    next_seq: Arc<AtomicU64>,
    /// Where the datagram steering learns this shard's ufrags and addresses; `None`
    /// with a single shard, which reads the socket itself.
    pub steering: Option<Arc<Steering>>,
    /// Pictures packetized by any shard, reused by the others; `None` with one shard.
    pub frames: Option<Arc<FrameCache>>,
}

impl Shard {
    /// The only shard of an engine.
    #[cfg(test)]
    pub fn single() -> Shard {
        Shard::new(0, None, None)
    }

    pub fn new(
        index: usize,
        steering: Option<Arc<Steering>>,
        frames: Option<Arc<FrameCache>>,
    ) -> Shard {
        assert!(index < MAX_SHARDS, "shard {index} beyond {MAX_SHARDS}");
        Shard {
            index,
            next_seq: Arc::new(AtomicU64::new(1)),
            steering,
            frames,
        }
    }

    /// A peer id never given before, naming this shard.
    pub fn next_id(&self) -> PeerId {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        (seq << SHARD_BITS) | self.index as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_shard_and_never_repeat() {
        let shards: Vec<Shard> = (0..3).map(|i| Shard::new(i, None, None)).collect();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10 {
            for (i, shard) in shards.iter().enumerate() {
                let id = shard.next_id();
                assert_eq!(shard_of(id), i);
                assert!(seen.insert(id));
            }
        }
        // A shard started afresh after a panic goes on with the same numbers.
        let before = shards[1].next_id();
        assert!(shards[1].clone().next_id() > before);
    }
}
