//! A Janus API client that behaves like janus.js: `create`, `attach`, plugin messages
//! with JSEP, over WebSocket (`janus-protocol` subprotocol) or HTTP long-poll. It works
//! against any server speaking the Janus API, and is what the load generator and the
//! integration tests use to act as viewers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hyper::Uri;
use serde_json::{json, Value};
use tokio::sync::mpsc;

mod long_poll;
mod websocket;

/// How long a single request may wait for its reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Which Janus transport a client uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    LongPoll,
}

/// Where a Janus server listens: `ws://HOST:PORT/PATH` or `http://HOST:PORT/PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub transport: Transport,
    /// `host:port`
    pub authority: String,
    /// Path of the API root, e.g. `/` for WebSocket, `/janus` for HTTP.
    pub path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a URL"))?;
        let transport = match uri.scheme_str() {
            Some("ws") => Transport::WebSocket,
            Some("http") => Transport::LongPoll,
            Some(other) => bail!(
                "{url:?}: scheme {other} is not supported; use ws:// (Janus WebSocket) \
                 or http:// (Janus HTTP long-poll)"
            ),
            None => bail!("{url:?} needs a scheme: ws://HOST:PORT/ or http://HOST:PORT/janus"),
        };
        let host = uri.host().ok_or_else(|| anyhow!("{url:?} has no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let path = match uri.path() {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        Ok(Endpoint {
            transport,
            authority: format!("{host}:{port}"),
            path,
        })
    }

    pub fn url(&self) -> String {
        let scheme = match self.transport {
            Transport::WebSocket => "ws",
            Transport::LongPoll => "http",
        };
        format!("{scheme}://{}{}", self.authority, self.path)
    }
}

/// A Janus API client: requests go out, every reply and event comes back on one queue,
/// as janus.js sees them.
pub struct JanusClient {
    out: mpsc::UnboundedSender<Value>,
    inbox: mpsc::UnboundedReceiver<Value>,
    /// Why the transport stopped, when it did.
    failure: Arc<Mutex<Option<String>>>,
    pub session: u64,
    pub handle: u64,
    next_tx: u64,
}

impl JanusClient {
    /// Connect to `endpoint`. A WebSocket is opened at once (so an unreachable server
    /// fails here); with long-poll the first request finds out.
    pub async fn connect(endpoint: &Endpoint) -> Result<JanusClient> {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let failure = Arc::new(Mutex::new(None));
        match endpoint.transport {
            Transport::WebSocket => {
                websocket::spawn(endpoint, out_rx, in_tx, failure.clone()).await?
            }
            Transport::LongPoll => long_poll::spawn(endpoint, out_rx, in_tx, failure.clone()),
        }
        Ok(JanusClient {
            out: out_tx,
            inbox: in_rx,
            failure,
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
                .map_err(|_| anyhow!("timed out waiting for a Janus message"))?;
            let Some(msg) = msg else {
                let why = self.failure.lock().ok().and_then(|f| f.clone());
                bail!(
                    "Janus connection closed{}",
                    why.map(|w| format!(": {w}")).unwrap_or_default()
                );
            };
            if pred(&msg) {
                return Ok(msg);
            }
        }
    }

    /// Send and wait for the reply carrying the same transaction (not an ack for a message).
    pub async fn request(&mut self, msg: Value) -> Result<Value> {
        let tx = self.send(msg);
        self.wait_for(REQUEST_TIMEOUT, |m| {
            m["transaction"] == json!(tx) && m["janus"] != "ack"
        })
        .await
    }

    /// `create` a session and `attach` to the ustreamer plugin.
    pub async fn create_and_attach(&mut self) -> Result<()> {
        let created = self.request(json!({"janus": "create"})).await?;
        self.session = created["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("not a Janus server: create answered {created}"))?;
        let attached = self
            .request(json!({"janus": "attach", "plugin": "janus.plugin.ustreamer", "opaque_id": "oid-load"}))
            .await?;
        self.handle = attached["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("attach to janus.plugin.ustreamer answered {attached}"))?;
        Ok(())
    }

    /// `watch` of the default stream, retrying on 503 (no stream yet) as pages do;
    /// returns the offer SDP.
    pub async fn watch(&mut self) -> Result<String> {
        self.watch_stream(None).await
    }

    /// As [`JanusClient::watch`], of the stream called `stream` (`None`: the default).
    pub async fn watch_stream(&mut self, stream: Option<&str>) -> Result<String> {
        self.watch_with(stream, None).await
    }

    /// As [`JanusClient::watch_stream`], with `watch.params` (e.g. `{"audio": true}`).
    pub async fn watch_with(
        &mut self,
        stream: Option<&str>,
        params: Option<Value>,
    ) -> Result<String> {
        let mut body = json!({"request": "watch"});
        if let Some(params) = params {
            body["params"] = params;
        }
        if let Some(name) = stream {
            body["stream"] = json!(name);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.send(json!({"janus": "message", "body": body}));
            let ev = self
                .wait_for(REQUEST_TIMEOUT, |m| m["janus"] == "event")
                .await?;
            let data = &ev["plugindata"]["data"];
            if data["error_code"] == 503 {
                if Instant::now() > deadline {
                    bail!("watch still answered 503 (no stream) after 15 s");
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
            .wait_for(REQUEST_TIMEOUT, |m| m["janus"] == "event")
            .await?;
        if ev["plugindata"]["data"]["result"]["status"] != "started" {
            bail!("start answered {ev}");
        }
        Ok(())
    }

    /// Keep the session alive (janus.js sends one every 25 s).
    pub fn keepalive(&mut self) {
        self.send(json!({"janus": "keepalive"}));
    }

    /// End the session (best effort: the reply is not awaited).
    pub fn destroy(&mut self) {
        if self.session != 0 {
            self.send(json!({"janus": "destroy"}));
        }
    }
}

fn is_handle_level(msg: &Value) -> bool {
    matches!(
        msg["janus"].as_str(),
        Some("message" | "trickle" | "hangup" | "detach")
    )
}

/// Keep the first reason the transport stopped.
fn set_failure(slot: &Mutex<Option<String>>, why: String) {
    if let Ok(mut f) = slot.lock() {
        f.get_or_insert(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_by_scheme() {
        let ws = Endpoint::parse("ws://127.0.0.1:8188/").unwrap();
        assert_eq!(ws.transport, Transport::WebSocket);
        assert_eq!(ws.authority, "127.0.0.1:8188");
        assert_eq!(ws.path, "/");
        let http = Endpoint::parse("http://localhost:8088/janus").unwrap();
        assert_eq!(http.transport, Transport::LongPoll);
        assert_eq!(http.path, "/janus");
        assert_eq!(http.url(), "http://localhost:8088/janus");
        assert!(Endpoint::parse("https://x/").is_err());
        assert!(Endpoint::parse("127.0.0.1:8188").is_err());
    }
}
