//! JSMpeg: MPEG-TS in (uploads or the transcoder), WebSocket out.
//!
//! Every source cuts its bytes into whole 188-byte packets before publishing them on the
//! [`TsBus`], so several uploads (say one ffmpeg for video, one for audio) interleave on
//! packet boundaries. Viewers read the bus through a short ring: a viewer that falls
//! behind loses the oldest data and rejoins at the next join point, so it stays at the
//! live edge and never slows the uploads or the other viewers.

use std::sync::Arc;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::mpegts::{self, PacketSplitter, VideoEsExtractor};
use super::Relay;
use crate::access::secret_guard::{self, Failure};
use crate::media::stream::Output;
use crate::media::Stream;
use crate::rejections::{self, Rejection};

/// Chunks a viewer may fall behind before it loses data (about a second of a 1 Mbit/s
/// stream arriving in 4 KiB chunks; uploads from ffmpeg usually arrive in smaller ones).
const BUS_CHUNKS: usize = 64;

/// A run of whole TS packets, and where in it a new viewer may start.
#[derive(Clone, Debug)]
pub struct TsChunk {
    pub data: Bytes,
    pub join_at: Option<usize>,
}

/// The fan-out of MPEG-TS to JSMpeg viewers.
#[derive(Clone)]
pub struct TsBus {
    tx: broadcast::Sender<TsChunk>,
}

impl TsBus {
    pub fn new() -> TsBus {
        let (tx, _) = broadcast::channel(BUS_CHUNKS);
        TsBus { tx }
    }

    /// Publish whole packets. Never waits for viewers.
    pub fn publish(&self, packets: Bytes) {
        if packets.is_empty() {
            return;
        }
        let join_at = mpegts::find_join_point(&packets);
        let _ = self.tx.send(TsChunk {
            data: packets,
            join_at,
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TsChunk> {
        self.tx.subscribe()
    }
}

impl Default for TsBus {
    fn default() -> Self {
        TsBus::new()
    }
}

/// Byte-wise comparison whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// `POST`/`PUT /upload/{secret}`: relay an MPEG-TS body (chunked or not) to the viewers.
pub async fn upload(
    State(relay): State<Arc<Relay>>,
    Path(secret): Path<String>,
    request: Request,
) -> Response {
    let Some(expected) = relay.cfg.jsmpeg_secret.as_deref() else {
        return (
            StatusCode::NOT_FOUND,
            "uploads are disabled; start peregrine with --jsmpeg-secret",
        )
            .into_response();
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |c| c.0.ip());
    let now = Instant::now();
    if let Some(left) = relay.secret_guard.blocked(peer, now) {
        relay.counters.upload_throttled();
        rejections::count(Rejection::UploadBlocked);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, left.as_secs().max(1).to_string())],
            "too many wrong secrets from this address; try again later",
        )
            .into_response();
    }
    if !constant_time_eq(secret.as_bytes(), expected.as_bytes()) {
        relay.counters.upload_rejected();
        rejections::count(Rejection::UploadSecret);
        if relay.secret_guard.failed(peer, now) == Failure::Blocked {
            if let Some(count) = relay.logs.blocked.hit() {
                tracing::warn!(
                    %peer,
                    addresses = count,
                    "MPEG-TS uploads: {} wrong secrets within {} s; refusing the address for {} s",
                    secret_guard::MAX_FAILURES,
                    secret_guard::WINDOW.as_secs(),
                    secret_guard::BLOCK.as_secs()
                );
            }
        }
        if let Some(count) = relay.logs.wrong_secret.hit() {
            tracing::warn!(%peer, refused = count, "MPEG-TS upload refused: wrong secret");
        }
        return (StatusCode::FORBIDDEN, "wrong secret").into_response();
    }
    let body = request.into_body();
    let _upload = relay.counters.upload();
    tracing::info!("MPEG-TS upload started");
    let mut splitter = PacketSplitter::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => {
                tracing::info!("MPEG-TS upload ended: {err}");
                return StatusCode::BAD_REQUEST.into_response();
            }
        };
        relay.counters.upload_bytes(chunk.len());
        match splitter.push(&chunk) {
            Ok(packets) => relay.upload_bus().publish(packets),
            Err(err) => {
                relay.counters.upload_rejected();
                if let Some(count) = relay.logs.bad_upload.hit() {
                    tracing::warn!(rejected = count, "MPEG-TS upload rejected: {err}");
                }
                return (StatusCode::BAD_REQUEST, err.to_string()).into_response();
            }
        }
    }
    if splitter.dropped_bytes > 0 {
        tracing::warn!(
            dropped_bytes = splitter.dropped_bytes,
            "MPEG-TS upload had bytes out of packet sync"
        );
    }
    tracing::info!("MPEG-TS upload finished");
    StatusCode::OK.into_response()
}

/// A WebSocket upgrade on `/jsmpeg` or `/` for `stream`. Uploads feed the default
/// stream; the others, and the default one without a secret, are transcoded.
pub fn upgrade(relay: Arc<Relay>, stream: Arc<Stream>, ws: WebSocketUpgrade) -> Response {
    let uploads =
        relay.cfg.jsmpeg_secret.is_some() && Arc::ptr_eq(&stream, relay.streams.default_stream());
    let transcode = !uploads;
    if transcode {
        if let Err(err) = relay.jsmpeg_feed(&stream).transcoder.check_available() {
            if let Some(count) = relay.logs.viewer_refused.hit() {
                tracing::warn!(refused = count, "JSMpeg viewer refused: {err}");
            }
            return (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response();
        }
    }
    ws.on_upgrade(move |socket| serve_viewer(relay, stream, socket, transcode))
}

async fn serve_viewer(
    relay: Arc<Relay>,
    stream: Arc<Stream>,
    mut socket: WebSocket,
    transcode: bool,
) {
    let feed = relay.jsmpeg_feed(&stream);
    // Subscribe before the transcoder starts so its first packets are not missed, and
    // before the viewer is counted so a counted viewer gets every packet from then on.
    let mut rx = feed.bus.subscribe();
    let _viewer = relay.counters.jsmpeg_viewer();
    let _viewing = stream.viewer(Output::Jsmpeg);
    let _transcoding = transcode.then(|| feed.transcoder.viewer_joined());
    let mut out = ViewerOutput::new(relay.cfg.jsmpeg_header);
    loop {
        tokio::select! {
            chunk = rx.recv() => {
                let data = match chunk {
                    Ok(chunk) => out.next(&chunk),
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        relay.counters.jsmpeg_lagged();
                        tracing::debug!(skipped, "JSMpeg viewer fell behind; rejoining at the live edge");
                        out.rejoin();
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                for message in data {
                    let len = message.len();
                    if socket.send(Message::Binary(message)).await.is_err() {
                        return;
                    }
                    relay.counters.jsmpeg_sent(len);
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// What one viewer is sent: TS from a join point on, or (for the old `jsmpg.js`) the
/// `jsmp` header followed by the raw MPEG-1 video stream from a sequence header on.
struct ViewerOutput {
    raw_with_header: bool,
    joined: bool,
    header_sent: bool,
    extractor: VideoEsExtractor,
}

impl ViewerOutput {
    fn new(raw_with_header: bool) -> ViewerOutput {
        ViewerOutput {
            raw_with_header,
            joined: false,
            header_sent: false,
            extractor: VideoEsExtractor::new(),
        }
    }

    fn rejoin(&mut self) {
        self.joined = false;
        self.extractor = VideoEsExtractor::new();
    }

    /// The messages to send for this chunk (none while waiting for a join point).
    fn next(&mut self, chunk: &TsChunk) -> Vec<Bytes> {
        if !self.raw_with_header {
            if !self.joined {
                let Some(at) = chunk.join_at else {
                    return Vec::new();
                };
                self.joined = true;
                return vec![chunk.data.slice(at..)];
            }
            return vec![chunk.data.clone()];
        }
        let mut es = BytesMut::new();
        self.extractor.extract(&chunk.data, &mut es);
        let mut es = es.freeze();
        let mut messages = Vec::new();
        if !self.joined {
            let Some(at) = es.windows(4).position(|w| w == [0, 0, 1, 0xb3]) else {
                return messages;
            };
            es = es.slice(at..);
            self.joined = true;
            if !self.header_sent {
                if let Some((w, h)) = mpegts::sequence_header_size(&es) {
                    messages.push(jsmp_header(w, h));
                    self.header_sent = true;
                }
            }
        }
        if !es.is_empty() {
            messages.push(es);
        }
        messages
    }
}

/// The header the old `jsmpg.js` expects first: `jsmp`, width, height (big-endian u16).
pub fn jsmp_header(width: u16, height: u16) -> Bytes {
    let mut h = Vec::with_capacity(8);
    h.extend_from_slice(b"jsmp");
    h.extend_from_slice(&width.to_be_bytes());
    h.extend_from_slice(&height.to_be_bytes());
    Bytes::from(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_comparison() {
        assert!(constant_time_eq(b"supersecret", b"supersecret"));
        assert!(!constant_time_eq(b"supersecret", b"supersecreT"));
        assert!(!constant_time_eq(b"supersecret", b"supersecret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn header_layout() {
        assert_eq!(
            &jsmp_header(640, 480)[..],
            &[b'j', b's', b'm', b'p', 2, 128, 1, 224]
        );
    }
}
