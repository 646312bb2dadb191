//! PiKVM's "Direct H.264" mode: the WebSocket protocol of kvmd's media server, so
//! kvmd's web client (WebCodecs `VideoDecoder` fed Annex-B access units) plays a
//! peregrine stream. Served at `/api/media/ws` (the URL the client opens) and `/ws`
//! (where PiKVM's nginx sends it, rewritten, for the kvmd-media upstream); `/api/media`
//! answers with the media description. `?stream=NAME` picks a stream.
//!
//! Per client: the reader (this task) parses client messages; a pump task moves the
//! hub's pictures into the client's bounded [`queue`]; a writer task sends pongs and
//! frames. A client that cannot keep up loses its queue and resumes at a keyframe; it
//! never holds back the hub or other clients.

pub mod protocol;
pub mod queue;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use self::protocol::{ClientMessage, CloseReason};
use self::queue::{ClientQueue, Offered, CLIENT_QUEUE_FRAMES};
use super::{Counters, Relay};
use crate::media::stream::Output;
use crate::media::{MediaKind, Picture, StartAt, Stream, Streams};
use crate::ratelog::{RateLimited, PERIOD};

/// Bad client messages, logged at most once per period.
static BAD_MESSAGE: RateLimited = RateLimited::new(PERIOD);

/// Largest message the WebSocket layer reads before giving up on the connection.
/// Messages up to this size reach the parser, which closes the session cleanly on
/// anything over [`protocol::MAX_CLIENT_MESSAGE`].
const MAX_READ_MESSAGE: usize = 4 * protocol::MAX_CLIENT_MESSAGE;

/// How long a closing session waits for its close frame to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The video frames of one stream, framed once for every client that sends them.
pub struct Feed {
    stream: Arc<Stream>,
    /// The last picture framed, and its frame: clients at the live edge share it.
    last: Mutex<Option<(Arc<Picture>, Bytes)>>,
}

impl Feed {
    /// `[0x01, key] + access unit` for `picture`, copied once per picture.
    fn frame(&self, picture: &Arc<Picture>) -> Bytes {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((framed, bytes)) = last.as_ref() {
            if Arc::ptr_eq(framed, picture) {
                return bytes.clone();
            }
        }
        let bytes = protocol::video_frame(picture.key, &picture.data);
        *last = Some((picture.clone(), bytes.clone()));
        bytes
    }
}

/// One [`Feed`] per stream.
pub struct Feeds(Vec<Arc<Feed>>);

impl Feeds {
    pub fn new(streams: &Streams) -> Feeds {
        Feeds(
            streams
                .iter()
                .map(|stream| {
                    Arc::new(Feed {
                        stream: stream.clone(),
                        last: Mutex::new(None),
                    })
                })
                .collect(),
        )
    }

    fn of(&self, stream: &Arc<Stream>) -> Option<&Arc<Feed>> {
        self.0.iter().find(|f| Arc::ptr_eq(&f.stream, stream))
    }
}

/// `/api/media`, `/api/media/ws` and `/ws`.
pub fn routes() -> Router<Arc<Relay>> {
    Router::new()
        .route("/api/media", get(media_info))
        .route("/api/media/ws", get(upgrade))
        .route("/ws", get(upgrade))
}

/// The query of the Direct URLs.
#[derive(Debug, Default, serde::Deserialize)]
struct MediaQuery {
    stream: Option<String>,
    /// `h264`: pure mode, raw access units and nothing else (kvmd's "for scripting").
    video: Option<String>,
}

/// A refusal, answered in kvmd's JSON shape.
struct Refusal {
    status: StatusCode,
    error: &'static str,
    message: String,
}

fn refuse(status: StatusCode, error: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error,
        message: message.into(),
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = protocol::error_response(self.error, &self.message);
        (self.status, Json(body)).into_response()
    }
}

/// The stream a Direct URL names and whether it asks for pure mode.
fn resolve(relay: &Relay, uri: &Uri) -> Result<(Arc<Feed>, bool), Refusal> {
    let query = axum::extract::Query::<MediaQuery>::try_from_uri(uri)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, "ValidatorError", e.body_text()))?
        .0;
    let stream = relay
        .streams
        .get(query.stream.as_deref())
        .map_err(|e| refuse(StatusCode::NOT_FOUND, "UnknownStream", e.to_string()))?;
    let pure = match query.video.as_deref().map(str::trim) {
        None | Some("") => false,
        Some("h264") => true,
        Some(_) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "ValidatorError",
                "Unsupported video type",
            ))
        }
    };
    let feed = relay
        .direct
        .of(stream)
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "UnknownStream", "stream has no feed"))?;
    Ok((feed.clone(), pure))
}

/// The stream's profile-level-id: from its SPS once it has carried one.
fn profile_level_id(stream: &Stream) -> String {
    let params = stream.hub().params();
    protocol::profile_level_id(params.as_ref().map(|p| &p.sps[..]))
}

async fn media_info(State(relay): State<Arc<Relay>>, uri: Uri) -> Response {
    match resolve(&relay, &uri) {
        Ok((feed, _)) => {
            let info = protocol::media_info(&profile_level_id(&feed.stream));
            Json(protocol::ok_response(serde_json::json!({ "media": info }))).into_response()
        }
        Err(refused) => refused.into_response(),
    }
}

async fn upgrade(
    State(relay): State<Arc<Relay>>,
    uri: Uri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // The URL is judged first, so a wrong stream name is a 404 whatever the headers.
    let (feed, pure) = match resolve(&relay, &uri) {
        Ok(resolved) => resolved,
        Err(refused) => return refused.into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let counters = relay.counters.clone();
    ws.max_message_size(MAX_READ_MESSAGE)
        .max_frame_size(MAX_READ_MESSAGE)
        .on_upgrade(move |socket| serve(feed, counters, pure, socket))
}

/// What the reader, the pump and the writer of one client share.
struct Shared {
    queue: Mutex<ClientQueue>,
    /// Wakes the writer: a frame is queued, a pong is due or the session closes.
    wake: Notify,
    pong_due: AtomicBool,
    /// Set once: the close frame the writer sends last.
    close: Mutex<Option<CloseFrame>>,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, ClientQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_close(&self) -> Option<CloseFrame> {
        self.close.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Aborts a task when dropped, so a session that ends (or is dropped at shutdown)
/// leaves no task behind.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serve one Direct client until it goes away.
async fn serve(feed: Arc<Feed>, counters: Arc<Counters>, pure: bool, mut socket: WebSocket) {
    let _client = counters.direct_client();
    let stream = feed.stream.clone();
    if !pure {
        let event = protocol::media_event(&profile_level_id(&stream));
        if socket.send(Message::Text(event.into())).await.is_err() {
            return;
        }
    }
    let shared = Arc::new(Shared {
        queue: Mutex::new(ClientQueue::new(CLIENT_QUEUE_FRAMES)),
        wake: Notify::new(),
        pong_due: AtomicBool::new(false),
        close: Mutex::new(None),
    });
    let (sink, mut incoming) = socket.split();
    let mut writer = AbortOnDrop(tokio::spawn({
        let (shared, counters, task) = (shared.clone(), counters.clone(), counters.task());
        async move {
            let _task = task;
            write(sink, &shared, &feed, &counters, pure).await
        }
    }));
    // kvmd's pure mode streams at once, with no start event.
    let mut pump = pure.then(|| spawn_pump(&stream, &shared, &counters));

    let close = loop {
        let message = tokio::select! {
            message = incoming.next() => message,
            _ = &mut writer.0 => break None,
        };
        let parsed = match message {
            Some(Ok(Message::Text(text))) => protocol::parse_text(text.as_str()),
            Some(Ok(Message::Binary(data))) => protocol::parse_binary(&data),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => break None,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "Direct client connection failed");
                break None;
            }
        };
        match parsed {
            ClientMessage::StartVideo => {
                if pump.is_none() {
                    pump = Some(spawn_pump(&stream, &shared, &counters));
                }
            }
            ClientMessage::Ping => {
                // Pure mode sends nothing but video, as kvmd's does.
                if !pure {
                    shared.pong_due.store(true, Ordering::Relaxed);
                    shared.wake.notify_one();
                }
            }
            ClientMessage::KeyframeRequest => {
                if pump.is_some() {
                    stream.hub().request_keyframe();
                }
            }
            ClientMessage::Ignored(why) => tracing::debug!(why, "Direct client message ignored"),
            ClientMessage::Malformed(why) => {
                if let Some(count) = BAD_MESSAGE.hit() {
                    tracing::warn!(
                        why,
                        count,
                        "malformed Direct (/api/media/ws) client messages"
                    );
                }
            }
            ClientMessage::Close(reason) => {
                if let Some(count) = BAD_MESSAGE.hit() {
                    tracing::warn!(
                        why = reason.text(),
                        count,
                        "Direct (/api/media/ws) client closed for a bad message"
                    );
                }
                break Some(reason);
            }
        }
    };
    // Stop the pictures, then let the writer say why the session ends (if it can
    // within a moment: a client that reads nothing does not get to hold it).
    drop(pump);
    if let (Some(reason), false) = (close, writer.0.is_finished()) {
        *shared.close.lock().unwrap_or_else(|e| e.into_inner()) = Some(close_frame(reason));
        shared.wake.notify_one();
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut writer.0).await;
    }
}

fn close_frame(reason: CloseReason) -> CloseFrame {
    CloseFrame {
        code: reason.code(),
        reason: reason.text().into(),
    }
}

/// Send pongs and frames as they come, until the session closes or the client is gone.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    shared: &Shared,
    feed: &Feed,
    counters: &Counters,
    pure: bool,
) {
    loop {
        if let Some(frame) = shared.take_close() {
            let _ = sink.send(Message::Close(Some(frame))).await;
            return;
        }
        let Some(message) = next_message(shared, feed, pure) else {
            // A wake-up between the look and this wait is kept as a permit.
            shared.wake.notified().await;
            continue;
        };
        let len = message.len();
        if sink.send(Message::Binary(message)).await.is_err() {
            return;
        }
        counters.direct_sent(len);
    }
}

/// What the writer sends next: a pong before any frame, so a client behind on frames
/// still hears that the server is alive.
fn next_message(shared: &Shared, feed: &Feed, pure: bool) -> Option<Bytes> {
    if shared.pong_due.swap(false, Ordering::Relaxed) {
        return Some(protocol::pong());
    }
    let picture = shared.queue().take()?;
    Some(if pure {
        picture.data.clone()
    } else {
        feed.frame(&picture)
    })
}

fn spawn_pump(stream: &Arc<Stream>, shared: &Arc<Shared>, counters: &Arc<Counters>) -> AbortOnDrop {
    let (stream, shared, counters) = (stream.clone(), shared.clone(), counters.clone());
    let task = counters.task();
    AbortOnDrop(tokio::spawn(async move {
        let _task = task;
        pump_pictures(&stream, &shared, &counters).await
    }))
}

/// Move the hub's pictures into the client's queue, from the next keyframe on (asked
/// for at once, as kvmd does). Counts the client as a viewer while it runs.
async fn pump_pictures(stream: &Arc<Stream>, shared: &Shared, counters: &Counters) {
    let _viewing = stream.viewer(Output::Direct);
    let hub = stream.hub();
    let mut subscriber = hub.subscribe(StartAt::NextKeyframe);
    while let Some(picture) = subscriber.recv().await {
        if picture.kind != MediaKind::Video {
            continue;
        }
        let offered = shared.queue().offer(picture);
        match offered {
            Offered::Queued => shared.wake.notify_one(),
            Offered::Skipped => {}
            Offered::Overflowed { request_key } => {
                counters.direct_overflowed();
                tracing::debug!(request_key, "Direct client cannot keep up; queue emptied");
                if request_key {
                    hub.request_keyframe();
                }
                shared.wake.notify_one();
            }
        }
    }
}
