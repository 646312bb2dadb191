//! Hostile clients on the signalling paths, against the real binary on loopback: a
//! WebSocket client that floods and never reads, idle sockets past the open-file
//! limit, slowloris request heads, and too many sessions or handles. Each flood is
//! bounded in count and time; each test checks that a normal client is still served.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use support::{join, JanusClient, Server, Transport};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn ws_connect(server: &Server) -> Ws {
    let mut req = server.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "janus-protocol".parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

async fn ws_request(ws: &mut Ws, msg: Value) -> Value {
    ws.send(Message::text(msg.to_string())).await.unwrap();
    let tx = msg["transaction"].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, ws.next())
            .await
            .expect("a reply within 10 s")
            .expect("the socket open")
            .unwrap();
        if let Message::Text(text) = frame {
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["transaction"] == tx {
                return reply;
            }
        }
    }
}

fn janus_sessions(state: &Value) -> u64 {
    state["janus"]["sessions"].as_u64().unwrap_or(u64::MAX)
}

/// A client sends 1 MB `ping` requests and never reads the (1 MB) replies. The server
/// stops reading it instead of queueing replies without bound, disconnects it after the
/// send timeout and destroys its session; a viewer joining meanwhile is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_client_that_never_reads_is_bounded_and_disconnected() {
    let server = Server::start(&[]).await.unwrap();
    let mut flooder = ws_connect(&server).await;
    let created = ws_request(&mut flooder, json!({"janus": "create", "transaction": "c"})).await;
    assert_eq!(created["janus"], "success", "{created}");
    server
        .wait_state(Duration::from_secs(5), |s| janus_sessions(s) == 1)
        .await
        .unwrap();
    let rss_before = server.rss_kib().unwrap();

    // Up to 50 MB in at most 10 s; a send still blocked at the end means the server
    // stopped reading, which is the point.
    let ping = json!({"janus": "ping", "transaction": "x".repeat(1_000_000)}).to_string();
    let flood_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut sent = 0;
    while sent < 50 {
        let send = flooder.send(Message::text(ping.as_str()));
        match tokio::time::timeout_at(flood_deadline, send).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let rss_flooded = server.rss_kib().unwrap();

    // Meanwhile a normal viewer gets its offer.
    let mut viewer = JanusClient::connect(&server, Transport::WebSocket)
        .await
        .unwrap();
    let started = Instant::now();
    viewer.create_and_attach().await.unwrap();
    viewer.watch().await.unwrap();
    let watch_latency = started.elapsed();

    let grown_mib = rss_flooded.saturating_sub(rss_before) / 1024;
    eprintln!(
        "ping flood: {sent} MB sent; RSS {} -> {} MiB (+{grown_mib} MiB); viewer watch in {watch_latency:?}",
        rss_before / 1024,
        rss_flooded / 1024,
    );
    assert!(
        grown_mib < 64,
        "RSS grew by {grown_mib} MiB under the flood ({sent} MB sent)"
    );
    assert!(watch_latency < Duration::from_secs(5), "{watch_latency:?}");

    // The flooder's session goes with its connection (send timeout 10 s by default).
    server
        .wait_state(Duration::from_secs(25), |s| janus_sessions(s) == 1)
        .await
        .expect("the flooding connection is closed and its session destroyed");
    // The flooder's socket ends (after whatever was already on the wire).
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match flooder.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the flooding connection is still open");
}

/// 1,100 idle TCP connections against a server limited to 1024 open files: signalling
/// still works within a few seconds (old sockets that never sent a request make room).
async fn idle_connections_do_not_stop_signalling(extra: &[&str]) {
    let server = Server::start_fd_limited(extra, 1024).await.unwrap();
    let ports = [server.ws_port, server.janus_http_port, server.http_port];
    let mut idle = Vec::new();
    for i in 0..1100 {
        let port = ports[i % ports.len()];
        let connect = TcpStream::connect(("127.0.0.1", port));
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(2), connect).await {
            idle.push(stream);
        }
    }
    assert!(idle.len() > 1024, "only {} connections opened", idle.len());
    let started = Instant::now();
    let joined = tokio::time::timeout(Duration::from_secs(10), join(&server)).await;
    let took = started.elapsed();
    eprintln!(
        "{} idle connections ({extra:?}): create/attach/watch/start took {took:?}",
        idle.len()
    );
    let (_janus, _peer) = joined
        .expect("a viewer joins within 10 s")
        .expect("a viewer joins");
    assert!(took < Duration::from_secs(5), "joining took {took:?}");
    let (status, _) = support::http_request(server.http_port, "GET", "/state", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_fd_limit_with_default_caps() {
    idle_connections_do_not_stop_signalling(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_fd_limit_without_a_per_address_cap() {
    idle_connections_do_not_stop_signalling(&["--max-connections-per-ip", "0"]).await;
}

/// Wait until the server closes `stream`; the time it took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Err(_) => bail!("still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(started.elapsed()),
            Ok(Ok(_)) => {} // e.g. a 408 before the close
        }
    }
}

/// A connection that sends nothing, one that sends its head byte by byte, and one
/// kept alive after a request are all closed by the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed() {
    let server = Server::start(&["--header-timeout", "2"]).await.unwrap();
    let port = server.janus_http_port;
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = b"GET /janus/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let dripper = tokio::spawn(async move {
        for byte in head.iter().take(head.len() - 2) {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        slow
    });
    let mut kept = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    kept.write_all(head).await.unwrap();

    let took = closed_within(&mut silent, Duration::from_secs(8))
        .await
        .unwrap();
    assert!(took >= Duration::from_millis(1500), "closed after {took:?}");
    closed_within(&mut kept, Duration::from_secs(8))
        .await
        .unwrap();
    let mut slow = dripper.await.unwrap();
    closed_within(&mut slow, Duration::from_secs(8))
        .await
        .unwrap();

    let (status, _) = support::http_request(port, "GET", "/janus/info", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "a normal request is still answered");
}

#[tokio::test]
async fn sessions_and_handles_are_capped() {
    let server = Server::start(&[
        "--max-sessions",
        "3",
        "--max-sessions-per-connection",
        "2",
        "--max-handles-per-session",
        "2",
    ])
    .await
    .unwrap();
    let mut a = ws_connect(&server).await;
    let mut sessions = Vec::new();
    for n in 0..2 {
        let r = ws_request(
            &mut a,
            json!({"janus": "create", "transaction": format!("c{n}")}),
        )
        .await;
        assert_eq!(r["janus"], "success", "{r}");
        sessions.push(r["data"]["id"].as_u64().unwrap());
    }
    let r = ws_request(&mut a, json!({"janus": "create", "transaction": "c3"})).await;
    assert_eq!(r["janus"], "error", "{r}");
    assert_eq!(r["error"]["code"], 472, "{r}");
    assert!(
        r["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("connection"),
        "{r}"
    );

    // Handles: two, then 461.
    let s = sessions[0];
    for n in 0..2 {
        let r = ws_request(
            &mut a,
            json!({"janus": "attach", "plugin": "janus.plugin.ustreamer", "session_id": s,
                   "transaction": format!("a{n}")}),
        )
        .await;
        assert_eq!(r["janus"], "success", "{r}");
    }
    let r = ws_request(
        &mut a,
        json!({"janus": "attach", "plugin": "janus.plugin.ustreamer", "session_id": s,
               "transaction": "a3"}),
    )
    .await;
    assert_eq!(r["error"]["code"], 461, "{r}");

    // Another connection is unaffected up to the total cap, then gets 472 as well.
    let mut b = ws_connect(&server).await;
    let r = ws_request(&mut b, json!({"janus": "create", "transaction": "b1"})).await;
    assert_eq!(r["janus"], "success", "{r}");
    let r = ws_request(&mut b, json!({"janus": "create", "transaction": "b2"})).await;
    assert_eq!(r["error"]["code"], 472, "{r}");
    assert!(
        r["error"]["reason"].as_str().unwrap().contains("limit 3"),
        "{r}"
    );

    // Room again after a destroy.
    let r = ws_request(
        &mut a,
        json!({"janus": "destroy", "session_id": sessions[1], "transaction": "d"}),
    )
    .await;
    assert_eq!(r["janus"], "success", "{r}");
    let r = ws_request(&mut b, json!({"janus": "create", "transaction": "b3"})).await;
    assert_eq!(r["janus"], "success", "{r}");
}

/// A session timeout shorter than the long-poll hold: the session survives a poll
/// held with no events.
#[tokio::test]
async fn a_held_long_poll_keeps_its_session() {
    let server = Server::start(&["--session-timeout", "2"]).await.unwrap();
    let port = server.janus_http_port;
    let (_, body) = support::http_request(
        port,
        "POST",
        "/janus",
        Some(br#"{"janus":"create","transaction":"c"}"#),
    )
    .await
    .unwrap();
    let created: Value = serde_json::from_slice(&body).unwrap();
    let s = created["data"]["id"].as_u64().unwrap();
    // The hold is 30 s; give up on the poll after 6 s (three session timeouts).
    let path = format!("/janus/{s}?maxev=1");
    let poll = support::http_request(port, "GET", &path, None);
    let _ = tokio::time::timeout(Duration::from_secs(6), poll).await;
    let (status, body) = support::http_request(
        port,
        "POST",
        &format!("/janus/{s}"),
        Some(br#"{"janus":"keepalive","transaction":"k"}"#),
    )
    .await
    .unwrap();
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, &reply["janus"]), (200, &json!("ack")), "{reply}");
}
