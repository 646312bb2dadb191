//! What the Janus side needs from the WebRTC engine, as a trait so the signaling code
//! depends on four calls rather than on the engine's internals.

use tokio::sync::mpsc;

use crate::rtc::{PeerEvent, PeerId, PeerOptions, RemoteCandidate, RtcEngine, RtcError};

pub use super::plugin_api::BoxFuture;

/// Peer connections as the plugin uses them. [`RtcEngine`] is the real one.
pub trait PeerBackend: Send + Sync + 'static {
    /// A new peer and its SDP offer; what happens to it later arrives on `events`.
    fn create_offer(
        &self,
        opts: PeerOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> BoxFuture<'_, Result<(PeerId, String), RtcError>>;

    fn apply_answer<'a>(&'a self, id: PeerId, sdp: &'a str) -> BoxFuture<'a, Result<(), RtcError>>;

    fn add_remote_candidate(&self, id: PeerId, candidate: RemoteCandidate);

    /// Close a peer; `reason` is for the log. No event follows.
    fn close_peer(&self, id: PeerId, reason: &'static str);
}

impl PeerBackend for RtcEngine {
    fn create_offer(
        &self,
        opts: PeerOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> BoxFuture<'_, Result<(PeerId, String), RtcError>> {
        Box::pin(RtcEngine::create_offer(self, opts, events))
    }

    fn apply_answer<'a>(&'a self, id: PeerId, sdp: &'a str) -> BoxFuture<'a, Result<(), RtcError>> {
        Box::pin(RtcEngine::apply_answer(self, id, sdp))
    }

    fn add_remote_candidate(&self, id: PeerId, candidate: RemoteCandidate) {
        RtcEngine::add_remote_candidate(self, id, candidate)
    }

    fn close_peer(&self, id: PeerId, reason: &'static str) {
        RtcEngine::close_peer(self, id, reason)
    }
}
