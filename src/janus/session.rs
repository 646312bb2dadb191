//! Sessions and handles: ids, ownership (which connection gets a session's events),
//! activity times for the timeout watchdog, and the per-session event queue that the
//! HTTP long poll drains.
//!
//! Plain data behind one lock held by the gateway; nothing here awaits.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::outbox::Outbox;
use super::plugin_api::{HandleState, Plugin};
use crate::ratelog::{RateLimited, PERIOD};
use crate::rtc::PeerId;

static EVENTS_DROPPED: RateLimited = RateLimited::new(PERIOD);

/// Janus ids must survive a JavaScript `Number`, so they stay below 2^53.
const ID_MASK: u64 = (1 << 53) - 1;

/// Events kept for a long-poll session nobody polls; older ones are dropped beyond this.
const MAX_QUEUED_EVENTS: usize = 256;

/// Identifies one WebSocket connection.
pub type ConnId = u64;

/// Where a session's asynchronous events go.
#[derive(Clone, Debug)]
pub enum Owner {
    /// The WebSocket connection that created or last claimed the session.
    Socket { conn: ConnId, tx: Outbox },
    /// The HTTP transport: events wait in the session's queue for the next long poll.
    LongPoll,
}

/// Events waiting for an HTTP long poll.
#[derive(Default)]
pub struct EventQueue {
    events: Mutex<VecDeque<Value>>,
    changed: Notify,
    closed: AtomicBool,
    /// Events dropped because nobody polled them in time.
    dropped: AtomicU64,
}

impl EventQueue {
    fn events(&self) -> MutexGuard<'_, VecDeque<Value>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, event: Value) {
        let mut events = self.events();
        if events.len() >= MAX_QUEUED_EVENTS {
            events.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = EVENTS_DROPPED.hit() {
                tracing::warn!(
                    dropped = n,
                    kept = MAX_QUEUED_EVENTS,
                    "long-poll event queues full (sessions nobody polls); dropped the oldest events"
                );
            }
        }
        events.push_back(event);
        drop(events);
        self.changed.notify_waiters();
    }

    /// Up to `max` queued events, oldest first.
    pub fn take(&self, max: usize) -> Vec<Value> {
        let mut events = self.events();
        let n = max.min(events.len());
        events.drain(..n).collect()
    }

    /// The session is gone: wake pollers so they return what is left, then stop.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// How many events this queue dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Wait up to `hold` for events. Returns what arrived (possibly nothing).
    pub async fn wait(&self, max: usize, hold: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register before checking, so a push between the check and the await
            // still wakes us.
            notified.as_mut().enable();
            let events = self.take(max);
            if !events.is_empty() || self.is_closed() {
                return events;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Vec::new();
            }
        }
    }
}

/// A plugin handle: the plugin's state for it, and the WebRTC peer the core keeps for it.
pub struct Handle {
    pub id: u64,
    pub plugin: Arc<dyn Plugin>,
    pub state: Box<dyn HandleState>,
    peer: Option<ActivePeer>,
}

struct ActivePeer {
    id: PeerId,
    /// The task relaying the engine's events about this peer.
    relay: AbortHandle,
}

impl Handle {
    pub fn peer_id(&self) -> Option<PeerId> {
        self.peer.as_ref().map(|p| p.id)
    }

    /// Forget the current peer and stop relaying its events; the caller closes it.
    #[must_use]
    pub fn take_peer(&mut self) -> Option<PeerId> {
        let peer = self.peer.take()?;
        peer.relay.abort();
        self.state.media_stopped();
        Some(peer.id)
    }

    /// Install a new peer; returns the one it replaces, for the caller to close.
    #[must_use]
    pub fn set_peer(&mut self, id: PeerId, relay: AbortHandle) -> Option<PeerId> {
        let old = self.take_peer();
        self.peer = Some(ActivePeer { id, relay });
        old
    }

    /// The engine reported this peer connected; false when it is not the current one.
    pub fn peer_connected(&mut self, id: PeerId) -> bool {
        let current = self.peer_id() == Some(id);
        if current {
            self.state.media_started();
        }
        current
    }

    /// The engine reported this peer closed: forget it without closing it again.
    pub fn peer_closed(&mut self, id: PeerId) -> bool {
        let current = self.peer_id() == Some(id);
        if current {
            self.peer = None;
            self.state.media_stopped();
        }
        current
    }
}

pub struct Session {
    pub id: u64,
    pub owner: Owner,
    pub last_activity: Instant,
    pub queue: Arc<EventQueue>,
    /// HTTP long polls waiting on this session now; it does not expire meanwhile.
    pub polls_held: usize,
    handles: HashMap<u64, Handle>,
}

impl Session {
    /// Send an event to whoever owns the session now.
    pub fn deliver(&self, event: Value) {
        match &self.owner {
            // A closed socket is being torn down; its sessions go with it.
            Owner::Socket { tx, .. } => tx.push(&event),
            Owner::LongPoll => self.queue.push(event),
        }
    }

    pub fn handle_mut(&mut self, id: u64) -> Option<&mut Handle> {
        self.handles.get_mut(&id)
    }

    pub fn has_handle(&self, id: u64) -> bool {
        self.handles.contains_key(&id)
    }

    pub fn handle_count(&self) -> usize {
        self.handles.len()
    }

    pub fn handle_ids(&self) -> Vec<u64> {
        self.handles.keys().copied().collect()
    }
}

/// Every live session and handle.
#[derive(Default)]
pub struct Registry {
    sessions: HashMap<u64, Session>,
    /// Handle id → session id; handle ids are unique across sessions, as in Janus.
    handle_sessions: HashMap<u64, u64>,
}

fn random_id() -> u64 {
    let mut rng = rand::rng();
    loop {
        let id = rng.random::<u64>() & ID_MASK;
        if id != 0 {
            return id;
        }
    }
}

impl Registry {
    /// Create a session; `wanted` is a client-chosen id (`create` with `id`), which
    /// must be free.
    pub fn create_session(&mut self, owner: Owner, wanted: Option<u64>) -> Option<u64> {
        let id = match wanted {
            Some(id) if id == 0 || id > ID_MASK || self.sessions.contains_key(&id) => return None,
            Some(id) => id,
            None => loop {
                let id = random_id();
                if !self.sessions.contains_key(&id) {
                    break id;
                }
            },
        };
        self.sessions.insert(
            id,
            Session {
                id,
                owner,
                last_activity: Instant::now(),
                queue: Arc::new(EventQueue::default()),
                polls_held: 0,
                handles: HashMap::new(),
            },
        );
        Some(id)
    }

    pub fn session(&self, id: u64) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub fn session_mut(&mut self, id: u64) -> Option<&mut Session> {
        self.sessions.get_mut(&id)
    }

    /// Look a session up and count the lookup as activity.
    pub fn touch(&mut self, id: u64) -> Option<&mut Session> {
        let session = self.sessions.get_mut(&id)?;
        session.last_activity = Instant::now();
        Some(session)
    }

    pub fn remove_session(&mut self, id: u64) -> Option<Session> {
        let session = self.sessions.remove(&id)?;
        for h in session.handles.keys() {
            self.handle_sessions.remove(h);
        }
        session.queue.close();
        Some(session)
    }

    /// Add a handle to an existing session and return its new id.
    pub fn add_handle(
        &mut self,
        session_id: u64,
        plugin: Arc<dyn Plugin>,
        state: Box<dyn HandleState>,
    ) -> Option<u64> {
        if !self.sessions.contains_key(&session_id) {
            return None;
        }
        let id = loop {
            let id = random_id();
            if !self.handle_sessions.contains_key(&id) {
                break id;
            }
        };
        let session = self.sessions.get_mut(&session_id)?;
        let handle = Handle {
            id,
            plugin,
            state,
            peer: None,
        };
        session.handles.insert(id, handle);
        self.handle_sessions.insert(id, session_id);
        Some(id)
    }

    pub fn remove_handle(&mut self, session_id: u64, handle_id: u64) -> Option<Handle> {
        let handle = self
            .sessions
            .get_mut(&session_id)?
            .handles
            .remove(&handle_id)?;
        self.handle_sessions.remove(&handle_id);
        Some(handle)
    }

    /// Sessions idle for at least `timeout` (one with a long poll held is not idle).
    pub fn expired(&self, timeout: Duration) -> Vec<u64> {
        self.sessions
            .values()
            .filter(|s| s.polls_held == 0 && s.last_activity.elapsed() >= timeout)
            .map(|s| s.id)
            .collect()
    }

    /// Sessions whose events go to the given WebSocket connection.
    pub fn owned_by(&self, conn: ConnId) -> Vec<u64> {
        self.sessions
            .values()
            .filter(|s| matches!(&s.owner, Owner::Socket { conn: c, .. } if *c == conn))
            .map(|s| s.id)
            .collect()
    }

    /// How many sessions deliver to the given WebSocket connection.
    pub fn count_owned_by(&self, conn: ConnId) -> usize {
        self.sessions
            .values()
            .filter(|s| matches!(&s.owner, Owner::Socket { conn: c, .. } if *c == conn))
            .count()
    }

    pub fn session_ids(&self) -> Vec<u64> {
        self.sessions.keys().copied().collect()
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.sessions.len(), self.handle_sessions.len())
    }

    /// HTTP long polls waiting on any session now.
    pub fn polls_held(&self) -> usize {
        self.sessions.values().map(|s| s.polls_held).sum()
    }
}

impl Session {
    /// Take every handle out, for teardown after the registry lock is released.
    pub fn take_handles(&mut self) -> Vec<Handle> {
        self.handles.drain().map(|(_, h)| h).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_js_safe_and_unique() {
        let mut reg = Registry::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = reg.create_session(Owner::LongPoll, None).unwrap();
            assert!(id > 0 && id <= ID_MASK);
            assert!(seen.insert(id));
        }
        assert_eq!(reg.counts(), (1000, 0));
    }

    #[test]
    fn wanted_ids_must_be_free() {
        let mut reg = Registry::default();
        assert_eq!(reg.create_session(Owner::LongPoll, Some(42)), Some(42));
        assert_eq!(reg.create_session(Owner::LongPoll, Some(42)), None);
        assert_eq!(reg.create_session(Owner::LongPoll, Some(1 << 60)), None);
    }

    #[tokio::test]
    async fn queue_wakes_poller_and_closes() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let q = Arc::new(EventQueue::default());
        // Polled once, the poller is waiting (registered) before the push.
        let mut poll = std::pin::pin!(q.wait(10, Duration::from_secs(5)));
        let pending = poll.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(matches!(pending, Poll::Pending), "nothing queued yet");
        q.push(serde_json::json!({"n":1}));
        assert_eq!(poll.await.len(), 1);
        let started = Instant::now();
        assert!(q.wait(10, Duration::from_millis(50)).await.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(45));
        q.close();
        assert!(q.wait(10, Duration::from_secs(5)).await.is_empty());
    }

    #[test]
    fn unpolled_queue_keeps_the_newest_events_and_counts_the_rest() {
        let q = EventQueue::default();
        for n in 0..MAX_QUEUED_EVENTS + 10 {
            q.push(serde_json::json!({ "n": n }));
        }
        assert_eq!(q.dropped(), 10);
        let kept = q.take(usize::MAX);
        assert_eq!(kept.len(), MAX_QUEUED_EVENTS);
        assert_eq!(kept[0]["n"], 10);
    }

    #[test]
    fn a_held_poll_keeps_the_session_from_expiring() {
        let mut reg = Registry::default();
        let id = reg.create_session(Owner::LongPoll, None).unwrap();
        reg.session_mut(id).unwrap().polls_held = 1;
        assert!(reg.expired(Duration::ZERO).is_empty());
        reg.session_mut(id).unwrap().polls_held = 0;
        assert_eq!(reg.expired(Duration::ZERO), vec![id]);
    }
}
