//! The WebSocket fallbacks for clients without WebRTC, all on the main HTTP port:
//!
//! * `/h264`: H.264 access units for jmuxer ([`h264ws`]).
//! * `/jsmpeg` and a WebSocket upgrade on `/`: MPEG-TS for JSMpeg ([`jsmpeg`]), fed either
//!   by uploads to `/upload/SECRET` (when a secret is configured, a drop-in for JSMpeg's
//!   websocket relay) or by transcoding the hub's H.264 with an ffmpeg child ([`transcode`]).
//! * `/api/media/ws` (and `/ws`, `/api/media`): PiKVM's Direct H.264 mode, kvmd's media
//!   server protocol for WebCodecs players ([`direct`]).

pub mod direct;
pub mod h264ws;
pub mod jsmpeg;
pub mod mpegts;
pub mod pcm_feed;
pub mod transcode;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

use crate::access::secret_guard;
use crate::media::{Stream, Streams};
use crate::ratelog::{RateLimited, PERIOD};

/// What the relay needs from the configuration.
#[derive(Clone, Debug, Default)]
pub struct RelayConfig {
    /// Enables MPEG-TS uploads at `/upload/SECRET`; without it JSMpeg viewers get the
    /// hub's stream transcoded.
    pub jsmpeg_secret: Option<String>,
    /// Send the 8-byte `jsmp` header and a raw MPEG-1 video stream (the old `jsmpg.js`).
    pub jsmpeg_header: bool,
    /// The ffmpeg program used for transcoding.
    pub ffmpeg: String,
    /// MPEG-1 bitrate of the transcode, kbit/s.
    pub transcode_kbps: u32,
}

/// Live counts for `/state`: connections, tasks, drops.
#[derive(Default)]
pub struct Counters {
    h264_clients: AtomicUsize,
    h264_dropped_to_key: AtomicU64,
    jsmpeg_viewers: AtomicUsize,
    jsmpeg_lagged: AtomicU64,
    uploads: AtomicUsize,
    uploads_total: AtomicU64,
    uploads_rejected: AtomicU64,
    uploads_throttled: AtomicU64,
    upload_bytes: AtomicU64,
    tasks: AtomicUsize,
    connections_total: AtomicU64,
    h264_sent: Sent,
    jsmpeg_sent: Sent,
    direct_clients: AtomicUsize,
    direct_overflows: AtomicU64,
    direct_sent: Sent,
}

/// WebSocket messages sent to viewers, and their payload bytes.
#[derive(Default)]
struct Sent {
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl Sent {
    fn add(&self, bytes: usize) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn load(&self) -> (u64, u64) {
        (
            self.messages.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// Counts for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RelayMetrics {
    pub h264_clients: usize,
    pub jsmpeg_viewers: usize,
    pub uploads: usize,
    /// (messages, bytes) sent to `/h264` clients and to JSMpeg viewers.
    pub h264_sent: (u64, u64),
    pub jsmpeg_sent: (u64, u64),
    /// (messages, bytes) sent to Direct H.264 clients.
    pub direct_sent: (u64, u64),
}

/// Decrements a counter when dropped.
pub struct CountGuard<'a>(&'a AtomicUsize);

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Like [`CountGuard`], for guards that must move into spawned tasks.
pub struct OwnedCountGuard {
    counters: Arc<Counters>,
    pick: fn(&Counters) -> &AtomicUsize,
}

impl Drop for OwnedCountGuard {
    fn drop(&mut self) {
        (self.pick)(&self.counters).fetch_sub(1, Ordering::SeqCst);
    }
}

impl Counters {
    fn enter(counter: &AtomicUsize) -> CountGuard<'_> {
        counter.fetch_add(1, Ordering::SeqCst);
        CountGuard(counter)
    }

    pub fn h264_client(&self) -> CountGuard<'_> {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        Self::enter(&self.h264_clients)
    }

    pub fn jsmpeg_viewer(&self) -> CountGuard<'_> {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        Self::enter(&self.jsmpeg_viewers)
    }

    /// A Direct H.264 (`/api/media/ws`) connection.
    pub fn direct_client(&self) -> CountGuard<'_> {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        Self::enter(&self.direct_clients)
    }

    /// A Direct client's queue overflowed and was emptied.
    pub fn direct_overflowed(&self) {
        self.direct_overflows.fetch_add(1, Ordering::Relaxed);
    }

    /// One message of `bytes` sent to a Direct client.
    pub fn direct_sent(&self, bytes: usize) {
        self.direct_sent.add(bytes);
    }

    pub fn upload(&self) -> CountGuard<'_> {
        self.uploads_total.fetch_add(1, Ordering::Relaxed);
        Self::enter(&self.uploads)
    }

    /// A task spawned for a connection; live until the guard drops.
    pub fn task(self: &Arc<Self>) -> OwnedCountGuard {
        self.tasks.fetch_add(1, Ordering::SeqCst);
        OwnedCountGuard {
            counters: self.clone(),
            pick: |c| &c.tasks,
        }
    }

    pub fn h264_dropped_to_key(&self) {
        self.h264_dropped_to_key.fetch_add(1, Ordering::Relaxed);
    }

    pub fn jsmpeg_lagged(&self) {
        self.jsmpeg_lagged.fetch_add(1, Ordering::Relaxed);
    }

    pub fn upload_rejected(&self) {
        self.uploads_rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn upload_throttled(&self) {
        self.uploads_throttled.fetch_add(1, Ordering::Relaxed);
    }

    pub fn upload_bytes(&self, n: usize) {
        self.upload_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// One message of `bytes` sent to an `/h264` client.
    pub fn h264_sent(&self, bytes: usize) {
        self.h264_sent.add(bytes);
    }

    /// One message of `bytes` sent to a JSMpeg viewer.
    pub fn jsmpeg_sent(&self, bytes: usize) {
        self.jsmpeg_sent.add(bytes);
    }
}

/// The fallbacks' shared state; one per server.
pub struct Relay {
    streams: Arc<Streams>,
    cfg: RelayConfig,
    counters: Arc<Counters>,
    /// One per stream, in the order of `streams`.
    jsmpeg: Vec<JsmpegFeed>,
    secret_guard: secret_guard::SecretGuard,
    logs: RelayLogs,
    /// Direct H.264 frames, one feed per stream.
    direct: direct::Feeds,
}

/// Log lines any client can trigger, each said at most every [`PERIOD`].
struct RelayLogs {
    wrong_secret: RateLimited,
    blocked: RateLimited,
    bad_upload: RateLimited,
    viewer_refused: RateLimited,
}

/// What a stream's JSMpeg viewers read: MPEG-TS on a bus, fed by uploads (the default
/// stream, with a secret) or by transcoding the stream.
struct JsmpegFeed {
    stream: Arc<Stream>,
    bus: jsmpeg::TsBus,
    transcoder: Arc<transcode::Transcoder>,
}

/// `?stream=NAME` on the relays' URLs; absent: the default stream.
#[derive(Debug, Default, serde::Deserialize)]
struct StreamQuery {
    stream: Option<String>,
}

impl Relay {
    pub fn new(streams: Arc<Streams>, cfg: RelayConfig) -> Arc<Relay> {
        let jsmpeg = streams
            .iter()
            .map(|stream| {
                let bus = jsmpeg::TsBus::new();
                let transcoder = transcode::Transcoder::new(stream, bus.clone(), &cfg);
                JsmpegFeed {
                    stream: stream.clone(),
                    bus,
                    transcoder,
                }
            })
            .collect();
        let direct = direct::Feeds::new(&streams);
        Arc::new(Relay {
            streams,
            cfg,
            counters: Arc::new(Counters::default()),
            jsmpeg,
            secret_guard: secret_guard::SecretGuard::new(),
            logs: RelayLogs {
                wrong_secret: RateLimited::new(PERIOD),
                blocked: RateLimited::new(PERIOD),
                bad_upload: RateLimited::new(PERIOD),
                viewer_refused: RateLimited::new(PERIOD),
            },
            direct,
        })
    }

    /// `/h264`, `/jsmpeg`, `/upload/{secret}` and the Direct H.264 URLs.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/h264", get(h264_upgrade))
            .route("/jsmpeg", get(jsmpeg_upgrade))
            .route("/upload/{secret}", any(jsmpeg::upload))
            .merge(direct::routes())
            .with_state(self.clone())
    }

    /// Route WebSocket upgrades on `/` to JSMpeg, as JSMpeg's relay serves them, leaving
    /// plain requests for `/` to `router`.
    pub fn with_root_websocket(self: &Arc<Self>, router: Router) -> Router {
        let relay = self.clone();
        router.layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let relay = relay.clone();
                async move {
                    if req.uri().path() != "/" || !is_websocket_upgrade(req.headers()) {
                        return next.run(req).await;
                    }
                    let (mut parts, _body) = req.into_parts();
                    match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
                        Ok(ws) => jsmpeg_upgrade(State(relay), parts.uri, ws).await,
                        Err(rejection) => rejection.into_response(),
                    }
                }
            },
        ))
    }

    /// Counts for `/metrics`.
    pub fn metrics(&self) -> RelayMetrics {
        let c = &self.counters;
        RelayMetrics {
            h264_clients: c.h264_clients.load(Ordering::SeqCst),
            jsmpeg_viewers: c.jsmpeg_viewers.load(Ordering::SeqCst),
            uploads: c.uploads.load(Ordering::SeqCst),
            h264_sent: c.h264_sent.load(),
            jsmpeg_sent: c.jsmpeg_sent.load(),
            direct_sent: c.direct_sent.load(),
        }
    }

    /// Counts for `/state`.
    pub fn stats(&self) -> serde_json::Value {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "h264_clients": c.h264_clients.load(Ordering::SeqCst),
            "h264_dropped_to_key": load(&c.h264_dropped_to_key),
            "jsmpeg_viewers": c.jsmpeg_viewers.load(Ordering::SeqCst),
            "jsmpeg_lagged": load(&c.jsmpeg_lagged),
            "uploads": c.uploads.load(Ordering::SeqCst),
            "uploads_total": load(&c.uploads_total),
            "uploads_rejected": load(&c.uploads_rejected),
            "uploads_throttled": load(&c.uploads_throttled),
            "upload_bytes": load(&c.upload_bytes),
            "direct_clients": c.direct_clients.load(Ordering::SeqCst),
            "direct_overflows": load(&c.direct_overflows),
            "tasks": c.tasks.load(Ordering::SeqCst),
            "connections_total": load(&c.connections_total),
            "transcoder": self.jsmpeg[0].transcoder.stats(),
            "rss_kb": rss_kb(),
        })
    }
}

impl Relay {
    /// The stream a relay URL names with `?stream=`: the default one without it.
    fn stream_of(&self, uri: &axum::http::Uri) -> Result<&Arc<Stream>, (StatusCode, String)> {
        let query = axum::extract::Query::<StreamQuery>::try_from_uri(uri)
            .map_err(|e| (StatusCode::BAD_REQUEST, e.body_text()))?;
        self.streams
            .get(query.0.stream.as_deref())
            .map_err(|e| (StatusCode::NOT_FOUND, format!("{e}\n")))
    }

    /// Where MPEG-TS uploads go: the default stream's JSMpeg viewers.
    fn upload_bus(&self) -> &jsmpeg::TsBus {
        &self.jsmpeg[0].bus
    }

    /// The JSMpeg feed of `stream`.
    fn jsmpeg_feed(&self, stream: &Arc<Stream>) -> &JsmpegFeed {
        self.jsmpeg
            .iter()
            .find(|f| Arc::ptr_eq(&f.stream, stream))
            .unwrap_or(&self.jsmpeg[0])
    }
}

async fn h264_upgrade(
    State(relay): State<Arc<Relay>>,
    uri: axum::http::Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let stream = match relay.stream_of(&uri) {
        Ok(stream) => stream.clone(),
        Err(refused) => return refused.into_response(),
    };
    let counters = relay.counters.clone();
    ws.on_upgrade(move |socket| h264ws::serve(stream, counters, socket))
}

async fn jsmpeg_upgrade(
    State(relay): State<Arc<Relay>>,
    uri: axum::http::Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let stream = match relay.stream_of(&uri) {
        Ok(stream) => stream.clone(),
        Err(refused) => return refused.into_response(),
    };
    jsmpeg::upgrade(relay, stream, ws)
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Resident memory of this process in KiB (Linux), for leak checks from outside.
fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
