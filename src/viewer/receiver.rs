//! A viewer-side WebRTC peer in Rust: answers an engine offer, completes ICE/DTLS/SRTP over
//! its own UDP socket on 127.0.0.1, and hands back whole H.264 access units (Annex-B, put
//! together by [`super::depacketizer`]).
//! Used by the integration tests and by load generation, where a browser per viewer
//! would cost far too much.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::BytesMut;
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{RTCDtlsRole, RTCIceCandidateInit};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::marshal::MarshalSize;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::depacketizer::{parse_abs_capture_time, Assembler, PacketExtensions, ReceivedFrame};
use crate::rtc::extensions::{ABS_CAPTURE_TIME_URI, VIDEO_ORIENTATION_URI};
use crate::rtc::peer;

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
    /// RTP packets received (retransmissions included).
    pub packets_received: u64,
    /// Packets the sequence numbers say were sent, first to highest received.
    pub packets_expected: u64,
    /// RTCP NACK and PLI packets this receiver sent.
    pub nacks_sent: u64,
    pub plis_sent: u64,
}

impl ReceiverStats {
    /// Packets never received, retransmissions counted as recovery.
    pub fn packets_lost(&self) -> u64 {
        self.packets_expected.saturating_sub(self.packets_received)
    }
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
    SendPli,
    DropMedia(u32),
    AddCandidate(String),
    Close,
}

pub struct ReceiverPeer {
    frames: mpsc::UnboundedReceiver<ReceivedFrame>,
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
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let local_addr = socket.local_addr()?;
        let now = Instant::now();

        let profile = fmtp_profile(offer_sdp).unwrap_or("42e01f");
        let mut me = peer::media_engine(profile)?;
        let registry = interceptors(&mut me);
        let settings = peer::setting_engine(&peer::ice_token(16), &peer::ice_token(32))
            .with_answering_dtls_role(RTCDtlsRole::Client)
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(|e| anyhow!("peer connection: {e}"))?;
        pc.add_transceiver_from_kind(RtpCodecKind::Video, None)
            .map_err(|e| anyhow!("transceiver: {e}"))?;
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
        let answer_sdp = pc
            .local_description()
            .map(|d| d.sdp)
            .context("no local description")?;

        let (frame_tx, frames) = mpsc::unbounded_channel();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(ReceiverState::Connecting);
        let abs_id = extmap_id(offer_sdp, ABS_CAPTURE_TIME_URI);
        let cvo_id = extmap_id(offer_sdp, VIDEO_ORIENTATION_URI);
        let driver = Driver {
            pc,
            local_addr,
            assembler: Assembler::default(),
            abs_id,
            cvo_id,
            media_ssrc: None,
            seq: SeqCounter::default(),
            frame_tx,
            state_tx,
            drop_every: 0,
            media_datagrams: 0,
        };
        tokio::spawn(driver.run(socket, command_rx));
        Ok((
            ReceiverPeer {
                frames,
                commands,
                state,
                local_addr,
            },
            answer_sdp,
        ))
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

    /// Ask the sender for a keyframe (RTCP PLI).
    pub fn send_pli(&self) {
        let _ = self.commands.send(Command::SendPli);
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

struct Driver {
    pc: RTCPeerConnection,
    local_addr: SocketAddr,
    assembler: Assembler,
    abs_id: Option<u8>,
    cvo_id: Option<u8>,
    media_ssrc: Option<u32>,
    seq: SeqCounter,
    frame_tx: mpsc::UnboundedSender<ReceivedFrame>,
    state_tx: watch::Sender<ReceiverState>,
    /// See [`ReceiverPeer::drop_media`].
    drop_every: u32,
    media_datagrams: u64,
}

impl Driver {
    async fn run(mut self, socket: UdpSocket, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; 2048];
        loop {
            while let Some(out) = self.pc.poll_write() {
                let _ = socket.send_to(&out.message, out.transport.peer_addr).await;
            }
            if !self.poll() {
                break;
            }
            let deadline = self
                .pc
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    None | Some(Command::Close) => break,
                    Some(Command::SendPli) => self.send_pli(),
                    Some(Command::DropMedia(every)) => self.drop_every = every,
                    Some(Command::Stats(reply)) => { let _ = reply.send(self.stats()); }
                    Some(Command::AddCandidate(c)) => {
                        let init = RTCIceCandidateInit { candidate: c, ..Default::default() };
                        if let Err(e) = self.pc.add_remote_candidate(init) {
                            tracing::debug!(error = %e, "receiver: candidate rejected");
                        }
                    }
                },
                res = socket.recv_from(&mut buf) => match res {
                    Ok((n, _)) if self.drops(&buf[..n]) => {}
                    Ok((n, from)) => {
                        let msg = TaggedBytesMut {
                            now: Instant::now(),
                            transport: TransportContext {
                                local_addr: self.local_addr,
                                peer_addr: from,
                                ecn: None,
                                transport_protocol: TransportProtocol::UDP,
                            },
                            message: BytesMut::from(&buf[..n]),
                        };
                        if let Err(e) = self.pc.handle_read(msg) {
                            tracing::debug!(error = %e, "receiver: datagram rejected");
                        }
                    }
                    Err(_) => {}
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let _ = self.pc.handle_timeout(Instant::now());
                }
            }
        }
        let _ = self.pc.close();
        while let Some(out) = self.pc.poll_write() {
            let _ = socket.send_to(&out.message, out.transport.peer_addr).await;
        }
        let _ = self.state_tx.send(ReceiverState::Closed);
    }

    /// Handle received media and state changes; false when the connection is over.
    fn poll(&mut self) -> bool {
        while let Some(msg) = self.pc.poll_read() {
            if let RTCMessage::RtpPacket(_, packet) = msg.message {
                self.media_ssrc = Some(packet.header.ssrc);
                self.seq.push(packet.header.sequence_number);
                let abs = self
                    .abs_id
                    .and_then(|id| packet.header.get_extension(id))
                    .and_then(|b| parse_abs_capture_time(&b));
                let cvo = self
                    .cvo_id
                    .and_then(|id| packet.header.get_extension(id))
                    .and_then(|b| b.first().copied());
                let size = packet.header.marshal_size() + packet.payload.len();
                let ext = PacketExtensions {
                    abs_capture_time: abs,
                    video_orientation: cvo,
                };
                if let Some(frame) = self.assembler.push(&packet, size, ext) {
                    let _ = self.frame_tx.send(frame);
                }
            }
        }
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected => {
                        let _ = self.state_tx.send(ReceiverState::Connected);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        return false;
                    }
                    _ => {}
                }
            }
        }
        true
    }

    fn stats(&mut self) -> ReceiverStats {
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None);
        let (nacks, plis) = report.inbound_rtp_streams().fold((0, 0), |(n, p), s| {
            (n + u64::from(s.nack_count), p + u64::from(s.pli_count))
        });
        ReceiverStats {
            packets_received: self.seq.received,
            packets_expected: self.seq.expected(),
            nacks_sent: nacks,
            plis_sent: plis,
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

    fn send_pli(&mut self) {
        let Some(media_ssrc) = self.media_ssrc else {
            return;
        };
        let ids: Vec<_> = self.pc.get_receivers().collect();
        for id in ids {
            if let Some(mut r) = self.pc.rtp_receiver(id) {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
                if let Err(e) = r.write_rtcp(Instant::now(), vec![Box::new(pli)]) {
                    tracing::debug!(error = %e, "receiver: PLI not sent");
                }
            }
        }
    }
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
/// sender/receiver reports. Nothing the sender says in RTCP is for the receiver itself.
fn interceptors(me: &mut MediaEngine) -> Registry {
    configure_rtcp_reports(configure_nack(Registry::new(), me))
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
