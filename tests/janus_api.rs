//! The Janus API over real sockets: WebSocket and HTTP long-poll transports, the core's
//! error codes, session lifetime, and the ustreamer plugin's requests that need no
//! WebRTC peer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use peregrine::janus::backend::BoxFuture;
use peregrine::janus::{JanusConfig, JanusServer, JanusStatus, Listen, PeerBackend};
use peregrine::media::{clock, h264};
use peregrine::media::{Hub, Picture, Stream, Streams, DEFAULT_STREAM};
use peregrine::origin::OriginPolicy;
use peregrine::rtc::{
    PeerEvent, PeerId, PeerOptions, RemoteCandidate, RtcConfig, RtcEngine, RtcError,
    MAX_REMOTE_CANDIDATES,
};
use peregrine::viewer::receiver::ReceiverPeer;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const PLUGIN: &str = "janus.plugin.ustreamer";

/// Stands in for the WebRTC engine in tests that never reach a peer: the 503 path
/// answers before any peer is made.
struct NoPeers;

impl PeerBackend for NoPeers {
    fn create_offer(
        &self,
        _opts: PeerOptions,
        _events: mpsc::UnboundedSender<PeerEvent>,
    ) -> BoxFuture<'_, Result<(PeerId, String), RtcError>> {
        Box::pin(async { Err(RtcError::Internal("no WebRTC engine in this test")) })
    }
    fn apply_answer<'a>(
        &'a self,
        _id: PeerId,
        _sdp: &'a str,
    ) -> BoxFuture<'a, Result<(), RtcError>> {
        Box::pin(async { Err(RtcError::NoSuchPeer) })
    }
    fn add_remote_candidate(&self, _id: PeerId, _candidate: RemoteCandidate) {}
    fn close_peer(&self, _id: PeerId, _reason: &'static str) {}
}

/// Stands in for the WebRTC engine where a test needs a peer but no media: offers a
/// peer (kept alive by holding its event channel) and counts the candidates the gateway
/// hands it.
#[derive(Default)]
struct CountingPeers {
    candidates: AtomicUsize,
    peers: std::sync::Mutex<Vec<mpsc::UnboundedSender<PeerEvent>>>,
}

impl PeerBackend for CountingPeers {
    fn create_offer(
        &self,
        _opts: PeerOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> BoxFuture<'_, Result<(PeerId, String), RtcError>> {
        self.peers.lock().unwrap().push(events);
        Box::pin(async { Ok((1, "v=0\r\n".to_string())) })
    }
    fn apply_answer<'a>(
        &'a self,
        _id: PeerId,
        _sdp: &'a str,
    ) -> BoxFuture<'a, Result<(), RtcError>> {
        Box::pin(async { Ok(()) })
    }
    fn add_remote_candidate(&self, _id: PeerId, _candidate: RemoteCandidate) {
        self.candidates.fetch_add(1, Ordering::Relaxed);
    }
    fn close_peer(&self, _id: PeerId, _reason: &'static str) {}
}

struct Server {
    ws: SocketAddr,
    http: SocketAddr,
    status: JanusStatus,
    hub: Arc<Hub>,
    _stop: oneshot::Sender<()>,
}

async fn start(tweak: impl FnOnce(&mut JanusConfig)) -> Server {
    start_with(Arc::new(NoPeers), tweak).await
}

async fn start_with(backend: Arc<dyn PeerBackend>, tweak: impl FnOnce(&mut JanusConfig)) -> Server {
    let mut cfg = JanusConfig {
        ws: Listen::Tcp(0),
        http: Listen::Tcp(0),
        long_poll_hold: Duration::from_millis(400),
        ..JanusConfig::default()
    };
    tweak(&mut cfg);
    let hub = Hub::new(8);
    let server = JanusServer::bind_with_backend(Streams::single(hub.clone(), 30), backend, cfg)
        .await
        .expect("bind");
    let (stop, stopped) = oneshot::channel::<()>();
    let s = Server {
        ws: server.ws_addr().unwrap(),
        http: server.http_addr().unwrap(),
        status: server.status(),
        hub,
        _stop: stop,
    };
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    s
}

impl Server {
    async fn wait_counts(&self, sessions: usize, handles: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let c = self.status.counts();
            if (c.sessions, c.handles) == (sessions, handles) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "counts stuck at {c:?}, want ({sessions}, {handles})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---- WebSocket client -----------------------------------------------------------------

type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

struct Ws {
    stream: WsStream,
    next_tx: u32,
}

async fn ws_connect_with(addr: SocketAddr, path: &str, protocol: &str) -> (Ws, Option<String>) {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (stream, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connect");
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (Ws { stream, next_tx: 0 }, chosen)
}

async fn ws_connect(addr: SocketAddr) -> Ws {
    ws_connect_with(addr, "/", "janus-protocol").await.0
}

impl Ws {
    async fn send_raw(&mut self, text: String) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("ws send");
    }

    /// Send a request with a fresh transaction; returns the transaction.
    async fn send(&mut self, mut req: Value) -> String {
        self.next_tx += 1;
        let tx = format!("tx{}", self.next_tx);
        req["transaction"] = json!(tx);
        self.send_raw(req.to_string()).await;
        tx
    }

    async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.stream.next())
                .await
                .expect("no message within 5 s")
                .expect("socket closed")
                .expect("socket error");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("reply is JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Send a request and return its reply (skipping events that came first).
    async fn call(&mut self, req: Value) -> Value {
        let tx = self.send(req).await;
        loop {
            let msg = self.recv().await;
            if msg["transaction"] == json!(tx) {
                return msg;
            }
        }
    }

    async fn create(&mut self) -> u64 {
        let r = self.call(json!({"janus":"create"})).await;
        assert_eq!(r["janus"], "success", "{r}");
        assert!(
            r.get("session_id").is_none(),
            "no session_id key when it would be 0: {r}"
        );
        r["data"]["id"]
            .as_u64()
            .expect("session id is a JSON integer")
    }

    async fn attach(&mut self, s: u64) -> u64 {
        let r = self
            .call(json!({"janus":"attach","session_id":s,"plugin":PLUGIN,"opaque_id":"oid-abcdefabcdef"}))
            .await;
        assert_eq!(r["janus"], "success", "{r}");
        assert_eq!(r["session_id"], json!(s));
        r["data"]["id"]
            .as_u64()
            .expect("handle id is a JSON integer")
    }
}

fn assert_error(reply: &Value, code: u64, reason_part: &str) {
    assert_eq!(reply["janus"], "error", "{reply}");
    assert_eq!(reply["error"]["code"], json!(code), "{reply}");
    let reason = reply["error"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(reason_part),
        "reason {reason:?} lacks {reason_part:?}"
    );
}

// ---- HTTP client ----------------------------------------------------------------------

struct HttpReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// One HTTP/1.1 exchange on a fresh connection.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpReply {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    // The server may answer (and close) before reading an oversized body.
    let _ = conn.write_all(req.as_bytes()).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut raw))
        .await
        .expect("HTTP reply within 10 s");
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpReply {
        status,
        headers,
        body: body.to_string(),
    }
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> Value {
    let r = http(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// A keyframe as an encoder makes it, so the hub learns real SPS/PPS.
fn publish_keyframe(hub: &Hub) {
    let mut encoder = openh264::encoder::Encoder::new().unwrap();
    let frame = openh264::formats::YUVBuffer::new(64, 64);
    let bitstream = encoder.encode(&frame).unwrap().to_vec();
    hub.publish(Picture::video(bitstream, true, (64, 64), 0));
    assert!(hub.params().is_some(), "encoder output carries SPS/PPS");
}

// ---- WebSocket ------------------------------------------------------------------------

#[tokio::test]
async fn ws_session_lifecycle() {
    let srv = start(|_| {}).await;
    let (mut ws, chosen) = ws_connect_with(srv.ws, "/janus/ws", "janus-protocol").await;
    assert_eq!(chosen.as_deref(), Some("janus-protocol"));
    let s = ws.create().await;
    assert!(s < (1 << 53));
    let r = ws.call(json!({"janus":"keepalive","session_id":s})).await;
    assert_eq!(
        r,
        json!({"janus":"ack","session_id":s,"transaction":r["transaction"]})
    );
    let h = ws.attach(s).await;
    assert!(h < (1 << 53));
    srv.wait_counts(1, 1).await;
    assert_eq!(
        srv.hub.info().subscribers,
        1,
        "an attached handle holds the source open"
    );

    let r = ws
        .call(json!({"janus":"detach","session_id":s,"handle_id":h}))
        .await;
    assert_eq!(r["janus"], "success");
    srv.wait_counts(1, 0).await;
    assert_eq!(srv.hub.info().subscribers, 0, "detach releases the source");
    let r = ws
        .call(json!({"janus":"detach","session_id":s,"handle_id":h}))
        .await;
    assert_error(&r, 459, &format!("No such handle {h} in session {s}"));

    let tx = ws.send(json!({"janus":"destroy","session_id":s})).await;
    let mut reply = ws.recv().await;
    while reply["janus"] == "detached" {
        reply = ws.recv().await;
    }
    assert_eq!(
        reply,
        json!({"janus":"success","session_id":s,"transaction":tx})
    );
    srv.wait_counts(0, 0).await;

    let (_ws2, chosen) = ws_connect_with(srv.ws, "/", "janus-admin-protocol").await;
    assert_eq!(chosen.as_deref(), Some("janus-admin-protocol"));
}

#[tokio::test]
async fn ws_core_errors() {
    let srv = start(|_| {}).await;
    let mut ws = ws_connect(srv.ws).await;

    ws.send_raw("{not json".into()).await;
    assert_error(&ws.recv().await, 454, "JSON error");
    ws.send_raw("[1,2]".into()).await;
    assert_error(&ws.recv().await, 455, "not an object");
    ws.send_raw(r#"{"janus":"create"}"#.into()).await;
    assert_error(
        &ws.recv().await,
        456,
        "Missing mandatory element (transaction)",
    );

    let r = ws.call(json!({"janus":"frobnicate"})).await;
    assert_error(&r, 457, "Unhandled request 'frobnicate' at this path");
    let r = ws.call(json!({"janus":"keepalive"})).await;
    assert_error(&r, 457, "Unhandled request 'keepalive' at this path");
    let r = ws
        .call(json!({"janus":"keepalive","session_id":12345}))
        .await;
    assert_error(&r, 458, "No such session 12345");
    assert_eq!(r["session_id"], 12345);

    let s = ws.create().await;
    let r = ws.call(json!({"janus":"frobnicate","session_id":s})).await;
    assert_error(&r, 453, "Unknown request 'frobnicate'");
    let r = ws
        .call(json!({"janus":"attach","session_id":s,"plugin":"janus.plugin.echotest"}))
        .await;
    assert_error(&r, 460, "No such plugin 'janus.plugin.echotest'");
    let r = ws.call(json!({"janus":"attach","session_id":s})).await;
    assert_error(&r, 456, "Missing mandatory element (plugin)");
    let r = ws
        .call(json!({"janus":"message","session_id":s,"handle_id":777,"body":{}}))
        .await;
    assert_error(&r, 459, "No such handle 777");
    let r = ws
        .call(json!({"janus":"message","session_id":s,"body":{}}))
        .await;
    assert_error(&r, 457, "Unhandled request 'message' at this path");

    let h = ws.attach(s).await;
    let r = ws
        .call(json!({"janus":"attach","session_id":s,"handle_id":h,"plugin":PLUGIN}))
        .await;
    assert_error(&r, 457, "Unhandled request 'attach' at this path");
    let r = ws
        .call(json!({"janus":"message","session_id":s,"handle_id":h}))
        .await;
    assert_error(&r, 456, "Missing mandatory element (body)");
    let r = ws
        .call(json!({"janus":"message","session_id":s,"handle_id":h,"body":[]}))
        .await;
    assert_error(&r, 467, "body should be an object");
    let r = ws
        .call(
            json!({"janus":"message","session_id":s,"handle_id":h,"body":{"request":"start"},
                     "jsep":{"type":"answer","sdp":"v=0\r\n"}}),
        )
        .await;
    assert_error(&r, 469, "Unexpected ANSWER");
    let r = ws
        .call(
            json!({"janus":"message","session_id":s,"handle_id":h,"body":{},
                     "jsep":{"type":"rollback","sdp":""}}),
        )
        .await;
    assert_error(&r, 464, "rollback");
    let r = ws
        .call(json!({"janus":"trickle","session_id":s,"handle_id":h,
                     "candidate":{"completed":true},"candidates":[]}))
        .await;
    assert_error(&r, 454, "Can't have both candidate and candidates");
    let r = ws
        .call(json!({"janus":"trickle","session_id":s,"handle_id":h}))
        .await;
    assert_error(&r, 456, "candidate");

    let r = ws.call(json!({"janus":"ping"})).await;
    assert_eq!(r["janus"], "pong");
    let r = ws.call(json!({"janus":"info"})).await;
    assert_eq!(r["janus"], "server_info");
    assert_eq!(r["name"], "peregrine");
    assert_eq!(r["plugins"][PLUGIN]["version"], 6062);
    assert_eq!(r["plugins"][PLUGIN]["version_string"], "6.62");
    assert_eq!(r["plugins"][PLUGIN]["name"], "ustreamer");
    assert_eq!(r["session-timeout"], 60);
}

#[tokio::test]
async fn ws_plugin_requests_without_stream() {
    let srv = start(|_| {}).await;
    let mut ws = ws_connect(srv.ws).await;
    let s = ws.create().await;
    let h = ws.attach(s).await;

    // The event goes out before the synchronous success, on the same socket.
    let tx = ws
        .send(json!({"janus":"message","session_id":s,"handle_id":h,"body":{"request":"features"}}))
        .await;
    let event = ws.recv().await;
    assert_eq!(
        event,
        json!({"janus":"event","session_id":s,"sender":h,
               "plugindata":{"plugin":PLUGIN,"data":{"ustreamer":"event",
                 "result":{"status":"features","features":{"audio":false,"mic":false,"ice":{}}}}}})
    );
    let reply = ws.recv().await;
    assert_eq!(
        reply,
        json!({"janus":"success","session_id":s,"transaction":tx,"sender":h,
               "plugindata":{"plugin":PLUGIN,"data":{"ok":true}}})
    );

    async fn plugin_event(ws: &mut Ws, s: u64, h: u64, body: Value) -> Value {
        ws.send(json!({"janus":"message","session_id":s,"handle_id":h,"body":body}))
            .await;
        let event = ws.recv().await;
        let reply = ws.recv().await;
        assert_eq!(reply["janus"], "success", "{reply}");
        assert_eq!(event["janus"], "event", "{event}");
        assert_eq!(event["sender"], json!(h));
        assert!(event.get("transaction").is_none());
        event["plugindata"]["data"].clone()
    }
    assert_eq!(
        plugin_event(
            &mut ws,
            s,
            h,
            json!({"request":"watch","params":{"orientation":90,"audio":false}})
        )
        .await,
        json!({"ustreamer":"event","error_code":503,"error":"Haven't received SPS/PPS from memsink yet"})
    );
    assert_eq!(
        plugin_event(&mut ws, s, h, json!({"params":{}})).await,
        json!({"ustreamer":"event","error_code":400,"error":"Request missing"})
    );
    assert_eq!(
        plugin_event(&mut ws, s, h, json!({"request":7})).await,
        json!({"ustreamer":"event","error_code":400,"error":"Request not a string"})
    );
    assert_eq!(
        plugin_event(&mut ws, s, h, json!({"request":"record"})).await,
        json!({"ustreamer":"event","error_code":405,"error":"Not implemented"})
    );
    assert_eq!(
        plugin_event(&mut ws, s, h, json!({"request":"stop"})).await,
        json!({"ustreamer":"event","result":{"status":"stopped"}})
    );
    assert_eq!(
        plugin_event(&mut ws, s, h, json!({"request":"start"})).await,
        json!({"ustreamer":"event","result":{"status":"started"}})
    );

    // key_required only asks the source for a keyframe: success, no event. (The 503
    // watch above asked for one too, waiting for the first; this keyframe answers it.)
    publish_keyframe(&srv.hub);
    assert!(!srv.hub.keyframe_wanted());
    let r = ws
        .call(json!({"janus":"message","session_id":s,"handle_id":h,"body":{"request":"key_required"}}))
        .await;
    assert_eq!(r["plugindata"]["data"], json!({"ok":true}));
    assert!(srv.hub.keyframe_wanted());

    // Trickle and hangup with no peer yet.
    let r = ws
        .call(
            json!({"janus":"trickle","session_id":s,"handle_id":h,"candidate":{"completed":true}}),
        )
        .await;
    assert_error(&r, 466, "PeerConnection");
    let r = ws
        .call(json!({"janus":"hangup","session_id":s,"handle_id":h}))
        .await;
    assert_eq!(r["janus"], "success");

    // Once the stream has SPS/PPS, watch goes on to the engine instead of answering 503.
    publish_keyframe(&srv.hub);
    let data = plugin_event(&mut ws, s, h, json!({"request":"watch"})).await;
    assert_ne!(data["error_code"], 503, "{data}");
}

/// One trickle message hands the engine no more candidates than a viewer may have in
/// all, however many it carries: the rest would only be work for the engine.
#[tokio::test]
async fn a_trickle_message_hands_the_engine_at_most_a_viewers_budget() {
    let backend = Arc::new(CountingPeers::default());
    let srv = start_with(backend.clone(), |_| {}).await;
    publish_keyframe(&srv.hub);
    let mut ws = ws_connect(srv.ws).await;
    let s = ws.create().await;
    let h = ws.attach(s).await;
    ws.watch(s, h, json!({})).await;
    let candidates: Vec<Value> = (0..1000)
        .map(|i| {
            json!({"candidate": format!("candidate:{i} 1 udp 2122260223 127.0.0.1 {} typ host", 10_000 + i),
                   "sdpMLineIndex": 0})
        })
        .collect();
    let r = ws
        .call(json!({"janus":"trickle","session_id":s,"handle_id":h,"candidates":candidates}))
        .await;
    assert_eq!(r["janus"], "ack", "{r}");
    // The gateway hands candidates over before it acknowledges the message.
    assert_eq!(
        backend.candidates.load(Ordering::Relaxed),
        MAX_REMOTE_CANDIDATES
    );
}

/// A watch that finds the source only starting (nothing published yet) waits for its
/// first keyframe and gets its offer, instead of a 503 the page would retry only after
/// its back-off. The source here starts as a real one does: once asked for a keyframe.
#[tokio::test]
async fn a_watch_of_a_starting_source_gets_its_offer_not_a_503() {
    let srv = start_with(Arc::new(CountingPeers::default()), |_| {}).await;
    let hub = srv.hub.clone();
    let source = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = hub.demand().seen();
            if hub.keyframe_wanted() {
                publish_keyframe(&hub);
                return true;
            }
            if !hub.demand().wait(seen, deadline) && std::time::Instant::now() >= deadline {
                return false;
            }
        }
    });
    let mut ws = ws_connect(srv.ws).await;
    let s = ws.create().await;
    let h = ws.attach(s).await;
    assert!(srv.hub.params().is_none(), "no picture before the watch");
    let offer = ws.watch(s, h, json!({})).await;
    assert_eq!(offer, "v=0\r\n");
    assert!(
        source.join().unwrap(),
        "the source was asked for a keyframe"
    );
}

#[tokio::test]
async fn watch_names_a_stream_and_holds_only_its_source() {
    let default_hub = Hub::new(8);
    let cam2 = Hub::new(8);
    let streams = Streams::new(vec![
        Stream::new(DEFAULT_STREAM, default_hub.clone(), 30),
        Stream::new("cam2", cam2.clone(), 30),
    ]);
    let cfg = JanusConfig {
        ws: Listen::Tcp(0),
        http: Listen::Tcp(0),
        ..JanusConfig::default()
    };
    let server = JanusServer::bind_with_backend(streams, Arc::new(NoPeers), cfg)
        .await
        .expect("bind");
    let addr = server.ws_addr().unwrap();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let mut ws = ws_connect(addr).await;
    let s = ws.create().await;
    let h = ws.attach(s).await;
    // Like the plugin, attaching opens the (default) source before any watch.
    assert!(default_hub.has_subscribers() && !cam2.has_subscribers());

    async fn watch(ws: &mut Ws, s: u64, h: u64, body: Value) -> Value {
        ws.send(json!({"janus":"message","session_id":s,"handle_id":h,"body":body}))
            .await;
        let event = ws.recv().await;
        assert_eq!(ws.recv().await["janus"], "success");
        event["plugindata"]["data"].clone()
    }
    assert_eq!(
        watch(&mut ws, s, h, json!({"request":"watch","stream":"nope"})).await,
        json!({"ustreamer":"event","error_code":404,"error":"No such stream: no stream named \"nope\""})
    );
    assert_eq!(
        watch(&mut ws, s, h, json!({"request":"watch","stream":7})).await,
        json!({"ustreamer":"event","error_code":400,"error":"Invalid stream: a name as a string expected"})
    );
    // The default stream has SPS/PPS, cam2 not yet: a watch of cam2 must wait for cam2's.
    publish_keyframe(&default_hub);
    assert_eq!(
        watch(&mut ws, s, h, json!({"request":"watch","stream":"cam2"})).await["error_code"],
        503
    );
    // That watch already opened cam2's source (an idle one starts) and let the default
    // one go, so a retried watch finds cam2's pictures.
    assert!(cam2.has_subscribers() && !default_hub.has_subscribers());
    publish_keyframe(&cam2);
    let data = watch(&mut ws, s, h, json!({"request":"watch","stream":"cam2"})).await;
    assert_ne!(data["error_code"], 503, "{data}");
    // Now the handle holds cam2's source open, not the default one's.
    assert!(cam2.has_subscribers() && !default_hub.has_subscribers());
    // A keyframe request goes to the stream watched.
    ws.call(
        json!({"janus":"message","session_id":s,"handle_id":h,"body":{"request":"key_required"}}),
    )
    .await;
    assert!(cam2.keyframe_wanted() && !default_hub.keyframe_wanted());
    // Detaching lets it idle.
    let r = ws
        .call(json!({"janus":"detach","session_id":s,"handle_id":h}))
        .await;
    assert_eq!(r["janus"], "success", "{r}");
    assert!(!cam2.has_subscribers() && !default_hub.has_subscribers());
}

#[tokio::test]
async fn features_names_the_first_ice_server() {
    let srv =
        start(|c| c.ice_servers = vec!["stun:192.0.2.7:3478".into(), "turn:192.0.2.8".into()])
            .await;
    let mut ws = ws_connect(srv.ws).await;
    let s = ws.create().await;
    let h = ws.attach(s).await;
    ws.send(json!({"janus":"message","session_id":s,"handle_id":h,"body":{"request":"features"}}))
        .await;
    let event = ws.recv().await;
    assert_eq!(
        event["plugindata"]["data"]["result"]["features"]["ice"],
        json!({"url":"stun:192.0.2.7:3478"})
    );
}

#[tokio::test]
async fn ws_oversized_message_is_refused_cleanly() {
    let srv = start(|_| {}).await;
    let mut big = ws_connect(srv.ws).await;
    let s = big.create().await;
    srv.wait_counts(1, 0).await;
    let payload = format!(
        r#"{{"janus":"keepalive","session_id":{s},"transaction":"big","pad":"{}"}}"#,
        "x".repeat(10 << 20)
    );
    // The server may close before the client has written everything.
    let _ = big.stream.send(Message::text(payload)).await;
    let mut saw_error = false;
    let mut saw_close = false;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), big.stream.next()).await
    {
        match msg {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_error(&v, 450, "too large");
                saw_error = true;
            }
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1009);
                saw_close = true;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // The close frame may be lost to a reset, as the server stops reading mid-message;
    // the error reply before it is what tells the client why.
    assert!(
        saw_error,
        "the client was told why (close frame seen: {saw_close})"
    );
    // The socket is gone, so are its sessions; the server serves others.
    srv.wait_counts(0, 0).await;
    let mut ws = ws_connect(srv.ws).await;
    let s2 = ws.create().await;
    let r = ws.call(json!({"janus":"keepalive","session_id":s2})).await;
    assert_eq!(r["janus"], "ack");
}

/// A ping over 125 bytes breaks the WebSocket framing: the client hears that, not
/// that its message was over the size limit.
#[tokio::test]
async fn ws_oversized_control_frame_is_a_protocol_error() {
    let srv = start(|_| {}).await;
    let mut tcp = TcpStream::connect(srv.ws).await.unwrap();
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: janus-protocol\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // A masked ping with 200 bytes of payload (the mask is zero, so it reads as is).
    let mut ping = vec![0x89, 0x80 | 126, 0, 200, 0, 0, 0, 0];
    ping.extend_from_slice(&[b'p'; 200]);
    tcp.write_all(&ping).await.unwrap();
    // The server's first frame: unmasked text with the Janus error.
    let mut hdr = [0u8; 2];
    tcp.read_exact(&mut hdr).await.unwrap();
    assert_eq!(hdr[0], 0x81, "a text frame first");
    let len = match hdr[1] {
        126 => usize::from(tcp.read_u16().await.unwrap()),
        n => usize::from(n),
    };
    let mut text = vec![0; len];
    tcp.read_exact(&mut text).await.unwrap();
    let v: Value = serde_json::from_slice(&text).unwrap();
    assert_error(&v, 450, "WebSocket error");
    let reason = v["error"]["reason"].as_str().unwrap();
    assert!(!reason.contains("too large"), "{reason}");
    // And the server still serves.
    let mut ws = ws_connect(srv.ws).await;
    ws.create().await;
}

/// Janus ids must survive a JavaScript Number: a wanted id of 2^53 or more is the
/// wrong type, not a conflict; 0 asks for a random one, as in Janus.
#[tokio::test]
async fn create_with_an_id_checks_its_range() {
    let srv = start(|_| {}).await;
    let mut ws = ws_connect(srv.ws).await;
    let r = ws.call(json!({"janus":"create","id":1u64 << 53})).await;
    assert_error(&r, 467, "below 2^53");
    let r = ws
        .call(json!({"janus":"create","id":(1u64 << 53) - 1}))
        .await;
    assert_eq!(r["data"]["id"], json!((1u64 << 53) - 1), "{r}");
    let r = ws
        .call(json!({"janus":"create","id":(1u64 << 53) - 1}))
        .await;
    assert_error(&r, 468, "already in use");
    let r = ws.call(json!({"janus":"create","id":0})).await;
    assert!(r["data"]["id"].as_u64().is_some_and(|id| id > 0), "{r}");
}

#[tokio::test]
async fn closing_the_socket_destroys_its_sessions() {
    let srv = start(|_| {}).await;
    let mut ws = ws_connect(srv.ws).await;
    let s1 = ws.create().await;
    let s2 = ws.create().await;
    ws.attach(s1).await;
    ws.attach(s2).await;
    ws.attach(s2).await;
    srv.wait_counts(2, 3).await;
    assert_eq!(srv.hub.info().subscribers, 3);
    ws.stream.close(None).await.unwrap();
    drop(ws);
    srv.wait_counts(0, 0).await;
    assert_eq!(srv.hub.info().subscribers, 0);
}

#[tokio::test]
async fn claim_moves_events_to_the_new_connection() {
    let srv = start(|_| {}).await;
    let mut a = ws_connect(srv.ws).await;
    let mut b = ws_connect(srv.ws).await;
    let s = a.create().await;
    let h = a.attach(s).await;
    let r = b.call(json!({"janus":"claim","session_id":s})).await;
    assert_eq!(r["janus"], "success");
    assert_eq!(r["session_id"], json!(s));
    let r = b.call(json!({"janus":"claim","session_id":99})).await;
    assert_error(&r, 458, "No such session 99");

    // A's request, B gets the event.
    let tx = a
        .send(json!({"janus":"message","session_id":s,"handle_id":h,"body":{"request":"stop"}}))
        .await;
    let reply = a.recv().await;
    assert_eq!(reply["transaction"], json!(tx));
    let event = b.recv().await;
    assert_eq!(event["plugindata"]["data"]["result"]["status"], "stopped");

    // A no longer owns the session: closing it leaves the session alone. The server
    // lets go of the socket only after it has dealt with the sessions A owned.
    a.stream.close(None).await.unwrap();
    let hung_up = async { while let Some(Ok(_)) = a.stream.next().await {} };
    tokio::time::timeout(Duration::from_secs(5), hung_up)
        .await
        .expect("the server closes A's socket");
    drop(a);
    srv.wait_counts(1, 1).await;
    b.stream.close(None).await.unwrap();
    srv.wait_counts(0, 0).await;
}

#[tokio::test]
async fn idle_session_times_out() {
    let srv = start(|c| c.session_timeout = Duration::from_secs(1)).await;
    let mut ws = ws_connect(srv.ws).await;
    let s = ws.create().await;
    ws.attach(s).await;
    let kept = ws.create().await;
    // Keep one session busy while the other goes idle.
    let started = Instant::now();
    let mut timed_out = None;
    while started.elapsed() < Duration::from_secs(5) && timed_out.is_none() {
        let tx = ws
            .send(json!({"janus":"keepalive","session_id":kept}))
            .await;
        loop {
            let m = ws.recv().await;
            if m["janus"] == "timeout" {
                timed_out = Some(m);
            } else if m["transaction"] == json!(tx) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(timed_out, Some(json!({"janus":"timeout","session_id":s})));
    assert!(started.elapsed() >= Duration::from_millis(900));
    srv.wait_counts(1, 0).await;
    let r = ws.call(json!({"janus":"keepalive","session_id":s})).await;
    assert_error(&r, 458, "No such session");
    let r = ws
        .call(json!({"janus":"keepalive","session_id":kept}))
        .await;
    assert_eq!(r["janus"], "ack");
}

// ---- HTTP long poll -------------------------------------------------------------------

#[tokio::test]
async fn http_session_lifecycle_and_long_poll() {
    let srv = start(|_| {}).await;
    let a = srv.http;
    let r = post(a, "/janus", json!({"janus":"create","transaction":"c1"})).await;
    assert_eq!(r["janus"], "success");
    let s = r["data"]["id"].as_u64().unwrap();
    let r = post(
        a,
        &format!("/janus/{s}"),
        json!({"janus":"attach","transaction":"a1","plugin":PLUGIN}),
    )
    .await;
    let h = r["data"]["id"].as_u64().unwrap();
    assert_eq!(r["session_id"], json!(s));
    srv.wait_counts(1, 1).await;

    // Nothing queued: the poll is held, then answers keepalive (array form for maxev>1).
    let started = Instant::now();
    let r = http(a, "GET", &format!("/janus/{s}?rid=1&maxev=10"), &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!([{"janus":"keepalive"}]));
    assert!(started.elapsed() >= Duration::from_millis(350));
    let r = http(a, "GET", &format!("/janus/{s}"), &[], "").await;
    assert_eq!(r.json(), json!({"janus":"keepalive"}));

    // A poll waiting when the event is produced gets it at once.
    let path = format!("/janus/{s}?maxev=10");
    let poll = tokio::spawn(async move { http(a, "GET", &path, &[], "").await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while srv.status.counts().long_polls == 0 {
        assert!(Instant::now() < deadline, "the poll never started waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = post(
        a,
        &format!("/janus/{s}/{h}"),
        json!({"janus":"message","transaction":"m1","body":{"request":"features"}}),
    )
    .await;
    assert_eq!(r["plugindata"]["data"], json!({"ok":true}));
    assert_eq!(r["sender"], json!(h));
    let events = poll.await.unwrap().json();
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
    assert_eq!(events[0]["sender"], json!(h));
    assert_eq!(
        events[0]["plugindata"]["data"]["result"]["status"],
        "features"
    );

    // Queued events come out oldest first, maxev at a time.
    for body in [
        json!({"request":"stop"}),
        json!({"request":"start"}),
        json!({"request":"watch"}),
    ] {
        post(
            a,
            &format!("/janus/{s}/{h}"),
            json!({"janus":"message","transaction":"m","body":body}),
        )
        .await;
    }
    let r = http(a, "GET", &format!("/janus/{s}?maxev=1"), &[], "")
        .await
        .json();
    assert_eq!(r["plugindata"]["data"]["result"]["status"], "stopped");
    let r = http(a, "GET", &format!("/janus/{s}?maxev=5"), &[], "")
        .await
        .json();
    assert_eq!(r[0]["plugindata"]["data"]["result"]["status"], "started");
    assert_eq!(r[1]["plugindata"]["data"]["error_code"], 503);

    // Ids in the path; a different one in the body is a conflict.
    let r = post(
        a,
        &format!("/janus/{s}"),
        json!({"janus":"keepalive","transaction":"k","session_id":s + 1}),
    )
    .await;
    assert_error(&r, 457, "Conflicting session ID");
    let r = post(
        a,
        &format!("/janus/{s}/{h}"),
        json!({"janus":"detach","transaction":"d","handle_id":h + 1}),
    )
    .await;
    assert_error(&r, 457, "Conflicting handle ID");
    let r = post(
        a,
        &format!("/janus/{s}/{h}"),
        json!({"janus":"attach","transaction":"x","plugin":PLUGIN}),
    )
    .await;
    assert_error(&r, 457, "Unhandled request 'attach' at this path");
    let r = post(
        a,
        "/janus",
        json!({"janus":"attach","transaction":"x","plugin":PLUGIN}),
    )
    .await;
    assert_error(&r, 457, "Unhandled request 'attach' at this path");
    let r = post(
        a,
        "/janus/424242",
        json!({"janus":"keepalive","transaction":"k"}),
    )
    .await;
    assert_error(&r, 458, "No such session 424242");

    // Transport-level routes.
    let r = http(a, "GET", &format!("/janus/{s}/{h}"), &[], "").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some(format!("/janus/{s}").as_str()));
    assert_eq!(http(a, "GET", "/janus/424242", &[], "").await.status, 404);
    assert_eq!(http(a, "GET", "/janus/1/2/3", &[], "").await.status, 404);
    assert_eq!(http(a, "GET", "/elsewhere", &[], "").await.status, 404);
    let r = http(a, "GET", "/janus/info", &[], "").await;
    assert_eq!(r.json()["janus"], "server_info");
    let r = http(a, "GET", "/janus/ping", &[], "").await;
    assert_eq!(r.json()["janus"], "pong");
    assert_eq!(http(a, "POST", "/janus/info", &[], "{}").await.status, 400);

    // Bad bodies are API errors in a 200.
    let r = http(a, "POST", "/janus", &[], "{oops").await;
    assert_eq!(r.status, 200);
    assert_error(&r.json(), 454, "JSON error");
    assert_error(
        &post(a, "/janus", json!("create")).await,
        455,
        "not an object",
    );
    assert_error(
        &post(a, "/janus", json!({"janus":"create"})).await,
        456,
        "transaction",
    );
    assert_error(
        &post(a, "/janus", json!({"janus":"nope","transaction":"n"})).await,
        457,
        "Unhandled request 'nope' at this path",
    );
    let r = post(
        a,
        &format!("/janus/{s}"),
        json!({"janus":"nope","transaction":"n"}),
    )
    .await;
    assert_error(&r, 453, "Unknown request 'nope'");

    // An oversized body is refused without harm.
    let big = format!(
        r#"{{"janus":"create","transaction":"{}"}}"#,
        "x".repeat(10 << 20)
    );
    let r = http(
        a,
        "POST",
        "/janus",
        &[("Content-Type", "application/json")],
        &big,
    )
    .await;
    assert_eq!(r.status, 413);
    assert_error(&r.json(), 450, "too large");

    // sendBeacon's destroy: text/plain.
    let body = json!({"janus":"destroy","transaction":"bye"}).to_string();
    let r = http(
        a,
        "POST",
        &format!("/janus/{s}"),
        &[("Content-Type", "text/plain;charset=UTF-8")],
        &body,
    )
    .await;
    assert_eq!(
        r.json(),
        json!({"janus":"success","session_id":s,"transaction":"bye"})
    );
    srv.wait_counts(0, 0).await;
    assert_eq!(
        http(a, "GET", &format!("/janus/{s}"), &[], "").await.status,
        404
    );
}

#[tokio::test]
async fn http_cors_like_janus_for_allowed_pages() {
    let srv = start(|c| {
        c.http_path = "/api/janus".into();
        c.origins = OriginPolicy::new(&["http://page.example".into()]).unwrap();
    })
    .await;
    let r = http(
        srv.http,
        "OPTIONS",
        "/api/janus",
        &[
            ("Origin", "http://page.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://page.example")
    );
    assert_eq!(r.header("vary"), Some("Origin"));
    assert_eq!(r.header("access-control-max-age"), Some("86400"));
    assert_eq!(r.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type")
    );

    let r = http(
        srv.http,
        "POST",
        "/api/janus",
        &[("Origin", "http://page.example")],
        r#"{"janus":"create","transaction":"t"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://page.example")
    );
    assert_eq!(r.json()["janus"], "success");
    // A client that is not a page (no Origin) gets no CORS headers: it needs none.
    let r = http(srv.http, "GET", "/api/janus/5", &[], "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(
        http(srv.http, "GET", "/janus/info", &[], "").await.status,
        404
    );
}

#[tokio::test]
async fn http_refuses_pages_of_other_hosts() {
    let srv = start(|_| {}).await;
    for method in ["OPTIONS", "POST"] {
        let r = http(
            srv.http,
            method,
            "/janus",
            &[
                ("Origin", "http://evil.example"),
                ("Access-Control-Request-Method", "POST"),
            ],
            r#"{"janus":"create","transaction":"t"}"#,
        )
        .await;
        assert_eq!(r.status, 403, "{method}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{method}");
    }
    assert_eq!(srv.status.counts().sessions, 0, "no session was created");
    // The same page on another port of this host is welcome.
    let r = http(
        srv.http,
        "POST",
        "/janus",
        &[("Origin", "http://localhost:3000")],
        r#"{"janus":"create","transaction":"t"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
}

#[tokio::test]
async fn http_session_times_out() {
    let srv = start(|c| c.session_timeout = Duration::from_secs(1)).await;
    let r = post(
        srv.http,
        "/janus",
        json!({"janus":"create","transaction":"c"}),
    )
    .await;
    let s = r["data"]["id"].as_u64().unwrap();
    post(
        srv.http,
        &format!("/janus/{s}"),
        json!({"janus":"attach","transaction":"a","plugin":PLUGIN}),
    )
    .await;
    srv.wait_counts(1, 1).await;
    // Expired by the watchdog within a second or two of the 1 s timeout.
    srv.wait_counts(0, 0).await;
    assert_eq!(srv.hub.info().subscribers, 0);
    assert_eq!(
        http(srv.http, "GET", &format!("/janus/{s}"), &[], "")
            .await
            .status,
        404
    );
    let r = post(
        srv.http,
        &format!("/janus/{s}"),
        json!({"janus":"keepalive","transaction":"k"}),
    )
    .await;
    assert_error(&r, 458, "No such session");
}

#[tokio::test]
async fn http_poll_keeps_the_session_alive() {
    let srv = start(|c| {
        c.session_timeout = Duration::from_secs(1);
        c.long_poll_hold = Duration::from_millis(700);
    })
    .await;
    let r = post(
        srv.http,
        "/janus",
        json!({"janus":"create","transaction":"c"}),
    )
    .await;
    let s = r["data"]["id"].as_u64().unwrap();
    for _ in 0..5 {
        let r = http(srv.http, "GET", &format!("/janus/{s}?maxev=10"), &[], "").await;
        assert_eq!(r.status, 200, "session expired while polled");
    }
    srv.wait_counts(1, 0).await;
}

// ---- with the WebRTC engine -----------------------------------------------------------

/// Encodes a moving picture at ~30 fps into the hub, keyframes on request, SPS/PPS in
/// band before every IDR (the offer carries no sprop-parameter-sets).
struct Feeder {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feeder {
    fn start(hub: Arc<Hub>) -> Feeder {
        use std::sync::atomic::Ordering;
        const W: usize = 160;
        const H: usize = 120;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut encoder = openh264::encoder::Encoder::new().expect("encoder");
            let mut params: Vec<u8> = Vec::new();
            let started = Instant::now();
            let mut n: u64 = 0;
            while !stopped.load(Ordering::Relaxed) {
                let mut yuv = vec![128u8; W * H * 3 / 2];
                for (i, px) in yuv[..W * H].iter_mut().enumerate() {
                    *px = ((i % W + i / W + n as usize * 3) % 220 + 16) as u8;
                }
                if hub.keyframe_wanted() {
                    encoder.force_intra_frame();
                }
                let capture_us = clock::monotonic_us();
                let frame = openh264::formats::YUVBuffer::from_vec(yuv, W, H);
                let bitstream = encoder.encode(&frame).expect("encode");
                let key = bitstream.frame_type() == openh264::encoder::FrameType::IDR;
                let data = bitstream.to_vec();
                let mut has_params = false;
                for nal in h264::nal_units(&data) {
                    if matches!(
                        h264::nal_type(nal),
                        Some(h264::NalType::Sps | h264::NalType::Pps)
                    ) {
                        if !has_params {
                            params.clear();
                        }
                        has_params = true;
                        params.extend_from_slice(&[0, 0, 0, 1]);
                        params.extend_from_slice(nal);
                    }
                }
                let mut au = Vec::new();
                if key && !has_params {
                    au.extend_from_slice(&params);
                }
                au.extend_from_slice(&data);
                if !data.is_empty() {
                    hub.publish(Picture {
                        seq: n,
                        ..Picture::video(au, key, (W as u32, H as u32), capture_us)
                    });
                }
                n += 1;
                let next = started + Duration::from_micros(n * 33_333);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        Feeder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Ws {
    /// Wait for an event of the given kind for handle `h`, skipping others.
    async fn event(&mut self, kind: &str, h: u64) -> Value {
        loop {
            let m = self.recv().await;
            if m["janus"] == kind && m["sender"] == json!(h) {
                return m;
            }
        }
    }

    /// `watch`, returning the offer SDP from the `started` event, which arrives
    /// before the synchronous success.
    async fn watch(&mut self, s: u64, h: u64, params: Value) -> String {
        let tx = self
            .send(json!({"janus":"message","session_id":s,"handle_id":h,
                         "body":{"request":"watch","params":params}}))
            .await;
        let event = self.event("event", h).await;
        assert_eq!(
            event["plugindata"]["data"],
            json!({"ustreamer":"event","result":{"status":"started"}}),
            "{event}"
        );
        assert_eq!(event["jsep"]["type"], "offer");
        let reply = self.recv().await;
        assert_eq!(reply["transaction"], json!(tx));
        assert_eq!(reply["plugindata"]["data"], json!({"ok":true}));
        event["jsep"]["sdp"]
            .as_str()
            .expect("offer SDP")
            .to_string()
    }
}

/// The answer without its candidates, and the candidates as janus.js trickles them.
fn split_answer(answer: &str) -> (String, Vec<String>) {
    let candidates = answer
        .lines()
        .filter_map(|l| l.strip_prefix("a="))
        .filter(|l| l.starts_with("candidate:"))
        .map(str::to_string)
        .collect();
    let bare = answer
        .lines()
        .filter(|l| !l.starts_with("a=candidate:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    (bare, candidates)
}

async fn frames(peer: &mut ReceiverPeer, count: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut got = 0;
    while got < count {
        match tokio::time::timeout_at(deadline, peer.next_frame()).await {
            Ok(Some(f)) => {
                assert!(!f.data.is_empty());
                got += 1;
            }
            _ => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_answer_and_media_through_janus() {
    let hub = Hub::new(30);
    let _feeder = Feeder::start(hub.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    while hub.params().is_none() {
        assert!(Instant::now() < deadline, "no SPS/PPS from the feeder");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let engine = RtcEngine::start(RtcConfig::loopback(1000))
        .await
        .expect("engine starts");
    let cfg = JanusConfig {
        ws: Listen::Tcp(0),
        http: Listen::Tcp(0),
        ..JanusConfig::default()
    };
    let server = JanusServer::bind(Streams::single(hub.clone(), 30), engine.clone(), cfg)
        .await
        .expect("bind");
    let ws_addr = server.ws_addr().unwrap();
    let status = server.status();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));

    let mut ws = ws_connect(ws_addr).await;
    let s = ws.create().await;
    let h = ws.attach(s).await;
    let offer = ws
        .watch(s, h, json!({"orientation":0,"audio":false,"mic":false}))
        .await;
    assert!(offer.contains("H264/90000"), "{offer}");

    // janus.js trickles its candidates, possibly before `start` carries the answer.
    let (mut viewer, answer) = ReceiverPeer::answer(&offer).await.expect("viewer answers");
    let (bare_answer, candidates) = split_answer(&answer);
    assert!(!candidates.is_empty());
    for c in &candidates {
        let r = ws
            .call(json!({"janus":"trickle","session_id":s,"handle_id":h,
                         "candidate":{"candidate":c,"sdpMid":"v","sdpMLineIndex":0}}))
            .await;
        assert_eq!(r["janus"], "ack", "{r}");
    }
    let tx = ws
        .send(json!({"janus":"message","session_id":s,"handle_id":h,
                     "body":{"request":"start"},"jsep":{"type":"answer","sdp":bare_answer}}))
        .await;
    let event = ws.event("event", h).await;
    assert_eq!(event["plugindata"]["data"]["result"]["status"], "started");
    assert!(event.get("jsep").is_none());
    let reply = ws.recv().await;
    assert_eq!(reply["transaction"], json!(tx));
    assert_eq!(reply["janus"], "success", "{reply}");
    let r = ws
        .call(
            json!({"janus":"trickle","session_id":s,"handle_id":h,"candidate":{"completed":true}}),
        )
        .await;
    assert_eq!(r["janus"], "ack");

    ws.event("webrtcup", h).await;
    viewer
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("viewer connects");
    assert_eq!(frames(&mut viewer, 10).await, 10, "video flows");

    // A second viewer that answers garbage gets 465; the first keeps receiving.
    let h2 = ws.attach(s).await;
    ws.watch(s, h2, json!({})).await;
    let r = ws
        .call(json!({"janus":"message","session_id":s,"handle_id":h2,
                     "body":{"request":"start"},"jsep":{"type":"answer","sdp":"this is not SDP"}}))
        .await;
    assert_error(&r, 465, "invalid SDP");
    assert_eq!(
        frames(&mut viewer, 10).await,
        10,
        "other viewers unaffected"
    );

    // A second answer for an offer already answered is unexpected.
    let r = ws
        .call(json!({"janus":"message","session_id":s,"handle_id":h,
                     "body":{"request":"start"},"jsep":{"type":"answer","sdp":bare_answer}}))
        .await;
    assert_error(&r, 469, "Unexpected ANSWER");

    // hangup closes the peer and says so (the event goes out before the success).
    let tx = ws
        .send(json!({"janus":"hangup","session_id":s,"handle_id":h}))
        .await;
    let hangup = ws.event("hangup", h).await;
    assert_eq!(hangup["reason"], "Janus API");
    let r = ws.recv().await;
    assert_eq!(
        (&r["janus"], &r["transaction"]),
        (&json!("success"), &json!(tx))
    );

    // Re-watch after hangup gives a fresh offer; destroying the session closes all peers.
    let offer2 = ws.watch(s, h, json!({"orientation":180})).await;
    assert_ne!(offer2, offer);
    let (mut viewer2, answer2) = ReceiverPeer::answer(&offer2).await.expect("viewer answers");
    let r = ws
        .call(json!({"janus":"message","session_id":s,"handle_id":h,
                     "body":{"request":"start"},"jsep":{"type":"answer","sdp":answer2}}))
        .await;
    assert_eq!(r["janus"], "success", "{r}");
    ws.event("webrtcup", h).await;
    viewer2
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("viewer connects");
    let frame = tokio::time::timeout(Duration::from_secs(10), viewer2.next_frame())
        .await
        .expect("a frame")
        .expect("a frame");
    assert_eq!(
        frame.video_orientation,
        Some(2),
        "180 degrees: CVO rotation 2"
    );
    // The viewer closing its side is reported as a hangup with the engine's reason.
    viewer2.close();
    let hangup = ws.event("hangup", h).await;
    assert_ne!(hangup["reason"], "Janus API", "{hangup}");
    let offer3 = ws.watch(s, h, json!({})).await;
    assert_ne!(offer3, offer2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.stats().peers != 2 {
        assert!(Instant::now() < deadline, "peers: {:?}", engine.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = ws.call(json!({"janus":"destroy","session_id":s})).await;
    assert_eq!(r["janus"], "success");
    assert_eq!(status.counts().sessions, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.stats().peers != 0 {
        assert!(
            Instant::now() < deadline,
            "peers left open: {:?}",
            engine.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The engine drops its subscription on its next turn after the last peer goes.
    let deadline = Instant::now() + Duration::from_secs(2);
    while hub.info().subscribers != 0 {
        assert!(Instant::now() < deadline, "the source is still held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The lines of the `kind` section of `sdp` (empty when there is none).
fn sdp_section<'a>(sdp: &'a str, kind: &str) -> Vec<&'a str> {
    let start = format!("m={kind} ");
    sdp.lines()
        .skip_while(|l| !l.starts_with(&start))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !l.starts_with("m="))
        .map(|(_, l)| l)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sound_and_microphone_are_offered_only_when_asked_and_there() {
    use peregrine::media::audio::mic::{MicEvent, MicInput};
    use peregrine::viewer::receiver::ReceiverOptions;

    let hub = Hub::new(30);
    let _feeder = Feeder::start(hub.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    while hub.params().is_none() {
        assert!(Instant::now() < deadline, "no SPS/PPS from the feeder");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let quiet = Hub::new(8);
    publish_keyframe(&quiet);
    let (mic, mut playback) = MicInput::channel(512);
    let streams = Streams::new(vec![
        Stream::with_sound(
            DEFAULT_STREAM,
            hub.clone(),
            30,
            Some(Hub::new(8)),
            Some(mic),
        ),
        Stream::new("quiet", quiet.clone(), 30),
    ]);
    let engine = RtcEngine::start(RtcConfig::loopback(1000))
        .await
        .expect("engine starts");
    let cfg = JanusConfig {
        ws: Listen::Tcp(0),
        http: Listen::Tcp(0),
        ..JanusConfig::default()
    };
    let server = JanusServer::bind(streams, engine.clone(), cfg)
        .await
        .expect("bind");
    let addr = server.ws_addr().unwrap();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let mut ws = ws_connect(addr).await;
    let s = ws.create().await;
    let h = ws.attach(s).await;

    // `features` tells what the stream (the default one, or the one named) has.
    for (body, audio, mic) in [
        (json!({"request":"features"}), true, true),
        (json!({"request":"features","stream":"quiet"}), false, false),
    ] {
        ws.send(json!({"janus":"message","session_id":s,"handle_id":h,"body":body}))
            .await;
        let features =
            ws.event("event", h).await["plugindata"]["data"]["result"]["features"].clone();
        assert_eq!(features["audio"], audio, "{features}");
        assert_eq!(features["mic"], mic, "{features}");
        assert_eq!(ws.recv().await["janus"], "success");
    }

    // Flags count only as JSON booleans.
    let offer = ws.watch(s, h, json!({"audio":"yes","mic":1})).await;
    assert!(sdp_section(&offer, "audio").is_empty(), "{offer}");
    let offer = ws.watch(s, h, json!({"audio":true})).await;
    assert!(
        sdp_section(&offer, "audio").contains(&"a=sendonly"),
        "{offer}"
    );
    let offer = ws.watch(s, h, json!({"mic":true})).await;
    assert!(
        sdp_section(&offer, "audio").contains(&"a=recvonly"),
        "{offer}"
    );

    // A stream without sound offers none, whatever was asked.
    let tx = ws
        .send(json!({"janus":"message","session_id":s,"handle_id":h,
                     "body":{"request":"watch","stream":"quiet","params":{"audio":true,"mic":true}}}))
        .await;
    let event = ws.event("event", h).await;
    let quiet_offer = event["jsep"]["sdp"].as_str().expect("an offer");
    assert!(!quiet_offer.contains("m=audio"), "{quiet_offer}");
    assert_eq!(ws.recv().await["transaction"], json!(tx));

    // Sound and microphone: sendrecv; the viewer's microphone reaches the playback and
    // Janus says `media` when it starts.
    let h2 = ws.attach(s).await;
    let offer = ws.watch(s, h2, json!({"audio":true,"mic":true})).await;
    assert!(
        sdp_section(&offer, "audio").contains(&"a=sendrecv"),
        "{offer}"
    );
    let talking = ReceiverOptions {
        mic_tone_hz: Some(440.0),
        ..Default::default()
    };
    let (mut viewer, answer) = ReceiverPeer::answer_with(&offer, talking)
        .await
        .expect("viewer answers");
    let r = ws
        .call(json!({"janus":"message","session_id":s,"handle_id":h2,
                     "body":{"request":"start"},"jsep":{"type":"answer","sdp":answer}}))
        .await;
    assert_eq!(r["janus"], "success", "{r}");
    ws.event("webrtcup", h2).await;
    viewer
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("viewer connects");
    let media = ws.event("media", h2).await;
    assert_eq!(media["type"], "audio", "{media}");
    assert_eq!(media["receiving"], true, "{media}");
    assert!(
        media["mid"].as_str().is_some_and(|m| !m.is_empty()),
        "{media}"
    );
    let packet = tokio::time::timeout(Duration::from_secs(5), playback.recv())
        .await
        .expect("a microphone packet");
    assert!(matches!(packet, Some(MicEvent::Packet(_))), "{packet:?}");
    assert!(frames(&mut viewer, 5).await == 5, "the video plays too");
}
