//! WHEP (WebRTC-HTTP Egress Protocol, draft-ietf-wish-whep): a player POSTs its SDP
//! offer to `/whep` (the default stream) or `/STREAM/whep` and gets the answer in a 201
//! with the session's resource URL; PATCH trickles candidates to it, DELETE ends it.
//! The peer behind it is an ordinary engine peer: the same fan-out, GOP start, keyframe
//! handling and viewer cap as a Janus viewer.
//!
//! WHIP ingest (RFC 9725) is the same protocol the other way: a publisher POSTs to
//! `/whip` or `/STREAM/whip` of a stream whose source is `whip`, and its video becomes
//! the stream's pictures (see [`crate::source::whip`]). One publisher at a time: a
//! second one gets 409 until the first leaves.
//!
//! * [`sdpfrag`]: PATCH bodies (`application/trickle-ice-sdpfrag`).
//! * [`patch`]: what a PATCH asks for (`If-Match`, ICE restart).
//! * [`sessions`]: the sessions alive.
//! * [`http`]: the endpoints.

pub mod http;
pub mod patch;
pub mod sdpfrag;
pub mod sessions;

use std::sync::Arc;

use crate::janus::auth::Auth;
use crate::media::Streams;
use crate::rtc::RtcEngine;

/// Largest SDP offer accepted (browsers send a few KiB).
pub const MAX_OFFER_BYTES: usize = 64 * 1024;
/// Largest PATCH body accepted.
pub const MAX_FRAG_BYTES: usize = 16 * 1024;

/// What the WHEP endpoints are configured with.
#[derive(Clone, Debug, Default)]
pub struct WhepConfig {
    /// STUN/TURN URLs told to players in `Link: <URL>; rel="ice-server"`.
    pub ice_servers: Vec<String>,
    /// The Janus API secret and tokens: when either is set, requests need
    /// `Authorization: Bearer <secret or token>`.
    pub auth: Auth,
}

/// The WHEP endpoints of the main port; cheap to clone.
#[derive(Clone)]
pub struct Whep {
    inner: Arc<Inner>,
}

struct Inner {
    streams: Arc<Streams>,
    engine: RtcEngine,
    cfg: WhepConfig,
    sessions: sessions::Sessions,
}

/// For `/state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WhepCounts {
    /// WHEP sessions alive (connected or not yet).
    pub sessions: usize,
}

/// For `/state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WhipCounts {
    /// WHIP publishers' sessions alive (connected or not yet).
    pub publishers: usize,
}

impl Whep {
    pub fn new(streams: Arc<Streams>, engine: RtcEngine, cfg: WhepConfig) -> Whep {
        Whep {
            inner: Arc::new(Inner {
                streams,
                engine,
                cfg,
                sessions: sessions::Sessions::default(),
            }),
        }
    }

    pub fn counts(&self) -> WhepCounts {
        let all = self.inner.sessions.len();
        WhepCounts {
            sessions: all - self.inner.sessions.publishers().min(all),
        }
    }

    pub fn whip_counts(&self) -> WhipCounts {
        WhipCounts {
            publishers: self.inner.sessions.publishers(),
        }
    }

    /// `/whep`, `/STREAM/whep`, `/whip`, `/STREAM/whip` and the sessions' resources.
    pub fn routes(&self) -> axum::Router {
        http::router(self.clone())
    }
}
