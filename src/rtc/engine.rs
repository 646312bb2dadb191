//! The engine loop: one task owning the UDP socket, every peer, and a subscription to
//! the hub of each stream being watched (and of each stream's sound being listened
//! to). It waits, receives and sends; which peer a datagram is for is the [`Router`]'s
//! call, who gets which picture when is the [`Fanout`]'s, who hears which sound the
//! [`AudioFanout`]'s, and what is due next the [`Deadlines`]'. Everything that touches
//! a peer connection happens here, so no locks are needed.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::audio_fanout::AudioFanout;
use super::candidates::Refusal;
use super::deadlines::{Deadline, Deadlines, Due};
use super::engine_socket::EngineSocket;
use super::fanout::{Datagrams, Fanout, Stamp, Start};
use super::frame::{OutAudio, OutFrame};
use super::ice_restart::{self, LocalIce};
use super::packetizer;
use super::peer::{AudioSetup, KeyframeRequest, Peer, PeerNote, PeerSetup};
use super::peer_map::{PeerMap, PeerSet};
use super::router::{Router, Unrouted};
use super::shard::Shard;
use super::srtp_gcm;
use super::stats::SharedStats;
use super::steering::Incoming;
use super::subscriptions::{StreamKey, Subscriptions};
use super::{sdp, udp};
use super::{PeerEvent, PeerId, PeerOptions, RemoteCandidate, RtcConfig, RtcError};
use crate::media::{clock, Picture, StartAt};
use crate::ratelog::{RateLimited, PERIOD};
use crate::rejections::{self, Rejection};

/// An offer not answered within this time is dropped.
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest datagram we accept; anything longer is not WebRTC traffic we can use.
const RECV_BUFFER: usize = 2048;

/// A picture goes out to viewers in groups of about this many packets, each group's
/// datagrams handed to the kernel before the next ones are encrypted: the datagrams
/// waiting in memory stay bounded (~300 KiB) instead of growing with the audience and
/// the picture's size (groups of 32 viewers held a keyframe of tens of packets for each,
/// over a megabyte), and the first viewers' packets leave sooner.
const FAN_OUT_PACKETS: u64 = 256;

/// An audio frame is one packet per viewer: it goes out to this many at a time.
const AUDIO_FAN_OUT_PEERS: usize = 128;

pub enum Command {
    CreateOffer {
        opts: PeerOptions,
        /// A server we forward to (WHIP), not a viewer: its keyframe requests are
        /// coalesced with other servers' ([`crate::media::Hub::request_keyframe_for_egress`]).
        egress: bool,
        events: mpsc::UnboundedSender<PeerEvent>,
        reply: oneshot::Sender<Result<(PeerId, String), RtcError>>,
    },
    AnswerOffer {
        opts: PeerOptions,
        offer: String,
        events: mpsc::UnboundedSender<PeerEvent>,
        reply: oneshot::Sender<Result<(PeerId, String), RtcError>>,
    },
    ApplyAnswer {
        id: PeerId,
        sdp: String,
        reply: oneshot::Sender<Result<(), RtcError>>,
    },
    AddCandidate {
        id: PeerId,
        candidate: RemoteCandidate,
    },
    /// An ICE restart of an answering peer (see [`super::ice_restart`]).
    RestartIce {
        id: PeerId,
        offer: String,
        candidates: Vec<String>,
        reply: oneshot::Sender<Result<LocalIce, RtcError>>,
    },
    /// Ask a WHIP publisher for a keyframe.
    RequestKeyframe {
        id: PeerId,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Panics the loop, to test its supervision.
    #[cfg(test)]
    Panic,
}

/// Close a peer.
pub struct Close {
    pub id: PeerId,
    /// Why, for the log: "hangup", "WebSocket closed", "session timed out", ...
    pub reason: &'static str,
}

/// What the loop receives; it outlives a loop that panicked, for the next one.
pub struct Inbox {
    pub commands: mpsc::Receiver<Command>,
    pub closes: mpsc::UnboundedReceiver<Close>,
    /// The shard's datagrams, steered to it from the shared socket; `None` for a
    /// single shard, which reads the socket itself.
    pub datagrams: Option<mpsc::Receiver<Incoming>>,
}

struct Entry {
    peer: Peer,
    events: mpsc::UnboundedSender<PeerEvent>,
    /// The peer's timer as last read, and as entered in the deadlines; `None` once it
    /// fired, until the peer is read again.
    next_timeout: Option<Instant>,
    /// Connected now (counted in [`Engine::connected`]).
    connected: bool,
    /// `Connected` was reported; an ICE reconnect after Disconnected is not reported again.
    announced: bool,
    /// A server we forward to, not a viewer (see [`Command::CreateOffer`]).
    egress: bool,
}

/// The peers as the fan-out stamps frames through them; a peer stamped is read again
/// (its notes, its timer) before the loop next waits.
struct PeerTable<'a> {
    peers: &'a mut PeerMap<Box<Entry>>,
    dirty: &'a mut PeerSet,
    quiet: &'a mut Vec<PeerId>,
}

impl Stamp for PeerTable<'_> {
    fn stamp(
        &mut self,
        id: PeerId,
        now: Instant,
        frame: &Arc<OutFrame>,
        out: &mut Datagrams,
    ) -> u64 {
        let Some(e) = self.peers.get_mut(&id) else {
            return 0;
        };
        let sent = e.peer.write_frame(now, frame, out);
        to_read_again(id, &mut e.peer, self.dirty, self.quiet);
        sent
    }
}

pub struct Engine {
    cfg: RtcConfig,
    stats: Arc<SharedStats>,
    /// Advertised host candidates (NAT substitution applied).
    candidates: Vec<SocketAddr>,
    peers: PeerMap<Box<Entry>>,
    /// Peers in the `Connected` state, kept as they change rather than counted.
    connected: usize,
    router: Router,
    fanout: Fanout,
    audio_fanout: AudioFanout,
    /// The listeners of the sound being sent, kept to be reused for each frame.
    audio_receivers: Vec<PeerId>,
    subscriptions: Subscriptions,
    deadlines: Deadlines,
    /// Which shard this engine is, and what it shares with the others. Its ids are
    /// shared with the supervisor, so they stay unique across restarts.
    shard: Shard,
    /// Peers touched since the last [`Engine::settle`]: only they are read again.
    dirty: PeerSet,
    /// Peers that got only direct packets since the last [`Engine::settle`]: their
    /// stack has nothing new, so only our side of them is read again.
    quiet: Vec<PeerId>,
    outgoing: Datagrams,
    /// What peers told in [`Engine::settle`], emptied each time.
    notes: Vec<PeerNote>,
    /// One log line per period for what anyone can send: garbage datagrams, refused
    /// candidates, viewers over the limit.
    garbage_log: RateLimited,
    candidate_log: RateLimited,
    refusal_log: RateLimited,
}

enum Wake {
    Command(Option<Command>),
    Close(Option<Close>),
    Datagram(std::io::Result<(usize, SocketAddr)>),
    Frame(Option<(StreamKey, Arc<Picture>)>),
    Timer,
}

impl Engine {
    pub fn new(
        cfg: RtcConfig,
        stats: Arc<SharedStats>,
        candidates: Vec<SocketAddr>,
        shard: Shard,
    ) -> Engine {
        let fanout = Fanout::new(cfg.rtp_packet_size);
        let router = match &shard.steering {
            Some(steering) => Router::steered(steering.clone(), shard.index),
            None => Router::default(),
        };
        Engine {
            cfg,
            stats,
            candidates,
            peers: PeerMap::default(),
            connected: 0,
            router,
            fanout,
            audio_fanout: AudioFanout::default(),
            audio_receivers: Vec::new(),
            subscriptions: Subscriptions::default(),
            deadlines: Deadlines::default(),
            shard,
            dirty: PeerSet::default(),
            quiet: Vec::new(),
            outgoing: Vec::new(),
            notes: Vec::new(),
            garbage_log: RateLimited::new(PERIOD),
            candidate_log: RateLimited::new(PERIOD),
            refusal_log: RateLimited::new(PERIOD),
        }
    }

    pub async fn run(mut self, socket: Arc<EngineSocket>, inbox: Arc<Mutex<Inbox>>) {
        // Held for the loop's life; a panic releases it for the next loop.
        let mut inbox = inbox.lock_owned().await;
        let Inbox {
            commands,
            closes,
            datagrams,
        } = &mut *inbox;
        let mut buf = vec![0u8; RECV_BUFFER];
        // The access unit whose packets the next send puts on the wire: (taken, captured).
        let mut in_flight: Option<(Instant, u64)> = None;
        loop {
            self.settle(Instant::now());
            send_datagrams(&socket, &mut self.outgoing, &self.stats).await;
            if let Some((taken, capture_us)) = in_flight.take() {
                self.stats
                    .send_delay
                    .record(taken.elapsed().as_micros() as u64);
                let capture_to_send = clock::monotonic_us().saturating_sub(capture_us);
                self.stats.capture_to_send.record(capture_to_send);
                self.stats
                    .histograms
                    .send_delay
                    .observe(capture_to_send as f64 / 1e6);
            }
            self.publish_stats();

            let deadline = self.next_deadline(Instant::now());
            let wake = tokio::select! {
                cmd = commands.recv() => Wake::Command(cmd),
                close = closes.recv() => Wake::Close(close),
                res = next_datagram(&socket, datagrams, &mut buf) => Wake::Datagram(res),
                au = self.subscriptions.next() => Wake::Frame(au),
                _ = tokio::time::sleep_until(deadline.into()) => Wake::Timer,
            };
            let now = Instant::now();
            match wake {
                Wake::Command(None) | Wake::Close(None) => break,
                Wake::Close(Some(Close { id, reason })) => self.remove_peer(id, reason, false),
                Wake::Command(Some(Command::Shutdown { reply })) => {
                    self.close_all();
                    self.settle(now);
                    send_datagrams(&socket, &mut self.outgoing, &self.stats).await;
                    self.publish_stats();
                    let _ = reply.send(());
                    break;
                }
                Wake::Command(Some(cmd)) => self.handle_command(now, cmd),
                Wake::Datagram(Ok((len, from))) => self.handle_datagram(now, from, &buf[..len]),
                Wake::Datagram(Err(e)) => {
                    // ICMP errors (peer went away) surface here on some systems; not fatal.
                    tracing::debug!(error = %e, "UDP receive");
                }
                Wake::Frame(Some((sound, frame))) if self.audio_fanout.is_sound(sound) => {
                    self.send_audio(now, sound, &frame, &socket).await;
                }
                Wake::Frame(Some((stream, au))) => {
                    let frame = match &self.shard.frames {
                        Some(shared) => self.fanout.prepare_shared(now, stream, &au, shared),
                        None => self.fanout.prepare(now, stream, &au),
                    };
                    if let Some(frame) = frame {
                        if self.fan_out(now, stream, &frame, &socket).await > 0 {
                            in_flight = Some((now, au.capture_us));
                        }
                    }
                }
                // The last subscription ended; the next wait sleeps until a new one.
                Wake::Frame(None) => {}
                Wake::Timer => self.handle_timers(now),
            }
        }
        tracing::debug!("WebRTC engine stopped");
    }

    fn publish_stats(&self) {
        let counters = self.stats.shard(self.shard.index);
        counters.peers.store(self.peers.len(), Ordering::Relaxed);
        counters.connected.store(self.connected, Ordering::Relaxed);
    }

    /// When the loop must wake at the latest: the next catch-up step or peer deadline,
    /// read off the front of their ordered structures.
    fn next_deadline(&mut self, now: Instant) -> Instant {
        let far = now + Duration::from_secs(3600);
        let far = self.fanout.next_tick().map_or(far, |t| t.min(far));
        let peers = &self.peers;
        self.deadlines
            .compact(peers.len(), |d| deadline_holds(peers, d));
        self.deadlines
            .next(|d| deadline_holds(peers, d))
            .map_or(far, |t| t.min(far))
    }

    fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::CreateOffer {
                opts,
                egress,
                events,
                reply,
            } => {
                let result = self.create_offer_to(now, opts, egress, events);
                if let (true, Ok((id, _))) = (egress, &result) {
                    if let Some(e) = self.peers.get_mut(id) {
                        e.egress = true;
                    }
                }
                let _ = reply.send(result);
            }
            Command::AnswerOffer {
                opts,
                offer,
                events,
                reply,
            } => {
                let answered = self.answer_offer(now, opts, &offer, events);
                if let Err(e) = &answered {
                    tracing::info!(error = %e, "viewer's offer refused");
                }
                let _ = reply.send(answered);
            }
            Command::ApplyAnswer { id, sdp, reply } => {
                let result = match self.peers.get_mut(&id) {
                    Some(e) => e.peer.apply_answer(now, &sdp),
                    None => Err(RtcError::NoSuchPeer),
                };
                match &result {
                    Err(e @ RtcError::VideoRejected(_)) => {
                        // Nothing can be sent to this viewer: end it now rather than
                        // leave its ICE agent checking pairs with no media behind them.
                        tracing::warn!(peer = id, error = %e, "viewer declined the video");
                        self.remove_peer(id, &e.to_string(), true);
                    }
                    Err(e) => tracing::info!(peer = id, error = %e, "answer refused"),
                    Ok(()) => {}
                }
                self.dirty.insert(id);
                let _ = reply.send(result);
            }
            Command::AddCandidate { id, candidate } => {
                if let Some(e) = self.peers.get_mut(&id) {
                    match e.peer.add_remote_candidate(candidate) {
                        Ok(()) => {
                            self.dirty.insert(id);
                        }
                        Err(refusal) => self.candidate_refused(id, refusal),
                    }
                }
            }
            Command::RestartIce {
                id,
                offer,
                candidates,
                reply,
            } => {
                let result = self.restart_ice(now, id, &offer, candidates);
                match &result {
                    Ok(ice) => tracing::info!(peer = id, ufrag = %ice.ufrag, "ICE restarted"),
                    Err(e) => tracing::info!(peer = id, error = %e, "ICE restart refused"),
                }
                let _ = reply.send(result);
            }
            Command::RequestKeyframe { id } => {
                if let Some(e) = self.peers.get_mut(&id) {
                    if e.peer.request_keyframe(now) {
                        self.stats.plis_sent.fetch_add(1, Ordering::Relaxed);
                        self.dirty.insert(id);
                    }
                }
            }
            Command::Shutdown { .. } => {}
            #[cfg(test)]
            Command::Panic => panic!("engine panic requested by a test"),
        }
    }

    /// Restart a peer's ICE with the viewer's renegotiation offer, route it by its new
    /// credentials, and hand it the viewer's new candidates.
    fn restart_ice(
        &mut self,
        now: Instant,
        id: PeerId,
        offer: &str,
        candidates: Vec<String>,
    ) -> Result<LocalIce, RtcError> {
        let e = self.peers.get_mut(&id).ok_or(RtcError::NoSuchPeer)?;
        let answer = e.peer.restart_ice(now, offer)?;
        let ice = ice_restart::local_ice(&answer)
            .ok_or(RtcError::Internal("restart answer without ICE credentials"))?;
        let refusals: Vec<Refusal> = candidates
            .into_iter()
            .filter_map(|c| {
                e.peer
                    .add_remote_candidate(RemoteCandidate::Candidate(c))
                    .err()
            })
            .collect();
        self.dirty.insert(id);
        if !self
            .router
            .set_credentials(id, ice.ufrag.clone(), ice.pwd.clone())
        {
            // Only a ufrag another peer has (or a vanished route) gets here: the peer
            // could no longer be reached, so it ends.
            self.remove_peer(id, "ICE restart credentials unusable", true);
            return Err(RtcError::Internal("ICE restart credentials unusable"));
        }
        for refusal in refusals {
            self.candidate_refused(id, refusal);
        }
        Ok(ice)
    }

    fn candidate_refused(&mut self, id: PeerId, refusal: Refusal) {
        let Some(times) = self.candidate_log.hit() else {
            return;
        };
        let reason = refusal.as_str();
        // Over the budget only a misbehaving client gets; the rest is ordinary (mDNS
        // names, TCP candidates, addresses a loopback server cannot reach).
        if refusal == Refusal::OverBudget {
            tracing::info!(peer = id, reason, times, "remote ICE candidate dropped");
        } else {
            tracing::debug!(peer = id, reason, times, "remote ICE candidate dropped");
        }
    }

    #[cfg(test)]
    fn create_offer(
        &mut self,
        now: Instant,
        opts: PeerOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<(PeerId, String), RtcError> {
        self.create_offer_to(now, opts, false, events)
    }

    /// An offer to a viewer, or with `egress` to a server the stream is forwarded to.
    fn create_offer_to(
        &mut self,
        now: Instant,
        opts: PeerOptions,
        egress: bool,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<(PeerId, String), RtcError> {
        self.admit()?;
        let (id, mut setup) = self.peer_setup(&opts);
        // The server we forward to picks from what we offer; whatever it can do is fine.
        setup.aead_only &= !egress;
        let credentials = (setup.ufrag.clone(), setup.pwd.clone());
        let (peer, offer) = Peer::offer(setup, now).inspect_err(|_| self.release_seat())?;
        self.register(id, credentials, peer, &opts, events);
        tracing::debug!(peer = id, "offer created");
        Ok((id, offer))
    }

    fn answer_offer(
        &mut self,
        now: Instant,
        opts: PeerOptions,
        offer: &str,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<(PeerId, String), RtcError> {
        self.admit()?;
        // A viewer that sends no microphone: the offer's audio section only takes sound.
        let opts = PeerOptions { mic: None, ..opts };
        let (id, setup) = self.peer_setup(&opts);
        let made = Peer::answer(setup, offer, now).and_then(|(peer, answer)| {
            // The stack made the credentials (see `Peer::answer`): route by those.
            let credentials = ice_restart::ice_credentials(&answer)
                .ok_or(RtcError::Internal("answer without ICE credentials"))?;
            Ok((peer, answer, credentials))
        });
        let (peer, answer, credentials) = made.inspect_err(|_| self.release_seat())?;
        // Sound it did not take is not listened to.
        let opts = PeerOptions {
            audio: opts.audio.filter(|_| peer.sends_audio()),
            ..opts
        };
        self.register(id, credentials, peer, &opts, events);
        tracing::debug!(peer = id, "offer answered");
        Ok((id, answer))
    }

    /// Take a seat for a new peer, or refuse it beyond `max_viewers` (all shards
    /// together).
    fn admit(&mut self) -> Result<(), RtcError> {
        if self.stats.take_seat(self.shard.index, self.cfg.max_viewers) {
            return Ok(());
        }
        rejections::count(Rejection::ViewerCap);
        if let Some(times) = self.refusal_log.hit() {
            tracing::warn!(
                max_viewers = self.cfg.max_viewers,
                times,
                "viewer refused: --max-viewers reached"
            );
        }
        Err(RtcError::TooManyViewers(self.cfg.max_viewers))
    }

    /// Give back the seat of a peer gone or never made.
    fn release_seat(&self) {
        self.stats.release_seat(self.shard.index);
    }

    /// A fresh id, ICE credentials, SSRCs and the rest of what a new peer of `opts` is
    /// made with.
    fn peer_setup(&mut self, opts: &PeerOptions) -> (PeerId, PeerSetup) {
        let profile_level_id = opts
            .stream
            .params()
            .and_then(|p| sdp::profile_level_id(&p.sps))
            .unwrap_or_else(|| sdp::DEFAULT_PROFILE_LEVEL_ID.to_string());
        let (ufrag, pwd) = self.router.new_credentials();
        // Taken before the peer is made: it names the viewer as a talker too. An id lost
        // to a failed offer is simply never used.
        let id = self.shard.next_id();
        let ssrc = rand::rng().random_range(1..=u32::MAX);
        let audio = (opts.audio.is_some() || opts.mic.is_some()).then(|| AudioSetup {
            // Its own SSRC, never the video's: feedback is told apart by it.
            ssrc: loop {
                let s = rand::rng().random_range(1..=u32::MAX);
                if s != ssrc {
                    break s;
                }
            },
            payload_type: crate::media::audio::OPUS_PAYLOAD_TYPE,
            send: opts.audio.is_some(),
            mic: opts.mic.clone().map(|mic| (mic, id)),
        });
        let setup = PeerSetup {
            ufrag,
            pwd,
            ssrc,
            profile_level_id,
            candidates: self.candidates.clone(),
            orientation: opts.orientation,
            loopback_only: self.cfg.bind.is_loopback(),
            audio,
            publisher: opts.publisher.clone(),
            // A publisher (OBS, GStreamer, ffmpeg) may lack AES-GCM; its packets are few.
            aead_only: self.cfg.srtp_aead_only && opts.publisher.is_none(),
        };
        (id, setup)
    }

    /// Take a new peer in: routed by its ICE credentials, a viewer of its stream (and
    /// a listener of its sound), dropped if it is not in use by [`OFFER_TIMEOUT`].
    fn register(
        &mut self,
        id: PeerId,
        (ufrag, pwd): (String, String),
        peer: Peer,
        opts: &PeerOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) {
        self.router.add(id, ufrag, pwd);
        // A publisher watches nothing.
        let watches = opts.publisher.is_none();
        // The stream's first viewer subscribes to it: a subscription keeps the source
        // busy, so there is one only while the stream has peers. It starts with the
        // hub's GOP, to have it cached for the first viewers.
        if watches && self.fanout.add_viewer(id, &opts.stream) {
            self.subscriptions.subscribe(&opts.stream);
        }
        // Its sound is listened to only once it connects.
        if let Some(sound) = &opts.audio {
            self.audio_fanout.add_listener(id, sound);
        }
        self.deadlines.push(Deadline {
            at: peer.created + OFFER_TIMEOUT,
            peer: id,
            due: Due::OfferExpiry,
        });
        // Boxed: a peer's state is kilobytes, and the table's spare buckets and its
        // doubling when it grows would otherwise hold that much for absent peers too.
        self.peers.insert(
            id,
            Box::new(Entry {
                peer,
                events,
                next_timeout: None,
                connected: false,
                announced: false,
                egress: false,
            }),
        );
        self.dirty.insert(id);
        self.publish_stats();
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        match self.router.route(from, data, &self.cfg.allow_ip) {
            Ok(id) => {
                if let Some(e) = self.peers.get_mut(&id) {
                    e.peer
                        .handle_datagram(now, from, data, self.router.ice_pwd(id));
                    self.dirty.insert(id);
                }
            }
            Err(why) => {
                if why == Unrouted::NotAllowed {
                    rejections::count(Rejection::AllowIp);
                }
                self.garbage(from, data.len(), why.as_str());
            }
        }
    }

    /// Count a dropped datagram; one debug line per period says how many.
    fn garbage(&mut self, from: SocketAddr, len: usize, why: &'static str) {
        if let Some(times) = self.garbage_log.hit() {
            tracing::debug!(%from, len, why, times, "datagram dropped");
        }
    }

    /// Everything due at `now`: the catch-up step, peer timers, offers expiring.
    fn handle_timers(&mut self, now: Instant) {
        let mut table = PeerTable {
            peers: &mut self.peers,
            dirty: &mut self.dirty,
            quiet: &mut self.quiet,
        };
        let sent = self.fanout.catch_up(now, &mut table, &mut self.outgoing);
        self.stats
            .rtp_packets_sent
            .fetch_add(sent, Ordering::Relaxed);
        loop {
            let peers = &self.peers;
            let Some(due) = self.deadlines.pop_due(now, |d| deadline_holds(peers, d)) else {
                break;
            };
            match due.due {
                Due::OfferExpiry => {
                    let unanswered = self
                        .peers
                        .get(&due.peer)
                        .is_some_and(|e| e.peer.awaiting_answer());
                    let reason = if unanswered {
                        "Offer timed out"
                    } else {
                        "ICE timed out"
                    };
                    self.remove_peer(due.peer, reason, true)
                }
                Due::Timer => {
                    if let Some(e) = self.peers.get_mut(&due.peer) {
                        e.next_timeout = None;
                        e.peer.handle_timeout(now);
                        self.dirty.insert(due.peer);
                    }
                }
            }
        }
    }

    /// Send `frame` to the receivers of the stream `key`, in groups of about
    /// [`FAN_OUT_PACKETS`] packets; returns packets sent.
    async fn fan_out(
        &mut self,
        now: Instant,
        key: StreamKey,
        frame: &Arc<OutFrame>,
        socket: &EngineSocket,
    ) -> u64 {
        let mut sent = 0;
        let mut from = Some(0);
        while let Some(start) = from {
            let mut table = PeerTable {
                peers: &mut self.peers,
                dirty: &mut self.dirty,
                quiet: &mut self.quiet,
            };
            let progress = self.fanout.send_picture(
                now,
                key,
                frame,
                (start, FAN_OUT_PACKETS),
                &mut table,
                &mut self.outgoing,
            );
            self.stats
                .rtp_packets_sent
                .fetch_add(progress.packets, Ordering::Relaxed);
            sent += progress.packets;
            send_datagrams(socket, &mut self.outgoing, &self.stats).await;
            from = progress.next;
        }
        sent
    }

    /// Send one frame of the sound `key` to its connected listeners,
    /// [`AUDIO_FAN_OUT_PEERS`] at a time: the Opus payload shared, stamped and encrypted
    /// per viewer.
    async fn send_audio(
        &mut self,
        now: Instant,
        key: StreamKey,
        frame: &Picture,
        socket: &EngineSocket,
    ) {
        let Some(out) = OutAudio::from_frame(frame, self.cfg.rtp_packet_size) else {
            if let Some(times) = self.garbage_log.hit() {
                let len = frame.data.len();
                tracing::warn!(
                    len,
                    times,
                    "audio frame empty or too big for a packet: dropped"
                );
            }
            return;
        };
        let mut receivers = std::mem::take(&mut self.audio_receivers);
        receivers.clear();
        receivers.extend_from_slice(self.audio_fanout.receivers(key));
        for group in receivers.chunks(AUDIO_FAN_OUT_PEERS) {
            let mut sent = 0;
            for &id in group {
                if let Some(e) = self.peers.get_mut(&id) {
                    sent += e.peer.write_audio(now, &out, &mut self.outgoing);
                    to_read_again(id, &mut e.peer, &mut self.dirty, &mut self.quiet);
                }
            }
            self.stats
                .rtp_packets_sent
                .fetch_add(sent, Ordering::Relaxed);
            self.stats
                .audio_packets_sent
                .fetch_add(sent, Ordering::Relaxed);
            send_datagrams(socket, &mut self.outgoing, &self.stats).await;
        }
        self.audio_receivers = receivers;
    }

    /// Drive every peer touched since the last call: collect its datagrams, act on its
    /// state changes and keyframe requests, refresh its timer.
    fn settle(&mut self, now: Instant) {
        // Kept between calls: notes come with every keyframe and report, and the buffer
        // is not to be allocated each time.
        let mut notes = std::mem::take(&mut self.notes);
        let mut gone = Vec::new();
        for id in std::mem::take(&mut self.dirty) {
            let Some(e) = self.peers.get_mut(&id) else {
                continue;
            };
            e.peer.poll_notes(&mut notes);
            for note in notes.drain(..) {
                if let PeerNote::Gone(reason) = note {
                    gone.push((id, reason));
                } else {
                    self.handle_note(now, id, note);
                }
            }
            let Some(e) = self.peers.get_mut(&id) else {
                continue;
            };
            e.peer.drain_writes(&mut self.outgoing);
            let timeout = e.peer.poll_timeout();
            schedule(&mut self.deadlines, id, e, timeout);
        }
        // Read after the others: one also touched otherwise was read in full above, and
        // reading our side again finds nothing new.
        let mut quiet = std::mem::take(&mut self.quiet);
        for id in quiet.drain(..) {
            let Some(e) = self.peers.get_mut(&id) else {
                continue;
            };
            e.peer.own_notes(&mut notes);
            let timeout = e.peer.poll_timeout_untouched();
            schedule(&mut self.deadlines, id, e, timeout);
            for note in notes.drain(..) {
                self.handle_note(now, id, note);
            }
        }
        // Notes acted on may have stamped peers again: they wait for the next turn.
        quiet.append(&mut self.quiet);
        self.quiet = quiet;
        self.notes = notes;
        for (id, reason) in gone {
            self.remove_peer(id, &reason, true);
        }
    }

    fn handle_note(&mut self, now: Instant, id: PeerId, note: PeerNote) {
        match note {
            PeerNote::Connected => {
                tracing::info!(peer = id, "viewer connected");
                let mut table = PeerTable {
                    peers: &mut self.peers,
                    dirty: &mut self.dirty,
                    quiet: &mut self.quiet,
                };
                match self
                    .fanout
                    .connected(now, id, &mut table, &mut self.outgoing)
                {
                    Start::FromGop { packets } => {
                        self.stats
                            .rtp_packets_sent
                            .fetch_add(packets, Ordering::Relaxed);
                    }
                    Start::AtNextKeyframe => {
                        if let Some(hub) = self.fanout.hub_of(id) {
                            hub.request_keyframe();
                        }
                    }
                }
                // Sound has no keyframes to wait for: it starts with the next frame.
                let hears = self.peers.get(&id).is_some_and(|e| e.peer.sends_audio());
                if hears {
                    if let Some(sound) = self.audio_fanout.connected(id) {
                        self.subscriptions
                            .subscribe_from(&sound, StartAt::NextKeyframe);
                    }
                }
                if let Some(e) = self.peers.get_mut(&id) {
                    if !e.connected {
                        e.connected = true;
                        self.connected += 1;
                    }
                    if !e.announced {
                        e.announced = true;
                        let _ = e.events.send(PeerEvent::Connected);
                    }
                }
            }
            PeerNote::Disconnected => {
                tracing::info!(peer = id, "viewer disconnected");
                self.fanout.disconnected(id);
                if let Some(sound) = self.audio_fanout.disconnected(id) {
                    self.subscriptions.unsubscribe(sound);
                }
                if let Some(e) = self.peers.get_mut(&id) {
                    if e.connected {
                        e.connected = false;
                        self.connected -= 1;
                    }
                }
            }
            PeerNote::KeyframeRequest(kind) => {
                tracing::debug!(peer = id, ?kind, "keyframe requested by viewer");
                self.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                let counter = match kind {
                    KeyframeRequest::Pli => &self.stats.plis_received,
                    KeyframeRequest::Fir => &self.stats.firs_received,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let egress = self.peers.get(&id).is_some_and(|e| e.egress);
                if let Some(hub) = self.fanout.hub_of(id) {
                    if egress {
                        hub.request_keyframe_for_egress();
                    } else {
                        hub.request_keyframe();
                    }
                }
            }
            PeerNote::DirectSrtp { taken_over } => {
                let counter = if taken_over {
                    &self.stats.direct_srtp_streams
                } else {
                    &self.stats.direct_srtp_refused
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            PeerNote::Nack { resent } => {
                self.stats.nacks_received.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .retransmitted_packets
                    .fetch_add(resent, Ordering::Relaxed);
            }
            PeerNote::ReceiverReport {
                fraction_lost,
                jitter,
            } => {
                let h = &self.stats.histograms;
                h.receiver_loss.observe(f64::from(fraction_lost) / 256.0);
                h.receiver_jitter
                    .observe(f64::from(jitter) / f64::from(packetizer::CLOCK_RATE));
            }
            PeerNote::KeyframesSent {
                count,
                time_to_first,
            } => {
                self.stats
                    .keyframes_sent
                    .fetch_add(count, Ordering::Relaxed);
                if let Some(ttff) = time_to_first {
                    self.stats
                        .histograms
                        .time_to_first_frame
                        .observe(ttff.as_secs_f64());
                }
            }
            PeerNote::Mic {
                handed,
                dropped,
                started,
            } => {
                self.stats
                    .mic_packets_received
                    .fetch_add(handed, Ordering::Relaxed);
                self.stats
                    .mic_packets_dropped
                    .fetch_add(dropped, Ordering::Relaxed);
                if let Some(e) = self.peers.get(&id).filter(|_| started) {
                    tracing::info!(peer = id, "viewer's microphone sound arriving");
                    let mid = e.peer.audio_mid().to_string();
                    let _ = e.events.send(PeerEvent::MicReceiving { mid });
                }
            }
            // Handled by the caller, once the peer's notes are read.
            PeerNote::Gone(_) => {}
        }
    }

    /// Drop a peer, logging one "viewer gone" line with `reason` whatever the path
    /// (hangup, closed WebSocket, expired session, ICE failure, DTLS alert, ...);
    /// `notify` tells its owner with a [`PeerEvent::Closed`]. Its deadlines are left to
    /// lapse (see [`Deadlines`]).
    fn remove_peer(&mut self, id: PeerId, reason: &str, notify: bool) {
        let Some(mut e) = self.peers.remove(&id) else {
            return;
        };
        tracing::info!(peer = id, %reason, "viewer gone");
        self.release_seat();
        e.peer.close();
        e.peer.drain_writes(&mut self.outgoing);
        self.router.remove(id);
        self.dirty.remove(&id);
        if e.connected {
            self.connected -= 1;
        }
        // Counted off at once in `/state` and `/metrics`.
        self.publish_stats();
        // The stream's last viewer ends the subscription, so its source idles; the last
        // listener of its sound closes the capture the same way.
        if let Some(stream) = self.fanout.remove_viewer(id) {
            self.subscriptions.unsubscribe(stream);
        }
        if let Some(sound) = self.audio_fanout.remove_listener(id) {
            self.subscriptions.unsubscribe(sound);
        }
        if let Some((mic, talker)) = e.peer.mic() {
            mic.left(*talker);
        }
        if notify {
            let _ = e.events.send(PeerEvent::Closed {
                reason: reason.to_string(),
            });
        }
    }

    fn close_all(&mut self) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.remove_peer(id, "server shutting down", false);
        }
    }
}

/// Queue a peer just written to for [`Engine::settle`]: in full if its stack was
/// handed anything, else only our side of it.
fn to_read_again(id: PeerId, peer: &mut Peer, dirty: &mut PeerSet, quiet: &mut Vec<PeerId>) {
    if peer.take_stack_touched() {
        dirty.insert(id);
    } else {
        quiet.push(id);
    }
}

/// Set the peer's timer to `timeout`, if it moved.
fn schedule(deadlines: &mut Deadlines, id: PeerId, e: &mut Entry, timeout: Option<Instant>) {
    if timeout != e.next_timeout {
        e.next_timeout = timeout;
        if let Some(at) = timeout {
            deadlines.push(Deadline {
                at,
                peer: id,
                due: Due::Timer,
            });
        }
    }
}

/// Whether a deadline still stands: its peer is there, and its timer has not moved
/// (or fired) since, or its offer is still unanswered.
fn deadline_holds(peers: &PeerMap<Box<Entry>>, d: &Deadline) -> bool {
    peers.get(&d.peer).is_some_and(|e| match d.due {
        Due::Timer => e.next_timeout == Some(d.at),
        Due::OfferExpiry => e.peer.pending(),
    })
}

/// The next datagram for this shard: from its queue when datagrams are steered to it,
/// otherwise read off the socket. A closed queue (the server stopping) never yields.
async fn next_datagram(
    socket: &EngineSocket,
    queue: &mut Option<mpsc::Receiver<Incoming>>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    let Some(queue) = queue else {
        return socket.recv_from(buf).await;
    };
    match queue.recv().await {
        Some((from, data)) => {
            let len = data.len().min(buf.len());
            buf[..len].copy_from_slice(&data[..len]);
            Ok((len, from))
        }
        None => std::future::pending().await,
    }
}

/// Put queued datagrams on the wire and count them. All sends go through here; they
/// leave in sendmmsg batches (see [`udp`]).
async fn send_datagrams(socket: &EngineSocket, out: &mut Datagrams, stats: &SharedStats) {
    if out.is_empty() {
        return;
    }
    let sent = udp::send_all(socket, out).await;
    srtp_gcm::reuse_send_buffer();
    stats
        .datagrams_sent
        .fetch_add(sent.datagrams, Ordering::Relaxed);
    stats.bytes_sent.fetch_add(sent.bytes, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Hub;
    use crate::rtc::demux;

    fn engine() -> Engine {
        let cfg = RtcConfig::loopback(2);
        let candidates = vec![SocketAddr::from(([127, 0, 0, 1], 40000))];
        Engine::new(cfg, Arc::default(), candidates, Shard::single())
    }

    #[test]
    fn unanswered_offer_expires_with_an_event() {
        let mut engine = engine();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t0 = Instant::now();
        let (id, offer) = engine
            .create_offer(t0, PeerOptions::new(Hub::new(4)), tx)
            .expect("offer");
        assert!(offer.contains("a=candidate:"));
        engine.settle(Instant::now());
        assert!(engine.next_deadline(t0) <= t0 + OFFER_TIMEOUT);
        engine.handle_timers(t0 + OFFER_TIMEOUT - Duration::from_secs(1));
        assert!(engine.peers.contains_key(&id));
        engine.handle_timers(t0 + OFFER_TIMEOUT + Duration::from_millis(1));
        assert!(engine.peers.is_empty() && engine.router.is_empty());
        assert!(matches!(rx.try_recv(), Ok(PeerEvent::Closed { .. })));
    }

    #[tokio::test]
    async fn an_answered_offer_whose_viewer_never_connects_expires_with_an_event() {
        let mut engine = engine();
        let (_viewer, offer) = crate::viewer::receiver::ReceiverPeer::offer(Default::default())
            .await
            .expect("the viewer offers");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t0 = Instant::now();
        let (id, answer) = engine
            .answer_offer(t0, PeerOptions::new(Hub::new(4)), &offer, tx)
            .expect("answer");
        assert!(answer.contains("a=candidate:"));
        engine.settle(Instant::now());
        engine.handle_timers(t0 + OFFER_TIMEOUT - Duration::from_secs(1));
        assert!(
            engine.peers.contains_key(&id),
            "still waiting for the viewer"
        );
        engine.handle_timers(t0 + OFFER_TIMEOUT + Duration::from_millis(1));
        assert!(engine.peers.is_empty() && engine.router.is_empty());
        let closed = rx.try_recv();
        assert!(
            matches!(&closed, Ok(PeerEvent::Closed { reason }) if reason == "ICE timed out"),
            "{closed:?}"
        );
    }

    #[test]
    fn a_removed_peer_leaves_no_route_stream_or_deadline() {
        let mut engine = engine();
        let hub = Hub::new(4);
        let (tx, _rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let (id, offer) = engine
            .create_offer(now, PeerOptions::new(hub.clone()), tx)
            .expect("offer");
        assert!(hub.has_subscribers(), "a viewer's stream is subscribed");
        let attr = |name: &str| {
            offer
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::to_string)
                .expect(name)
        };
        let (ufrag, pwd) = (attr("a=ice-ufrag:"), attr("a=ice-pwd:"));
        let signed =
            demux::signed_binding_request(&format!("{ufrag}:remote"), Some(pwd.as_bytes()));
        let from = SocketAddr::from(([127, 0, 0, 1], 50000));
        engine.handle_datagram(now, from, &signed);
        assert_eq!(engine.router.peer_at(from), Some(id));
        // Garbage from that address goes to the same peer and must not hurt it.
        engine.handle_datagram(now, from, &[0xff; 64]);
        engine.settle(Instant::now());
        assert!(engine.peers.contains_key(&id));

        engine.remove_peer(id, "test", false);
        assert!(engine.router.is_empty());
        assert!(engine.fanout.hub_of(id).is_none());
        assert_eq!(engine.next_deadline(now), now + Duration::from_secs(3600));
        assert_eq!(engine.deadlines.len(), 0, "its deadlines lapsed");
    }

    #[test]
    fn offers_beyond_max_viewers_are_refused() {
        let mut engine = engine();
        let now = Instant::now();
        let hub = Hub::new(4);
        let (tx, _rx) = mpsc::unbounded_channel();
        let (first, _) = engine
            .create_offer(now, PeerOptions::new(hub.clone()), tx.clone())
            .expect("offer");
        engine
            .create_offer(now, PeerOptions::new(hub.clone()), tx.clone())
            .expect("offer");
        let refused = engine.create_offer(now, PeerOptions::new(hub.clone()), tx.clone());
        assert!(matches!(refused, Err(RtcError::TooManyViewers(2))));
        engine.remove_peer(first, "test", false);
        let (third, _) = engine
            .create_offer(now, PeerOptions::new(hub), tx)
            .expect("room again after a viewer left");
        assert!(third > first + 1, "ids are never reused");
    }
}
