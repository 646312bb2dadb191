//! µStreamer's MJPEG output on the main HTTP port:
//!
//! * `/stream`: `multipart/x-mixed-replace` JPEG pictures, with µStreamer's part headers
//!   and client options ([`query`], [`part`]);
//! * `/snapshot`: the newest picture as one JPEG, or 503 while the stream shows NO
//!   SIGNAL.
//!
//! Both reach any stream with `?stream=NAME`. Pictures come from the stream's
//! [`JpegTap`], which makes them only while one of these clients exists. Each `/stream`
//! client is sent the newest picture whenever its connection can take one: a client
//! that reads slowly skips pictures, holds no queue and delays nobody.

pub mod part;
pub mod query;
pub mod same;

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

use self::part::{ClientFigures, Now};
use self::query::StreamOptions;
use self::same::SameFrames;
use serde::Serialize;

use crate::media::clock;
use crate::media::jpeg_tap::{JpegClient, JpegPicture, JpegTap};
use crate::media::stream::{Output, Viewing};
use crate::media::{Stream, Streams};

/// With no new picture for this long, a `/stream` client gets the last one again (as
/// µStreamer does), so a still picture keeps the connection alive and browsers that
/// draw a picture only when the next one starts show it.
const REPEAT_AFTER: Duration = Duration::from_secs(1);

/// How long `/snapshot` waits for a first picture when none is being made yet.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

/// The MJPEG output of every stream.
pub struct Mjpeg {
    streams: Arc<Streams>,
    taps: Vec<(Arc<Stream>, Arc<JpegTap>)>,
    /// `--drop-same-frames`: identical pictures skipped in a row at most; 0: none.
    drop_same_frames: u32,
    clients: Mutex<BTreeMap<u64, Arc<ClientStat>>>,
    snapshots: AtomicU64,
    snapshots_refused: AtomicU64,
}

/// µStreamer's `stream`: its MJPEG `/stream` clients.
#[derive(Debug, Default, Serialize)]
pub struct HttpStreamState {
    pub queued_fps: u32,
    pub clients: u32,
    /// By client id; kvmd finds its own `<img>` here by the id in its cookie.
    pub clients_stat: BTreeMap<String, HttpClientStat>,
}

/// One `/stream` client, with the options it asked for.
#[derive(Debug, Serialize)]
pub struct HttpClientStat {
    pub fps: u32,
    pub extra_headers: bool,
    pub advance_headers: bool,
    pub dual_final_frames: bool,
    pub zero_data: bool,
    pub key: String,
}

/// A `/stream` client as `/state` shows it.
struct ClientStat {
    stream: String,
    options: StreamOptions,
    fps: FpsMeter,
}

impl Mjpeg {
    /// The output of `streams` over their taps, made with the streams (a camera that
    /// hands its JPEG over needs its stream's tap before the stream exists).
    /// `drop_same_frames`: as µStreamer's option ([`same`]).
    pub fn new(
        streams: Arc<Streams>,
        taps: Vec<(Arc<Stream>, Arc<JpegTap>)>,
        drop_same_frames: u32,
    ) -> Arc<Mjpeg> {
        Arc::new(Mjpeg {
            streams,
            taps,
            drop_same_frames,
            clients: Mutex::default(),
            snapshots: AtomicU64::new(0),
            snapshots_refused: AtomicU64::new(0),
        })
    }

    /// `/stream` and `/snapshot`.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/stream", get(serve_stream))
            .route("/snapshot", get(serve_snapshot))
            .with_state(self.clone())
    }

    /// mjpg-streamer's URLs, which µStreamer also answers: `/?action=stream` is
    /// `/stream` and `/?action=snapshot` is `/snapshot` (with the same other options);
    /// any other request for `/` goes on to `router`.
    pub fn with_root_actions(self: &Arc<Self>, router: Router) -> Router {
        let mjpeg = self.clone();
        router.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let mjpeg = mjpeg.clone();
                async move {
                    let action = match req.uri().path() {
                        "/" if req.method() == axum::http::Method::GET => {
                            root_action(req.uri().query())
                        }
                        _ => None,
                    };
                    let query = req.uri().query().map(str::to_string);
                    match action {
                        Some(RootAction::Stream) => {
                            serve_stream(State(mjpeg), RawQuery(query)).await
                        }
                        Some(RootAction::Snapshot) => {
                            serve_snapshot(State(mjpeg), RawQuery(query)).await
                        }
                        None => next.run(req).await,
                    }
                }
            },
        ))
    }

    /// What a request asks for: its options, and the stream it names (`None`: the
    /// default one) with its tap. Refused with 400 or 404 and the reason.
    fn request(&self, query: Option<&str>) -> Result<Request, (StatusCode, String)> {
        let opts = StreamOptions::parse(query.unwrap_or(""))
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("{e}\n")))?;
        let stream = self
            .streams
            .get(opts.stream.as_deref())
            .map_err(|e| (StatusCode::NOT_FOUND, format!("{e}\n")))?;
        let (stream, tap) = self
            .taps
            .iter()
            .find(|(s, _)| Arc::ptr_eq(s, stream))
            .cloned()
            .ok_or_else(|| {
                let refusal = format!("stream {:?} has no MJPEG output\n", stream.name());
                (StatusCode::NOT_FOUND, refusal)
            })?;
        Ok(Request { opts, stream, tap })
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ClientStat>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// µStreamer's `stream` section of `/state` for the stream `name`: its `/stream`
    /// clients, each by id (hex) with its rate and options, and the rate pictures go
    /// out at (the fastest client's: each client gets every picture it can take).
    pub fn http_stream_state(&self, name: &str) -> HttpStreamState {
        let now_s = clock::monotonic_us() / 1_000_000;
        let clients = self.clients();
        let clients_stat: BTreeMap<String, HttpClientStat> = clients
            .iter()
            .filter(|(_, c)| c.stream == name)
            .map(|(id, c)| {
                let o = &c.options;
                let stat = HttpClientStat {
                    fps: c.fps.get(now_s),
                    extra_headers: o.extra_headers,
                    advance_headers: o.advance_headers,
                    dual_final_frames: o.dual_final_frames,
                    zero_data: o.zero_data,
                    key: o.key.clone().unwrap_or_else(|| "0".into()),
                };
                (format!("{id:x}"), stat)
            })
            .collect();
        HttpStreamState {
            queued_fps: clients_stat.values().map(|c| c.fps).max().unwrap_or(0),
            clients: clients_stat.len() as u32,
            clients_stat,
        }
    }

    /// Counts for `/state`: clients, snapshots, and what each stream's tap did.
    pub fn stats(&self) -> serde_json::Value {
        let taps: serde_json::Map<_, _> = self
            .taps
            .iter()
            .map(|(stream, tap)| {
                let mut t = serde_json::json!(tap.stats());
                t["quality"] = tap.quality().into();
                t["clients_stat"] =
                    serde_json::json!(self.http_stream_state(stream.name()).clients_stat);
                (stream.name().to_string(), t)
            })
            .collect();
        serde_json::json!({
            "stream_clients": self.clients().len(),
            "snapshots": self.snapshots.load(Ordering::Relaxed),
            "snapshots_refused": self.snapshots_refused.load(Ordering::Relaxed),
            "streams": taps,
        })
    }
}

/// What `/?action=...` asks for.
#[derive(Debug, PartialEq, Eq)]
enum RootAction {
    Stream,
    Snapshot,
}

/// The mjpg-streamer action in a query string for `/`, if it names one; anything else
/// (no action, another value, a query that cannot be read) is not an action.
fn root_action(query: Option<&str>) -> Option<RootAction> {
    #[derive(serde::Deserialize)]
    struct Action {
        action: Option<String>,
    }
    let parsed: Action = serde_urlencoded::from_str(query?).ok()?;
    match parsed.action.as_deref() {
        Some("stream") => Some(RootAction::Stream),
        Some("snapshot") => Some(RootAction::Snapshot),
        _ => None,
    }
}

fn plain(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A `/stream` or `/snapshot` request, read.
struct Request {
    opts: StreamOptions,
    stream: Arc<Stream>,
    tap: Arc<JpegTap>,
}

fn refuse((status, why): (StatusCode, String)) -> Response {
    plain(status, why)
}

fn now() -> Now {
    Now {
        real_us: clock::realtime_us(),
        mono_us: clock::monotonic_us(),
    }
}

fn with_no_cache(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in part::NO_CACHE {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    // Readable by allowed pages of other origins; the origin guard narrows or drops it.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

async fn serve_stream(State(mjpeg): State<Arc<Mjpeg>>, RawQuery(query): RawQuery) -> Response {
    let Request { opts, stream, tap } = match mjpeg.request(query.as_deref()) {
        Ok(request) => request,
        Err(refused) => return refuse(refused),
    };
    let id = rand::random::<u64>() >> 1;
    let stat = Arc::new(ClientStat {
        stream: stream.name().to_string(),
        options: opts.clone(),
        fps: FpsMeter::default(),
    });
    mjpeg.clients().insert(id, stat.clone());
    tracing::debug!(stream = %stream.name(), id = format!("{id:x}"), "MJPEG client");
    let cookie = format!(
        "stream_client={}/{id:x}; path=/; max-age=30",
        opts.key.as_deref().unwrap_or("0")
    );
    let client = StreamClient {
        pending: VecDeque::from([Bytes::from(part::preamble(&opts, now()))]),
        jpeg: tap.join(),
        last: None,
        same: SameFrames::new(mjpeg.drop_same_frames, opts.dual_final_frames),
        opts,
        stat,
        _registered: Registered { mjpeg, id },
        _viewing: stream.viewer(Output::Mjpeg),
    };
    let body = futures_util::stream::unfold(client, |mut client| async move {
        let chunk = client.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), client))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(part::CONTENT_TYPE),
    );
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    with_no_cache(response)
}

/// One `/stream` client: what it is sent next.
struct StreamClient {
    /// Chunks of the part being sent.
    pending: VecDeque<Bytes>,
    jpeg: JpegClient,
    /// The last picture sent, to repeat.
    last: Option<Arc<JpegPicture>>,
    /// Which new pictures are skipped as identical to `last`.
    same: SameFrames,
    opts: StreamOptions,
    stat: Arc<ClientStat>,
    _registered: Registered,
    _viewing: Viewing,
}

impl StreamClient {
    /// The next bytes to send: called only when the connection takes more, so the
    /// picture chosen is the newest at that moment. `None` ends the response.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(chunk) = self.pending.pop_front() {
            return Some(chunk);
        }
        // A picture skipped as identical counts as one that came: only a source that
        // sends nothing makes the last picture repeat.
        let picture = loop {
            match tokio::time::timeout(REPEAT_AFTER, self.jpeg.next()).await {
                Ok(picture) => {
                    let picture = picture?;
                    let same = self.same.active() && self.is_last(&picture);
                    if self.same.send(same, picture.online) {
                        break picture;
                    }
                }
                Err(_) => {
                    if let Some(last) = &self.last {
                        self.same.repeated();
                        break last.clone();
                    }
                }
            }
        };
        let now = now();
        let fps = self.stat.fps.tick(now.mono_us / 1_000_000);
        let head = part::head(&self.opts, &picture, ClientFigures { fps }, now);
        if !head.is_empty() {
            self.pending.push_back(Bytes::from(head));
        }
        if !self.opts.zero_data {
            self.pending.push_back(picture.data.clone());
        }
        self.pending
            .push_back(Bytes::from(part::tail(&self.opts, now)));
        self.last = Some(picture);
        self.pending.pop_front()
    }
}

impl StreamClient {
    /// Whether `picture` is byte-identical to the last one sent.
    fn is_last(&self, picture: &JpegPicture) -> bool {
        self.last.as_ref().is_some_and(|last| {
            (last.width, last.height) == (picture.width, picture.height)
                && last.data == picture.data
        })
    }
}

/// Removes a client from `/state` when its response ends.
struct Registered {
    mjpeg: Arc<Mjpeg>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.mjpeg.clients().remove(&self.id);
    }
}

async fn serve_snapshot(State(mjpeg): State<Arc<Mjpeg>>, RawQuery(query): RawQuery) -> Response {
    let Request { stream, tap, .. } = match mjpeg.request(query.as_deref()) {
        Ok(request) => request,
        Err(refused) => return refuse(refused),
    };
    mjpeg.snapshots.fetch_add(1, Ordering::Relaxed);
    let mut client = tap.join();
    let picture = match client.latest() {
        Some(picture) => Some(picture),
        None => tokio::time::timeout(SNAPSHOT_WAIT, client.next())
            .await
            .ok()
            .flatten(),
    };
    drop(client);
    let name = stream.name();
    let refused = |why: String| {
        mjpeg.snapshots_refused.fetch_add(1, Ordering::Relaxed);
        with_no_cache(plain(StatusCode::SERVICE_UNAVAILABLE, why))
    };
    let Some(picture) = picture else {
        return refused(format!(
            "no picture: stream {name:?} made none within {} s\n",
            SNAPSHOT_WAIT.as_secs()
        ));
    };
    if !picture.online {
        return refused(format!(
            "no signal: the source of stream {name:?} is offline\n"
        ));
    }
    let mut response = Response::new(Body::from(picture.data.clone()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    for (name, value) in part::snapshot_headers(&picture, now()) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    with_no_cache(response)
}

/// Pictures sent in the last whole second, as µStreamer's per-client FPS.
#[derive(Default)]
struct FpsMeter {
    /// (current second, count in it, count in the second before).
    state: Mutex<(u64, u32, u32)>,
}

impl FpsMeter {
    /// Count one picture at second `now_s`; returns the rate of the last whole second.
    fn tick(&self, now_s: u64) -> u32 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Self::roll(&mut s, now_s);
        s.1 += 1;
        s.2
    }

    fn get(&self, now_s: u64) -> u32 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Self::roll(&mut s, now_s);
        s.2
    }

    fn roll(s: &mut (u64, u32, u32), now_s: u64) {
        if now_s == s.0 {
            return;
        }
        s.2 = if now_s == s.0 + 1 { s.1 } else { 0 };
        s.0 = now_s;
        s.1 = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_actions_are_mjpg_streamers_two_and_nothing_else() {
        assert_eq!(root_action(Some("action=stream")), Some(RootAction::Stream));
        assert_eq!(
            root_action(Some("key=vnc&action=snapshot")),
            Some(RootAction::Snapshot)
        );
        for other in [
            "",
            "action=",
            "action=Stream",
            "action=command",
            "stream=cam2",
        ] {
            assert_eq!(root_action(Some(other)), None, "{other:?}");
        }
        assert_eq!(root_action(Some("action=stream&action=stream")), None);
        assert_eq!(root_action(None), None);
    }

    #[test]
    fn fps_is_the_count_of_the_last_whole_second() {
        let m = FpsMeter::default();
        for _ in 0..5 {
            m.tick(100);
        }
        assert_eq!(m.tick(101), 5);
        assert_eq!(m.get(101), 5);
        assert_eq!(m.get(102), 1);
        assert_eq!(m.get(110), 0);
    }
}
