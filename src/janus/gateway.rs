//! The Janus core, shared by both transports: takes a parsed request and the
//! connection it came from, answers it, and routes asynchronous events to the
//! connection that owns each session. Also runs the session timeout watchdog.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::auth::Auth;
use super::backend::PeerBackend;
use super::error::{code, JanusError};
use super::message::{self, Request, ServerInfo, TrickleCandidate, Verb};
use super::plugin_api::{BoxFuture, HandleHost, HandleState, Plugin};
use super::session::{ConnId, EventQueue, Handle, Owner, Registry, Session};
use crate::ratelog::{RateLimited, PERIOD};
use crate::rejections::{self, Rejection};
use crate::rtc::{
    PeerEvent, PeerId, PeerOptions, RemoteCandidate, RtcError, MAX_REMOTE_CANDIDATES,
};

/// Hangup reason for peers lost with the WebRTC engine.
pub const ENGINE_GONE_REASON: &str = "WebRTC engine stopped";

/// Longest pause between two checks for expired sessions (Janus checks every 2 s).
const WATCHDOG_PERIOD: Duration = Duration::from_secs(2);

/// Core settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Idle time after which a session expires; zero disables expiry.
    pub session_timeout: Duration,
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
    /// The plugins pages can attach to; the first is the one `info` describes.
    plugins: Vec<Arc<dyn Plugin>>,
    pub(super) peers: Arc<dyn PeerBackend>,
    pub(super) settings: Settings,
    registry: Mutex<Registry>,
    next_conn: AtomicU64,
    closing: watch::Sender<bool>,
}

impl Gateway {
    /// A core serving `plugins` (at least one), with peers made by `peers`.
    pub fn new(
        plugins: Vec<Arc<dyn Plugin>>,
        peers: Arc<dyn PeerBackend>,
        settings: Settings,
    ) -> Arc<Gateway> {
        assert!(
            !plugins.is_empty(),
            "a Janus core serves at least one plugin"
        );
        Arc::new(Gateway {
            plugins,
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
        f: impl FnOnce(&mut Handle) -> R,
    ) -> Option<R> {
        self.with_session(session_id, |s| s.handle_mut(handle_id).map(f))
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
                if let Some(Some(peer)) = self.with_handle(s, h, Handle::take_peer) {
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
        let plugin = self.plugins[0].info();
        ServerInfo {
            session_timeout_s: self.settings.session_timeout.as_secs(),
            plugin_package: plugin.package,
            plugin_name: plugin.name,
            plugin_description: plugin.description,
            plugin_version: plugin.version,
            plugin_version_string: plugin.version_string,
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
        let Some(plugin) = self
            .plugins
            .iter()
            .find(|p| p.info().package == attach.plugin)
        else {
            return Err(JanusError::no_plugin(&attach.plugin));
        };
        let package = plugin.info().package;
        self.settings.auth.check_plugin(&req.fields, package)?;
        let cap = self.settings.caps.handles_per_session;
        let handles = self.with_session(s, |session| Some(session.handle_count()));
        if over(cap, handles.unwrap_or(0)) {
            rejections::count(Rejection::HandleCap);
            return Err(refused(
                code::PLUGIN_ATTACH,
                format!("Too many handles in this session (limit {cap})"),
            ));
        }
        let state = plugin.attach();
        let id = self
            .registry()
            .add_handle(s, plugin.clone(), state)
            .ok_or_else(|| JanusError::no_session(s))?;
        tracing::debug!(session = s, handle = id, "attached to {package}");
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
                .with_handle(s, h, |handle| handle.peer_id())
                .flatten()
                .ok_or_else(JanusError::unexpected_answer)?;
            self.peers
                .apply_answer(peer, &jsep.sdp)
                .await
                .map_err(|e| match e {
                    RtcError::InvalidSdp(detail)
                    | RtcError::VideoRejected(detail)
                    | RtcError::Unacceptable(detail) => JanusError::invalid_sdp(detail),
                    RtcError::NoOffer | RtcError::NoSuchPeer => JanusError::unexpected_answer(),
                    e @ (RtcError::Stack(_)
                    | RtcError::Stopped
                    | RtcError::Internal(_)
                    | RtcError::TooManyViewers(_)) => JanusError::internal(e.to_string()),
                })?;
        }
        let plugin = self
            .with_handle(s, h, |handle| handle.plugin.clone())
            .ok_or_else(|| JanusError::no_handle(s, h))?;
        let host = HostedHandle {
            gateway: self.clone(),
            session_id: s,
            handle_id: h,
        };
        let data = plugin.message(&host, &msg.body).await;
        let package = plugin.info().package;
        Ok(message::plugin_success(
            &req.transaction,
            s,
            h,
            package,
            data,
        ))
    }

    fn trickle(&self, req: &Request) -> Result<Value, JanusError> {
        let (s, h) = (req.session_id, req.handle_id);
        let candidates = message::parse_trickle(req)?;
        let peer = self
            .with_handle(s, h, |handle| handle.peer_id())
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
        if let Some(peer) = handle.take_peer() {
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

    /// Give a handle a new peer made with `opts` and push `event` with its offer; see
    /// [`HandleHost::offer`].
    async fn offer_to_handle(
        self: &Arc<Self>,
        session_id: u64,
        handle_id: u64,
        opts: PeerOptions,
        event: Value,
    ) -> Result<(), RtcError> {
        // A new offer starts over with a fresh peer: the page has closed its side
        // already when it watches again.
        match self.with_handle(session_id, handle_id, Handle::take_peer) {
            None => return Ok(()), // the handle went away meanwhile
            Some(Some(old)) => self.peers.close_peer(old, "watch again"),
            Some(None) => {}
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (peer_id, sdp) = self.peers.create_offer(opts, events_tx).await?;
        let relay = self.spawn_peer_relay(session_id, handle_id, peer_id, events_rx);
        let installed = self.with_session(session_id, |session| {
            let handle = session.handle_mut(handle_id)?;
            let replaced = handle.set_peer(peer_id, relay.clone());
            let package = handle.plugin.info().package;
            let jsep = json!({ "type": "offer", "sdp": sdp });
            session.deliver(message::plugin_event(
                session_id,
                handle_id,
                package,
                event,
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
        Ok(())
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
                PeerEvent::Connected if handle.peer_connected(peer_id) => {
                    session.deliver(message::webrtcup(session_id, handle_id));
                }
                PeerEvent::Closed { reason } if handle.peer_closed(peer_id) => {
                    session.deliver(message::hangup(session_id, handle_id, &reason));
                }
                PeerEvent::MicReceiving { mid } if handle.peer_id() == Some(peer_id) => {
                    let media = message::media(session_id, handle_id, &mid, "audio", true);
                    session.deliver(media);
                }
                _ => {}
            }
            Some(())
        });
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
/// One handle, as its plugin reaches the core.
struct HostedHandle {
    gateway: Arc<Gateway>,
    session_id: u64,
    handle_id: u64,
}

impl HandleHost for HostedHandle {
    fn push_event(&self, data: Value, jsep: Option<Value>) {
        self.gateway.with_session(self.session_id, |session| {
            let handle = session.handle_mut(self.handle_id)?;
            let package = handle.plugin.info().package;
            let event = message::plugin_event(self.session_id, self.handle_id, package, data, jsep);
            session.deliver(event);
            Some(())
        });
    }

    fn with_state(&self, f: &mut dyn FnMut(&mut dyn HandleState)) -> bool {
        self.gateway
            .with_handle(self.session_id, self.handle_id, |h| f(h.state.as_mut()))
            .is_some()
    }

    fn offer(&self, opts: PeerOptions, event: Value) -> BoxFuture<'_, Result<(), RtcError>> {
        Box::pin(
            self.gateway
                .offer_to_handle(self.session_id, self.handle_id, opts, event),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::any::Any;

    use serde_json::Map;

    use super::*;
    use crate::janus::plugin_api::{with_state_as, PluginInfo};
    use crate::rtc::RemoteCandidate;

    /// A plugin the core knows nothing about: it echoes each message as an event and
    /// counts the messages of each handle.
    struct Echo;

    struct EchoHandle {
        messages: u64,
    }

    impl HandleState for EchoHandle {
        fn as_any_mut(&mut self) -> &mut dyn Any {
            self
        }
    }

    const ECHO: PluginInfo = PluginInfo {
        package: "test.plugin.echo",
        name: "echo",
        description: "echoes",
        version: 1,
        version_string: "0.0.1",
    };

    impl Plugin for Echo {
        fn info(&self) -> &PluginInfo {
            &ECHO
        }

        fn attach(&self) -> Box<dyn HandleState> {
            Box::new(EchoHandle { messages: 0 })
        }

        fn message<'a>(
            &'a self,
            host: &'a dyn HandleHost,
            body: &'a Map<String, Value>,
        ) -> BoxFuture<'a, Value> {
            Box::pin(async move {
                let n = with_state_as(host, |h: &mut EchoHandle| {
                    h.messages += 1;
                    h.messages
                });
                host.push_event(json!({ "echo": body }), None);
                json!({ "messages": n })
            })
        }
    }

    struct NoPeers;

    impl PeerBackend for NoPeers {
        fn create_offer(
            &self,
            _: PeerOptions,
            _: mpsc::UnboundedSender<PeerEvent>,
        ) -> BoxFuture<'_, Result<(PeerId, String), RtcError>> {
            Box::pin(async { Err(RtcError::Stopped) })
        }

        fn apply_answer<'a>(
            &'a self,
            _: PeerId,
            _: &'a str,
        ) -> BoxFuture<'a, Result<(), RtcError>> {
            Box::pin(async { Err(RtcError::Stopped) })
        }

        fn add_remote_candidate(&self, _: PeerId, _: RemoteCandidate) {}

        fn close_peer(&self, _: PeerId, _: &'static str) {}
    }

    fn request(v: Value) -> Request {
        message::request_from_value(v).expect("a well-formed request")
    }

    #[tokio::test]
    async fn a_second_plugin_plugs_in_without_the_core_knowing_it() {
        let settings = Settings {
            session_timeout: Duration::ZERO,
            caps: SessionCaps::default(),
            auth: Auth::default(),
        };
        let gateway = Gateway::new(vec![Arc::new(Echo)], Arc::new(NoPeers), settings);
        let owner = Owner::LongPoll;
        let created = gateway
            .handle(request(json!({"janus":"create","transaction":"1"})), &owner)
            .await;
        let s = created["data"]["id"].as_u64().expect("session id");
        let attach =
            json!({"janus":"attach","transaction":"2","session_id":s,"plugin":"test.plugin.echo"});
        let h = gateway.handle(request(attach), &owner).await["data"]["id"]
            .as_u64()
            .expect("handle id");
        let info = gateway
            .handle(request(json!({"janus":"info","transaction":"3"})), &owner)
            .await;
        assert!(info.to_string().contains("test.plugin.echo"), "{info}");
        for n in 1..=2 {
            let msg = json!({"janus":"message","transaction":"4","session_id":s,"handle_id":h,"body":{"n":n}});
            let reply = gateway.handle(request(msg), &owner).await;
            assert_eq!(
                reply["plugindata"],
                json!({"plugin":"test.plugin.echo","data":{"messages":n}})
            );
        }
        let (queue, _hold) = gateway.hold_poll(s).expect("session");
        let events = queue.take(10);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[1]["plugindata"]["data"], json!({"echo":{"n":2}}));
        assert_eq!(events[1]["sender"], json!(h));
        let other = json!({"janus":"attach","transaction":"5","session_id":s,"plugin":"janus.plugin.ustreamer"});
        let refused = gateway.handle(request(other), &owner).await;
        assert_eq!(refused["error"]["code"], 460, "{refused}");
    }
}
