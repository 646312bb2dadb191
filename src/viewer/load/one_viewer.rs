//! One simulated viewer: joins through the Janus API as janus.js does, receives the
//! stream over a real WebRTC peer, and measures what a viewer would notice.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use tokio::sync::watch;

use crate::media::clock;
use crate::viewer::decoder::H264Decoder;
use crate::viewer::depacketizer::ReceivedFrame;
use crate::viewer::janus_client::{Endpoint, JanusClient};
use crate::viewer::receiver::{ReceiverOptions, ReceiverPeer};

use super::catchup::CatchUp;

/// janus.js sends a keepalive this often; sessions time out without them.
const KEEPALIVE: Duration = Duration::from_secs(25);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Counters every viewer updates while running, for the progress line.
#[derive(Default)]
pub struct Progress {
    pub started: AtomicUsize,
    pub connected: AtomicUsize,
    pub failed: AtomicUsize,
    /// All complete pictures, catch-up included.
    pub frames: AtomicU64,
    /// Of `frames`, those of the catch-up burst that starts a viewer (see [`CatchUp`]).
    pub catch_up_frames: AtomicU64,
}

/// What one viewer saw.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ViewerReport {
    pub id: usize,
    pub error: Option<String>,
    /// The viewer's media socket (`--bind` and the port it got).
    pub media_addr: Option<String>,
    /// `watch` sent → ICE and DTLS done.
    pub connect_ms: Option<f64>,
    /// `watch` sent → first complete keyframe.
    pub ttff_ms: Option<f64>,
    /// Complete pictures from the first keyframe on.
    pub frames: u64,
    /// Of `frames`, those of the catch-up burst at the start (not counted in fps).
    pub catch_up_frames: u64,
    pub keyframes: u64,
    /// Seconds from the first keyframe to the end.
    pub receiving_s: f64,
    pub packets_received: u64,
    pub packets_expected: u64,
    pub packets_lost: u64,
    pub nacks_sent: u64,
    pub plis_sent: u64,
    /// The offer carried sound (the viewer asked for it and the server has it).
    pub audio_offered: bool,
    /// Audio packets received, expected by their sequence numbers, and their bytes.
    pub audio_packets_received: u64,
    pub audio_packets_expected: u64,
    pub audio_bytes: u64,
    /// This viewer put its pictures together and decoded them (one of the decoded
    /// sample); the others only count pictures and packets.
    pub decoded: bool,
    /// Pictures the decoder gave back, and access units it refused.
    pub pictures_decoded: u64,
    pub decode_errors: u64,
    /// End-to-end delay of each picture (abs-capture-time → complete here), ms.
    #[serde(skip)]
    pub delays_ms: Vec<f32>,
}

/// What a viewer watches, and how.
#[derive(Clone, Debug)]
pub struct Watch {
    pub endpoint: Endpoint,
    /// The stream by name; `None`: the default one.
    pub stream: Option<String>,
    /// Ask for the sound (`watch {audio: true}`).
    pub audio: bool,
    /// The address the media socket binds to.
    pub bind: IpAddr,
    /// Put pictures together and decode them, as a player would; otherwise only count
    /// them (SRTP is still authenticated and decrypted, sequence numbers counted).
    pub decode: bool,
}

/// Run one viewer until `stop` turns true.
pub async fn run(
    id: usize,
    what: Watch,
    progress: Arc<Progress>,
    stop: watch::Receiver<bool>,
) -> ViewerReport {
    let mut report = ViewerReport {
        id,
        ..Default::default()
    };
    progress.started.fetch_add(1, Ordering::Relaxed);
    let watched = watch_stream(&what, &progress, stop, &mut report);
    if let Err(e) = watched.await {
        report.error = Some(format!("{e:#}"));
        progress.failed.fetch_add(1, Ordering::Relaxed);
    }
    report
}

async fn watch_stream(
    what: &Watch,
    progress: &Progress,
    mut stop: watch::Receiver<bool>,
    report: &mut ViewerReport,
) -> Result<()> {
    let mut janus = JanusClient::connect(&what.endpoint).await?;
    janus.create_and_attach().await?;
    let watch_sent = Instant::now();
    let params = what.audio.then(|| json!({"audio": true}));
    let offer = janus.watch_with(what.stream.as_deref(), params).await?;
    report.audio_offered = offer.lines().any(|l| l.starts_with("m=audio "));
    let opts = ReceiverOptions {
        ip: what.bind,
        assemble: what.decode,
        ..Default::default()
    };
    let (mut peer, answer) = ReceiverPeer::answer_with(&offer, opts).await?;
    report.media_addr = Some(peer.local_addr().to_string());
    janus.start(&answer).await?;
    peer.wait_connected(CONNECT_TIMEOUT)
        .await
        .context("WebRTC connection")?;
    report.connect_ms = Some(ms(watch_sent.elapsed()));
    progress.connected.fetch_add(1, Ordering::Relaxed);

    let mut first_key: Option<Instant> = None;
    let decoder = what.decode.then(DecoderThread::start).transpose()?;
    report.decoded = decoder.is_some();
    let mut catch_up = CatchUp::default();
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let result = loop {
        tokio::select! {
            frame = peer.next_frame() => {
                let Some(frame) = frame else {
                    break Err(anyhow::anyhow!("the WebRTC connection closed"));
                };
                let now = Instant::now();
                let key = is_keyframe(&frame);
                if first_key.is_none() {
                    if !key {
                        continue;
                    }
                    first_key = Some(now);
                    report.ttff_ms = Some(ms(now - watch_sent));
                }
                report.frames += 1;
                report.keyframes += u64::from(key);
                progress.frames.fetch_add(1, Ordering::Relaxed);
                if catch_up.is_catch_up(now, frame.rtp_timestamp) {
                    report.catch_up_frames += 1;
                    progress.catch_up_frames.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(d) = end_to_end_ms(&frame) {
                    report.delays_ms.push(d);
                }
                if let Some(decoder) = &decoder {
                    decoder.decode(frame);
                }
            }
            _ = keepalive.tick() => janus.keepalive(),
            _ = stop.wait_for(|s| *s) => break Ok(()),
        }
    };
    progress.connected.fetch_sub(1, Ordering::Relaxed);
    if let Some(t) = first_key {
        report.receiving_s = t.elapsed().as_secs_f64();
    }
    if let Some(s) = peer.stats().await {
        report.packets_received = s.packets_received;
        report.packets_expected = s.packets_expected;
        report.packets_lost = s.packets_lost();
        report.nacks_sent = s.nacks_sent;
        report.plis_sent = s.plis_sent;
        report.audio_packets_received = s.audio_packets_received;
        report.audio_packets_expected = s.audio_packets_expected;
        report.audio_bytes = s.audio_bytes_received;
    }
    if let Some(decoder) = decoder {
        let (decoded, errors) = decoder.finish().await;
        report.pictures_decoded = decoded;
        report.decode_errors = errors;
    }
    peer.close();
    janus.destroy();
    // Give the destroy a moment to leave before the client is dropped.
    tokio::time::sleep(Duration::from_millis(50)).await;
    result
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn is_keyframe(frame: &ReceivedFrame) -> bool {
    frame.keyframe
}

/// A decoder on a thread of its own, so that decoding pictures does not hold up the
/// runtime the other viewers' packets arrive on.
struct DecoderThread {
    frames: std::sync::mpsc::Sender<ReceivedFrame>,
    done: tokio::sync::oneshot::Receiver<(u64, u64)>,
}

impl DecoderThread {
    fn start() -> Result<DecoderThread> {
        let mut decoder = H264Decoder::new()?;
        let (frames, rx) = std::sync::mpsc::channel::<ReceivedFrame>();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("load-decoder".into())
            .spawn(move || {
                let (mut decoded, mut errors) = (0, 0);
                for frame in rx {
                    match decoder.decode(&frame.data) {
                        Ok(Some(_)) => decoded += 1,
                        Ok(None) => {}
                        Err(_) => errors += 1,
                    }
                }
                let _ = done_tx.send((decoded, errors));
            })
            .context("start a decoder thread")?;
        Ok(DecoderThread { frames, done })
    }

    fn decode(&self, frame: ReceivedFrame) {
        let _ = self.frames.send(frame);
    }

    /// Pictures decoded and access units refused, once the queued ones are done.
    async fn finish(self) -> (u64, u64) {
        drop(self.frames);
        self.done.await.unwrap_or_default()
    }
}

/// Delay from the picture's capture time (abs-capture-time, NTP 32.32 against the wall
/// clock) to now. Both ends share this machine's clock, so no offset is applied.
fn end_to_end_ms(frame: &ReceivedFrame) -> Option<f32> {
    let sent = frame.abs_capture_time?;
    let now = clock::realtime_us_to_ntp(clock::realtime_us());
    let diff = now.checked_sub(sent)?;
    Some((diff as f64 * 1000.0 / 4_294_967_296.0) as f32)
}
