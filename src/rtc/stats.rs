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
            histograms: WebrtcHistograms::default(),
            send_delay: Histogram::default(),
            capture_to_send: Histogram::default(),
        }
    }

    /// The counters of shard `index`.
    pub fn shard(&self, index: usize) -> &ShardCounters {
        &self.shards[index]
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
            send_delay_us: self.send_delay.snapshot(),
            capture_to_send_us: self.capture_to_send.snapshot(),
        }
    }
}
