//! Which browser pages may use the server, and the start-up warning when it is open to
//! the network: the real binary, raw HTTP requests as a browser would send them.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, Captured, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status and head of a reply to a request sent with `headers`.
async fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !head.ends_with(b"\r\n\r\n") {
        assert!(Instant::now() < deadline, "no reply head within 10 s");
        match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head)
}

/// A WebSocket upgrade as a page would ask for it; the status of the answer.
async fn upgrade(port: u16, path: &str, origin: Option<&str>) -> u16 {
    upgrade_with(port, path, origin, &[]).await
}

async fn upgrade_with(port: u16, path: &str, origin: Option<&str>, more: &[(&str, &str)]) -> u16 {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "janus-protocol"),
    ];
    if let Some(origin) = origin {
        headers.push(("Origin", origin));
    }
    headers.extend_from_slice(more);
    request(port, "GET", path, &headers).await.0
}

#[tokio::test]
async fn a_proxy_passes_the_browser_host_name_in_host_or_x_forwarded_host() {
    let srv = Server::start(&[]).await.unwrap();
    let origin = Some("https://kvm.example");
    // nginx with `proxy_set_header Host $host`, as PiKVM's.
    let host = [("Host", "kvm.example")];
    assert_eq!(upgrade_with(srv.ws_port, "/", origin, &host).await, 101);
    // nginx sending its upstream's name, and the browser's in X-Forwarded-Host.
    let upstream = [("Host", "janus-ws"), ("X-Forwarded-Host", "kvm.example")];
    assert_eq!(upgrade_with(srv.ws_port, "/", origin, &upstream).await, 101);
    // The upstream's name alone says nothing about the page: refused.
    let bare = [("Host", "janus-ws")];
    assert_eq!(upgrade_with(srv.ws_port, "/", origin, &bare).await, 403);
}

#[tokio::test]
async fn websocket_upgrades_only_for_allowed_pages() {
    let srv = Server::start(&["--allow-origin", "http://other.example"])
        .await
        .unwrap();
    let endpoints = [
        (srv.ws_port, "/"),
        (srv.http_port, "/janus/ws"),
        (srv.http_port, "/h264"),
        (srv.http_port, "/jsmpeg"),
        (srv.http_port, "/api/media/ws"),
        (srv.http_port, "/"),
    ];
    for (port, path) in endpoints {
        let at = format!(":{port}{path}");
        assert_eq!(
            upgrade(port, path, Some("http://evil.example")).await,
            403,
            "{at}"
        );
        assert_eq!(
            upgrade(port, path, Some("http://127.0.0.1:1234")).await,
            101,
            "same host, other port: {at}"
        );
        assert_eq!(upgrade(port, path, None).await, 101, "no Origin: {at}");
        assert_eq!(
            upgrade(port, path, Some("http://other.example")).await,
            101,
            "listed: {at}"
        );
    }
}

#[tokio::test]
async fn state_and_janus_http_refuse_other_pages() {
    let srv = Server::start(&[]).await.unwrap();
    let evil = [("Origin", "http://evil.example")];
    let (status, head) = request(srv.http_port, "GET", "/state", &evil).await;
    assert_eq!(status, 200, "the read is answered ...");
    assert!(
        !head.contains("access-control-allow-origin"),
        "... but the page may not see it: {head}"
    );
    let (status, head) = request(
        srv.http_port,
        "GET",
        "/state",
        &[("Origin", "http://localhost:9000")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        head.contains("access-control-allow-origin: http://localhost:9000"),
        "{head}"
    );
    assert!(head.contains("vary: origin"), "{head}");
    for port in [srv.http_port, srv.janus_http_port] {
        let (status, head) = request(port, "POST", "/janus", &evil).await;
        assert_eq!(status, 403, ":{port}");
        assert!(!head.contains("access-control-allow-origin"), "{head}");
        let preflight = [
            ("Origin", "http://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ];
        assert_eq!(
            request(port, "OPTIONS", "/janus", &preflight).await.0,
            403,
            ":{port}"
        );
    }
}

#[test]
fn a_bad_allow_origin_stops_the_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .args(["--allow-origin", "evil.example/path"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("allow_origin"), "{text}");
}

/// Start the binary on `host` (no traffic is sent to it) and return its log once it
/// listens.
async fn start_log(host: &str) -> String {
    let port = free_port().to_string();
    let ws = free_port().to_string();
    let http = free_port().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .args(["--host", host, "--port", &port, "--janus-ws-port", &ws])
        .args(["--janus-http-port", &http, "--udp-port-range", "0"])
        .args(["--source", "testsrc"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let captured = Captured::default();
    captured.read_from(child.stderr.take().unwrap());
    let log = captured
        .wait_for(Duration::from_secs(20), |t| {
            t.contains("Janus API listening")
        })
        .await;
    let _ = child.kill();
    let _ = child.wait();
    log.unwrap_or_else(|e| panic!("{e:#}: {}", captured.text()))
}

#[tokio::test]
async fn open_to_the_network_says_so_at_start() {
    let log = start_log("0.0.0.0").await;
    let line = log
        .lines()
        .find(|l| l.contains("open to the network without authentication"))
        .unwrap_or_else(|| panic!("no warning in {log}"));
    assert!(line.contains("WARN"), "{line}");
    for part in [
        "(Janus WebSocket API)",
        "(Janus HTTP API)",
        "(WebRTC media)",
    ] {
        assert!(line.contains(part), "{part} missing: {line}");
    }
    let log = start_log("127.0.0.1").await;
    assert!(!log.contains("open to the network"), "{log}");
}
