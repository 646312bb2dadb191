//! Who may connect, in the real binary: HTTP Basic auth on the main port (`--user`,
//! `--passwd`, `--passwd-file`), raw HTTP and curl as clients; address allow-lists
//! (`--allow-ip` and per Janus transport), with 127.0.0.2 as a second client address
//! on this machine, and a real WebRTC viewer whose media comes from a refused address.

mod support;

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{
    basic, connect_from, free_port, raw_request, raw_request_from, Captured, JanusClient, Reply,
    Server, Transport,
};

const USER: &str = "admin";
const PASSWD: &str = "correct horse";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

async fn get(port: u16, path: &str, authorization: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    raw_request(port, "GET", path, &headers).await.unwrap()
}

/// A loopback address of its own for each wrong guess a test makes, so the guesses do
/// not add up to the throttle (see `wrong_passwords_get_one_address_throttled...`).
fn next_guesser() -> Option<IpAddr> {
    use std::sync::atomic::{AtomicU8, Ordering};
    static NEXT: AtomicU8 = AtomicU8::new(1);
    Some(IpAddr::from([
        127,
        0,
        1,
        NEXT.fetch_add(1, Ordering::Relaxed),
    ]))
}

/// A WebSocket upgrade as a browser sends it, with credentials when given.
async fn upgrade(port: u16, path: &str, authorization: Option<&str>) -> u16 {
    upgrade_from(None, port, path, authorization).await
}

async fn upgrade_from(
    from: Option<IpAddr>,
    port: u16,
    path: &str,
    authorization: Option<&str>,
) -> u16 {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "janus-protocol"),
    ];
    if let Some(a) = authorization {
        headers.push(("Authorization", a));
    }
    raw_request_from(from, port, "GET", path, &headers, b"")
        .await
        .unwrap()
        .status
}

/// A Janus `create` POSTed to `port`, with credentials when given.
async fn janus_create(port: u16, authorization: Option<&str>) -> Reply {
    let body = json!({"janus": "create", "transaction": "t1"}).to_string();
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = authorization {
        headers.push(("Authorization", a));
    }
    raw_request_from(None, port, "POST", "/janus", &headers, body.as_bytes())
        .await
        .unwrap()
}

fn assert_challenge(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {}", reply.head);
    assert!(
        reply
            .head
            .contains("www-authenticate: basic realm=\"peregrine\""),
        "{what}: {}",
        reply.head
    );
    assert!(
        !reply.body.is_empty() && reply.body.len() < 200,
        "{what}: a short body"
    );
}

#[tokio::test]
async fn basic_auth_guards_everything_on_the_main_port_and_not_the_janus_ports() {
    let srv = Server::start(&[
        "--user",
        USER,
        "--passwd",
        PASSWD,
        "--jsmpeg-secret",
        "upload-secret",
    ])
    .await
    .unwrap();
    let right = basic(USER, PASSWD);
    let wrong = basic(USER, "Correct horse");
    let port = srv.http_port;
    for (path, status) in [
        ("/", 200),
        ("/state", 200),
        ("/style.css", 200),
        ("/peregrine.js", 200),
        ("/jsmpeg.html", 200),
        ("/janus/info", 200),
        ("/no-such-page", 404),
    ] {
        assert_challenge(&get(port, path, None).await, path);
        let guess = raw_request_from(
            next_guesser(),
            port,
            "GET",
            path,
            &[("Authorization", &wrong)],
            b"",
        )
        .await
        .unwrap();
        assert_challenge(&guess, path);
        assert_eq!(get(port, path, Some(&right)).await.status, status, "{path}");
    }
    let state: Value =
        serde_json::from_slice(&get(port, "/state", Some(&right)).await.body).unwrap();
    assert_eq!(state["pid"], json!(srv.pid()));

    // WebSocket upgrades: the Janus API for the bundled page and the relays.
    for path in ["/janus/ws", "/h264", "/jsmpeg", "/api/media/ws", "/"] {
        assert_eq!(upgrade(port, path, None).await, 401, "{path}");
        assert_eq!(
            upgrade_from(next_guesser(), port, path, Some(&wrong)).await,
            401,
            "{path}"
        );
        assert_eq!(upgrade(port, path, Some(&right)).await, 101, "{path}");
    }
    // The Janus HTTP API and uploads on the main port.
    assert_challenge(&janus_create(port, None).await, "POST /janus");
    let created = janus_create(port, Some(&right)).await;
    assert_eq!(created.status, 200);
    let created: Value = serde_json::from_slice(&created.body).unwrap();
    assert_eq!(created["janus"], "success", "{created}");
    let upload = |auth: Option<String>| async move {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        raw_request_from(None, port, "POST", "/upload/upload-secret", &headers, b"")
            .await
            .unwrap()
            .status
    };
    assert_eq!(upload(None).await, 401);
    assert_eq!(upload(Some(right.clone())).await, 200);

    // A CORS preflight never carries credentials (as in µStreamer, it passes).
    let preflight = raw_request(
        port,
        "OPTIONS",
        "/janus",
        &[
            ("Origin", "http://127.0.0.1:9"),
            ("Access-Control-Request-Method", "POST"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(preflight.status, 200, "{}", preflight.head);

    // The Janus ports have the Janus API's own authentication, not Basic.
    assert_eq!(upgrade(srv.ws_port, "/", None).await, 101);
    let created = janus_create(srv.janus_http_port, None).await;
    assert_eq!(created.status, 200);
    let created: Value = serde_json::from_slice(&created.body).unwrap();
    assert_eq!(created["janus"], "success", "{created}");
}

#[tokio::test]
async fn wrong_passwords_get_one_address_throttled_and_logged() {
    let (srv, log) = Server::start_piped(&["--user", USER, "--passwd", PASSWD], None)
        .await
        .unwrap();
    let right = basic(USER, PASSWD);
    let wrong = basic(USER, "guess");
    let guesser = Some(ip("127.0.0.2"));
    let from = |who: Option<IpAddr>, auth: String| {
        let port = srv.http_port;
        async move {
            raw_request_from(who, port, "GET", "/state", &[("Authorization", &auth)], b"")
                .await
                .unwrap()
        }
    };
    for i in 0..10 {
        assert_eq!(from(guesser, wrong.clone()).await.status, 401, "guess {i}");
    }
    let throttled = from(guesser, right.clone()).await;
    assert_eq!(throttled.status, 429, "right or wrong, for a while");
    let retry: u64 = throttled
        .head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {}", throttled.head));
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        from(None, right.clone()).await.status,
        200,
        "127.0.0.1 is not the guesser"
    );
    let text = log
        .wait_for(Duration::from_secs(10), |t| {
            t.contains("HTTP login refused") && t.contains("refusing the address")
        })
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("HTTP login refused"))
        .unwrap();
    assert!(line.contains("127.0.0.2"), "the peer is named: {line}");
    assert!(!text.contains(PASSWD), "the password never reaches the log");
    // Ten wrong guesses and one throttled request, counted by reason.
    let metrics = get(srv.http_port, "/metrics", Some(&right)).await;
    assert_eq!(metrics.status, 200);
    let body = String::from_utf8_lossy(&metrics.body);
    assert!(
        body.contains("peregrine_rejections_total{reason=\"basic_auth\"} 11"),
        "{body}"
    );
}

#[tokio::test]
async fn curl_logs_in_with_dash_u() {
    let srv = Server::start(&["--user", USER, "--passwd", PASSWD])
        .await
        .unwrap();
    let url = format!("http://127.0.0.1:{}/state", srv.http_port);
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-D", "-"])
            .args(args)
            .arg(&url)
            .output()
            .expect("curl (scripts/install-test-deps.sh installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let denied = curl(&[]);
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    assert!(
        denied
            .to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"peregrine\""),
        "{denied}"
    );
    assert!(curl(&["-u", &format!("{USER}:nope")]).starts_with("HTTP/1.1 401"));
    let ok = curl(&["-u", &format!("{USER}:{PASSWD}")]);
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let body = ok.split("\r\n\r\n").nth(1).unwrap();
    let state: Value = serde_json::from_str(body).unwrap();
    assert_eq!(state["pid"], json!(srv.pid()));
}

#[tokio::test]
async fn the_password_can_come_from_a_file_and_stays_out_of_ps() {
    let file = std::env::temp_dir().join(format!("peregrine-access-pw-{}", std::process::id()));
    std::fs::write(&file, format!("{PASSWD}\n")).unwrap();
    let file_s = file.to_str().unwrap().to_string();
    let srv = Server::start(&["--user", USER, "--passwd-file", &file_s])
        .await
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    let right = basic(USER, PASSWD);
    assert_eq!(get(srv.http_port, "/state", Some(&right)).await.status, 200);
    assert_eq!(get(srv.http_port, "/state", None).await.status, 401);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", srv.pid())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(!cmdline.contains(PASSWD), "{cmdline}");
}

/// Send a request from `from` to `port`; true when the connection is closed without a
/// byte of answer, as a refused client's is.
async fn refused(from: Option<IpAddr>, port: u16) -> bool {
    let mut conn = match connect_from(from, port).await {
        Ok(c) => c,
        Err(_) => return true,
    };
    let request = format!("GET /state HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let _ = conn.write_all(request.as_bytes()).await;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("connection to :{port} neither answered nor closed within 10 s"),
    }
}

/// A server that refuses this machine's own address, so it cannot be asked whether it
/// is up: its log says when it listens.
struct Unreachable {
    child: Child,
    ports: [u16; 3],
    log: Captured,
}

impl Unreachable {
    async fn start(extra: &[&str]) -> Unreachable {
        let ports = [free_port(), free_port(), free_port()];
        let [http, ws, janus_http] = ports.map(|p| p.to_string());
        let mut child = Command::new(env!("CARGO_BIN_EXE_peregrine"))
            .args(["--host", "127.0.0.1", "--udp-port-range", "0"])
            .args(["--port", &http, "--janus-ws-port", &ws])
            .args(["--janus-http-port", &janus_http, "--source", "testsrc"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Captured::default();
        log.read_from(child.stderr.take().unwrap());
        log.wait_for(Duration::from_secs(20), |t| {
            t.contains("Janus API listening")
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        Unreachable { child, ports, log }
    }
}

impl Drop for Unreachable {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_client_outside_the_allow_list_gets_no_answer_on_any_port() {
    let srv = Unreachable::start(&["--allow-ip", "10.0.0.0/8"]).await;
    for port in srv.ports {
        assert!(refused(None, port).await, ":{port} answered 127.0.0.1");
    }
    let text = srv
        .log
        .wait_for(Duration::from_secs(10), |t| {
            t.contains("address not in the allow-list")
        })
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("address not in the allow-list"))
        .unwrap();
    assert!(line.contains("127.0.0.1"), "{line}");

    // A Janus-style prefix admits the same client.
    let srv = Server::start(&["--allow-ip", "127."]).await.unwrap();
    for from in [None, Some(ip("127.0.0.2"))] {
        let reply = raw_request_from(from, srv.http_port, "GET", "/state", &[], b"").await;
        assert_eq!(reply.unwrap().status, 200, "{from:?}");
    }
}

#[tokio::test]
async fn one_address_allowed_another_refused_on_every_port() {
    let srv = Server::start(&["--allow-ip", "127.0.0.1"]).await.unwrap();
    let other = Some(ip("127.0.0.2"));
    for port in [srv.http_port, srv.ws_port, srv.janus_http_port] {
        assert!(refused(other, port).await, ":{port} answered 127.0.0.2");
    }
    assert_eq!(get(srv.http_port, "/state", None).await.status, 200);
    assert_eq!(upgrade(srv.ws_port, "/", None).await, 101);
    assert_eq!(janus_create(srv.janus_http_port, None).await.status, 200);
}

#[tokio::test]
async fn a_transport_list_applies_to_its_port_alone_and_on_top_of_the_global_one() {
    let srv = Server::start(&["--janus-ws-allow-ip", "127.0.0.1"])
        .await
        .unwrap();
    let other = Some(ip("127.0.0.2"));
    assert!(refused(other, srv.ws_port).await);
    assert_eq!(upgrade(srv.ws_port, "/", None).await, 101);
    for port in [srv.http_port, srv.janus_http_port] {
        let reply = raw_request_from(other, port, "GET", "/janus/info", &[], b"").await;
        assert_eq!(reply.unwrap().status, 200, ":{port} admits 127.0.0.2");
    }
    drop(srv);

    // Both lists apply to the HTTP transport: each address fails one of them.
    let srv = Server::start(&[
        "--allow-ip",
        "127.0.0.1",
        "--janus-http-allow-ip",
        "127.0.0.2",
    ])
    .await
    .unwrap();
    assert!(
        refused(None, srv.janus_http_port).await,
        "fails its own list"
    );
    assert!(
        refused(other, srv.janus_http_port).await,
        "fails --allow-ip"
    );
    assert_eq!(get(srv.http_port, "/state", None).await.status, 200);
}

/// Join through the Janus API from 127.0.0.1 with the viewer's media on `media_ip`;
/// whether it connects within `timeout`.
async fn viewer_connects(srv: &Server, media_ip: IpAddr, timeout: Duration) -> bool {
    let mut janus = JanusClient::connect(srv, Transport::WebSocket)
        .await
        .unwrap();
    janus.create_and_attach().await.unwrap();
    let offer = janus.watch().await.unwrap();
    let (mut peer, answer) =
        peregrine::viewer::receiver::ReceiverPeer::answer_from(&offer, media_ip)
            .await
            .unwrap();
    janus.start(&answer).await.unwrap();
    let connected = peer.wait_connected(timeout).await.is_ok();
    if connected {
        let frame = tokio::time::timeout(Duration::from_secs(10), peer.next_frame()).await;
        assert!(
            matches!(frame, Ok(Some(_))),
            "a connected viewer gets pictures"
        );
    }
    peer.close();
    connected
}

#[tokio::test]
async fn media_from_an_address_outside_the_list_never_connects() {
    let other = ip("127.0.0.2");
    // Without a list, a viewer at 127.0.0.2 plays: the address itself is no obstacle.
    let open = Server::start(&[]).await.unwrap();
    assert!(viewer_connects(&open, other, Duration::from_secs(15)).await);
    drop(open);

    let srv = Server::start(&["--allow-ip", "127.0.0.1"]).await.unwrap();
    let started = Instant::now();
    assert!(
        !viewer_connects(&srv, other, Duration::from_secs(6)).await,
        "its checks are not answered"
    );
    assert!(started.elapsed() >= Duration::from_secs(6));
    assert!(viewer_connects(&srv, ip("127.0.0.1"), Duration::from_secs(15)).await);
}
