//! A viewer-side WebRTC peer in Rust: answers an engine offer, completes ICE/DTLS/SRTP over
//! its own UDP socket on 127.0.0.1, and hands back whole H.264 access units (Annex-B, put
//! together by [`super::depacketizer`]). An offer's audio m-line is answered too: the
//! sound is counted (and kept, for tests, see [`ReceiverOptions::keep_audio`]), and a
//! microphone playing a tone can be sent ([`ReceiverOptions::mic_tone_hz`]).
//! Used by the integration tests and by load generation, where a browser per viewer
//! would cost far too much.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::BytesMut;
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{RTCDtlsRole, RTCIceCandidateInit};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;
use rtc::shared::marshal::MarshalSize;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use std::os::fd::AsFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::audio::{ReceivedAudio, ToneMic};
use super::depacketizer::{
    parse_abs_capture_time, Assembler, FrameCounter, PacketExtensions, ReceivedFrame,
};
use super::sender_reports;
use crate::media::audio::{FRAME_US, OPUS_PAYLOAD_TYPE};
use crate::rtc::extensions::{ABS_CAPTURE_TIME_URI, VIDEO_ORIENTATION_URI};
use crate::rtc::peer;
use crate::sys::udp_recv::{recv_batch, RecvBatch};

/// Connection progress of a receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiverState {
    Connecting,
    Connected,
    Closed,
}

/// Reception counters of one receiver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Video RTP packets received (retransmissions included).
    pub packets_received: u64,
    /// Video packets the sequence numbers say were sent, first to highest received.
    pub packets_expected: u64,
    /// RTCP NACK and PLI packets this receiver sent.
    pub nacks_sent: u64,
    pub plis_sent: u64,
    /// Audio RTP packets received, their payload bytes, and the packets their sequence
    /// numbers say were sent.
    pub audio_packets_received: u64,
    pub audio_bytes_received: u64,
    pub audio_packets_expected: u64,
    /// Microphone packets sent.
    pub mic_packets_sent: u64,
    /// RTCP sender reports received about the video and about the audio (a browser
    /// syncs the two by them).
    pub video_sender_reports: u64,
    pub audio_sender_reports: u64,
    /// The latest sender report about the video: its NTP time and the RTP timestamp
    /// that maps to it.
    pub video_sender_report: Option<(u64, u32)>,
}

impl ReceiverStats {
    /// Video packets never received, retransmissions counted as recovery.
    pub fn packets_lost(&self) -> u64 {
        self.packets_expected.saturating_sub(self.packets_received)
    }

    /// Audio packets never received.
    pub fn audio_packets_lost(&self) -> u64 {
        self.audio_packets_expected
            .saturating_sub(self.audio_packets_received)
    }
}

/// How a receiver answers, beyond the video.
#[derive(Clone, Debug)]
pub struct ReceiverOptions {
    /// The address its media socket binds to (e.g. 127.0.0.2, to be another client
    /// address on one machine).
    pub ip: IpAddr,
    /// Answer an audio m-line with port 0, declining the sound.
    pub decline_audio: bool,
    /// Keep every audio packet for [`ReceiverPeer::next_audio`]; otherwise they are
    /// only counted (a load run would pile them up).
    pub keep_audio: bool,
    /// When the offer takes a microphone, send a sine of this frequency on it.
    pub mic_tone_hz: Option<f64>,
    /// Put pictures together (their Annex-B bytes in [`ReceivedFrame::data`]); without,
    /// pictures are only counted, which costs a load generator far less per packet.
    pub assemble: bool,
}

impl Default for ReceiverOptions {
    fn default() -> ReceiverOptions {
        ReceiverOptions {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            decline_audio: false,
            keep_audio: false,
            mic_tone_hz: None,
            assemble: true,
        }
    }
}

/// Which of the sender's streams a keyframe request names (its media SSRC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum About {
    Video,
    Audio,
}

/// Extends 16-bit RTP sequence numbers to count packets across wrap-around.
#[derive(Default)]
struct SeqCounter {
    first: Option<u64>,
    highest: u64,
    received: u64,
}

impl SeqCounter {
    fn push(&mut self, seq: u16) {
        self.received += 1;
        let Some(_) = self.first else {
            self.first = Some(u64::from(seq) + (1 << 16));
            self.highest = u64::from(seq) + (1 << 16);
            return;
        };
        // The extended value nearest to the highest seen so far.
        let cycle = self.highest & !0xffff;
        let candidates = [cycle.wrapping_sub(1 << 16), cycle, cycle + (1 << 16)];
        let ext = candidates
            .iter()
            .map(|c| c + u64::from(seq))
            .min_by_key(|v| v.abs_diff(self.highest))
            .unwrap_or(self.highest);
        self.highest = self.highest.max(ext);
    }

    fn expected(&self) -> u64 {
        self.first.map_or(0, |f| self.highest + 1 - f)
    }
}

enum Command {
    Stats(tokio::sync::oneshot::Sender<ReceiverStats>),
    AskKeyframe {
        fir: bool,
        sender_ssrc: Option<u32>,
        about: About,
    },
    DropMedia(u32),
    AddCandidate(String),
    Close,
}

/// A receiver that offered (see [`ReceiverPeer::offer`]), waiting for the answer.
pub struct OfferingReceiver {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    local_addr: SocketAddr,
    keep_audio: bool,
    assemble: bool,
}

impl OfferingReceiver {
    /// Apply the server's answer and start receiving.
    pub fn accept(mut self, answer_sdp: &str) -> anyhow::Result<ReceiverPeer> {
        let answer = RTCSessionDescription::answer(answer_sdp.to_string())
            .map_err(|e| anyhow!("answer: {e}"))?;
        self.pc
            .set_remote_description(Instant::now(), answer)
            .map_err(|e| anyhow!("set answer: {e}"))?;
        let video_receiver = self.pc.get_receivers().next();
        Ok(ReceiverPeer::start(Started {
            pc: self.pc,
            socket: self.socket,
            local_addr: self.local_addr,
            negotiated: answer_sdp.to_string(),
            video_receiver,
            mic: None,
            mic_ssrc: None,
            keep_audio: self.keep_audio,
            assemble: self.assemble,
        }))
    }
}

/// A negotiated connection and what its driver needs.
struct Started {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    local_addr: SocketAddr,
    /// The SDP whose extmap ids the packets carry.
    negotiated: String,
    video_receiver: Option<RTCRtpReceiverId>,
    mic: Option<MicSender>,
    mic_ssrc: Option<u32>,
    keep_audio: bool,
    assemble: bool,
}

pub struct ReceiverPeer {
    frames: mpsc::UnboundedReceiver<ReceivedFrame>,
    audio: mpsc::UnboundedReceiver<ReceivedAudio>,
    mic_ssrc: Option<u32>,
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<ReceiverState>,
    local_addr: SocketAddr,
}

impl ReceiverPeer {
    /// Answer `offer_sdp`; the answer carries this peer's one host candidate.
    pub async fn answer(offer_sdp: &str) -> anyhow::Result<(ReceiverPeer, String)> {
        Self::answer_from(offer_sdp, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// As [`ReceiverPeer::answer`], with the media socket on `ip` (e.g. 127.0.0.2, to be
    /// another client address on one machine).
    pub async fn answer_from(
        offer_sdp: &str,
        ip: IpAddr,
    ) -> anyhow::Result<(ReceiverPeer, String)> {
        let opts = ReceiverOptions {
            ip,
            ..Default::default()
        };
        Self::answer_with(offer_sdp, opts).await
    }

    /// Answer `offer_sdp` as `opts` say. An audio m-line in the offer is answered
    /// recvonly when it sends, and with a microphone track of ours when it receives.
    pub async fn answer_with(
        offer_sdp: &str,
        opts: ReceiverOptions,
    ) -> anyhow::Result<(ReceiverPeer, String)> {
        let socket = UdpSocket::bind(SocketAddr::new(opts.ip, 0)).await?;
        let local_addr = socket.local_addr()?;
        let now = Instant::now();

        let profile = fmtp_profile(offer_sdp).unwrap_or("42e01f");
        let mut me = peer::media_engine(profile)?;
        let registry = interceptors(&mut me, !opts.assemble);
        let settings = peer::setting_engine(&peer::ice_token(16), &peer::ice_token(32))
            .with_answering_dtls_role(RTCDtlsRole::Client)
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(crate::rtc::certificate::configuration())
            .with_setting_engine(settings)
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(|e| anyhow!("peer connection: {e}"))?;
        pc.add_transceiver_from_kind(RtpCodecKind::Video, None)
            .map_err(|e| anyhow!("transceiver: {e}"))?;
        let audio = OfferedAudio::of(offer_sdp);
        let mic_ssrc = match audio {
            OfferedAudio::None => None,
            OfferedAudio::Offered { takes_mic, .. } => add_audio(&mut pc, takes_mic)?,
        };
        let offer = RTCSessionDescription::offer(offer_sdp.to_string())
            .map_err(|e| anyhow!("offer: {e}"))?;
        pc.set_remote_description(now, offer)
            .map_err(|e| anyhow!("set offer: {e}"))?;
        pc.add_local_candidate(peer::host_candidate(local_addr)?)
            .map_err(|e| anyhow!("local candidate: {e}"))?;
        pc.add_local_candidate(RTCIceCandidateInit::default())
            .map_err(|e| anyhow!("end of candidates: {e}"))?;
        let answer = pc.create_answer(None).map_err(|e| anyhow!("answer: {e}"))?;
        pc.set_local_description(now, answer)
            .map_err(|e| anyhow!("set answer: {e}"))?;
        let mut answer_sdp = pc
            .local_description()
            .map(|d| d.sdp)
            .context("no local description")?;
        if opts.decline_audio {
            answer_sdp = answer_sdp.replacen("m=audio 9 ", "m=audio 0 ", 1);
        }
        // The video transceiver came first; RTCP about the sender goes out through it.
        let video_receiver = pc.get_receivers().next();
        let mic = match (mic_ssrc, opts.mic_tone_hz) {
            (Some(ssrc), Some(hz)) if !opts.decline_audio => {
                let sender = pc.get_senders().last().context("no microphone sender")?;
                let tone = ToneMic::new(hz).map_err(|e| anyhow!("{e}"))?;
                Some(MicSender { sender, ssrc, tone })
            }
            _ => None,
        };
        let peer = Self::start(Started {
            pc,
            socket,
            local_addr,
            negotiated: offer_sdp.to_string(),
            video_receiver,
            mic,
            mic_ssrc,
            keep_audio: opts.keep_audio,
            assemble: opts.assemble,
        });
        Ok((peer, answer_sdp))
    }

    /// Offer to receive the video (WHEP: the viewer offers): a recvonly H.264 m-line
    /// (Constrained Baseline, packetization-mode=1) with this peer's one host
    /// candidate. The server's answer completes it ([`OfferingReceiver::accept`]).
    pub async fn offer(opts: ReceiverOptions) -> anyhow::Result<(OfferingReceiver, String)> {
        let socket = UdpSocket::bind(SocketAddr::new(opts.ip, 0)).await?;
        let local_addr = socket.local_addr()?;
        let now = Instant::now();
        let mut me = peer::media_engine(crate::rtc::sdp::DEFAULT_PROFILE_LEVEL_ID)?;
        let registry = interceptors(&mut me, !opts.assemble);
        let settings = peer::setting_engine(&peer::ice_token(16), &peer::ice_token(32)).build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(crate::rtc::certificate::configuration())
            .with_setting_engine(settings)
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(|e| anyhow!("peer connection: {e}"))?;
        let recvonly = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            streams: vec![],
            send_encodings: vec![],
        };
        pc.add_transceiver_from_kind(RtpCodecKind::Video, Some(recvonly))
            .map_err(|e| anyhow!("transceiver: {e}"))?;
        pc.add_local_candidate(peer::host_candidate(local_addr)?)
            .map_err(|e| anyhow!("local candidate: {e}"))?;
        pc.add_local_candidate(RTCIceCandidateInit::default())
            .map_err(|e| anyhow!("end of candidates: {e}"))?;
        let offer = pc.create_offer(None).map_err(|e| anyhow!("offer: {e}"))?;
        pc.set_local_description(now, offer)
            .map_err(|e| anyhow!("set offer: {e}"))?;
        let offer_sdp = pc
            .local_description()
            .map(|d| d.sdp)
            .context("no local description")?;
        let pending = OfferingReceiver {
            pc,
            socket,
            local_addr,
            keep_audio: opts.keep_audio,
            assemble: opts.assemble,
        };
        Ok((pending, offer_sdp))
    }

    /// Run the peer's driver on its socket.
    fn start(started: Started) -> ReceiverPeer {
        let Started {
            pc,
            socket,
            local_addr,
            negotiated,
            video_receiver,
            mic,
            mic_ssrc,
            keep_audio,
            assemble,
        } = started;
        let (frame_tx, frames) = mpsc::unbounded_channel();
        let (audio_tx, audio_rx) = mpsc::unbounded_channel();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(ReceiverState::Connecting);
        let abs_id = extmap_id(&negotiated, ABS_CAPTURE_TIME_URI);
        let cvo_id = extmap_id(&negotiated, VIDEO_ORIENTATION_URI);
        let driver = Driver {
            pc,
            local_addr,
            pictures: if assemble {
                Pictures::Assemble(Assembler::default())
            } else {
                Pictures::Count(FrameCounter::default())
            },
            abs_id,
            cvo_id,
            video_ssrc: None,
            audio_ssrc: None,
            video_receiver,
            seq: SeqCounter::default(),
            audio_seq: SeqCounter::default(),
            audio_bytes: 0,
            audio_tx: keep_audio.then_some(audio_tx),
            mic,
            mic_sent: 0,
            fir_sequence: 0,
            sender_reports: HashMap::new(),
            frame_tx,
            state_tx,
            drop_every: 0,
            media_datagrams: 0,
            keyframe_seen: false,
            last_video_timestamp: None,
            datagram_pool: BytesMut::new(),
        };
        tokio::spawn(driver.run(socket, command_rx));
        ReceiverPeer {
            frames,
            audio: audio_rx,
            mic_ssrc,
            commands,
            state,
            local_addr,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next complete access unit; `None` once the peer is closed.
    pub async fn next_frame(&mut self) -> Option<ReceivedFrame> {
        self.frames.recv().await
    }

    /// A frame already received, without waiting.
    pub fn try_next_frame(&mut self) -> Option<ReceivedFrame> {
        self.frames.try_recv().ok()
    }

    pub fn state(&self) -> ReceiverState {
        *self.state.borrow()
    }

    /// Wait until connected (ICE + DTLS done), or fail after `timeout`.
    pub async fn wait_connected(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let wait = self.state.wait_for(|s| *s != ReceiverState::Connecting);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(s)) if *s == ReceiverState::Connected => Ok(()),
            Ok(Ok(s)) => Err(anyhow!("receiver ended up {:?}", *s)),
            Ok(Err(_)) => Err(anyhow!("receiver stopped")),
            Err(_) => Err(anyhow!("not connected within {timeout:?}")),
        }
    }

    /// The next audio packet kept (see [`ReceiverOptions::keep_audio`]); `None` once the
    /// peer is closed.
    pub async fn next_audio(&mut self) -> Option<ReceivedAudio> {
        self.audio.recv().await
    }

    /// The SSRC of our microphone track, when the answer has one.
    pub fn mic_ssrc(&self) -> Option<u32> {
        self.mic_ssrc
    }

    /// Ask the sender for a keyframe (RTCP PLI about the video).
    pub fn send_pli(&self) {
        self.send_pli_as(None, About::Video);
    }

    /// Send a PLI whose sender SSRC is `sender_ssrc` (0 when `None`) and whose media
    /// SSRC is the sender's video or audio stream; Chrome ≥ 147 with a microphone puts
    /// its audio sender's SSRC in the first and the video's in the second.
    pub fn send_pli_as(&self, sender_ssrc: Option<u32>, about: About) {
        let fir = false;
        let _ = self.commands.send(Command::AskKeyframe {
            fir,
            sender_ssrc,
            about,
        });
    }

    /// As [`ReceiverPeer::send_pli_as`], a FIR: media SSRC 0 and the stream named in
    /// its entry, as Chrome sends it.
    pub fn send_fir_as(&self, sender_ssrc: Option<u32>, about: About) {
        let fir = true;
        let _ = self.commands.send(Command::AskKeyframe {
            fir,
            sender_ssrc,
            about,
        });
    }

    /// Drop every `every`th RTP packet arriving from now on (0: none), as a lossy path
    /// would, so that the sender's NACK handling gets used.
    pub fn drop_media(&self, every: u32) {
        let _ = self.commands.send(Command::DropMedia(every));
    }

    /// Deliver a trickled candidate of the sender (`candidate:...`).
    pub fn add_remote_candidate(&self, candidate: &str) {
        let _ = self
            .commands
            .send(Command::AddCandidate(candidate.to_string()));
    }

    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }

    /// Reception counters so far; `None` once the peer is closed.
    pub async fn stats(&self) -> Option<ReceiverStats> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commands.send(Command::Stats(tx)).ok()?;
        rx.await.ok()
    }
}

impl Drop for ReceiverPeer {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// What a receiver makes of the video packets.
enum Pictures {
    Assemble(Assembler),
    Count(FrameCounter),
}

/// Datagrams taken per receive call: a picture's packets arrive in one burst.
const RECV_BATCH: usize = 16;

thread_local! {
    /// The receive buffers of the drivers running on this thread: a batch is handled
    /// whole before the driver awaits again, so one set per thread is enough.
    static RECV_BUFFERS: RefCell<RecvBatch> = RefCell::new(RecvBatch::new(RECV_BATCH));
}

/// Room the received datagrams are copied into, cut off one per datagram: one
/// allocation per many datagrams rather than one each.
const DATAGRAM_POOL: usize = 64 * 1024;

struct Driver {
    pc: RTCPeerConnection,
    local_addr: SocketAddr,
    pictures: Pictures,
    datagram_pool: BytesMut,
    abs_id: Option<u8>,
    cvo_id: Option<u8>,
    /// The sender's SSRCs, as its packets show them.
    video_ssrc: Option<u32>,
    audio_ssrc: Option<u32>,
    video_receiver: Option<RTCRtpReceiverId>,
    seq: SeqCounter,
    audio_seq: SeqCounter,
    audio_bytes: u64,
    /// Where kept audio packets go.
    audio_tx: Option<mpsc::UnboundedSender<ReceivedAudio>>,
    mic: Option<MicSender>,
    mic_sent: u64,
    fir_sequence: u8,
    /// Sender reports received, by the SSRC they report on.
    /// Sender reports per SSRC: how many, and the latest's NTP and RTP times.
    sender_reports: HashMap<u32, (u64, (u64, u32))>,
    frame_tx: mpsc::UnboundedSender<ReceivedFrame>,
    state_tx: watch::Sender<ReceiverState>,
    /// See [`ReceiverPeer::drop_media`].
    drop_every: u32,
    media_datagrams: u64,
    /// A keyframe was counted: from then on a counting viewer hands the stack only each
    /// picture's first packet (see [`Driver::count_unread`]).
    keyframe_seen: bool,
    last_video_timestamp: Option<u32>,
}

impl Driver {
    async fn run(mut self, socket: UdpSocket, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut mic_tick = tokio::time::interval(Duration::from_micros(FRAME_US));
        mic_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        // One timer, moved only when the stack's deadline moves: a timer made anew per
        // datagram costs more than the datagram.
        let timer = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut connected = false;
        loop {
            while let Some(out) = self.pc.poll_write() {
                let _ = socket.send_to(&out.message, out.transport.peer_addr).await;
            }
            match self.poll() {
                Some(up) => connected |= up,
                None => break,
            }
            let now = Instant::now();
            let deadline = self
                .pc
                .poll_timeout()
                .or(armed.filter(|at| *at > now))
                .unwrap_or_else(|| now + Duration::from_secs(1));
            if armed != Some(deadline) {
                timer.as_mut().reset(deadline.into());
                armed = Some(deadline);
            }
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    None | Some(Command::Close) => break,
                    Some(Command::AskKeyframe { fir, sender_ssrc, about }) => {
                        self.ask_keyframe(fir, sender_ssrc.unwrap_or(0), about);
                    }
                    Some(Command::DropMedia(every)) => self.drop_every = every,
                    Some(Command::Stats(reply)) => { let _ = reply.send(self.stats()); }
                    Some(Command::AddCandidate(c)) => {
                        let init = RTCIceCandidateInit { candidate: c, ..Default::default() };
                        if let Err(e) = self.pc.add_remote_candidate(init) {
                            tracing::debug!(error = %e, "receiver: candidate rejected");
                        }
                    }
                },
                ready = socket.readable() => {
                    if ready.is_ok() {
                        self.receive_waiting(&socket, connected);
                    }
                }
                () = &mut timer => {
                    armed = None;
                    let _ = self.pc.handle_timeout(Instant::now());
                }
                _ = mic_tick.tick(), if connected && self.mic.is_some() => self.send_mic(),
            }
        }
        let _ = self.pc.close();
        while let Some(out) = self.pc.poll_write() {
            let _ = socket.send_to(&out.message, out.transport.peer_addr).await;
        }
        let _ = self.state_tx.send(ReceiverState::Closed);
    }

    /// Hand the stack one batch of the datagrams waiting on the socket; one at a time
    /// until connected, as the stack sets up SRTP between datagrams of the handshake
    /// (media right behind its last flight would be dropped).
    fn receive_waiting(&mut self, socket: &UdpSocket, connected: bool) {
        let max = if connected { RECV_BATCH } else { 1 };
        RECV_BUFFERS.with_borrow_mut(|batch| {
            let got = socket.try_io(Interest::READABLE, || {
                recv_batch(socket.as_fd(), batch, max)
            });
            if got.is_err() {
                return;
            }
            let now = Instant::now();
            for i in 0..batch.len() {
                let (datagram, from) = batch.get(i);
                let Some(from) = from else { continue };
                if self.drops(datagram) || (connected && self.count_unread(datagram)) {
                    continue;
                }
                if self.datagram_pool.capacity() < datagram.len() {
                    self.datagram_pool = BytesMut::with_capacity(DATAGRAM_POOL);
                }
                self.datagram_pool.extend_from_slice(datagram);
                let msg = TaggedBytesMut {
                    now,
                    transport: TransportContext {
                        local_addr: self.local_addr,
                        peer_addr: from,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: self.datagram_pool.split(),
                };
                if let Err(e) = self.pc.handle_read(msg) {
                    tracing::debug!(error = %e, "receiver: datagram rejected");
                }
                // Before the next datagram, which may be counted unread and must come after.
                self.drain_reads();
            }
        });
    }

    /// Handle received media and state changes: `Some(true)` once connected, `None`
    /// when the connection is over.
    fn poll(&mut self) -> Option<bool> {
        let mut connected = false;
        self.drain_reads();
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected => {
                        connected = true;
                        let _ = self.state_tx.send(ReceiverState::Connected);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        return None;
                    }
                    _ => {}
                }
            }
        }
        Some(connected)
    }

    /// Count or put together the media the stack has decrypted, and count sender reports.
    fn drain_reads(&mut self) {
        while let Some(msg) = self.pc.poll_read() {
            if let RTCMessage::RtcpPacket(_, packets) = &msg.message {
                for sr in packets
                    .iter()
                    .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
                {
                    let (count, latest) = self.sender_reports.entry(sr.ssrc).or_default();
                    *count += 1;
                    *latest = (sr.ntp_time, sr.rtp_time);
                }
            }
            if let RTCMessage::RtpPacket(_, packet) = msg.message {
                if packet.header.payload_type == OPUS_PAYLOAD_TYPE {
                    self.receive_audio(packet);
                    continue;
                }
                self.video_ssrc = Some(packet.header.ssrc);
                self.last_video_timestamp = Some(packet.header.timestamp);
                self.seq.push(packet.header.sequence_number);
                let abs = self
                    .abs_id
                    .and_then(|id| packet.header.get_extension(id))
                    .and_then(|b| parse_abs_capture_time(&b));
                let cvo = self
                    .cvo_id
                    .and_then(|id| packet.header.get_extension(id))
                    .and_then(|b| b.first().copied());
                let ext = PacketExtensions {
                    abs_capture_time: abs,
                    video_orientation: cvo,
                };
                let frame = match &mut self.pictures {
                    Pictures::Assemble(assembler) => {
                        let size = packet.header.marshal_size() + packet.payload.len();
                        assembler.push(&packet, size, ext)
                    }
                    Pictures::Count(counter) => counter.push(&packet.header, &packet.payload, ext),
                };
                self.note_frame(frame);
            }
        }
    }

    fn note_frame(&mut self, frame: Option<ReceivedFrame>) {
        if let Some(frame) = frame {
            self.keyframe_seen |= frame.keyframe;
            let _ = self.frame_tx.send(frame);
        }
    }

    /// A counting viewer's video packet counted from its header alone, unless it starts
    /// a picture (see [`Driver::receive_waiting`]); `false` when the stack is to have it.
    fn count_unread(&mut self, datagram: &[u8]) -> bool {
        let Pictures::Count(counter) = &mut self.pictures else {
            return false;
        };
        if !self.keyframe_seen || !is_rtp(datagram) {
            return false;
        }
        let Ok(header) =
            <rtc::rtp::Header as rtc::shared::marshal::Unmarshal>::unmarshal(&mut &datagram[..])
        else {
            return false;
        };
        if Some(header.ssrc) != self.video_ssrc || header.payload_type == OPUS_PAYLOAD_TYPE {
            return false;
        }
        if self.last_video_timestamp != Some(header.timestamp) {
            // A picture's first packet says whether it is a keyframe, and goes through
            // the stack: it is authenticated and decrypted there.
            self.last_video_timestamp = Some(header.timestamp);
            return false;
        }
        self.seq.push(header.sequence_number);
        let ext = PacketExtensions {
            abs_capture_time: None,
            video_orientation: self
                .cvo_id
                .and_then(|id| header.get_extension(id))
                .and_then(|b| b.first().copied()),
        };
        let frame = counter.push_unread(&header, ext);
        self.note_frame(frame);
        true
    }

    fn receive_audio(&mut self, packet: rtc::rtp::Packet) {
        self.audio_ssrc = Some(packet.header.ssrc);
        self.audio_seq.push(packet.header.sequence_number);
        self.audio_bytes += packet.payload.len() as u64;
        if let Some(tx) = &self.audio_tx {
            let _ = tx.send(ReceivedAudio {
                ssrc: packet.header.ssrc,
                seq: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                marker: packet.header.marker,
                payload_type: packet.header.payload_type,
                payload: packet.payload,
            });
        }
    }

    /// Send the microphone's next 20 ms.
    fn send_mic(&mut self) {
        let Some(mic) = &mut self.mic else {
            return;
        };
        let packet = match mic.tone.next_packet(mic.ssrc) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "receiver: microphone frame not encoded");
                return;
            }
        };
        let Some(mut sender) = self.pc.rtp_sender(mic.sender) else {
            return;
        };
        match sender.write_rtp(Instant::now(), packet) {
            Ok(()) => self.mic_sent += 1,
            Err(e) => tracing::debug!(error = %e, "receiver: microphone packet not sent"),
        }
    }

    fn stats(&mut self) -> ReceiverStats {
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None);
        let (nacks, plis) = report.inbound_rtp_streams().fold((0, 0), |(n, p), s| {
            (n + u64::from(s.nack_count), p + u64::from(s.pli_count))
        });
        let sender_reports =
            |ssrc: Option<u32>| ssrc.and_then(|s| self.sender_reports.get(&s).copied());
        let count = |ssrc| sender_reports(ssrc).map_or(0, |(n, _)| n);
        ReceiverStats {
            packets_received: self.seq.received,
            packets_expected: self.seq.expected(),
            nacks_sent: nacks,
            plis_sent: plis,
            audio_packets_received: self.audio_seq.received,
            audio_bytes_received: self.audio_bytes,
            audio_packets_expected: self.audio_seq.expected(),
            mic_packets_sent: self.mic_sent,
            video_sender_reports: count(self.video_ssrc),
            audio_sender_reports: count(self.audio_ssrc),
            video_sender_report: sender_reports(self.video_ssrc).map(|(_, latest)| latest),
        }
    }

    /// Whether a received datagram is lost on purpose (see [`ReceiverPeer::drop_media`]).
    fn drops(&mut self, datagram: &[u8]) -> bool {
        if self.drop_every == 0 || !is_rtp(datagram) {
            return false;
        }
        self.media_datagrams += 1;
        self.media_datagrams
            .is_multiple_of(u64::from(self.drop_every))
    }

    fn ask_keyframe(&mut self, fir: bool, sender_ssrc: u32, about: About) {
        let media_ssrc = match about {
            About::Video => self.video_ssrc,
            About::Audio => self.audio_ssrc,
        };
        let (Some(media_ssrc), Some(id)) = (media_ssrc, self.video_receiver) else {
            return;
        };
        let packet: Box<dyn rtc::rtcp::Packet> = if fir {
            self.fir_sequence = self.fir_sequence.wrapping_add(1);
            Box::new(FullIntraRequest {
                sender_ssrc,
                media_ssrc: 0,
                fir: vec![FirEntry {
                    ssrc: media_ssrc,
                    sequence_number: self.fir_sequence,
                }],
            })
        } else {
            Box::new(PictureLossIndication {
                sender_ssrc,
                media_ssrc,
            })
        };
        if let Some(mut r) = self.pc.rtp_receiver(id) {
            if let Err(e) = r.write_rtcp(Instant::now(), vec![packet]) {
                tracing::debug!(error = %e, "receiver: keyframe request not sent");
            }
        }
    }
}

/// A microphone track of ours and the tone it plays.
struct MicSender {
    sender: RTCRtpSenderId,
    ssrc: u32,
    tone: ToneMic,
}

/// The audio m-line of an offer, from the receiving side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OfferedAudio {
    None,
    Offered { takes_mic: bool },
}

impl OfferedAudio {
    fn of(offer: &str) -> OfferedAudio {
        let mut in_audio = false;
        let mut direction = None;
        let mut found = false;
        for line in offer.lines() {
            if line.starts_with("m=") {
                in_audio = line.starts_with("m=audio ");
                found |= in_audio;
            } else if in_audio && direction.is_none() {
                direction = match line {
                    "a=sendrecv" | "a=recvonly" => Some(true),
                    "a=sendonly" | "a=inactive" => Some(false),
                    _ => None,
                };
            }
        }
        if !found {
            return OfferedAudio::None;
        }
        OfferedAudio::Offered {
            takes_mic: direction.unwrap_or(true),
        }
    }
}

/// Add our side of the audio m-line before the offer is applied: a microphone track
/// (its SSRC returned) when the offer takes one, else a receiving transceiver.
fn add_audio(pc: &mut RTCPeerConnection, takes_mic: bool) -> anyhow::Result<Option<u32>> {
    if !takes_mic {
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            streams: vec![],
            send_encodings: vec![],
        };
        pc.add_transceiver_from_kind(RtpCodecKind::Audio, Some(init))
            .map_err(|e| anyhow!("audio transceiver: {e}"))?;
        return Ok(None);
    }
    let ssrc = rand::random::<u32>().max(1);
    let codec = peer::opus_codec();
    let track = rtc::media_stream::MediaStreamTrack::new(
        "viewer".to_string(),
        "mic".to_string(),
        "mic".to_string(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec.rtp_codec,
            ..Default::default()
        }],
    );
    let init = RTCRtpTransceiverInit {
        direction: RTCRtpTransceiverDirection::Sendrecv,
        streams: vec![],
        send_encodings: vec![],
    };
    pc.add_transceiver_from_track(track, Some(init))
        .map_err(|e| anyhow!("microphone transceiver: {e}"))?;
    Ok(Some(ssrc))
}

/// RTP, not RTCP, by the first two bytes (RFC 7983, RFC 5761: RTCP packet types
/// 192-223 sit where an RTP marker bit and payload type would).
fn is_rtp(datagram: &[u8]) -> bool {
    match datagram {
        [first, second, ..] => (128..=191).contains(first) && !(64..=95).contains(&(second & 0x7f)),
        _ => false,
    }
}

/// Interceptors of a receiving end: the crate's NACK generator and responder and its
/// sender/receiver reports, and a tap letting the sender's reports up to be counted. A
/// `counting` viewer hands the stack only some of its packets (see
/// [`Driver::count_unread`]), so it keeps just the tap: the NACK generator would ask
/// for every packet it did not see, and receiver reports would report them lost.
fn interceptors(me: &mut MediaEngine, counting: bool) -> Registry {
    let registry = if counting {
        Registry::new()
    } else {
        configure_rtcp_reports(configure_nack(Registry::new(), me))
    };
    registry.with(
        Slot::from(sender_reports::SLOT),
        sender_reports::SenderReportTap::default(),
    )
}

/// `profile-level-id` from the offer's H.264 fmtp line.
fn fmtp_profile(sdp: &str) -> Option<&str> {
    sdp.lines()
        .filter(|l| l.starts_with("a=fmtp:"))
        .flat_map(|l| l.split([';', ' ']))
        .find_map(|kv| kv.strip_prefix("profile-level-id="))
}

/// The id an `a=extmap` line gives `uri`.
fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let rest = l.strip_prefix("a=extmap:")?;
        let (id, rest) = rest.split_once(' ')?;
        (rest.split_whitespace().next()? == uri)
            .then(|| id.split('/').next()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_counter_spans_wrap_around_and_gaps() {
        let mut c = SeqCounter::default();
        for seq in [65533u16, 65534, 65535, 0, 2, 3, 1] {
            c.push(seq);
        }
        assert_eq!(c.expected(), 7);
        assert_eq!(c.received, 7);
        c.push(10);
        assert_eq!(c.expected(), 14);
    }

    #[test]
    fn rtp_is_told_from_rtcp_stun_and_dtls() {
        assert!(is_rtp(&[0x80, 96, 0, 1]));
        assert!(is_rtp(&[0x90, 0x80 | 96, 0, 1]), "marker bit set");
        assert!(!is_rtp(&[0x81, 200, 0, 6]), "RTCP sender report");
        assert!(!is_rtp(&[0x81, 205, 0, 3]), "RTCP NACK");
        assert!(!is_rtp(&[0x00, 0x01, 0, 0]), "STUN");
        assert!(!is_rtp(&[22, 254, 253]), "DTLS");
        assert!(!is_rtp(&[0x80]));
    }

    #[test]
    fn extmap_and_profile_are_read_from_the_offer() {
        let sdp = "a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640028\r\n\
                   a=extmap:3/sendonly http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time\r\n";
        assert_eq!(fmtp_profile(sdp), Some("640028"));
        assert_eq!(extmap_id(sdp, ABS_CAPTURE_TIME_URI), Some(3));
        assert_eq!(extmap_id(sdp, "urn:x"), None);
    }
}
