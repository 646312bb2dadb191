//! The engine's counters and histograms, readable from any thread without asking the
//! loop (for `/state` and `/metrics`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::latency::Histogram;
use super::shard::ShardCounters;
use super::{RtcStats, ShardStats};
use crate::rtc::histograms::WebrtcHistograms;

/// Counters readable without asking the loop. Only the loops (one per shard) write them,
/// once per batch of datagrams or per RTCP message, never per packet.
pub struct SharedStats {
    /// Peers and connected peers of each shard.
    pub shards: Vec<ShardCounters>,
    /// Peers held by all shards together, and those being made: taken before a peer is
    /// made, so that shards admitting at once never pass `max_viewers` together.
    pub seats: AtomicUsize,
    pub rtp_packets_sent: AtomicU64,
    pub audio_packets_sent: AtomicU64,
    pub mic_packets_received: AtomicU64,
    pub mic_packets_dropped: AtomicU64,
    /// Every datagram handed to the kernel (RTP, RTCP, DTLS, STUN) and its bytes.
    pub datagrams_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Keyframes handed out, counted once per viewer.
    pub keyframes_sent: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub plis_received: AtomicU64,
    pub firs_received: AtomicU64,
    pub nacks_received: AtomicU64,
    /// RTCP PLI written to WHIP publishers.
    pub plis_sent: AtomicU64,
    /// Packets sent again for NACKs (those still in the viewer's history).
    pub retransmitted_packets: AtomicU64,
    /// Streams whose RTP is encrypted by the engine itself, and streams whose probe
    /// did not match (see `direct_srtp`).
    pub direct_srtp_streams: AtomicU64,
    pub direct_srtp_refused: AtomicU64,
    pub histograms: WebrtcHistograms,
    /// Access unit taken from the hub → its last RTP packet handed to the kernel.
    pub send_delay: Histogram,
    /// Access unit capture (for byte-stream sources: its arrival) → last RTP packet
    /// handed to the kernel; includes time queued in the hub.
    pub capture_to_send: Histogram,
}

impl Default for SharedStats {
    fn default() -> SharedStats {
        SharedStats::new(1)
    }
}

impl SharedStats {
    /// Counters of an engine of `shards` shards.
    pub fn new(shards: usize) -> SharedStats {
        SharedStats {
            shards: (0..shards).map(|_| ShardCounters::default()).collect(),
            seats: AtomicUsize::new(0),
            rtp_packets_sent: AtomicU64::default(),
            audio_packets_sent: AtomicU64::default(),
            mic_packets_received: AtomicU64::default(),
            mic_packets_dropped: AtomicU64::default(),
            datagrams_sent: AtomicU64::default(),
            bytes_sent: AtomicU64::default(),
            keyframes_sent: AtomicU64::default(),
            keyframe_requests: AtomicU64::default(),
            plis_received: AtomicU64::default(),
            firs_received: AtomicU64::default(),
            nacks_received: AtomicU64::default(),
            plis_sent: AtomicU64::default(),
            retransmitted_packets: AtomicU64::default(),
            direct_srtp_streams: AtomicU64::default(),
            direct_srtp_refused: AtomicU64::default(),
            histograms: WebrtcHistograms::default(),
            send_delay: Histogram::default(),
            capture_to_send: Histogram::default(),
        }
    }

    /// The counters of shard `index`.
    pub fn shard(&self, index: usize) -> &ShardCounters {
        &self.shards[index]
    }

    /// Take a seat for shard `index` unless `max` are taken by all shards together.
    pub fn take_seat(&self, index: usize, max: usize) -> bool {
        let seated = self
            .seats
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if seated {
            self.shards[index].seats.fetch_add(1, Ordering::AcqRel);
        }
        seated
    }

    /// Give back a seat of shard `index`: a peer gone or never made.
    pub fn release_seat(&self, index: usize) {
        let held = &self.shards[index].seats;
        if held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            self.seats.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Shard `index`'s loop died: zero its gauges and give back every seat it held.
    /// Returns the peers it had.
    pub fn reclaim_shard(&self, index: usize) -> usize {
        let counters = &self.shards[index];
        let lost = counters.peers.swap(0, Ordering::AcqRel);
        counters.connected.store(0, Ordering::Relaxed);
        let held = counters.seats.swap(0, Ordering::AcqRel);
        let _ = self
            .seats
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(held))
            });
        lost
    }

    pub fn snapshot(&self) -> RtcStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let shards: Vec<ShardStats> = self
            .shards
            .iter()
            .map(|s| ShardStats {
                peers: s.peers.load(Ordering::Relaxed),
                connected: s.connected.load(Ordering::Relaxed),
            })
            .collect();
        RtcStats {
            peers: shards.iter().map(|s| s.peers).sum(),
            connected: shards.iter().map(|s| s.connected).sum(),
            shards,
            rtp_packets_sent: load(&self.rtp_packets_sent),
            audio_packets_sent: load(&self.audio_packets_sent),
            mic_packets_received: load(&self.mic_packets_received),
            mic_packets_dropped: load(&self.mic_packets_dropped),
            datagrams_sent: load(&self.datagrams_sent),
            bytes_sent: load(&self.bytes_sent),
            keyframes_sent: load(&self.keyframes_sent),
            keyframe_requests: load(&self.keyframe_requests),
            plis_received: load(&self.plis_received),
            firs_received: load(&self.firs_received),
            nacks_received: load(&self.nacks_received),
            plis_sent: load(&self.plis_sent),
            retransmitted_packets: load(&self.retransmitted_packets),
            direct_srtp_streams: load(&self.direct_srtp_streams),
            direct_srtp_refused: load(&self.direct_srtp_refused),
            send_delay_us: self.send_delay.snapshot(),
            capture_to_send_us: self.capture_to_send.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_are_capped_across_shards_and_given_back_once() {
        let stats = SharedStats::new(2);
        assert!(stats.take_seat(0, 3));
        assert!(stats.take_seat(1, 3));
        assert!(stats.take_seat(1, 3));
        assert!(
            !stats.take_seat(0, 3),
            "three seats for all shards together"
        );
        stats.release_seat(1);
        assert!(stats.take_seat(0, 3), "a seat given back is free again");
        // A shard gives back only what it holds.
        stats.release_seat(1);
        stats.release_seat(1);
        assert_eq!(stats.seats.load(Ordering::Acquire), 2);
        assert_eq!(stats.shard(0).seats.load(Ordering::Acquire), 2);
    }

    /// A loop that dies while making a peer has taken its seat but not yet counted the
    /// peer: the seat still comes back, or each such death would lower the cap for good.
    #[test]
    fn a_dead_shard_gives_back_the_seats_of_peers_half_made() {
        let stats = SharedStats::new(2);
        assert!(stats.take_seat(0, 2));
        stats.shard(0).peers.store(1, Ordering::Release);
        stats.shard(0).connected.store(1, Ordering::Release);
        assert!(stats.take_seat(0, 2), "taken for a peer being made");
        assert!(!stats.take_seat(1, 2));
        assert_eq!(stats.reclaim_shard(0), 1, "one peer lost");
        assert_eq!(stats.seats.load(Ordering::Acquire), 0);
        assert_eq!(stats.shard(0).connected.load(Ordering::Acquire), 0);
        assert!(
            stats.take_seat(1, 2) && stats.take_seat(0, 2),
            "both seats free"
        );
    }
}
