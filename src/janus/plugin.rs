//! `janus.plugin.ustreamer`: the plugin kvmd and µStreamer's pages talk to.
//!
//! Requests arrive as the `body` of a Janus `message`. Each one gets the synchronous
//! `{"ok":true}` answer, and its result or error goes out as a separate `event`
//! (the plugin's behaviour since 6.18). The event is pushed before the answer is
//! returned, so on a WebSocket it reaches the page first, as with the real plugin.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::gateway::Gateway;
use super::message;
use crate::media::hub::SourceHold;
use crate::rtc::{PeerEvent, PeerId, PeerOptions, RtcError};

pub const PACKAGE: &str = "janus.plugin.ustreamer";
pub const NAME: &str = "ustreamer";
pub const DESCRIPTION: &str = "PiKVM uStreamer Janus plugin for H.264 video";
/// The plugin release whose behaviour this follows (major × 1000 + minor).
pub const VERSION: u32 = 6062;
pub const VERSION_STRING: &str = "6.62";

/// `watch` answers this until the stream has carried SPS and PPS: the signal that
/// clients have understood as "retry shortly" since the first plugin versions.
pub const NO_PARAMS_CODE: u16 = 503;
pub const NO_PARAMS_REASON: &str = "Haven't received SPS/PPS from memsink yet";

/// `watch` answers this when `--max-viewers` peers exist already.
pub const TOO_MANY_VIEWERS_CODE: u16 = 429;

/// Hangup reason for peers lost with the WebRTC engine.
pub const ENGINE_GONE_REASON: &str = "WebRTC engine stopped";

/// What the page asked for in `watch.params`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchParams {
    /// Degrees counter-clockwise: 0, 90, 180 or 270.
    pub orientation: u16,
    pub audio: bool,
    pub mic: bool,
    pub camera: bool,
}

impl WatchParams {
    /// Like the plugin: flags count only as JSON booleans, orientation only as one of
    /// the three right angles; anything else is ignored.
    pub fn from_body(body: &Map<String, Value>) -> WatchParams {
        let Some(params) = body.get("params").and_then(Value::as_object) else {
            return WatchParams::default();
        };
        let flag = |k: &str| params.get(k).and_then(Value::as_bool).unwrap_or(false);
        let orientation = match params.get("orientation").and_then(Value::as_i64) {
            Some(o @ (90 | 180 | 270)) => o as u16,
            _ => 0,
        };
        WatchParams {
            orientation,
            audio: flag("audio"),
            mic: flag("mic"),
            camera: flag("camera"),
        }
    }
}

/// `{"ustreamer":"event","result":{"status":X}}`.
pub fn status_event(status: &str) -> Value {
    json!({ "ustreamer": "event", "result": { "status": status } })
}

/// `features`: no audio or mic yet; `ice` is always an object, since kvmd reads
/// `features.ice.url` without checking that `ice` exists.
pub fn features_event(ice_url: Option<&str>) -> Value {
    let ice = match ice_url {
        Some(url) => json!({ "url": url }),
        None => json!({}),
    };
    json!({
        "ustreamer": "event",
        "result": {
            "status": "features",
            "features": { "audio": false, "mic": false, "ice": ice }
        }
    })
}

pub fn error_event(code: u16, reason: &str) -> Value {
    json!({ "ustreamer": "event", "error_code": code, "error": reason })
}

/// The plugin's state for one handle.
pub struct UstreamerHandle {
    /// The plugin opens its source as soon as a client attaches; this keeps it open.
    _hold: SourceHold,
    peer: Option<ActivePeer>,
    pub params: WatchParams,
}

struct ActivePeer {
    id: PeerId,
    /// The task relaying the engine's events about this peer.
    relay: AbortHandle,
}

impl UstreamerHandle {
    pub fn new(hold: SourceHold) -> UstreamerHandle {
        UstreamerHandle {
            _hold: hold,
            peer: None,
            params: WatchParams::default(),
        }
    }

    pub fn peer_id(&self) -> Option<PeerId> {
        self.peer.as_ref().map(|p| p.id)
    }

    /// Forget the current peer and stop relaying its events; the caller closes it.
    #[must_use]
    pub fn take_peer(&mut self) -> Option<PeerId> {
        let peer = self.peer.take()?;
        peer.relay.abort();
        Some(peer.id)
    }

    /// Install a new peer; returns the one it replaces, for the caller to close.
    #[must_use]
    fn set_peer(&mut self, id: PeerId, relay: AbortHandle) -> Option<PeerId> {
        let old = self.take_peer();
        self.peer = Some(ActivePeer { id, relay });
        old
    }

    /// The engine reported this peer closed: forget it without closing it again.
    fn peer_closed(&mut self, id: PeerId) -> bool {
        if self.peer_id() == Some(id) {
            self.peer = None;
            true
        } else {
            false
        }
    }
}

impl Gateway {
    /// Handle one plugin request; returns the data of the synchronous answer.
    pub(super) async fn plugin_message(
        self: &Arc<Self>,
        session_id: u64,
        handle_id: u64,
        body: &Map<String, Value>,
    ) -> Value {
        let event = |data: Value| {
            self.emit_to_handle(session_id, handle_id, |s, h| {
                message::plugin_event(s, h, PACKAGE, data, None)
            })
        };
        match body.get("request") {
            None => event(error_event(400, "Request missing")),
            Some(Value::String(request)) => match request.as_str() {
                "features" => event(features_event(self.settings.ice_url.as_deref())),
                "watch" => self.watch(session_id, handle_id, body).await,
                "start" => event(status_event("started")),
                "stop" => event(status_event("stopped")),
                "key_required" => self.hub.request_keyframe(),
                other => {
                    tracing::debug!(request = other, "unknown ustreamer request");
                    event(error_event(405, "Not implemented"))
                }
            },
            Some(_) => event(error_event(400, "Request not a string")),
        }
        json!({ "ok": true })
    }

    async fn watch(self: &Arc<Self>, session_id: u64, handle_id: u64, body: &Map<String, Value>) {
        let params = WatchParams::from_body(body);
        let error = |code, reason: &str| {
            self.emit_to_handle(session_id, handle_id, |s, h| {
                message::plugin_event(s, h, PACKAGE, error_event(code, reason), None)
            })
        };
        if self.hub.params().is_none() {
            error(NO_PARAMS_CODE, NO_PARAMS_REASON);
            return;
        }
        // A watch on a handle that already has a peer starts over with a fresh one:
        // the page has closed its side already when it re-watches.
        let old = self.with_handle(session_id, handle_id, |h| {
            h.params = params;
            h.take_peer()
        });
        match old {
            None => return, // handle vanished meanwhile
            Some(Some(old)) => self.peers.close_peer(old, "watch again"),
            Some(None) => {}
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let opts = PeerOptions {
            orientation: params.orientation,
            ..PeerOptions::new(self.hub.clone())
        };
        let (peer_id, sdp) = match self.peers.create_offer(opts, events_tx).await {
            Ok(offer) => offer,
            Err(RtcError::TooManyViewers(max)) => {
                error(
                    TOO_MANY_VIEWERS_CODE,
                    &format!("Too many viewers (at most {max})"),
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a WebRTC offer");
                error(500, &format!("Can't create offer: {e}"));
                return;
            }
        };
        let relay = self.spawn_peer_relay(session_id, handle_id, peer_id, events_rx);
        let installed = self.with_session(session_id, |session| {
            let handle = session.handle_mut(handle_id)?;
            let replaced = handle.plugin.set_peer(peer_id, relay.clone());
            let jsep = json!({ "type": "offer", "sdp": sdp });
            session.deliver(message::plugin_event(
                session_id,
                handle_id,
                PACKAGE,
                status_event("started"),
                Some(jsep),
            ));
            Some(replaced)
        });
        match installed {
            Some(Some(replaced)) => self.peers.close_peer(replaced, "replaced by a newer watch"),
            Some(None) => {}
            None => {
                // The handle went away while the offer was being made.
                relay.abort();
                self.peers.close_peer(peer_id, "handle gone");
            }
        }
    }

    fn spawn_peer_relay(
        self: &Arc<Self>,
        session_id: u64,
        handle_id: u64,
        peer_id: PeerId,
        mut events: mpsc::UnboundedReceiver<PeerEvent>,
    ) -> AbortHandle {
        let gateway = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let Some(gateway) = gateway.upgrade() else {
                    return;
                };
                gateway.peer_event(session_id, handle_id, peer_id, event);
            }
            // The engine dropped the peer without a word: it stopped, or panicked and
            // was restarted. A handle still holding the peer gets its hangup.
            if let Some(gateway) = gateway.upgrade() {
                let reason = ENGINE_GONE_REASON.to_string();
                gateway.peer_event(session_id, handle_id, peer_id, PeerEvent::Closed { reason });
            }
        })
        .abort_handle()
    }

    /// Turn what the engine says about a peer into Janus events.
    fn peer_event(&self, session_id: u64, handle_id: u64, peer_id: PeerId, event: PeerEvent) {
        self.with_session(session_id, |session| {
            let handle = session.handle_mut(handle_id)?;
            match event {
                PeerEvent::Connected if handle.plugin.peer_id() == Some(peer_id) => {
                    session.deliver(message::webrtcup(session_id, handle_id));
                }
                PeerEvent::Closed { reason } if handle.plugin.peer_closed(peer_id) => {
                    session.deliver(message::hangup(session_id, handle_id, &reason));
                }
                _ => {}
            }
            Some(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_params_follow_plugin_rules() {
        let body = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            WatchParams::from_body(&body(json!({"request":"watch"}))),
            WatchParams::default()
        );
        let p = WatchParams::from_body(&body(
            json!({"params":{"orientation":90,"audio":true,"mic":"yes","camera":1}}),
        ));
        assert_eq!(
            p,
            WatchParams {
                orientation: 90,
                audio: true,
                mic: false,
                camera: false
            }
        );
        for bad in [json!(45), json!("90"), json!(90.5), json!(-90)] {
            let p = WatchParams::from_body(&body(json!({"params":{"orientation":bad}})));
            assert_eq!(p.orientation, 0);
        }
    }

    #[test]
    fn features_ice_is_always_an_object() {
        assert_eq!(features_event(None)["result"]["features"]["ice"], json!({}));
        assert_eq!(
            features_event(Some("stun:192.0.2.1:3478"))["result"]["features"]["ice"]["url"],
            "stun:192.0.2.1:3478"
        );
    }
}
