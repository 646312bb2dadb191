//! WebRTC output: one peer connection per viewer, all peers on one UDP socket, driven
//! by our own loop over the sans-IO `rtc` crate. Each access unit is packetized once
//! and shared by every peer; only SSRC, sequence and SRTP are per peer.
//!
//! This file is the engine's public face; the rest of the program uses nothing else
//! from `rtc::`, so the engine choice stays local to this module.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::media::Hub;

/// Identifies one peer connection inside the engine.
pub type PeerId = u64;

/// Engine settings, resolved from the configuration.
#[derive(Clone, Debug)]
pub struct RtcConfig {
    /// Address the UDP socket binds to (the server's `--host`).
    pub bind: IpAddr,
    /// Ports to try, first free one wins; (0, 0) = any free port.
    pub udp_ports: (u16, u16),
    /// Addresses offered as host candidates. When `bind` is a loopback address this is
    /// just that address, and remote candidates that are not loopback are ignored
    /// (a loopback-bound socket cannot reach them anyway).
    pub candidate_ips: Vec<IpAddr>,
    /// Public address advertised instead of the local ones (`--nat-1-1-ip`).
    pub nat_1_1_ip: Option<IpAddr>,
    /// Largest RTP packet, header included (default 1150 like the ustreamer plugin).
    pub rtp_packet_size: usize,
}

/// Per-viewer choices made by the page in `watch`.
#[derive(Clone, Debug, Default)]
pub struct PeerOptions {
    /// Rotation the viewer asked for, degrees counter-clockwise: 0, 90, 180 or 270.
    pub orientation: u16,
}

/// What happens to a peer, reported to whoever created it (the Janus session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// ICE connected and DTLS finished: media flows (Janus `webrtcup`).
    Connected,
    /// The peer is gone for good (Janus `hangup` with this reason, e.g. "ICE failed",
    /// "DTLS alert", "Close PC").
    Closed { reason: String },
}

/// A remote ICE candidate as trickled by janus.js.
#[derive(Clone, Debug)]
pub enum RemoteCandidate {
    /// `candidate:...` line (with or without the `a=` prefix).
    Candidate(String),
    /// `{"completed": true}`: end of candidates.
    Completed,
}

#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    #[error("no such peer")]
    NoSuchPeer,
    #[error("unexpected answer: no offer pending")]
    NoOffer,
    #[error("WebRTC engine: {0}")]
    Engine(String),
}

/// Counters for `/state` and `/metrics`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RtcStats {
    pub peers: usize,
    pub connected: usize,
    pub rtp_packets_sent: u64,
    pub keyframe_requests: u64,
}

/// Handle to the engine; cheap to clone.
#[derive(Clone)]
pub struct RtcEngine {
    _inner: Arc<()>,
}

impl RtcEngine {
    /// Bind the UDP socket and start the engine loop, fed by `hub`.
    pub async fn start(_cfg: RtcConfig, _hub: Arc<Hub>) -> anyhow::Result<RtcEngine> {
        todo!("engine")
    }

    /// The UDP address all peers share.
    pub fn local_addr(&self) -> SocketAddr {
        todo!("engine")
    }

    /// Create a peer and its offer (sendonly H.264 PT 96, packetization-mode=1,
    /// profile-level-id from the stream's SPS, the plugin's three extmaps, host
    /// candidates included). Events about the peer go to `events`.
    pub async fn create_offer(
        &self,
        _opts: PeerOptions,
        _events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<(PeerId, String), RtcError> {
        todo!("engine")
    }

    /// Apply the viewer's SDP answer.
    pub async fn apply_answer(&self, _id: PeerId, _sdp: &str) -> Result<(), RtcError> {
        todo!("engine")
    }

    /// Add a trickled remote candidate; kept until the answer arrives if it comes first.
    pub fn add_remote_candidate(&self, _id: PeerId, _candidate: RemoteCandidate) {
        todo!("engine")
    }

    /// Close a peer (hangup, detach, session gone). No event is sent for it.
    pub fn close_peer(&self, _id: PeerId) {
        todo!("engine")
    }

    pub fn stats(&self) -> RtcStats {
        todo!("engine")
    }

    /// Close every peer and stop the loop.
    pub async fn shutdown(&self) {
        todo!("engine")
    }
}
