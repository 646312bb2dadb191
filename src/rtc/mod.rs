//! WebRTC output: one peer connection per viewer, all peers of every stream on one UDP
//! socket, driven by our own loop over the sans-IO `rtc` crate. Each access unit (and
//! each Opus frame of a stream's sound) is packetized once and shared by every peer of
//! its stream; only SSRC, sequence and SRTP are per peer. A viewer's microphone goes
//! the other way, to its stream's playback.
//!
//! The peers are spread over engine shards, one thread each (see [`shard`]): each shard
//! sends on the shared socket itself, and with more than one a single task reads the
//! socket and steers each datagram to its shard (see [`steering`]).
//!
//! This file is the engine's public face; the rest of the program uses nothing else
//! from `rtc::`, so the engine choice stays local to this module.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::media::audio::mic::MicInput;
use crate::media::publisher::PublisherTap;
use crate::media::Hub;
use crate::rtc::histograms::WebrtcHistograms;
use engine_socket::EngineSocket;

mod audio_fanout;
pub mod candidates;
pub mod certificate;
mod deadlines;
pub mod demux;
mod direct_srtp;
mod engine;
mod engine_socket;
pub mod extensions;
mod fanout;
mod feedback;
pub mod frame;
mod frame_cache;
mod gop;
pub mod histograms;
pub mod ice_restart;
mod keying_tap;
pub mod latency;
pub mod memory_return;
pub mod nomination;
pub mod packetizer;
pub mod peer;
mod peer_audio;
mod peer_ingest;
mod peer_map;
mod reports;
pub mod resend;
mod router;
pub mod sdp;
mod shard;
mod srtp_gcm;
mod stats;
mod steering;
mod subscriptions;
mod udp;

pub use candidates::MAX_REMOTE_CANDIDATES;
pub use engine::OFFER_TIMEOUT;
pub use shard::MAX_SHARDS;

/// Default for `--max-viewers`: far above what one machine streams to (the benchmark
/// saturates two cores at a few hundred), low enough that a flood of `watch` cannot
/// make peers without bound.
pub const DEFAULT_MAX_VIEWERS: usize = 1000;

/// Requests (offers, answers, candidates) waiting for the engine. Callers that make
/// offers or apply answers wait for room; candidates beyond it are dropped.
const COMMAND_QUEUE: usize = 256;

/// Pause before restarting the engine after a panic, so a panic on every datagram does
/// not spin.
const RESTART_PAUSE: Duration = Duration::from_millis(200);

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
    /// Peers (viewers, connected or not yet) the engine holds at most.
    pub max_viewers: usize,
    /// Addresses whose connectivity checks are answered (`--allow-ip`); others are
    /// dropped before their check is verified.
    pub allow_ip: crate::access::IpList,
    /// Viewers' SRTP is AES-GCM only (`--srtp-ciphers aead`), see [`peer::srtp_profiles`].
    pub srtp_aead_only: bool,
    /// Engine shards (`--rtc-threads`), each on a thread of its own, 1..=[`MAX_SHARDS`].
    pub shards: usize,
}

/// Engine shards by default: one per CPU the process may use.
pub fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_SHARDS)
}

impl RtcConfig {
    /// An engine on 127.0.0.1 (any free UDP port) offering only that address, with
    /// 1150-byte packets and at most `max_viewers` peers: what tests and local tools use.
    pub fn loopback(max_viewers: usize) -> RtcConfig {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        RtcConfig {
            bind: loopback,
            udp_ports: (0, 0),
            candidate_ips: vec![loopback],
            nat_1_1_ip: None,
            rtp_packet_size: 1150,
            max_viewers,
            allow_ip: Default::default(),
            srtp_aead_only: true,
            shards: 1,
        }
    }
}

/// What a viewer watches, and the choices its page made in `watch`.
#[derive(Clone)]
pub struct PeerOptions {
    /// The hub of the stream the viewer watches. The offer's profile-level-id comes
    /// from its SPS.
    pub stream: Arc<Hub>,
    /// Rotation the viewer asked for, degrees counter-clockwise: 0, 90, 180 or 270.
    pub orientation: u16,
    /// The stream's sound (a hub of Opus frames), when the viewer asked for it and the
    /// stream has it: the offer gets an audio m-line that sends.
    pub audio: Option<Arc<Hub>>,
    /// The stream's microphone playback, when the viewer asked to talk and the stream
    /// has one: the audio m-line receives too (or only).
    pub mic: Option<MicInput>,
    /// A WHIP publisher (the offer's video is received and goes here), not a viewer:
    /// `stream` is not watched.
    pub publisher: Option<PublisherTap>,
}

impl PeerOptions {
    /// A viewer of `stream`, unrotated, without sound or microphone.
    pub fn new(stream: Arc<Hub>) -> PeerOptions {
        PeerOptions {
            stream,
            orientation: 0,
            audio: None,
            mic: None,
            publisher: None,
        }
    }
}

impl std::fmt::Debug for PeerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerOptions")
            .field("stream", &Arc::as_ptr(&self.stream))
            .field("orientation", &self.orientation)
            .field("audio", &self.audio.as_ref().map(Arc::as_ptr))
            .field("mic", &self.mic.is_some())
            .field("publisher", &self.publisher.is_some())
            .finish()
    }
}

/// What happens to a peer, reported to whoever created it (the Janus session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// ICE connected and DTLS finished: media flows (Janus `webrtcup`).
    Connected,
    /// The peer is gone for good (Janus `hangup` with this reason, e.g. "ICE failed",
    /// "DTLS alert", "Close PC").
    Closed { reason: String },
    /// The viewer's microphone sound has started arriving on the m-line `mid` (Janus
    /// `media` with `type` audio, `receiving` true).
    MicReceiving { mid: String },
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
    /// The answer declined the video (or kept none of our payload types).
    #[error("the viewer declined the video: {0}")]
    VideoRejected(String),
    /// A viewer's offer (WHEP) we cannot answer: no video section, no H.264 we can
    /// send, missing ICE or DTLS attributes.
    #[error("offer not acceptable: {0}")]
    Unacceptable(String),
    #[error("no such peer")]
    NoSuchPeer,
    #[error("unexpected answer: no offer pending")]
    NoOffer,
    /// `max_viewers` peers exist already.
    #[error("too many viewers (at most {0})")]
    TooManyViewers(usize),
    /// The WebRTC stack refused a step (building a peer, an offer, a candidate).
    #[error("WebRTC stack: {0}")]
    Stack(#[from] rtc::shared::error::Error),
    /// The engine task has ended (the server is shutting down).
    #[error("WebRTC engine stopped")]
    Stopped,
    /// The stack left out something it always gives (a transceiver, a sender, a local
    /// description): a bug, named.
    #[error("WebRTC engine: {0}")]
    Internal(&'static str),
}

/// Peers of one engine shard, in [`RtcStats::shards`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShardStats {
    pub peers: usize,
    pub connected: usize,
}

/// Counters for `/state` and `/metrics`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RtcStats {
    /// Peers of all shards, and of those the connected ones.
    pub peers: usize,
    pub connected: usize,
    /// The same per engine shard, in shard order.
    pub shards: Vec<ShardStats>,
    /// RTP packets sent, video and audio.
    pub rtp_packets_sent: u64,
    /// Of those, audio (one Opus frame each).
    pub audio_packets_sent: u64,
    /// Viewers' microphone packets handed to the playback, and dropped because its
    /// queue was full.
    pub mic_packets_received: u64,
    pub mic_packets_dropped: u64,
    /// Every datagram to viewers (RTP, RTCP, DTLS, STUN) and its bytes.
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    /// Keyframes sent, counted once per viewer.
    pub keyframes_sent: u64,
    /// RTCP PLI and FIR received.
    pub keyframe_requests: u64,
    pub plis_received: u64,
    pub firs_received: u64,
    /// RTCP NACK messages received, and the packets sent again for them.
    pub nacks_received: u64,
    /// RTCP PLI sent to WHIP publishers (keyframe requests of their streams).
    pub plis_sent: u64,
    pub retransmitted_packets: u64,
    /// Streams (a viewer's video, its sound) whose RTP the engine encrypts and sends
    /// itself once connected, and those left to the WebRTC stack because our
    /// encryption of their first packet did not match the stack's.
    pub direct_srtp_streams: u64,
    pub direct_srtp_refused: u64,
    /// Access unit taken by the engine → its last RTP packet sent (all viewers).
    pub send_delay_us: latency::HistogramSnapshot,
    /// Access unit captured/arrived at the server → its last RTP packet sent.
    pub capture_to_send_us: latency::HistogramSnapshot,
}

/// Handle to the engine; cheap to clone.
#[derive(Clone)]
pub struct RtcEngine {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Vec<ShardHandle>,
    local_addr: SocketAddr,
    stats: Arc<stats::SharedStats>,
}

/// The queues into one shard.
struct ShardHandle {
    commands: mpsc::Sender<engine::Command>,
    /// Closes go apart from the bounded queue so that one is never lost or waited for:
    /// there are never more of them than peers made.
    closes: mpsc::UnboundedSender<engine::Close>,
    /// New peers asked of this shard and not yet answered: counted with its peers when
    /// the least busy shard is chosen, so a burst of viewers spreads at once.
    joining: AtomicUsize,
}

impl RtcEngine {
    /// Bind the UDP socket and start the engine: `cfg.shards` loops, each on a thread
    /// named `rtc-shard-N`. It serves any number of streams: each peer names the hub it
    /// watches ([`PeerOptions::stream`]). Each loop is supervised: a panic in it is
    /// logged and that shard starts afresh (its peers closed, their owners told) on the
    /// same socket and queues; the other shards go on.
    pub async fn start(cfg: RtcConfig) -> anyhow::Result<RtcEngine> {
        let count = cfg.shards.clamp(1, MAX_SHARDS);
        let socket = bind_socket(cfg.bind, cfg.udp_ports)?;
        let local_addr = socket.local_addr()?;
        let candidates = advertised_candidates(&cfg, local_addr.port())?;
        tracing::info!(%local_addr, ?candidates, shards = count, "WebRTC media socket ready");
        let stats = Arc::new(stats::SharedStats::new(count));
        // One shard reads the socket itself, as a lone engine would.
        let steering = (count > 1).then(Arc::<steering::Steering>::default);
        let frames = (count > 1).then(Arc::<frame_cache::FrameCache>::default);
        let mut shards = Vec::with_capacity(count);
        let mut queues = Vec::with_capacity(count);
        for index in 0..count {
            let (tx, commands) = mpsc::channel(COMMAND_QUEUE);
            let (close_tx, closes) = mpsc::unbounded_channel();
            let datagrams = steering.as_ref().map(|_| {
                let (queue, datagrams) = mpsc::channel(steering::SHARD_QUEUE);
                queues.push(queue);
                datagrams
            });
            let supervisor = Supervisor {
                cfg: cfg.clone(),
                stats: stats.clone(),
                candidates: candidates.clone(),
                inbox: Arc::new(Mutex::new(engine::Inbox {
                    commands,
                    closes,
                    datagrams,
                })),
                shard: shard::Shard::new(index, steering.clone(), frames.clone()),
            };
            supervisor.spawn_thread(socket.try_clone()?)?;
            shards.push(ShardHandle {
                commands: tx,
                closes: close_tx,
                joining: AtomicUsize::new(0),
            });
        }
        if let Some(steering) = steering {
            tokio::spawn(steering::steer(socket, steering, queues));
        }
        Ok(RtcEngine {
            inner: Arc::new(Inner {
                shards,
                local_addr,
                stats,
            }),
        })
    }

    /// The UDP address all peers share.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Create a peer and its offer (sendonly H.264 PT 96, packetization-mode=1,
    /// profile-level-id from the stream's SPS, the plugin's three extmaps, host
    /// candidates included; then an Opus PT 111 m-line when [`PeerOptions`] has sound
    /// or microphone). Events about the peer go to `events`.
    pub async fn create_offer(
        &self,
        opts: PeerOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<(PeerId, String), RtcError> {
        self.offer(opts, false, events).await
    }

    /// As [`RtcEngine::create_offer`], for a server the stream is forwarded to (a WHIP
    /// endpoint) rather than a viewer: its keyframe requests are coalesced with those of
    /// every other such server.
    pub async fn create_egress_offer(
        &self,
        opts: PeerOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<(PeerId, String), RtcError> {
        self.offer(opts, true, events).await
    }

    async fn offer(
        &self,
        opts: PeerOptions,
        egress: bool,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<(PeerId, String), RtcError> {
        self.ask_new_peer(|reply| engine::Command::CreateOffer {
            opts,
            egress,
            events,
            reply,
        })
        .await
    }

    /// Create a peer from a viewer's SDP offer (WHEP) and answer it: sendonly H.264 on
    /// the offered payload type that fits the stream best (see
    /// [`sdp::read_offer`]), Opus when [`PeerOptions`] has sound and the offer takes
    /// it, our host candidates included (the answer is complete). From there the peer
    /// is like any other: the same fan-out, GOP start, feedback and events. A peer
    /// that does not connect within [`OFFER_TIMEOUT`] is closed with an event.
    pub async fn answer_offer(
        &self,
        opts: PeerOptions,
        offer: &str,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<(PeerId, String), RtcError> {
        self.ask_new_peer(|reply| engine::Command::AnswerOffer {
            opts,
            offer: offer.to_string(),
            events,
            reply,
        })
        .await
    }

    /// Apply the viewer's SDP answer.
    pub async fn apply_answer(&self, id: PeerId, sdp: &str) -> Result<(), RtcError> {
        self.ask(id, |reply| engine::Command::ApplyAnswer {
            id,
            sdp: sdp.to_string(),
            reply,
        })
        .await
    }

    /// Restart the ICE session of a peer that answered: `offer` is the viewer's first
    /// offer with its new credentials ([`ice_restart::restart_offer`]), `candidates`
    /// its new candidates. Our new credentials and candidates come back.
    pub async fn restart_ice(
        &self,
        id: PeerId,
        offer: String,
        candidates: Vec<String>,
    ) -> Result<ice_restart::LocalIce, RtcError> {
        self.ask(id, |reply| engine::Command::RestartIce {
            id,
            offer,
            candidates,
            reply,
        })
        .await
    }

    /// Add a trickled remote candidate; kept until the answer arrives if it comes first.
    /// Dropped when the engine's queue is full: a flood of candidates must not hold up
    /// offers, and ICE gets by with the candidates it has (peer-reflexive ones included).
    pub fn add_remote_candidate(&self, id: PeerId, candidate: RemoteCandidate) {
        let Some(shard) = self.shard_of(id) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = shard
            .commands
            .try_send(engine::Command::AddCandidate { id, candidate })
        {
            tracing::debug!(peer = id, "engine busy: remote candidate dropped");
        }
    }

    /// Ask the WHIP publisher `id` for a keyframe (RTCP PLI). Dropped when the engine's
    /// queue is full: the source asks again.
    pub fn request_keyframe(&self, id: PeerId) {
        if let Some(shard) = self.shard_of(id) {
            let _ = shard
                .commands
                .try_send(engine::Command::RequestKeyframe { id });
        }
    }

    /// Close a peer (hangup, detach, session gone); `reason` is logged. No event is
    /// sent for it.
    pub fn close_peer(&self, id: PeerId, reason: &'static str) {
        if let Some(shard) = self.shard_of(id) {
            let _ = shard.closes.send(engine::Close { id, reason });
        }
    }

    pub fn stats(&self) -> RtcStats {
        self.inner.stats.snapshot()
    }

    /// The histograms the engine observes into, for `/metrics`.
    pub fn histograms(&self) -> WebrtcHistograms {
        self.inner.stats.histograms.clone()
    }

    /// Close every peer and stop the loops.
    pub async fn shutdown(&self) {
        let stops = self.inner.shards.iter().map(|shard| async move {
            let (reply, rx) = oneshot::channel();
            if command(shard, engine::Command::Shutdown { reply })
                .await
                .is_ok()
            {
                let _ = rx.await;
            }
        });
        futures_util::future::join_all(stops).await;
    }

    /// The shard holding the peer `id`.
    fn shard_of(&self, id: PeerId) -> Option<&ShardHandle> {
        self.inner.shards.get(shard::shard_of(id))
    }

    /// Queue a command about the peer `id` on its shard, and wait for the reply.
    async fn ask<T>(
        &self,
        id: PeerId,
        command: impl FnOnce(oneshot::Sender<Result<T, RtcError>>) -> engine::Command,
    ) -> Result<T, RtcError> {
        let shard = self.shard_of(id).ok_or(RtcError::NoSuchPeer)?;
        ask(shard, command).await
    }

    /// Queue a command making a peer on the shard with the fewest peers (those joining
    /// it included), and wait for the reply.
    async fn ask_new_peer<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, RtcError>>) -> engine::Command,
    ) -> Result<T, RtcError> {
        let stats = &self.inner.stats;
        let (index, shard) = self
            .inner
            .shards
            .iter()
            .enumerate()
            .min_by_key(|(i, s)| {
                stats.shard(*i).peers.load(Ordering::Relaxed) + s.joining.load(Ordering::Relaxed)
            })
            .ok_or_else(stopped)?;
        tracing::trace!(shard = index, "new peer");
        shard.joining.fetch_add(1, Ordering::Relaxed);
        // Counted off however the wait ends (a caller giving up included).
        let _joined = Joined(&shard.joining);
        ask(shard, command).await
    }

    /// Make shard 0 panic, to test its supervision.
    #[cfg(test)]
    async fn panic_engine(&self) {
        let _ = command(&self.inner.shards[0], engine::Command::Panic).await;
    }
}

/// Counts a new peer off its shard's `joining` when dropped.
struct Joined<'a>(&'a AtomicUsize);

impl Drop for Joined<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Queue a command that replies on `shard`, and wait for its reply.
async fn ask<T>(
    shard: &ShardHandle,
    command_with: impl FnOnce(oneshot::Sender<Result<T, RtcError>>) -> engine::Command,
) -> Result<T, RtcError> {
    let (reply, rx) = oneshot::channel();
    command(shard, command_with(reply)).await?;
    rx.await.map_err(|_| stopped())?
}

/// Queue a command, waiting for room: back-pressure on whoever floods requests.
async fn command(shard: &ShardHandle, cmd: engine::Command) -> Result<(), RtcError> {
    shard.commands.send(cmd).await.map_err(|_| stopped())
}

/// Runs one shard's engine loop and starts a fresh one when it panics. The socket, the
/// queues and the peer ids outlive each loop: callers keep their handle, and an id is
/// never given twice (a late close for an old peer must not hit a new one).
struct Supervisor {
    cfg: RtcConfig,
    stats: Arc<stats::SharedStats>,
    candidates: Vec<SocketAddr>,
    inbox: Arc<Mutex<engine::Inbox>>,
    shard: shard::Shard,
}

impl Supervisor {
    /// Run the shard on a thread of its own, `rtc-shard-N`, with its own single-threaded
    /// runtime: its timers, sends and queue wake-ups never wait for another shard's.
    fn spawn_thread(self, socket: std::net::UdpSocket) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("rtc-shard-{}", self.shard.index))
            .spawn(move || {
                runtime.block_on(async move {
                    // A shard without steering reads the socket itself, registered
                    // with this thread's runtime; one with steering only sends on it.
                    let socket = match self.shard.steering {
                        None => EngineSocket::reading(socket),
                        Some(_) => EngineSocket::sending(socket),
                    };
                    match socket {
                        Ok(socket) => self.run(Arc::new(socket)).await,
                        Err(e) => tracing::error!(error = %e, "WebRTC shard has no socket"),
                    }
                })
            })?;
        Ok(())
    }

    async fn run(self, socket: Arc<EngineSocket>) {
        let index = self.shard.index;
        loop {
            let engine = engine::Engine::new(
                self.cfg.clone(),
                self.stats.clone(),
                self.candidates.clone(),
                self.shard.clone(),
            );
            let task = tokio::spawn(engine.run(socket.clone(), self.inbox.clone()));
            match task.await {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    // Dropping the engine closed every peer's event channel: their
                    // Janus handles get a hangup.
                    let lost = self.stats.reclaim_shard(index);
                    if let Some(steering) = &self.shard.steering {
                        steering.forget_shard(index);
                    }
                    tracing::error!(
                        shard = index,
                        viewers_lost = lost,
                        "WebRTC engine panicked; restarting it with no viewers"
                    );
                    tokio::time::sleep(RESTART_PAUSE).await;
                }
                Err(_) => return, // cancelled: the runtime is shutting down
            }
        }
    }
}

fn stopped() -> RtcError {
    RtcError::Stopped
}

/// Bind the first free port of `ports` ((0, 0) = any free port), non-blocking, for the
/// shards' runtimes to take up.
fn bind_socket(ip: IpAddr, ports: (u16, u16)) -> anyhow::Result<std::net::UdpSocket> {
    let (first, last) = ports;
    let mut last_err = None;
    for port in first..=last {
        match std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
            Ok(s) => {
                s.set_nonblocking(true)?;
                return Ok(s);
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "no free UDP port on {ip} in {first}-{last}: {}",
        last_err.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// Host candidates put into every offer: the configured addresses (or the bind address),
/// replaced by the public one when `nat_1_1_ip` is set.
fn advertised_candidates(cfg: &RtcConfig, port: u16) -> anyhow::Result<Vec<SocketAddr>> {
    if let Some(public) = cfg.nat_1_1_ip {
        return Ok(vec![SocketAddr::new(public, port)]);
    }
    let mut ips = cfg.candidate_ips.clone();
    if cfg.bind.is_loopback() {
        ips.retain(|ip| ip.is_loopback());
    }
    if ips.is_empty() {
        if cfg.bind.is_unspecified() {
            anyhow::bail!("no candidate addresses to offer for {}", cfg.bind);
        }
        ips.push(cfg.bind);
    }
    ips.dedup();
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wait (bounded) until the published peer count is `n`.
    async fn peers_become(engine: &RtcEngine, n: usize) {
        for _ in 0..100 {
            if engine.stats().peers == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("peers stayed at {}, not {n}", engine.stats().peers);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_engine_restarts_without_its_peers() {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let cfg = RtcConfig::loopback(10);
        let engine = RtcEngine::start(cfg).await.expect("engine");
        let hub = Hub::new(4);
        let (tx, mut events) = mpsc::unbounded_channel();
        let (first, _) = engine
            .create_offer(PeerOptions::new(hub.clone()), tx)
            .await
            .expect("offer");
        peers_become(&engine, 1).await;

        engine.panic_engine().await;
        // The lost peer's owner sees its event channel end (the Janus side turns that
        // into a hangup).
        let ended = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
        assert!(matches!(ended, Ok(None)), "{ended:?}");

        let (tx, _events) = mpsc::unbounded_channel();
        let made = tokio::time::timeout(
            Duration::from_secs(5),
            engine.create_offer(PeerOptions::new(hub.clone()), tx),
        )
        .await;
        let (second, offer) = made.expect("in time").expect("an offer after the restart");
        assert!(
            second > first,
            "peer ids are not reused: {first} then {second}"
        );
        assert!(offer.contains("a=candidate:"));
        peers_become(&engine, 1).await;
        assert_eq!(engine.local_addr().ip(), loopback);
        engine.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_shard_restarts_alone() {
        let engine = RtcEngine::start(RtcConfig {
            shards: 2,
            ..RtcConfig::loopback(10)
        })
        .await
        .expect("engine");
        let hub = Hub::new(4);
        let mut held = Vec::new();
        for _ in 0..2 {
            let (tx, events) = mpsc::unbounded_channel();
            let (id, _) = engine
                .create_offer(PeerOptions::new(hub.clone()), tx)
                .await
                .expect("offer");
            held.push((id, events));
        }
        let shards: Vec<usize> = held.iter().map(|(id, _)| shard::shard_of(*id)).collect();
        assert_eq!(shards, [0, 1], "one peer on each shard");

        engine.panic_engine().await;
        let ended = tokio::time::timeout(Duration::from_secs(5), held[0].1.recv()).await;
        assert!(
            matches!(ended, Ok(None)),
            "shard 0's peer is gone: {ended:?}"
        );
        peers_become(&engine, 1).await;
        assert_eq!(engine.stats().shards[1].peers, 1, "shard 1 kept its peer");
        assert!(held[1]
            .1
            .try_recv()
            .is_err_and(|e| e == mpsc::error::TryRecvError::Empty));
        engine.shutdown().await;
    }
}
