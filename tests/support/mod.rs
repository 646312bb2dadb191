//! Shared by the integration tests: run the real peregrine binary on free loopback
//! ports, and talk the Janus API to it over either transport like janus.js does.
#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A peregrine process; killed when dropped.
pub struct Server {
    child: Child,
    pub http_port: u16,
    pub ws_port: u16,
    pub janus_http_port: u16,
}

impl Server {
    pub async fn start(extra: &[&str]) -> Result<Server> {
        Self::start_with_output(extra, || Ok((Stdio::inherit(), Stdio::inherit()))).await
    }

    /// As [`Server::start`], with the process's log and error output in `log`.
    pub async fn start_logged(extra: &[&str], log: std::fs::File) -> Result<Server> {
        Self::start_with_output(extra, || {
            Ok((Stdio::from(log.try_clone()?), Stdio::from(log.try_clone()?)))
        })
        .await
    }

    /// Start on free ports. A port found free can be taken by another process before
    /// peregrine binds it; then peregrine exits, or `/state` on that port is somebody
    /// else's. Both are told apart by the pid in `/state`, and the start is retried on
    /// fresh ports.
    async fn start_with_output(
        extra: &[&str],
        output: impl Fn() -> Result<(Stdio, Stdio)>,
    ) -> Result<Server> {
        let mut last_error = anyhow!("not started");
        for _attempt in 0..3 {
            let (stdout, stderr) = output()?;
            match Self::try_start(extra, stdout, stderr).await {
                Ok(server) => return Ok(server),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    async fn try_start(extra: &[&str], stdout: Stdio, stderr: Stdio) -> Result<Server> {
        let (http_port, ws_port, janus_http_port) = (free_port(), free_port(), free_port());
        // PEREGRINE_BIN runs a given build (as the browser tests allow).
        let binary = std::env::var_os("PEREGRINE_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_peregrine").into());
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--udp-port-range", "0"])
            .args(["--port", &http_port.to_string()])
            .args(["--janus-ws-port", &ws_port.to_string()])
            .args(["--janus-http-port", &janus_http_port.to_string()])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .context("start peregrine")?;
        let mut server = Server {
            child,
            http_port,
            ws_port,
            janus_http_port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("peregrine exited at start ({status})");
            }
            if let Ok(state) = server.state().await {
                if state["pid"] == json!(server.child.id()) {
                    return Ok(server);
                }
                bail!("port {http_port} is answered by another process");
            }
            if Instant::now() > deadline {
                bail!("peregrine did not answer /state within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.ws_port)
    }

    pub async fn state(&self) -> Result<Value> {
        let (status, body) = http_request(self.http_port, "GET", "/state", None).await?;
        if status != 200 {
            bail!("/state answered {status}");
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Wait until `/state` satisfies `pred`, for up to `timeout`.
    pub async fn wait_state(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state().await?;
            if pred(&state) {
                return Ok(state);
            }
            if Instant::now() > deadline {
                bail!("state never matched: {state}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP/1.1 client (one request per connection), enough for the Janus REST
/// transport and /state without pulling an HTTP client crate into the build.
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let body = body.unwrap_or(&[]);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    // A server may answer (413) and close before an oversized body is written whole;
    // what counts is the answer, so read it even when the write was cut short.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end])?.trim(), 16)?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Which Janus transport a client uses.
#[derive(Clone, Copy, Debug)]
pub enum Transport {
    WebSocket,
    LongPoll,
}

/// A Janus API client: requests go out, every reply and event comes back on one queue,
/// as janus.js sees them.
pub struct JanusClient {
    out: mpsc::UnboundedSender<Value>,
    inbox: mpsc::UnboundedReceiver<Value>,
    pub session: u64,
    pub handle: u64,
    next_tx: u64,
}

impl JanusClient {
    pub async fn connect(server: &Server, transport: Transport) -> Result<JanusClient> {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        match transport {
            Transport::WebSocket => spawn_ws(server.ws_port, out_rx, in_tx).await?,
            Transport::LongPoll => spawn_long_poll(server.janus_http_port, out_rx, in_tx),
        }
        Ok(JanusClient {
            out: out_tx,
            inbox: in_rx,
            session: 0,
            handle: 0,
            next_tx: 0,
        })
    }

    /// Send a request (adds transaction and the ids) and return its transaction.
    pub fn send(&mut self, mut msg: Value) -> String {
        self.next_tx += 1;
        let tx = format!("t{}", self.next_tx);
        msg["transaction"] = json!(tx);
        if self.session != 0 && msg.get("session_id").is_none() {
            msg["session_id"] = json!(self.session);
        }
        if self.handle != 0 && msg.get("handle_id").is_none() && is_handle_level(&msg) {
            msg["handle_id"] = json!(self.handle);
        }
        let _ = self.out.send(msg);
        tx
    }

    /// The next message satisfying `pred`; others are dropped.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.inbox.recv())
                .await
                .map_err(|_| anyhow!("timed out waiting for a Janus message"))?
                .ok_or_else(|| anyhow!("Janus connection closed"))?;
            if pred(&msg) {
                return Ok(msg);
            }
        }
    }

    /// Send and wait for the reply carrying the same transaction (not an ack for a message).
    pub async fn request(&mut self, msg: Value) -> Result<Value> {
        let tx = self.send(msg);
        self.wait_for(Duration::from_secs(10), |m| {
            m["transaction"] == json!(tx) && m["janus"] != "ack"
        })
        .await
    }

    pub async fn create_and_attach(&mut self) -> Result<()> {
        let created = self.request(json!({"janus": "create"})).await?;
        self.session = created["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("create: {created}"))?;
        let attached = self
            .request(json!({"janus": "attach", "plugin": "janus.plugin.ustreamer", "opaque_id": "oid-test"}))
            .await?;
        self.handle = attached["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("attach: {attached}"))?;
        Ok(())
    }

    /// `watch`, retrying on 503 as pages do; returns the offer SDP.
    pub async fn watch(&mut self) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.send(json!({"janus": "message", "body": {"request": "watch"}}));
            let ev = self
                .wait_for(Duration::from_secs(10), |m| m["janus"] == "event")
                .await?;
            let data = &ev["plugindata"]["data"];
            if data["error_code"] == 503 {
                if Instant::now() > deadline {
                    bail!("still 503 after 15 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if let Some(sdp) = ev["jsep"]["sdp"].as_str() {
                if ev["jsep"]["type"] != "offer" {
                    bail!("watch event with jsep that is not an offer: {ev}");
                }
                return Ok(sdp.to_string());
            }
            bail!("unexpected watch event {ev}");
        }
    }

    /// `start` with the answer; waits for the `started` event.
    pub async fn start(&mut self, answer_sdp: &str) -> Result<()> {
        self.send(json!({"janus": "message", "body": {"request": "start"},
                         "jsep": {"type": "answer", "sdp": answer_sdp}}));
        let ev = self
            .wait_for(Duration::from_secs(10), |m| m["janus"] == "event")
            .await?;
        if ev["plugindata"]["data"]["result"]["status"] != "started" {
            bail!("start answered {ev}");
        }
        Ok(())
    }
}

fn is_handle_level(msg: &Value) -> bool {
    matches!(
        msg["janus"].as_str(),
        Some("message" | "trickle" | "hangup" | "detach")
    )
}

async fn spawn_ws(
    port: u16,
    mut out: mpsc::UnboundedReceiver<Value>,
    inbox: mpsc::UnboundedSender<Value>,
) -> Result<()> {
    let mut req = format!("ws://127.0.0.1:{port}/").into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "janus-protocol".parse()?);
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    if resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.as_bytes())
        != Some(b"janus-protocol")
    {
        bail!("server did not select the janus-protocol subprotocol");
    }
    let (mut sink, mut stream) = ws.split();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                msg = out.recv() => match msg {
                    Some(v) => { if sink.send(Message::Text(v.to_string().into())).await.is_err() { break; } }
                    None => { let _ = sink.close().await; break; }
                },
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(t))) => {
                        if let Ok(v) = serde_json::from_str::<Value>(&t) { let _ = inbox.send(v); }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
    });
    Ok(())
}

fn spawn_long_poll(
    port: u16,
    mut out: mpsc::UnboundedReceiver<Value>,
    inbox: mpsc::UnboundedSender<Value>,
) {
    let (session_tx, mut session_rx) = mpsc::unbounded_channel::<u64>();
    // Requests: POST to the level the ids say, as janus.js does (ids in the path).
    let replies = inbox.clone();
    tokio::spawn(async move {
        while let Some(mut msg) = out.recv().await {
            let mut path = "/janus".to_string();
            if let Some(s) = msg.as_object_mut().and_then(|o| o.remove("session_id")) {
                path += &format!("/{s}");
            }
            if let Some(h) = msg.as_object_mut().and_then(|o| o.remove("handle_id")) {
                path += &format!("/{h}");
            }
            match http_request(port, "POST", &path, Some(msg.to_string().as_bytes())).await {
                Ok((200, body)) => {
                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                        if v["janus"] == "success" && msg["janus"] == "create" {
                            if let Some(id) = v["data"]["id"].as_u64() {
                                let _ = session_tx.send(id);
                            }
                        }
                        let _ = replies.send(v);
                    }
                }
                _ => break,
            }
        }
    });
    // Events: one long poll after another, maxev=10 (array replies), like janus.js.
    tokio::spawn(async move {
        let Some(session) = session_rx.recv().await else {
            return;
        };
        loop {
            let path = format!("/janus/{session}?rid=1&maxev=10");
            match http_request(port, "GET", &path, None).await {
                Ok((200, body)) => {
                    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                        break;
                    };
                    let events = match v {
                        Value::Array(items) => items,
                        one => vec![one],
                    };
                    for ev in events {
                        if ev["janus"] != "keepalive" && inbox.send(ev).is_err() {
                            return;
                        }
                    }
                }
                _ => break,
            }
        }
    });
}
