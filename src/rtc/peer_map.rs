//! Maps and sets keyed by [`PeerId`] with a cheap hash.
//!
//! The fan-out looks a peer up several times per viewer per picture; the standard
//! SipHash, there to resist keys chosen by an attacker, cost more than the lookups'
//! other work. Peer ids are ours (counted up per shard), never a client's, so a
//! multiplicative hash is safe here and spreads consecutive ids over the table.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use super::PeerId;

pub type PeerMap<V> = HashMap<PeerId, V, BuildHasherDefault<PeerIdHasher>>;
pub type PeerSet = HashSet<PeerId, BuildHasherDefault<PeerIdHasher>>;

/// Fibonacci hashing of one `u64`: odd multiplier, so distinct ids stay distinct and
/// the high bits the table probes with depend on every bit of the id.
#[derive(Default)]
pub struct PeerIdHasher(u64);

impl Hasher for PeerIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; any other input still hashes correctly.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0.rotate_left(5) ^ id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_spread_over_the_high_bits() {
        let hash = |id: u64| {
            let mut h = PeerIdHasher::default();
            h.write_u64(id);
            h.finish()
        };
        // The table's control bytes take the top 7 bits: consecutive ids must not share them.
        let tops: HashSet<u64> = (256..256 + 128).map(|id| hash(id) >> 57).collect();
        assert!(
            tops.len() > 64,
            "{} distinct top bits of 128 ids",
            tops.len()
        );
        assert_ne!(hash(1), hash(2));
    }

    #[test]
    fn a_map_finds_what_it_holds() {
        let mut map = PeerMap::default();
        for id in 0..10_000u64 {
            map.insert(id * 256, id);
        }
        assert!((0..10_000u64).all(|id| map.get(&(id * 256)) == Some(&id)));
        assert_eq!(map.get(&1), None);
    }
}
