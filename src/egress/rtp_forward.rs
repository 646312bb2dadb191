//! `--rtp-forward`: a stream as plain RTP over UDP to another server (a Janus Streaming
//! `rtp` mountpoint, GStreamer, ffmpeg), the same RTP its WebRTC viewers get (H.264 on
//! PT 96 at 90 kHz, Opus on PT 111 at 48 kHz, packets of at most `--rtp-packet-size`).
//!
//! Each target has its own socket. Sender reports go from it to the target's RTCP port
//! once a second, so the receiver learns where to send feedback; the PLIs and FIRs that
//! come back to it become keyframe requests, which the hub coalesces with everybody
//! else's. A target that is down costs nothing but the packets sent to it: UDP does not
//! wait, and a name that does not resolve is tried again with backoff.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{BufMut, BytesMut};
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::rtcp::{keyframe_requests, SenderReport};
use super::target::{HostPort, RtpForwardTarget};
use super::whip::{WhipReport, WhipStats};
use crate::media::audio::{OPUS_PAYLOAD_TYPE, SAMPLE_RATE};
use crate::media::clock;
use crate::media::hub::{StartAt, Subscriber};
use crate::media::{Picture, Stream};
use crate::ratelog::{RateLimited, PERIOD};
use crate::rtc::packetizer::{self, rtp_timestamp_90k};
use crate::rtc::peer::H264_PAYLOAD_TYPE;

const RTP_HEADER_LEN: usize = 12;
const SENDER_REPORT_EVERY: Duration = Duration::from_secs(1);
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

static SEND_FAILED: RateLimited = RateLimited::new(PERIOD);

/// One forward's counters, for `/state` and `/metrics`.
#[derive(Debug)]
pub struct ForwardStats {
    pub stream: String,
    /// The target as configured.
    pub target: String,
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub keyframes: AtomicU64,
    pub audio_packets: AtomicU64,
    pub audio_bytes: AtomicU64,
    /// PLIs and FIRs received from the target.
    pub keyframe_requests: AtomicU64,
    /// Of those, the ones that joined a keyframe request already pending.
    pub keyframe_requests_coalesced: AtomicU64,
    pub send_errors: AtomicU64,
    /// Where the packets go, once resolved.
    sending_to: Mutex<Option<SocketAddr>>,
}

/// One forward in `/state`.
#[derive(Clone, Debug, Serialize)]
pub struct ForwardReport {
    pub stream: String,
    pub target: String,
    pub sending_to: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    pub keyframes: u64,
    pub audio_packets: u64,
    pub audio_bytes: u64,
    pub keyframe_requests: u64,
    pub keyframe_requests_coalesced: u64,
    pub send_errors: u64,
}

impl ForwardStats {
    fn new(stream: &str, target: &RtpForwardTarget) -> ForwardStats {
        ForwardStats {
            stream: stream.to_string(),
            target: target.to_string(),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            keyframes: AtomicU64::new(0),
            audio_packets: AtomicU64::new(0),
            audio_bytes: AtomicU64::new(0),
            keyframe_requests: AtomicU64::new(0),
            keyframe_requests_coalesced: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            sending_to: Mutex::new(None),
        }
    }

    pub fn report(&self) -> ForwardReport {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let sending_to = *self.sending_to.lock().unwrap_or_else(|e| e.into_inner());
        ForwardReport {
            stream: self.stream.clone(),
            target: self.target.clone(),
            sending_to: sending_to.map(|a| a.to_string()),
            packets: n(&self.packets),
            bytes: n(&self.bytes),
            keyframes: n(&self.keyframes),
            audio_packets: n(&self.audio_packets),
            audio_bytes: n(&self.audio_bytes),
            keyframe_requests: n(&self.keyframe_requests),
            keyframe_requests_coalesced: n(&self.keyframe_requests_coalesced),
            send_errors: n(&self.send_errors),
        }
    }
}

/// Every forward of the server, plain RTP and WHIP.
#[derive(Debug, Default)]
pub struct Forwards {
    pub list: Vec<Arc<ForwardStats>>,
    pub whip: Vec<Arc<WhipStats>>,
}

impl Forwards {
    /// Start forwarding `stream` to each of `targets`, until `shutdown` turns true.
    pub fn start(
        &mut self,
        stream: &Arc<Stream>,
        targets: &[RtpForwardTarget],
        rtp_packet_size: usize,
        shutdown: &watch::Receiver<bool>,
    ) {
        for target in targets {
            let stats = Arc::new(ForwardStats::new(stream.name(), target));
            self.list.push(stats.clone());
            tokio::spawn(run(
                stream.clone(),
                target.clone(),
                rtp_packet_size,
                stats,
                shutdown.clone(),
            ));
        }
    }

    pub fn reports(&self) -> Vec<ForwardReport> {
        self.list.iter().map(|s| s.report()).collect()
    }

    pub fn whip_reports(&self) -> Vec<WhipReport> {
        self.whip.iter().map(|s| s.report()).collect()
    }
}

/// Forward until shutdown, starting again with backoff when the target cannot be
/// resolved or a socket cannot be made.
async fn run(
    stream: Arc<Stream>,
    target: RtpForwardTarget,
    packet_size: usize,
    stats: Arc<ForwardStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut retry = RETRY_FIRST;
    loop {
        let result = tokio::select! {
            r = forward(&stream, &target, packet_size, &stats) => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match result {
            Ok(()) => return, // the stream is gone
            Err(e) => tracing::warn!(
                stream = stream.name(),
                target = %target,
                "RTP forward: {e:#}; trying again in {}s",
                retry.as_secs()
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

async fn resolve(hp: &HostPort) -> Result<SocketAddr> {
    tokio::net::lookup_host(hp.lookup_form())
        .await
        .with_context(|| format!("cannot resolve {hp}"))?
        .next()
        .with_context(|| format!("{hp} has no address"))
}

async fn socket_for(peer: SocketAddr) -> Result<UdpSocket> {
    let any: IpAddr = match peer {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    UdpSocket::bind((any, 0))
        .await
        .context("cannot open a UDP socket")
}

/// One RTP stream out of one socket: its numbering and what its reports say.
struct RtpSender {
    socket: UdpSocket,
    to: SocketAddr,
    rtcp_to: SocketAddr,
    payload_type: u8,
    ssrc: u32,
    seq: u16,
    packets: u32,
    octets: u32,
    buf: BytesMut,
}

impl RtpSender {
    fn new(socket: UdpSocket, to: SocketAddr, rtcp_port: u16, payload_type: u8) -> RtpSender {
        RtpSender {
            socket,
            to,
            rtcp_to: SocketAddr::new(to.ip(), rtcp_port),
            payload_type,
            ssrc: rand::random(),
            seq: rand::random(),
            packets: 0,
            octets: 0,
            buf: BytesMut::with_capacity(1500),
        }
    }

    /// Send one packet; false when the kernel refused it (counted, logged rarely).
    async fn send(&mut self, payload: &[u8], marker: bool, timestamp: u32) -> bool {
        self.buf.clear();
        self.buf.put_u8(0x80);
        self.buf
            .put_u8(self.payload_type | if marker { 0x80 } else { 0 });
        self.buf.put_u16(self.seq);
        self.buf.put_u32(timestamp);
        self.buf.put_u32(self.ssrc);
        self.buf.put_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        match self.socket.send_to(&self.buf, self.to).await {
            Ok(_) => {
                self.packets = self.packets.wrapping_add(1);
                self.octets = self.octets.wrapping_add(payload.len() as u32);
                true
            }
            Err(e) => {
                if let Some(n) = SEND_FAILED.hit() {
                    tracing::warn!(to = %self.to, count = n, "RTP forward: cannot send: {e}");
                }
                false
            }
        }
    }

    /// A sender report, if anything was sent; `rtp_now` is the RTP time of this instant.
    async fn report(&self, rtp_now: u32) {
        if self.packets == 0 {
            return;
        }
        let sr = SenderReport {
            ssrc: self.ssrc,
            wallclock_us: clock::realtime_us(),
            rtp_timestamp: rtp_now,
            packets: self.packets,
            octets: self.octets,
        };
        let _ = self.socket.send_to(&sr.to_bytes(), self.rtcp_to).await;
    }
}

/// 48 kHz RTP timestamp of a capture time (CLOCK_MONOTONIC µs).
fn rtp_timestamp_48k(capture_us: u64) -> u32 {
    (capture_us.wrapping_mul(u64::from(SAMPLE_RATE) / 1000) / 1000) as u32
}

async fn next(sub: &mut Option<Subscriber>) -> Option<Arc<Picture>> {
    match sub {
        Some(sub) => sub.recv().await,
        None => std::future::pending().await,
    }
}

/// Forward until the stream ends; an error when the target cannot be reached at all.
async fn forward(
    stream: &Arc<Stream>,
    target: &RtpForwardTarget,
    packet_size: usize,
    stats: &ForwardStats,
) -> Result<()> {
    let video_to = resolve(&target.video).await?;
    let mut video = RtpSender::new(
        socket_for(video_to).await?,
        video_to,
        target.video_rtcp_port,
        H264_PAYLOAD_TYPE,
    );
    let mut audio = match (&target.audio, stream.audio()) {
        (Some(hp), Some(_)) => {
            let to = resolve(hp).await?;
            let rtcp_port = hp.port.checked_add(1).unwrap_or(hp.port);
            Some(RtpSender::new(
                socket_for(to).await?,
                to,
                rtcp_port,
                OPUS_PAYLOAD_TYPE,
            ))
        }
        (Some(_), None) => {
            tracing::warn!(
                stream = stream.name(),
                "RTP forward: the stream has no sound; only its video is forwarded"
            );
            None
        }
        _ => None,
    };
    *stats.sending_to.lock().unwrap_or_else(|e| e.into_inner()) = Some(video_to);
    tracing::info!(stream = stream.name(), to = %video_to, "RTP forward started");

    let max_payload = packet_size.saturating_sub(RTP_HEADER_LEN);
    let hub = stream.hub().clone();
    // The cached GOP first: the receiver can decode from the first packet.
    let mut pictures = hub.subscribe(StartAt::Gop);
    let mut sound = match audio {
        Some(_) => stream.audio().map(|h| h.subscribe(StartAt::NextKeyframe)),
        None => None,
    };
    let mut reports = tokio::time::interval(SENDER_REPORT_EVERY);
    let mut feedback = [0u8; 1500];
    let mut reported = false;
    loop {
        tokio::select! {
            au = pictures.recv() => {
                let Some(au) = au else { return Ok(()) };
                let timestamp = rtp_timestamp_90k(au.capture_us);
                for p in packetizer::packetize(&au.data, max_payload) {
                    if video.send(&p.payload, p.marker, timestamp).await {
                        stats.packets.fetch_add(1, Ordering::Relaxed);
                        stats.bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                    } else {
                        stats.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if au.key {
                    stats.keyframes.fetch_add(1, Ordering::Relaxed);
                }
                // The first report goes with the first picture, not a second later: a
                // receiver learns from it where keyframe requests go.
                if !reported {
                    reported = true;
                    video.report(timestamp).await;
                }
            }
            frame = next(&mut sound) => {
                let (Some(frame), Some(audio)) = (frame, audio.as_mut()) else {
                    sound = None;
                    continue;
                };
                if audio.send(&frame.data, true, rtp_timestamp_48k(frame.capture_us)).await {
                    stats.audio_packets.fetch_add(1, Ordering::Relaxed);
                    stats.audio_bytes.fetch_add(frame.data.len() as u64, Ordering::Relaxed);
                } else {
                    stats.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            got = video.socket.recv_from(&mut feedback) => {
                // Errors here are ICMP news about earlier sends: nothing to act on.
                let Ok((len, _from)) = got else { continue };
                let asked = keyframe_requests(&feedback[..len]);
                if asked.any() {
                    stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    if !hub.request_keyframe_for_egress() {
                        stats.keyframe_requests_coalesced.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!(stream = stream.name(), ?asked, "keyframe requested by RTP forward target");
                }
            }
            _ = reports.tick() => {
                let now = clock::monotonic_us();
                video.report(rtp_timestamp_90k(now)).await;
                if let Some(audio) = &audio {
                    audio.report(rtp_timestamp_48k(now)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_timestamps_count_48_khz() {
        assert_eq!(rtp_timestamp_48k(1_000_000), 48_000);
        assert_eq!(rtp_timestamp_48k(20_000), 960);
    }
}
