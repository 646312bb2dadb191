//! The engine loop: one task owning the UDP socket, every peer, and a subscription to
//! the hub of each stream being watched. Everything that touches a peer connection
//! happens here, so no locks are needed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::Rng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::candidates::Refusal;
use super::extensions;
use super::gop::GopCache;
use super::latency::Histogram;
use super::packetizer;
use super::peer::{self, KeyframeRequest, OutFrame, Peer, PeerNote, PeerSetup};
use super::subscriptions::{stream_key, StreamKey, Subscriptions};
use super::{demux, sdp, udp};
use super::{PeerEvent, PeerId, PeerOptions, RemoteCandidate, RtcConfig, RtcError, RtcStats};
use crate::media::{clock, Hub, Picture};
use crate::metrics::histograms::WebrtcHistograms;
use crate::metrics::rejections::{self, Rejection};
use crate::ratelog::{RateLimited, PERIOD};

/// An offer not answered within this time is dropped.
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest datagram we accept; anything longer is not WebRTC traffic we can use.
const RECV_BUFFER: usize = 2048;

/// A viewer starting from the cached GOP gets it in steps of this many packets (whole
/// frames, at least one) every [`CATCH_UP_TICK`]: about 30 Mbit/s, so a 2 s GOP of a
/// 2 Mbit/s stream is through in under 200 ms without one burst overflowing the
/// viewer's receive buffer.
const CATCH_UP_PACKETS: usize = 16;
const CATCH_UP_TICK: Duration = Duration::from_millis(5);

/// A picture goes out to this many viewers at a time, their datagrams handed to the
/// kernel before the next ones are encrypted: the datagrams waiting in memory stay
/// bounded by this instead of growing with the audience (a keyframe is tens of
/// packets per viewer), and the first viewers' packets leave sooner.
const FAN_OUT_PEERS: usize = 32;

/// Remote addresses one peer may be reached from (a browser checks from each of its
/// interfaces); more would only be someone spoofing sources with the viewer's password.
const MAX_ADDRS_PER_PEER: usize = 16;

pub enum Command {
    CreateOffer {
        opts: PeerOptions,
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
}

/// Counters readable without asking the loop. Only the loop writes them, once per batch
/// of datagrams or per RTCP message, never per packet.
#[derive(Default)]
pub struct SharedStats {
    pub peers: AtomicUsize,
    pub connected: AtomicUsize,
    pub rtp_packets_sent: AtomicU64,
    /// Every datagram handed to the kernel (RTP, RTCP, DTLS, STUN) and its bytes.
    pub datagrams_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Keyframes handed out, counted once per viewer.
    pub keyframes_sent: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub plis_received: AtomicU64,
    pub firs_received: AtomicU64,
    pub nacks_received: AtomicU64,
    /// Packets the NACK responder sends again (those of a NACK still in its history).
    pub retransmitted_packets: AtomicU64,
    pub histograms: WebrtcHistograms,
    /// Access unit taken from the hub → its last RTP packet handed to the kernel.
    pub send_delay: Histogram,
    /// Access unit capture (for byte-stream sources: its arrival) → last RTP packet
    /// handed to the kernel; includes time queued in the hub.
    pub capture_to_send: Histogram,
}

impl SharedStats {
    pub fn snapshot(&self) -> RtcStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RtcStats {
            peers: self.peers.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            rtp_packets_sent: load(&self.rtp_packets_sent),
            datagrams_sent: load(&self.datagrams_sent),
            bytes_sent: load(&self.bytes_sent),
            keyframes_sent: load(&self.keyframes_sent),
            keyframe_requests: load(&self.keyframe_requests),
            plis_received: load(&self.plis_received),
            firs_received: load(&self.firs_received),
            nacks_received: load(&self.nacks_received),
            retransmitted_packets: load(&self.retransmitted_packets),
            send_delay_us: self.send_delay.snapshot(),
            capture_to_send_us: self.capture_to_send.snapshot(),
        }
    }
}

struct Entry {
    peer: Peer,
    events: mpsc::UnboundedSender<PeerEvent>,
    /// The stream the viewer watches.
    stream: StreamKey,
    ufrag: String,
    /// Our ICE password: the key of the checks that bind an address to this peer.
    pwd: String,
    addrs: Vec<SocketAddr>,
    next_timeout: Option<Instant>,
    /// `Connected` was reported; an ICE reconnect after Disconnected is not reported again.
    announced: bool,
}

/// A stream with at least one peer: its hub, the GOP cached from it, its peers.
struct Stream {
    hub: Arc<Hub>,
    gop: GopCache,
    peers: HashSet<PeerId>,
}

pub struct Engine {
    cfg: RtcConfig,
    stats: Arc<SharedStats>,
    /// Advertised host candidates (NAT substitution applied).
    candidates: Vec<SocketAddr>,
    peers: HashMap<PeerId, Entry>,
    by_ufrag: HashMap<String, PeerId>,
    by_addr: HashMap<SocketAddr, PeerId>,
    /// Shared with the supervisor, so ids stay unique across restarts.
    next_id: Arc<AtomicU64>,
    dirty: HashSet<PeerId>,
    outgoing: Vec<(SocketAddr, BytesMut)>,
    /// What peers told in [`Engine::settle`], emptied each time.
    notes: Vec<PeerNote>,
    /// The streams being watched, and the subscriptions to their hubs.
    streams: HashMap<StreamKey, Stream>,
    subscriptions: Subscriptions,
    /// Peers still sending the cached GOP, and when their next step is due.
    catching_up: HashSet<PeerId>,
    next_catch_up: Option<Instant>,
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
        next_id: Arc<AtomicU64>,
    ) -> Engine {
        Engine {
            cfg,
            stats,
            candidates,
            peers: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            next_id,
            dirty: HashSet::new(),
            outgoing: Vec::new(),
            notes: Vec::new(),
            streams: HashMap::new(),
            subscriptions: Subscriptions::default(),
            catching_up: HashSet::new(),
            next_catch_up: None,
            garbage_log: RateLimited::new(PERIOD),
            candidate_log: RateLimited::new(PERIOD),
            refusal_log: RateLimited::new(PERIOD),
        }
    }

    pub async fn run(mut self, socket: Arc<UdpSocket>, inbox: Arc<Mutex<Inbox>>) {
        // Held for the loop's life; a panic releases it for the next loop.
        let mut inbox = inbox.lock_owned().await;
        let Inbox { commands, closes } = &mut *inbox;
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

            let deadline = self.next_deadline();
            let wake = tokio::select! {
                cmd = commands.recv() => Wake::Command(cmd),
                close = closes.recv() => Wake::Close(close),
                res = socket.recv_from(&mut buf) => Wake::Datagram(res),
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
                Wake::Frame(Some((stream, au))) => {
                    if let Some(frame) = self.prepare_frame(now, stream, &au) {
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
        self.stats.peers.store(self.peers.len(), Ordering::Relaxed);
        let connected = self
            .peers
            .values()
            .filter(|e| e.peer.is_connected())
            .count();
        self.stats.connected.store(connected, Ordering::Relaxed);
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let far = self.next_catch_up.map_or(far, |t| t.min(far));
        self.peers
            .values()
            .flat_map(|e| {
                let offer_expiry = e
                    .peer
                    .awaiting_answer()
                    .then_some(e.peer.created + OFFER_TIMEOUT);
                [e.next_timeout, offer_expiry]
            })
            .flatten()
            .fold(far, Instant::min)
    }

    fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::CreateOffer {
                opts,
                events,
                reply,
            } => {
                let _ = reply.send(self.create_offer(now, opts, events));
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
            Command::Shutdown { .. } => {}
            #[cfg(test)]
            Command::Panic => panic!("engine panic requested by a test"),
        }
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

    fn create_offer(
        &mut self,
        now: Instant,
        opts: PeerOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<(PeerId, String), RtcError> {
        if self.peers.len() >= self.cfg.max_viewers {
            rejections::count(Rejection::ViewerCap);
            if let Some(times) = self.refusal_log.hit() {
                tracing::warn!(
                    max_viewers = self.cfg.max_viewers,
                    times,
                    "viewer refused: --max-viewers reached"
                );
            }
            return Err(RtcError::TooManyViewers(self.cfg.max_viewers));
        }
        let profile_level_id = opts
            .stream
            .params()
            .and_then(|p| sdp::profile_level_id(&p.sps))
            .unwrap_or_else(|| sdp::DEFAULT_PROFILE_LEVEL_ID.to_string());
        let mut ufrag = peer::ice_token(16);
        while self.by_ufrag.contains_key(&ufrag) {
            ufrag = peer::ice_token(16);
        }
        let pwd = peer::ice_token(32);
        let setup = PeerSetup {
            ufrag: ufrag.clone(),
            pwd: pwd.clone(),
            ssrc: rand::rng().random_range(1..=u32::MAX),
            profile_level_id,
            candidates: self.candidates.clone(),
            orientation: opts.orientation,
            loopback_only: self.cfg.bind.is_loopback(),
        };
        let (peer, offer) = Peer::offer(setup, now)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.by_ufrag.insert(ufrag.clone(), id);
        let stream = self.watch(id, &opts.stream);
        self.peers.insert(
            id,
            Entry {
                peer,
                events,
                stream,
                ufrag,
                pwd,
                addrs: Vec::new(),
                next_timeout: None,
                announced: false,
            },
        );
        self.dirty.insert(id);
        tracing::debug!(peer = id, "offer created");
        Ok((id, offer))
    }

    /// Route a datagram to its peer. An address is bound to a peer only by a STUN check
    /// carrying our ufrag and a MESSAGE-INTEGRITY made with our password, so nobody but
    /// the viewer (who got both in the offer) can make the engine route, answer or
    /// keep state for an address; everything else from unknown addresses is dropped here.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let id = match self.by_addr.get(&from) {
            Some(id) => *id,
            // Before the HMAC: a refused address costs a lookup, not a digest.
            None if !self.cfg.allow_ip.allows(from.ip()) => {
                crate::metrics::rejections::count(crate::metrics::rejections::Rejection::AllowIp);
                self.garbage(from, data.len(), "address not allowed (--allow-ip)");
                return;
            }
            None => match self.authenticated_peer(data) {
                Some(id) => {
                    let e = self.peers.get_mut(&id).expect("routed peers exist");
                    if e.addrs.len() >= MAX_ADDRS_PER_PEER {
                        self.garbage(from, data.len(), "viewer has too many addresses");
                        return;
                    }
                    e.addrs.push(from);
                    self.by_addr.insert(from, id);
                    id
                }
                None => {
                    self.garbage(from, data.len(), "not a viewer's authenticated check");
                    return;
                }
            },
        };
        if !demux::is_webrtc(data) {
            self.garbage(from, data.len(), "neither STUN, DTLS nor RTP");
            return;
        }
        if let Some(e) = self.peers.get_mut(&id) {
            e.peer.handle_datagram(now, from, data);
            self.dirty.insert(id);
        }
    }

    /// The peer a STUN binding request is for, if it names the peer's ufrag and its
    /// MESSAGE-INTEGRITY checks out with the peer's password.
    fn authenticated_peer(&self, data: &[u8]) -> Option<PeerId> {
        let id = *self.by_ufrag.get(demux::stun_local_ufrag(data)?)?;
        let e = self.peers.get(&id)?;
        demux::stun_request_authentic(data, e.pwd.as_bytes()).then_some(id)
    }

    /// Count a dropped datagram; one debug line per period says how many.
    fn garbage(&mut self, from: SocketAddr, len: usize, why: &'static str) {
        if let Some(times) = self.garbage_log.hit() {
            tracing::debug!(%from, len, why, times, "datagram dropped");
        }
    }

    fn handle_timers(&mut self, now: Instant) {
        if self.next_catch_up.is_some_and(|t| t <= now) {
            self.send_catch_up(now);
        }
        let mut expired = Vec::new();
        for (id, e) in self.peers.iter_mut() {
            if e.peer.awaiting_answer() && now >= e.peer.created + OFFER_TIMEOUT {
                expired.push(*id);
                continue;
            }
            if e.next_timeout.is_some_and(|t| t <= now) {
                e.peer.handle_timeout(now);
                self.dirty.insert(*id);
            }
        }
        for id in expired {
            self.remove_peer(id, "Offer timed out", true);
        }
    }

    /// Next step of every catch-up in progress.
    fn send_catch_up(&mut self, now: Instant) {
        let mut sent = 0;
        self.catching_up.retain(|id| {
            let Some(e) = self.peers.get_mut(id) else {
                return false;
            };
            sent += e
                .peer
                .send_catch_up(now, CATCH_UP_PACKETS, &mut self.outgoing);
            self.dirty.insert(*id);
            e.peer.is_catching_up()
        });
        self.stats
            .rtp_packets_sent
            .fetch_add(sent, Ordering::Relaxed);
        self.next_catch_up = (!self.catching_up.is_empty()).then(|| now + CATCH_UP_TICK);
    }

    /// Add `id` to the viewers of `hub`'s stream, subscribing to the hub if it is the
    /// first: a subscription keeps the source busy, so there is one only while the
    /// stream has peers.
    fn watch(&mut self, id: PeerId, hub: &Arc<Hub>) -> StreamKey {
        let key = stream_key(hub);
        let stream = self.streams.entry(key).or_insert_with(|| {
            self.subscriptions.subscribe(hub);
            Stream {
                hub: hub.clone(),
                gop: GopCache::default(),
                peers: HashSet::new(),
            }
        });
        stream.peers.insert(id);
        key
    }

    /// Take `id` off its stream's viewers; the stream's last viewer ends the subscription
    /// and forgets the stream's GOP.
    fn unwatch(&mut self, id: PeerId, key: StreamKey) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        stream.peers.remove(&id);
        if stream.peers.is_empty() {
            self.streams.remove(&key);
            self.subscriptions.unsubscribe(key);
        }
    }

    /// Packetize `au` once, for every peer of its stream, and keep it in the stream's
    /// GOP cache.
    fn prepare_frame(
        &mut self,
        now: Instant,
        key: StreamKey,
        au: &Picture,
    ) -> Option<Arc<OutFrame>> {
        let stream = self.streams.get_mut(&key)?;
        let max_payload = self
            .cfg
            .rtp_packet_size
            .saturating_sub(12 + extensions::MAX_EXTENSION_BYTES);
        let payloads = packetizer::packetize(&au.data, max_payload);
        if payloads.is_empty() {
            return None;
        }
        let ntp = clock::realtime_us_to_ntp(clock::monotonic_to_realtime_us(au.capture_us));
        let frame = Arc::new(OutFrame {
            payloads,
            timestamp: packetizer::rtp_timestamp_90k(au.capture_us),
            key: au.key,
            playout_delay: extensions::playout_delay(0, 0),
            abs_capture_time: extensions::abs_capture_time(ntp),
        });
        stream.gop.push(now, au.seq, &frame);
        Some(frame)
    }

    /// Send `frame` to every peer of the stream `key`, [`FAN_OUT_PEERS`] at a time;
    /// returns packets sent.
    async fn fan_out(
        &mut self,
        now: Instant,
        key: StreamKey,
        frame: &Arc<OutFrame>,
        socket: &UdpSocket,
    ) -> u64 {
        let Some(stream) = self.streams.get(&key) else {
            return 0;
        };
        let ids: Vec<PeerId> = stream.peers.iter().copied().collect();
        let mut sent = 0;
        for chunk in ids.chunks(FAN_OUT_PEERS) {
            sent += self.send_frame_to(now, frame, chunk);
            send_datagrams(socket, &mut self.outgoing, &self.stats).await;
        }
        sent
    }

    /// Queue `frame` for the peers `ids`; returns packets queued.
    fn send_frame_to(&mut self, now: Instant, frame: &Arc<OutFrame>, ids: &[PeerId]) -> u64 {
        let mut sent = 0;
        for id in ids {
            let Some(e) = self.peers.get_mut(id) else {
                continue;
            };
            let n = e.peer.send_frame(now, frame, &mut self.outgoing);
            if n > 0 {
                sent += n;
                self.dirty.insert(*id);
            }
        }
        self.stats
            .rtp_packets_sent
            .fetch_add(sent, Ordering::Relaxed);
        sent
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
                match note {
                    PeerNote::Connected => {
                        tracing::info!(peer = id, "viewer connected");
                        let stream = self.streams.get(&e.stream);
                        let gop = stream.map_or(&[][..], |s| s.gop.current(now));
                        if e.peer.start_from(gop) {
                            // The keyframe leaves now, the rest paced by the timer.
                            let sent =
                                e.peer
                                    .send_catch_up(now, CATCH_UP_PACKETS, &mut self.outgoing);
                            self.stats
                                .rtp_packets_sent
                                .fetch_add(sent, Ordering::Relaxed);
                            if e.peer.is_catching_up() {
                                self.catching_up.insert(id);
                                self.next_catch_up.get_or_insert(now + CATCH_UP_TICK);
                            }
                            // Its notes about what was just sent are read next time.
                            self.dirty.insert(id);
                        } else if let Some(stream) = stream {
                            // No GOP cached: it starts at the next keyframe; ask for one.
                            stream.hub.request_keyframe();
                        }
                        if !e.announced {
                            e.announced = true;
                            let _ = e.events.send(PeerEvent::Connected);
                        }
                    }
                    PeerNote::Disconnected => tracing::info!(peer = id, "viewer disconnected"),
                    PeerNote::KeyframeRequest(kind) => {
                        tracing::debug!(peer = id, ?kind, "keyframe requested by viewer");
                        self.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                        let counter = match kind {
                            KeyframeRequest::Pli => &self.stats.plis_received,
                            KeyframeRequest::Fir => &self.stats.firs_received,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        if let Some(stream) = self.streams.get(&e.stream) {
                            stream.hub.request_keyframe();
                        }
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
                    PeerNote::Gone(reason) => gone.push((id, reason)),
                }
            }
            e.peer.drain_writes(&mut self.outgoing);
            e.next_timeout = e.peer.poll_timeout();
        }
        self.notes = notes;
        for (id, reason) in gone {
            self.remove_peer(id, &reason, true);
        }
    }

    /// Drop a peer, logging one "viewer gone" line with `reason` whatever the path
    /// (hangup, closed WebSocket, expired session, ICE failure, DTLS alert, ...);
    /// `notify` tells its owner with a [`PeerEvent::Closed`].
    fn remove_peer(&mut self, id: PeerId, reason: &str, notify: bool) {
        let Some(mut e) = self.peers.remove(&id) else {
            return;
        };
        tracing::info!(peer = id, %reason, "viewer gone");
        e.peer.close();
        e.peer.drain_writes(&mut self.outgoing);
        self.by_ufrag.remove(&e.ufrag);
        for addr in &e.addrs {
            if self.by_addr.get(addr) == Some(&id) {
                self.by_addr.remove(addr);
            }
        }
        self.dirty.remove(&id);
        self.catching_up.remove(&id);
        self.unwatch(id, e.stream);
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

/// Put queued datagrams on the wire and count them. All sends go through here; they
/// leave in sendmmsg batches (see [`udp`]).
async fn send_datagrams(
    socket: &UdpSocket,
    out: &mut Vec<(SocketAddr, BytesMut)>,
    stats: &SharedStats,
) {
    if out.is_empty() {
        return;
    }
    let sent = udp::send_all(socket, out).await;
    stats
        .datagrams_sent
        .fetch_add(sent.datagrams, Ordering::Relaxed);
    stats.bytes_sent.fetch_add(sent.bytes, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn engine() -> Engine {
        let cfg = RtcConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            udp_ports: (0, 0),
            candidate_ips: vec![IpAddr::from([127, 0, 0, 1])],
            nat_1_1_ip: None,
            rtp_packet_size: 1150,
            max_viewers: 2,
            allow_ip: Default::default(),
        };
        let candidates = vec![SocketAddr::from(([127, 0, 0, 1], 40000))];
        Engine::new(cfg, Arc::default(), candidates, Arc::default())
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
        assert!(engine.next_deadline() <= t0 + OFFER_TIMEOUT);
        engine.handle_timers(t0 + OFFER_TIMEOUT - Duration::from_secs(1));
        assert!(engine.peers.contains_key(&id));
        engine.handle_timers(t0 + OFFER_TIMEOUT + Duration::from_millis(1));
        assert!(engine.peers.is_empty() && engine.by_ufrag.is_empty());
        assert!(matches!(rx.try_recv(), Ok(PeerEvent::Closed { .. })));
    }

    #[test]
    fn stun_from_a_new_address_routes_by_ufrag_and_is_forgotten_on_close() {
        let mut engine = engine();
        let (tx, _rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let (id, _) = engine
            .create_offer(now, PeerOptions::new(Hub::new(4)), tx)
            .expect("offer");
        let ufrag = engine.peers[&id].ufrag.clone();
        let pwd = engine.peers[&id].pwd.clone();
        let username = format!("{ufrag}:remote");
        let from = SocketAddr::from(([127, 0, 0, 1], 50000));
        // The ufrag alone, or the wrong password, binds nothing.
        let unsigned = demux::signed_binding_request(&username, None);
        engine.handle_datagram(now, from, &unsigned);
        let forged = demux::signed_binding_request(&username, Some(b"guessed"));
        engine.handle_datagram(now, from, &forged);
        assert!(engine.by_addr.is_empty());
        let signed = demux::signed_binding_request(&username, Some(pwd.as_bytes()));
        engine.handle_datagram(now, from, &signed);
        assert_eq!(engine.by_addr.get(&from), Some(&id));
        // A viewer's addresses are capped.
        for port in 1..=100 {
            let other = SocketAddr::from(([127, 0, 0, 1], port));
            engine.handle_datagram(now, other, &signed);
        }
        assert_eq!(engine.peers[&id].addrs.len(), MAX_ADDRS_PER_PEER);
        // Garbage from that address goes to the same peer and must not hurt it.
        engine.handle_datagram(now, from, &[0xff; 64]);
        engine.settle(Instant::now());
        engine.remove_peer(id, "test", false);
        assert!(engine.by_addr.is_empty());
    }

    #[test]
    fn checks_from_addresses_not_allowed_are_ignored() {
        let mut engine = engine();
        engine.cfg.allow_ip =
            crate::access::IpList::parse(&["127.0.0.1".to_string()], "allow_ip").unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let (id, _) = engine
            .create_offer(now, PeerOptions::new(Hub::new(4)), tx)
            .expect("offer");
        let (ufrag, pwd) = (&engine.peers[&id].ufrag, &engine.peers[&id].pwd);
        let signed =
            demux::signed_binding_request(&format!("{ufrag}:remote"), Some(pwd.as_bytes()));
        let outsider = SocketAddr::from(([127, 0, 0, 2], 50000));
        engine.handle_datagram(now, outsider, &signed);
        assert!(engine.by_addr.is_empty(), "a signed check is not enough");
        let allowed = SocketAddr::from(([127, 0, 0, 1], 50000));
        engine.handle_datagram(now, allowed, &signed);
        assert_eq!(engine.by_addr.get(&allowed), Some(&id));
    }

    #[test]
    fn offers_beyond_max_viewers_are_refused() {
        let mut engine = engine();
        let now = Instant::now();
        let (tx, _rx) = mpsc::unbounded_channel();
        let (first, _) = engine
            .create_offer(now, PeerOptions::new(Hub::new(4)), tx.clone())
            .expect("offer");
        engine
            .create_offer(now, PeerOptions::new(Hub::new(4)), tx.clone())
            .expect("offer");
        let refused = engine.create_offer(now, PeerOptions::new(Hub::new(4)), tx.clone());
        assert!(matches!(refused, Err(RtcError::TooManyViewers(2))));
        engine.remove_peer(first, "test", false);
        let (third, _) = engine
            .create_offer(now, PeerOptions::new(Hub::new(4)), tx)
            .expect("room again after a viewer left");
        assert!(third > first + 1, "ids are never reused");
    }
}
