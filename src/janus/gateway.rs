//! The Janus core, shared by both transports: takes a parsed request and the
//! connection it came from, answers it, and routes asynchronous events to the
//! connection that owns each session. Also runs the session timeout watchdog.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use super::auth::Auth;
use super::backend::PeerBackend;
use super::error::{code, JanusError};
use super::message::{self, Request, ServerInfo, TrickleCandidate, Verb};
use super::plugin::{self, UstreamerHandle};
use super::session::{ConnId, EventQueue, Handle, Owner, Registry, Session};
use crate::media::Hub;
use crate::metrics::rejections::{self, Rejection};
use crate::ratelog::{RateLimited, PERIOD};
use crate::rtc::{RemoteCandidate, RtcError, MAX_REMOTE_CANDIDATES};

/// Longest pause between two checks for expired sessions (Janus checks every 2 s).
const WATCHDOG_PERIOD: Duration = Duration::from_secs(2);

/// Core settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Idle time after which a session expires; zero disables expiry.
    pub session_timeout: Duration,
    /// Given to pages in the `features` event.
    pub ice_url: Option<String>,
    pub caps: SessionCaps,
    /// The API secret and tokens requests must carry.
    pub auth: Auth,
}

/// Limits on what clients may create; 0 means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCaps {
    /// Sessions in total, over both transports.
    pub sessions: usize,
    /// Sessions one WebSocket connection may own.
    pub sessions_per_connection: usize,
    /// Handles in one session.
    pub handles_per_session: usize,
}

fn over(cap: usize, count: usize) -> bool {
    cap > 0 && count >= cap
}

static REFUSED: RateLimited = RateLimited::new(PERIOD);

/// A refusal by a cap: logged rate-limited, answered with `code`.
fn refused(code: u16, reason: String) -> JanusError {
    if let Some(n) = REFUSED.hit() {
        tracing::warn!(refused = n, "Janus request refused: {reason}");
    }
    JanusError::new(code, reason)
}

/// Live objects, for `/state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct JanusCounts {
    pub sessions: usize,
    pub handles: usize,
    /// HTTP long polls waiting for events now.
    pub long_polls: usize,
}

/// How a session ended; said in the "viewer gone" log line of its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// `destroy` from the client.
    Destroyed,
    /// No activity for the session timeout.
    TimedOut,
    /// The WebSocket that created it closed.
    ConnectionClosed,
    /// peregrine is stopping.
    ShutDown,
    /// `destroy_session` through the Admin API.
    AdminDestroyed,
}

impl SessionEnd {
    pub fn reason(self) -> &'static str {
        match self {
            SessionEnd::Destroyed => "session destroyed",
            SessionEnd::TimedOut => "session timed out",
            SessionEnd::ConnectionClosed => "WebSocket closed",
            SessionEnd::ShutDown => "server shutting down",
            SessionEnd::AdminDestroyed => "session destroyed through the Admin API",
        }
    }
}

/// A long poll being held on a session (also when the client goes away mid-poll).
pub struct PollHold {
    gateway: Arc<Gateway>,
    session_id: u64,
}

impl Drop for PollHold {
    fn drop(&mut self) {
        self.gateway.poll_ended(self.session_id);
    }
}

pub struct Gateway {
    pub(super) hub: Arc<Hub>,
    pub(super) peers: Arc<dyn PeerBackend>,
    pub(super) settings: Settings,
    registry: Mutex<Registry>,
    next_conn: AtomicU64,
    closing: watch::Sender<bool>,
}

impl Gateway {
    pub fn new(hub: Arc<Hub>, peers: Arc<dyn PeerBackend>, settings: Settings) -> Arc<Gateway> {
        Arc::new(Gateway {
            hub,
            peers,
            settings,
            registry: Mutex::new(Registry::default()),
            next_conn: AtomicU64::new(1),
            closing: watch::channel(false).0,
        })
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Every registry operation leaves it consistent, so a poisoned lock is usable.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn with_session<R>(
        &self,
        session_id: u64,
        f: impl FnOnce(&mut Session) -> Option<R>,
    ) -> Option<R> {
        f(self.registry().session_mut(session_id)?)
    }

    pub(super) fn with_handle<R>(
        &self,
        session_id: u64,
        handle_id: u64,
        f: impl FnOnce(&mut UstreamerHandle) -> R,
    ) -> Option<R> {
        self.with_session(session_id, |s| {
            s.handle_mut(handle_id).map(|h| f(&mut h.plugin))
        })
    }

    /// Send an event about a handle, if it still exists.
    pub(super) fn emit_to_handle(
        &self,
        session_id: u64,
        handle_id: u64,
        build: impl FnOnce(u64, u64) -> Value,
    ) {
        self.with_session(session_id, |session| {
            session
                .has_handle(handle_id)
                .then(|| session.deliver(build(session_id, handle_id)))
        });
    }

    pub fn new_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Every session's id, for the Admin API (looking does not count as activity).
    pub(super) fn session_ids(&self) -> Vec<u64> {
        self.registry().session_ids()
    }

    /// The handles of a session; `None` when there is no such session.
    pub(super) fn handle_ids(&self, session_id: u64) -> Option<Vec<u64>> {
        self.registry().session(session_id).map(Session::handle_ids)
    }

    pub fn counts(&self) -> JanusCounts {
        let registry = self.registry();
        let (sessions, handles) = registry.counts();
        JanusCounts {
            sessions,
            handles,
            long_polls: registry.polls_held(),
        }
    }

    /// Flips to true when the server shuts down; transports close their connections.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Answer one request that arrived from `origin`.
    pub async fn handle(self: &Arc<Self>, req: Request, origin: &Owner) -> Value {
        match self.dispatch(&req, origin).await {
            Ok(reply) => reply,
            Err(e) => {
                if matches!(e.code, code::UNAUTHORIZED | code::UNAUTHORIZED_PLUGIN) {
                    rejections::count(Rejection::JanusAuth);
                }
                tracing::debug!(verb = %req.verb_name, error = %e, "Janus request failed");
                message::error_reply(Some(&req.transaction), req.session_id, &e)
            }
        }
    }

    async fn dispatch(
        self: &Arc<Self>,
        req: &Request,
        origin: &Owner,
    ) -> Result<Value, JanusError> {
        let (tx, s, h) = (req.transaction.as_str(), req.session_id, req.handle_id);
        if s == 0 {
            return match req.verb {
                Verb::Create => {
                    // As in Janus, after the path is known to be right.
                    self.settings.auth.check_request(&req.fields)?;
                    self.create(req, origin)
                }
                Verb::Info => Ok(message::server_info(tx, &self.server_info())),
                Verb::Ping => Ok(message::pong(tx)),
                _ => Err(JanusError::unhandled_at_path(&req.verb_name)),
            };
        }
        // Checked before the session is looked up, so that without the secret nobody
        // learns which sessions exist.
        self.settings.auth.check_request(&req.fields)?;
        {
            let mut registry = self.registry();
            let session = registry.touch(s).ok_or_else(|| JanusError::no_session(s))?;
            if h != 0 && !session.has_handle(h) {
                return Err(JanusError::no_handle(s, h));
            }
        }
        let at_handle = h != 0;
        match req.verb {
            Verb::Keepalive | Verb::Attach | Verb::Destroy | Verb::Claim if at_handle => {
                Err(JanusError::unhandled_at_path(&req.verb_name))
            }
            Verb::Detach | Verb::Hangup | Verb::Message | Verb::Trickle if !at_handle => {
                Err(JanusError::unhandled_at_path(&req.verb_name))
            }
            Verb::Keepalive => Ok(message::ack(tx, s)),
            Verb::Attach => self.attach(req),
            Verb::Destroy => {
                self.destroy_session(s, SessionEnd::Destroyed);
                Ok(message::success(tx, s))
            }
            Verb::Claim => {
                self.claim(s, origin)?;
                Ok(message::success(tx, s))
            }
            Verb::Detach => {
                let handle = self.registry().remove_handle(s, h);
                let handle = handle.ok_or_else(|| JanusError::no_handle(s, h))?;
                self.teardown_handle(handle, "detach");
                self.with_session(s, |session| {
                    session.deliver(message::detached(s, h));
                    Some(())
                });
                Ok(message::success(tx, s))
            }
            Verb::Hangup => {
                if let Some(Some(peer)) = self.with_handle(s, h, |p| p.take_peer()) {
                    self.peers.close_peer(peer, "hangup");
                    self.emit_to_handle(s, h, |s, h| message::hangup(s, h, "Janus API"));
                }
                Ok(message::success(tx, s))
            }
            Verb::Message => self.message(req).await,
            Verb::Trickle => self.trickle(req),
            Verb::Create | Verb::Info | Verb::Ping | Verb::Unknown => {
                Err(JanusError::unknown_request(&req.verb_name))
            }
        }
    }

    pub(super) fn server_info(&self) -> ServerInfo {
        ServerInfo {
            session_timeout_s: self.settings.session_timeout.as_secs(),
            plugin_package: plugin::PACKAGE,
            plugin_name: plugin::NAME,
            plugin_description: plugin::DESCRIPTION,
            plugin_version: plugin::VERSION,
            plugin_version_string: plugin::VERSION_STRING,
            api_secret: self.settings.auth.api_secret.is_some(),
            auth_token: self.settings.auth.tokens.is_some(),
        }
    }

    fn create(&self, req: &Request, origin: &Owner) -> Result<Value, JanusError> {
        let wanted = message::parse_create(req)?;
        let caps = self.settings.caps;
        let mut registry = self.registry();
        if over(caps.sessions, registry.counts().0) {
            rejections::count(Rejection::SessionCap);
            return Err(refused(
                code::NOT_ACCEPTING_SESSIONS,
                format!("Too many sessions (limit {})", caps.sessions),
            ));
        }
        self.check_connection_cap(&registry, origin)?;
        let id = registry
            .create_session(origin.clone(), wanted)
            .ok_or_else(|| JanusError::new(code::SESSION_CONFLICT, "Session ID already in use"))?;
        drop(registry);
        tracing::debug!(session = id, "Janus session created");
        Ok(message::success_with_id(&req.transaction, 0, id))
    }

    /// Sessions one WebSocket may own.
    fn check_connection_cap(&self, registry: &Registry, origin: &Owner) -> Result<(), JanusError> {
        let cap = self.settings.caps.sessions_per_connection;
        match origin {
            Owner::Socket { conn, .. } if over(cap, registry.count_owned_by(*conn)) => {
                rejections::count(Rejection::SessionCapPerConnection);
                Err(refused(
                    code::NOT_ACCEPTING_SESSIONS,
                    format!("Too many sessions on this connection (limit {cap})"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Move a session's events to the connection the claim came on.
    fn claim(&self, s: u64, origin: &Owner) -> Result<(), JanusError> {
        let mut registry = self.registry();
        let owner = &registry
            .session(s)
            .ok_or_else(|| JanusError::no_session(s))?
            .owner;
        let already_here = matches!((owner, origin),
            (Owner::Socket { conn: a, .. }, Owner::Socket { conn: b, .. }) if a == b);
        if !already_here {
            self.check_connection_cap(&registry, origin)?;
        }
        let session = registry
            .session_mut(s)
            .ok_or_else(|| JanusError::no_session(s))?;
        session.owner = origin.clone();
        Ok(())
    }

    fn attach(&self, req: &Request) -> Result<Value, JanusError> {
        let s = req.session_id;
        let attach = message::parse_attach(req)?;
        if attach.plugin != plugin::PACKAGE {
            return Err(JanusError::no_plugin(&attach.plugin));
        }
        self.settings
            .auth
            .check_plugin(&req.fields, plugin::PACKAGE)?;
        let cap = self.settings.caps.handles_per_session;
        let handles = self.with_session(s, |session| Some(session.handle_count()));
        if over(cap, handles.unwrap_or(0)) {
            rejections::count(Rejection::HandleCap);
            return Err(refused(
                code::PLUGIN_ATTACH,
                format!("Too many handles in this session (limit {cap})"),
            ));
        }
        let handle = UstreamerHandle::new(self.hub.hold());
        let id = self
            .registry()
            .add_handle(s, handle)
            .ok_or_else(|| JanusError::no_session(s))?;
        tracing::debug!(session = s, handle = id, "attached to {}", plugin::PACKAGE);
        Ok(message::success_with_id(&req.transaction, s, id))
    }

    async fn message(self: &Arc<Self>, req: &Request) -> Result<Value, JanusError> {
        let (s, h) = (req.session_id, req.handle_id);
        let msg = message::parse_message(req)?;
        if let Some(jsep) = &msg.jsep {
            if jsep.kind == message::JsepType::Offer {
                return Err(JanusError::new(
                    code::JSEP_UNKNOWN_TYPE,
                    "JSEP error: this plugin makes the offer; only answers are accepted",
                ));
            }
            let peer = self
                .with_handle(s, h, |p| p.peer_id())
                .flatten()
                .ok_or_else(JanusError::unexpected_answer)?;
            self.peers
                .apply_answer(peer, &jsep.sdp)
                .await
                .map_err(|e| match e {
                    RtcError::InvalidSdp(detail) | RtcError::VideoRejected(detail) => {
                        JanusError::invalid_sdp(detail)
                    }
                    RtcError::NoOffer | RtcError::NoSuchPeer => JanusError::unexpected_answer(),
                    e @ (RtcError::Stack(_)
                    | RtcError::Stopped
                    | RtcError::Internal(_)
                    | RtcError::TooManyViewers(_)) => JanusError::internal(e.to_string()),
                })?;
        }
        let data = self.plugin_message(s, h, &msg.body).await;
        Ok(message::plugin_success(
            &req.transaction,
            s,
            h,
            plugin::PACKAGE,
            data,
        ))
    }

    fn trickle(&self, req: &Request) -> Result<Value, JanusError> {
        let (s, h) = (req.session_id, req.handle_id);
        let candidates = message::parse_trickle(req)?;
        let peer = self
            .with_handle(s, h, |p| p.peer_id())
            .flatten()
            .ok_or_else(JanusError::no_stream)?;
        // A peer takes no more than this in all, so more in one message is only load.
        let count = candidates.len();
        if count > MAX_REMOTE_CANDIDATES {
            tracing::debug!(session = s, count, "trickle message cut short");
        }
        for candidate in candidates
            .into_iter()
            .filter(TrickleCandidate::is_for_first_mline)
            .take(MAX_REMOTE_CANDIDATES)
        {
            let candidate = match candidate {
                TrickleCandidate::Candidate { candidate, .. } => {
                    RemoteCandidate::Candidate(candidate)
                }
                TrickleCandidate::Completed => RemoteCandidate::Completed,
            };
            self.peers.add_remote_candidate(peer, candidate);
        }
        Ok(message::ack(&req.transaction, s))
    }

    fn teardown_handle(&self, mut handle: Handle, reason: &'static str) {
        if let Some(peer) = handle.plugin.take_peer() {
            self.peers.close_peer(peer, reason);
        }
        tracing::debug!(handle = handle.id, "handle destroyed");
        // Dropping the handle releases its hold on the source.
    }

    /// Destroy a session and its handles; a timeout is first told to the owner.
    pub fn destroy_session(&self, session_id: u64, end: SessionEnd) {
        let timed_out = end == SessionEnd::TimedOut;
        let handles = {
            let mut registry = self.registry();
            if timed_out {
                if let Some(session) = registry.session(session_id) {
                    session.deliver(message::timeout(session_id));
                }
            }
            match registry.remove_session(session_id) {
                Some(mut session) => session.take_handles(),
                None => return,
            }
        };
        for handle in handles {
            self.teardown_handle(handle, end.reason());
        }
        tracing::debug!(session = session_id, timed_out, "Janus session destroyed");
    }

    /// A WebSocket went away: its sessions go with it, as in Janus.
    pub fn connection_closed(&self, conn: ConnId) {
        let owned = self.registry().owned_by(conn);
        for id in owned {
            self.destroy_session(id, SessionEnd::ConnectionClosed);
        }
    }

    /// The queue an HTTP long poll drains; the session does not expire while the
    /// returned hold lives, and its end counts as activity.
    pub fn hold_poll(self: &Arc<Self>, session_id: u64) -> Option<(Arc<EventQueue>, PollHold)> {
        let mut registry = self.registry();
        let session = registry.touch(session_id)?;
        session.polls_held += 1;
        let hold = PollHold {
            gateway: self.clone(),
            session_id,
        };
        Some((session.queue.clone(), hold))
    }

    fn poll_ended(&self, session_id: u64) {
        if let Some(session) = self.registry().touch(session_id) {
            session.polls_held = session.polls_held.saturating_sub(1);
        }
    }

    /// Expire idle sessions until the gateway is dropped.
    pub async fn run_watchdog(self: Arc<Self>) {
        let timeout = self.settings.session_timeout;
        if timeout.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(timeout.min(WATCHDOG_PERIOD));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let expired = self.registry().expired(timeout);
            for id in expired {
                tracing::info!(session = id, "Janus session timed out");
                self.destroy_session(id, SessionEnd::TimedOut);
            }
        }
    }

    /// Close everything: transports close their connections, every session goes.
    pub fn shut_down(&self) {
        self.closing.send_replace(true);
        let ids = self.registry().session_ids();
        for id in ids {
            self.destroy_session(id, SessionEnd::ShutDown);
        }
    }
}
