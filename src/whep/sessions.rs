//! The WHEP and WHIP sessions alive: one per peer the engine holds for a WHEP viewer or
//! a WHIP publisher, found by the random id in its resource URL. A session leaves when its viewer DELETEs it, when
//! its peer closes (ICE failure, timeout, DTLS alert) and when the engine stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::media::publisher::PublisherSlot;
use crate::media::stream::Viewing;
use crate::rtc::PeerId;

/// One WHEP viewer.
pub struct Session {
    pub peer: PeerId,
    /// The entity tag of the session as sent (quoted).
    pub etag: String,
    /// The ICE username fragment of the viewer's offer: a PATCH with another asks for
    /// an ICE restart.
    pub remote_ufrag: Option<String>,
    /// The viewer's offer (as last renegotiated): an ICE restart is this with the
    /// viewer's new credentials.
    pub offer: String,
    /// Counts the viewer in its stream's `viewers_by.webrtc` while it is connected.
    pub viewing: Option<Viewing>,
    /// A WHIP publisher's hold on its stream, released when the session ends.
    pub publishing: Option<Publishing>,
}

/// A WHIP session's claim on its stream's [`PublisherSlot`]; dropping it frees the
/// stream for the next publisher.
pub struct Publishing {
    slot: Arc<PublisherSlot>,
    session: String,
}

impl Publishing {
    /// Claim `slot` for `session`; `None` when another publisher holds it.
    pub fn claim(slot: &Arc<PublisherSlot>, session: &str) -> Option<Publishing> {
        slot.claim(session).then(|| Publishing {
            slot: slot.clone(),
            session: session.to_string(),
        })
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        self.slot.release(&self.session);
    }
}

#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, id: String, session: Session) {
        self.lock().insert(id, session);
    }

    /// Look at a session, or `None` when there is none by that id.
    pub fn with<R>(&self, id: &str, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        self.lock().get_mut(id).map(f)
    }

    /// Take a session out (DELETE).
    pub fn remove(&self, id: &str) -> Option<Session> {
        self.lock().remove(id)
    }

    /// Take a session out if it is still the one of `peer` (its peer closed).
    pub fn remove_peer(&self, id: &str, peer: PeerId) -> Option<Session> {
        let mut sessions = self.lock();
        if sessions.get(id).is_some_and(|s| s.peer == peer) {
            sessions.remove(id)
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Of them, WHIP publishers.
    pub fn publishers(&self) -> usize {
        self.lock()
            .values()
            .filter(|s| s.publishing.is_some())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
