//! Where the real binary's Janus transports listen, and what it refuses to start with:
//! unix sockets (PiKVM's `ws_unix`), transports a Janus config turns off, security
//! settings it cannot honour, and a busy port.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use peregrine::viewer::http;
use support::{binary, free_port, http_request, run_to_exit};

/// A fresh folder holding `files` (a Janus configs folder).
fn folder(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("peregrine-listen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

const PLUGIN: (&str, &str) = (
    "janus.plugin.ustreamer.jcfg",
    "video: { sink = \"kvmd::ustreamer::h264\" }",
);

/// A running peregrine started with exactly `args` (plus loopback and a free main
/// port); killed when dropped.
struct Running {
    child: Child,
    port: u16,
}

impl Running {
    async fn start(args: &[&str]) -> Result<Running> {
        Self::start_on("127.0.0.1", args).await
    }

    /// Started with `--host host`; `/state` is asked there.
    async fn start_on(host: &str, args: &[&str]) -> Result<Running> {
        let port = free_port();
        let child = Command::new(binary())
            .args([
                "--host",
                host,
                "--udp-port-range",
                "0",
                "--source",
                "testsrc",
            ])
            .args(["--port", &port.to_string()])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .context("start peregrine")?;
        let mut running = Running { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = running.child.try_wait()? {
                bail!("peregrine exited at start ({status})");
            }
            let main = format!("{host}:{port}");
            if let Ok((200, body)) = http::request(&main, "GET", "/state", None).await {
                let state: Value = serde_json::from_slice(&body)?;
                if state["pid"] == json!(running.child.id()) {
                    return Ok(running);
                }
                bail!("port {port} is answered by another process");
            }
            if Instant::now() > deadline {
                bail!("peregrine did not answer /state within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `create` over the Janus WebSocket protocol on a unix socket; the session id.
async fn ws_create_over_unix(path: &Path) -> Result<u64> {
    let stream = UnixStream::connect(path)
        .await
        .with_context(|| format!("connect {}", path.display()))?;
    let mut request = "ws://localhost/janus/ws".into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "janus-protocol".parse()?);
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream).await?;
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "janus-protocol"
    );
    ws.send(Message::text(
        json!({"janus": "create", "transaction": "t1"}).to_string(),
    ))
    .await?;
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await?
        .context("socket closed")??;
    let reply: Value = serde_json::from_str(reply.to_text()?)?;
    assert_eq!(reply["janus"], "success", "{reply}");
    reply["data"]["id"].as_u64().context("no session id")
}

/// One HTTP/1.1 POST over a unix socket; the JSON body of the answer.
async fn http_post_over_unix(path: &Path, target: &str, body: &Value) -> Result<Value> {
    let mut stream = UnixStream::connect(path).await?;
    let body = body.to_string();
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await??;
    let text = String::from_utf8(answer)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP head")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(serde_json::from_str(body)?)
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The TCP ports process `pid` listens on, from /proc: its socket inodes matched
/// against the kernel's table of listening sockets.
fn listening_tcp_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT; state 0A is LISTEN; column 9 the inode.
            if cols.len() > 9 && cols[3] == "0A" && inodes.iter().any(|i| i == cols[9]) {
                let port = cols[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports.sort_unstable();
    ports
}

fn sorted(mut ports: Vec<u16>) -> Vec<u16> {
    ports.sort_unstable();
    ports
}

#[test]
fn token_auth_without_tokens_stops_the_start_with_a_clear_reason() {
    // With no token listed, no token secret and no API secret, every request would be
    // refused. (api_secret and token_auth themselves are enforced: tests/janus_auth.rs.)
    let dir = folder(
        "secret",
        &[PLUGIN, ("janus.jcfg", "general: { token_auth = true }")],
    );
    let out = run_to_exit(&[
        "--janus-config",
        dir.to_str().unwrap(),
        "--port",
        &free_port().to_string(),
        "--janus-ws-port",
        &free_port().to_string(),
        "--janus-http-port",
        &free_port().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--janus-token"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_busy_janus_port_is_named_alone() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let free = free_port();
    let out = run_to_exit(&[
        "--source",
        "testsrc",
        "--port",
        &free_port().to_string(),
        "--janus-ws-port",
        &free.to_string(),
        "--janus-http-port",
        &busy_port.to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!(":{busy_port}")), "{stderr}");
    assert!(stderr.contains("janus_http_port"), "{stderr}");
    assert!(!stderr.contains(&format!(":{free}")), "{stderr}");
    assert!(!stderr.contains("janus_ws_port"), "{stderr}");
}

#[tokio::test]
async fn pikvm_ws_unix_from_the_janus_config_replaces_the_tcp_port() -> Result<()> {
    let dir = folder("pikvm", &[PLUGIN]);
    let socket = dir.join("janus-ws.sock");
    let ws_port = free_port();
    // PiKVM's file, with a port added that must stay closed.
    std::fs::write(
        dir.join("janus.transport.websockets.jcfg"),
        format!(
            "general: {{\n\tws = true\n\tws_port = {ws_port}\n\tws_unix = \"{}\"\n}}\n",
            socket.display()
        ),
    )?;
    // A socket file left by a process that died is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket)?);
    assert!(socket.exists());
    let http_port = free_port();
    let server = Running::start(&[
        "--janus-config",
        dir.to_str().unwrap(),
        "--janus-http-port",
        &http_port.to_string(),
        "--janus-ws-unix-mode",
        "600",
    ])
    .await?;
    assert_eq!(mode_of(&socket), 0o600);
    let session = ws_create_over_unix(&socket).await?;
    assert!(session > 0);
    // As in Janus, the socket takes the place of the port: no TCP WebSocket listener.
    assert_eq!(
        listening_tcp_ports(server.child.id()),
        sorted(vec![server.port, http_port])
    );
    let (status, _) = http_request(
        http_port,
        "POST",
        "/janus",
        Some(br#"{"janus":"ping","transaction":"p"}"#),
    )
    .await?;
    assert_eq!(status, 200, "the HTTP transport still listens on its port");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn flags_put_both_transports_on_unix_sockets() -> Result<()> {
    let dir = folder("flags", &[]);
    let ws_socket = dir.join("ws.sock");
    let http_socket = dir.join("http.sock");
    let (ws_port, http_port) = (free_port(), free_port());
    let server = Running::start(&[
        "--janus-ws-port",
        &ws_port.to_string(),
        "--janus-http-port",
        &http_port.to_string(),
        "--janus-ws-unix",
        ws_socket.to_str().unwrap(),
        "--janus-http-unix",
        http_socket.to_str().unwrap(),
        "--janus-http-unix-mode",
        "0666",
    ])
    .await?;
    assert_eq!(mode_of(&ws_socket), 0o660, "the default mode");
    assert_eq!(mode_of(&http_socket), 0o666);
    ws_create_over_unix(&ws_socket).await?;
    let reply = http_post_over_unix(
        &http_socket,
        "/janus",
        &json!({"janus": "create", "transaction": "h1"}),
    )
    .await?;
    assert_eq!(reply["janus"], "success", "{reply}");
    assert_eq!(
        listening_tcp_ports(server.child.id()),
        vec![server.port],
        "no TCP listener for either transport (ports {ws_port}, {http_port} were given)"
    );
    // The same API on the main port is unaffected.
    assert_main_port_answers(server.port).await?;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn transports_a_janus_config_turns_off_do_not_listen() -> Result<()> {
    let dir = folder("off", &[PLUGIN]);
    let (ws_port, http_port) = (free_port(), free_port());
    std::fs::write(
        dir.join("janus.transport.websockets.jcfg"),
        format!("general: {{ ws = false, ws_port = {ws_port} }}"),
    )?;
    std::fs::write(
        dir.join("janus.transport.http.jcfg"),
        format!("general: {{ http = false, port = {http_port} }}"),
    )?;
    let server = Running::start(&["--janus-config", dir.to_str().unwrap()]).await?;
    assert_eq!(
        listening_tcp_ports(server.child.id()),
        vec![server.port],
        "neither transport listens, on its port ({ws_port}, {http_port}) or a default one"
    );
    assert_main_port_answers(server.port).await?;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn a_file_in_the_socket_path_is_left_alone() {
    let dir = folder("file", &[("ws.sock", "not a socket")]);
    let path = dir.join("ws.sock");
    let out = run_to_exit(&[
        "--source",
        "testsrc",
        "--port",
        &free_port().to_string(),
        "--janus-http-port",
        &free_port().to_string(),
        "--janus-ws-unix",
        path.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The local addresses process `pid` listens on with TCP port `port`, from /proc
/// (IPv4 only, which is what these tests bind).
fn listening_addresses(pid: u32, port: u16) -> Vec<std::net::Ipv4Addr> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() > 9 && cols[3] == "0A" && inodes.iter().any(|i| i == cols[9]) {
            let (ip, p) = cols[1].split_once(':').unwrap();
            if u16::from_str_radix(p, 16).unwrap() == port {
                // /proc writes the address as a host-order (little-endian) word.
                let word = u32::from_str_radix(ip, 16).unwrap();
                out.push(std::net::Ipv4Addr::from(word.swap_bytes()));
            }
        }
    }
    out
}

#[tokio::test]
async fn ws_ip_from_the_janus_config_binds_that_address_only() -> Result<()> {
    let (ws_port, http_port) = (free_port(), free_port());
    let dir = folder(
        "ws-ip",
        &[
            PLUGIN,
            (
                "janus.transport.websockets.jcfg",
                &format!("general: {{ ws = true, ws_port = {ws_port}, ws_ip = \"127.0.0.1\" }}"),
            ),
        ],
    );
    // Everything else goes to 127.0.0.2 (the later --host wins over the harness's).
    let server = Running::start_on(
        "127.0.0.2",
        &[
            "--janus-config",
            dir.to_str().unwrap(),
            "--janus-http-port",
            &http_port.to_string(),
        ],
    )
    .await?;
    let pid = server.child.id();
    let loopback = |last: u8| std::net::Ipv4Addr::new(127, 0, 0, last);
    assert_eq!(listening_addresses(pid, ws_port), vec![loopback(1)]);
    assert_eq!(listening_addresses(pid, http_port), vec![loopback(2)]);
    // The WebSocket transport answers on its address and not on --host's.
    let url = format!("ws://127.0.0.1:{ws_port}/");
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "janus-protocol".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    ws.send(Message::text(
        json!({"janus": "ping", "transaction": "p"}).to_string(),
    ))
    .await?;
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await?
        .context("socket closed")??;
    let reply: Value = serde_json::from_str(reply.to_text()?)?;
    assert_eq!(reply["janus"], "pong", "{reply}");
    assert!(std::net::TcpStream::connect(("127.0.0.2", ws_port)).is_err());
    drop(server);

    // Its own flag moves it.
    let server = Running::start_on(
        "127.0.0.2",
        &[
            "--janus-config",
            dir.to_str().unwrap(),
            "--janus-http-port",
            &http_port.to_string(),
            "--janus-ws-host",
            "127.0.0.2",
        ],
    )
    .await?;
    assert_eq!(
        listening_addresses(server.child.id(), ws_port),
        vec![loopback(2)]
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn a_bad_transport_address_stops_the_start_naming_setting_and_file() {
    for (file, text, setting) in [
        (
            "janus.transport.websockets.jcfg",
            "general: { ws = true, ws_ip = \"not-an-ip\" }",
            "general.ws_ip",
        ),
        (
            "janus.transport.websockets.jcfg",
            "general: { ws = true, ws_interface = \"no-such-if0\" }",
            "general.ws_interface",
        ),
        (
            "janus.transport.http.jcfg",
            "general: { http = true, ip = \"127.0.0.256\" }",
            "general.ip",
        ),
        (
            "janus.transport.http.jcfg",
            "general: { http = true, interface = \"no-such-if0\" }",
            "general.interface",
        ),
    ] {
        let dir = folder("bad-ip", &[PLUGIN, (file, text)]);
        let out = run_to_exit(&[
            "--janus-config",
            dir.to_str().unwrap(),
            "--port",
            &free_port().to_string(),
            "--janus-ws-port",
            &free_port().to_string(),
            "--janus-http-port",
            &free_port().to_string(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{setting}: {stderr}");
        assert!(stderr.contains(setting), "{stderr}");
        let path = dir.join(file);
        assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The bundled page's copy of the Janus API on the main port answers a ping, whatever
/// the transports do.
async fn assert_main_port_answers(port: u16) -> Result<()> {
    let (status, _) = http_request(
        port,
        "POST",
        "/janus",
        Some(br#"{"janus":"ping","transaction":"p"}"#),
    )
    .await?;
    assert_eq!(status, 200, "a Janus ping on the main port");
    Ok(())
}

/// `--media-host` puts WebRTC media on its own address (PiKVM: signalling on a unix
/// socket behind nginx, media for every viewer): the offer names only that address, and
/// a viewer plays through it while the Janus API stays where `--host` put it.
#[tokio::test]
async fn media_host_moves_webrtc_media_only() -> Result<()> {
    let server = support::Server::start(&["--media-host", "127.0.0.2"]).await?;
    let mut janus = support::JanusClient::connect(&server, support::Transport::WebSocket).await?;
    janus.create_and_attach().await?;
    let offer = janus.watch().await?;
    let candidates: Vec<&str> = offer
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    assert!(!candidates.is_empty(), "no candidates in {offer}");
    for c in &candidates {
        assert!(
            c.contains(" 127.0.0.2 "),
            "candidate not on --media-host: {c}"
        );
    }
    let (mut peer, answer) = peregrine::viewer::receiver::ReceiverPeer::answer(&offer).await?;
    janus.start(&answer).await?;
    peer.wait_connected(Duration::from_secs(10)).await?;
    let frame = tokio::time::timeout(Duration::from_secs(10), peer.next_frame())
        .await
        .context("no picture through --media-host")?;
    assert!(frame.is_some(), "the connection closed");
    // The Janus API and pages did not move.
    assert_main_port_answers(server.http_port).await?;
    Ok(())
}
