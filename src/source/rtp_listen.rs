//! `rtp-listen://IP:PORT`: H.264 pushed as RTP over UDP, e.g. by
//! `ffmpeg ... -c:v libx264 -f rtp rtp://IP:PORT` or GStreamer's
//! `rtph264pay ! udpsink`.
//!
//! One sender at a time: the first address to send RTP has the stream; datagrams from
//! any other address are ignored (counted) while it keeps sending, and once it has been
//! silent for [`STALL`] the next sender takes over. An allow-list (`source_allow`)
//! narrows who may send at all. Viewers see NO SIGNAL while nobody sends. A keyframe a
//! viewer asks for, or a picture lost on the way, becomes an RTCP picture loss
//! indication sent back to the sender's address (a plain RTP sender such as ffmpeg
//! ignores it, and its periodic keyframes repair the stream; a WebRTC publisher sends a
//! keyframe at once).
//!
//! The seam for WHIP ingest: everything above is transport-independent, written
//! against [`RtpInput`] (datagrams in with who sent them, feedback out). This module
//! gives it a UDP socket; a WHIP publisher's session can give it the RTP the WebRTC
//! engine decrypted, e.g. from a channel the engine feeds, with the publisher's
//! address as the sender and its PLIs handed back to the engine.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::runner::{Closing, Demand, Next, RunnerConfig, Source, STALL};
use crate::media::depacketizer::{DepacketizerStats, H264Depacketizer};
use crate::media::rtp::{self, Datagram};
use crate::media::{clock, Picture, VideoSettings};
use crate::ratelog::RateLimited;

/// The SSRC our keyframe requests go out under (we send no media on this session).
const FEEDBACK_SSRC: u32 = 0x7065_7265; // "pere"
/// At most one keyframe request per this long: a sender needs a moment to make one.
const KEYFRAME_REQUEST_EVERY: Duration = Duration::from_millis(500);
/// Longest wait in one receive call, so the sender's silence is noticed.
const RECEIVE_SLICE: Duration = Duration::from_millis(50);
/// Largest datagram read; longer ones are cut and fail to parse.
const MAX_DATAGRAM: usize = 65_536;
/// Refused and ignored datagrams are logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Where the datagrams of an RTP ingest come from, and where its feedback goes.
pub trait RtpInput: Send {
    /// The next datagram and who sent it, waiting no later than `deadline`; `None`
    /// when nothing arrived by then.
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Option<(usize, SocketAddr)>;
    /// Send an RTCP packet back to `to`.
    fn send_feedback(&mut self, to: SocketAddr, rtcp: &[u8]);
    /// Whether the sender is known to have left since the last call (a WHIP
    /// publisher's session ended), so the next may take over without waiting for
    /// [`STALL`]. Plain RTP cannot tell: silence is all there is.
    fn sender_left(&mut self) -> bool {
        false
    }
}

/// RTP on a UDP socket of our own.
pub struct UdpInput {
    socket: UdpSocket,
    timeout: Option<Duration>,
}

impl UdpInput {
    /// Bind `addr`; a port in use is an error at start.
    pub fn bind(addr: SocketAddr) -> Result<UdpInput> {
        let socket = UdpSocket::bind(addr)
            .with_context(|| format!("source rtp-listen://{addr}: cannot listen"))?;
        Ok(UdpInput {
            socket,
            timeout: None,
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }
}

impl RtpInput for UdpInput {
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Option<(usize, SocketAddr)> {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), RECEIVE_SLICE);
        if self.timeout != Some(wait) {
            self.socket.set_read_timeout(Some(wait)).ok()?;
            self.timeout = Some(wait);
        }
        self.socket.recv_from(buf).ok()
    }

    fn send_feedback(&mut self, to: SocketAddr, rtcp: &[u8]) {
        if let Err(e) = self.socket.send_to(rtcp, to) {
            tracing::debug!(%to, "keyframe request not sent: {e}");
        }
    }
}

/// What `/state` shows of an RTP ingest.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RtpIngestStatus {
    /// The address whose RTP makes the stream now, if anyone sends.
    pub sender: Option<String>,
    /// Of the current sender: packets, lost, late, malformed and pictures made.
    #[serde(flatten)]
    pub received: DepacketizerStats,
    /// Datagrams that are not RTP, or come from an address not in `source_allow`.
    pub rejected_packets: u64,
    /// RTP from another address while the current sender keeps sending.
    pub ignored_packets: u64,
    /// Keyframe requests (RTCP PLI) sent to senders.
    pub keyframe_requests: u64,
}

/// The sender who has the stream.
struct Sender {
    addr: SocketAddr,
    ssrc: u32,
    payload_type: u8,
    last_packet: Instant,
    depacketizer: H264Depacketizer,
}

/// RTP pushed to us, as a source.
pub struct RtpListenSource {
    input: Box<dyn RtpInput>,
    /// What `/state` calls the source, e.g. with the port a `:0` listener got.
    kind: String,
    allow: Vec<IpAddr>,
    sender: Option<Sender>,
    pictures: VecDeque<Picture>,
    batch: Vec<Picture>,
    buf: Vec<u8>,
    keyframe_requested_at: Option<Instant>,
    status: RtpIngestStatus,
    refusals: RateLimited,
}

impl RtpListenSource {
    /// Listen on `addr` (bound now, so a port in use is a start-up error).
    pub fn listen(addr: SocketAddr, allow: &[IpAddr]) -> Result<RtpListenSource> {
        let input = UdpInput::bind(addr)?;
        let bound = input.local_addr().unwrap_or(addr);
        tracing::info!(addr = %bound, "waiting for H.264 over RTP");
        Ok(RtpListenSource::new(
            Box::new(input),
            format!("rtp-listen://{bound}"),
            allow,
        ))
    }

    /// An ingest of whatever `input` delivers; `kind` names it in `/state`.
    pub fn new(input: Box<dyn RtpInput>, kind: String, allow: &[IpAddr]) -> RtpListenSource {
        RtpListenSource {
            input,
            kind,
            allow: allow.iter().map(|ip| ip.to_canonical()).collect(),
            sender: None,
            pictures: VecDeque::new(),
            batch: Vec::new(),
            buf: vec![0; MAX_DATAGRAM],
            keyframe_requested_at: None,
            status: RtpIngestStatus::default(),
            refusals: RateLimited::new(REFUSAL_LOG_EVERY),
        }
    }

    /// The runner makes only NO SIGNAL, of the configured size until the sender's own.
    pub fn runner(video: VideoSettings) -> RunnerConfig {
        RunnerConfig::new(video.size(), video)
    }

    fn allowed(&self, from: &SocketAddr) -> bool {
        self.allow.is_empty() || self.allow.contains(&from.ip().to_canonical())
    }

    fn take(&mut self, len: usize, from: SocketAddr) {
        if !self.allowed(&from) {
            self.status.rejected_packets += 1;
            return self.refuse(from, "address not in source_allow");
        }
        let packet = match rtp::parse(&self.buf[..len]) {
            Datagram::Rtp(p) => p,
            // Sender reports and the like on the same port: nothing to do with them.
            Datagram::Rtcp => return,
            Datagram::Invalid => {
                self.status.rejected_packets += 1;
                return self.refuse(from, "not RTP");
            }
        };
        let now = Instant::now();
        let sender = match &mut self.sender {
            Some(s) if s.addr == from => s,
            Some(_) => {
                self.status.ignored_packets += 1;
                return self.refuse(from, "another sender is pushing");
            }
            None => {
                tracing::info!(%from, ssrc = packet.ssrc, "RTP sender started");
                self.status.sender = Some(from.to_string());
                self.sender.insert(Sender {
                    addr: from,
                    ssrc: packet.ssrc,
                    payload_type: packet.payload_type,
                    last_packet: now,
                    depacketizer: H264Depacketizer::new(),
                })
            }
        };
        sender.last_packet = now;
        if packet.payload_type != sender.payload_type {
            // Plain RTP carries one stream per port: the first payload type is it.
            self.status.ignored_packets += 1;
            return;
        }
        sender.ssrc = packet.ssrc;
        sender
            .depacketizer
            .push(&packet, clock::monotonic_us(), &mut self.batch);
        self.status.received = sender.depacketizer.stats();
        self.pictures.extend(self.batch.drain(..));
    }

    /// Say (rate-limited: anyone who reaches the port can cause this) why a datagram
    /// from `from` was not used.
    fn refuse(&self, from: SocketAddr, why: &str) {
        if let Some(count) = self.refusals.hit() {
            tracing::warn!(%from, dropped = count, "RTP datagram dropped: {why}");
        }
    }

    /// A sender silent for [`STALL`] (or said by the input to be gone) has left: the
    /// next one may take over.
    fn forget_silent_sender(&mut self) {
        let left = self.input.sender_left();
        if self
            .sender
            .as_ref()
            .is_some_and(|s| left || s.last_packet.elapsed() > STALL)
        {
            if let Some(s) = self.sender.take() {
                tracing::info!(from = %s.addr, "RTP sender fell silent");
            }
            self.status.sender = None;
        }
    }

    /// Ask the sender for a keyframe when viewers need one or a picture was lost.
    fn request_keyframe(&mut self, wanted: bool) {
        let Some(sender) = self.sender.as_mut() else {
            return;
        };
        let recent = self
            .keyframe_requested_at
            .is_some_and(|t| t.elapsed() < KEYFRAME_REQUEST_EVERY);
        // A loss noticed meanwhile stays pending until a request may go out.
        if recent || !(sender.depacketizer.take_keyframe_request() || wanted) {
            return;
        }
        let pli = rtp::picture_loss_indication(FEEDBACK_SSRC, sender.ssrc);
        self.input.send_feedback(sender.addr, &pli);
        self.keyframe_requested_at = Some(Instant::now());
        self.status.keyframe_requests += 1;
    }
}

impl Source for RtpListenSource {
    fn thread_name(&self) -> &'static str {
        "rtp-listen"
    }

    fn backoff(&self) -> (Duration, Duration) {
        // Opening cannot fail: the port is bound already.
        (Duration::ZERO, Duration::ZERO)
    }

    fn open(&mut self, demand: &Demand) -> Result<(), String> {
        demand.describe(self.kind.clone());
        Ok(())
    }

    fn next(&mut self, demand: &Demand, deadline: Instant) -> Next<'_> {
        loop {
            self.forget_silent_sender();
            self.request_keyframe(demand.want_key());
            if let Some(picture) = self.pictures.pop_front() {
                demand.report_rtp(self.status.clone());
                return Next::Picture(picture);
            }
            if Instant::now() >= deadline || demand.stopping() {
                demand.report_rtp(self.status.clone());
                return Next::Waiting;
            }
            let mut buf = std::mem::take(&mut self.buf);
            let received = self.input.recv(&mut buf, deadline);
            self.buf = buf;
            if let Some((len, from)) = received {
                self.take(len, from);
            }
        }
    }

    fn close(&mut self, _: Closing) {
        self.sender = None;
        self.pictures.clear();
        self.status.sender = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Datagrams handed over by the test, feedback collected.
    struct Pushed {
        rx: mpsc::Receiver<(Vec<u8>, SocketAddr)>,
        feedback: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    }

    impl RtpInput for Pushed {
        fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Option<(usize, SocketAddr)> {
            let wait = deadline.saturating_duration_since(Instant::now());
            let (data, from) = self.rx.recv_timeout(wait).ok()?;
            let len = data.len().min(buf.len());
            buf[..len].copy_from_slice(&data[..len]);
            Some((len, from))
        }

        fn send_feedback(&mut self, to: SocketAddr, rtcp: &[u8]) {
            let _ = self.feedback.send((to, rtcp.to_vec()));
        }
    }

    /// A source the test hands datagrams to directly, and the feedback it sends.
    fn source(allow: &[IpAddr]) -> (RtpListenSource, mpsc::Receiver<(SocketAddr, Vec<u8>)>) {
        let (_, rx) = mpsc::channel();
        let (feedback, fb_rx) = mpsc::channel();
        let input = Pushed { rx, feedback };
        let src = RtpListenSource::new(Box::new(input), "test".into(), allow);
        (src, fb_rx)
    }

    fn rtp(seq: u16, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let packet = rtp::RtpPacket {
            marker,
            payload_type: 96,
            sequence: seq,
            timestamp: u32::from(seq) * 3000,
            ssrc: 9,
            payload,
        };
        rtp::write(&packet, &mut out);
        out
    }

    #[test]
    fn the_first_sender_has_the_stream_and_others_are_ignored_or_refused() {
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:5000".parse().unwrap();
        let c: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let allow: Vec<IpAddr> = vec![a.ip(), b.ip()];
        let (mut src, feedback) = source(&allow);
        let slice = [0x41, 0x88, 1, 2, 3];
        let len = {
            let data = rtp(1, true, &slice);
            src.buf[..data.len()].copy_from_slice(&data);
            data.len()
        };
        src.take(len, a);
        src.take(len, b);
        src.take(len, c);
        src.buf[..5].copy_from_slice(b"hello");
        src.take(5, a);
        assert_eq!(src.status.sender.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(src.status.received.packets, 1);
        assert_eq!(src.status.ignored_packets, 1);
        assert_eq!(src.status.rejected_packets, 2);

        // Its picture came without an IDR: the sender is asked for one, once.
        src.request_keyframe(false);
        src.request_keyframe(true);
        let (to, pli) = feedback.try_recv().unwrap();
        assert_eq!(to, a);
        assert_eq!(rtp::parse(&pli), Datagram::Rtcp);
        assert_eq!(&pli[8..12], &9u32.to_be_bytes(), "about the sender's SSRC");
        assert!(feedback.try_recv().is_err(), "rate-limited");
    }
}
