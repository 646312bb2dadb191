//! The peers of the attacks: well-behaved viewers (the library's Janus client and WebRTC
//! receiver, as the integration tests use them) and a raw Janus WebSocket for the
//! attacker, who decides itself when (and whether) to read.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Result};
use futures_util::{SinkExt, StreamExt};
use peregrine::viewer::janus_client::{Endpoint, JanusClient};
use peregrine::viewer::receiver::ReceiverPeer;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::server::Server;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A Janus WebSocket (subprotocol `janus-protocol`), opened within `limit`.
pub async fn ws_connect(server: &Server, limit: Duration) -> Result<Ws> {
    let mut req = server.ws_url().into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "janus-protocol".parse()?);
    let connect = tokio_tungstenite::connect_async(req);
    let (ws, _) = tokio::time::timeout(limit, connect)
        .await
        .map_err(|_| anyhow!("no WebSocket handshake within {limit:?}"))??;
    Ok(ws)
}

/// Send `msg` and read until the reply with its transaction, within `limit`.
pub async fn ws_request(ws: &mut Ws, msg: Value, limit: Duration) -> Result<Value> {
    let tx = msg["transaction"].clone();
    let deadline = tokio::time::Instant::now() + limit;
    tokio::time::timeout_at(deadline, ws.send(Message::text(msg.to_string())))
        .await
        .map_err(|_| anyhow!("request not sent within {limit:?}"))??;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("no reply within {limit:?}"))?
            .ok_or_else(|| anyhow!("connection closed"))??;
        if let Message::Text(text) = frame {
            let reply: Value = serde_json::from_str(&text)?;
            if reply["transaction"] == tx && reply["janus"] != "ack" {
                return Ok(reply);
            }
        }
    }
}

/// A Janus client on the server's WebSocket port.
pub async fn janus(server: &Server) -> Result<JanusClient> {
    JanusClient::connect(&Endpoint::parse(&server.ws_url())?).await
}

/// A viewer joined as janus.js does (create, attach, watch with 503 retries, answer,
/// start), connected.
pub async fn join(server: &Server) -> Result<(JanusClient, ReceiverPeer)> {
    let mut client = janus(server).await?;
    client.create_and_attach().await?;
    let offer = client.watch().await?;
    let (mut peer, answer) = ReceiverPeer::answer(&offer).await?;
    client.start(&answer).await?;
    peer.wait_connected(Duration::from_secs(10)).await?;
    Ok((client, peer))
}

/// Frames a playing viewer receives in `window` (what was queued before is dropped).
pub async fn frames_in(peer: &mut ReceiverPeer, window: Duration) -> usize {
    while peer.try_next_frame().is_some() {}
    let deadline = tokio::time::Instant::now() + window;
    let mut frames = 0;
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, peer.next_frame()).await {
        frames += 1;
    }
    frames
}

/// How long a fresh client's `watch` takes to bring its offer; `Ok(None)` when none
/// came within `limit`. Connecting and attaching are not in the figure.
pub async fn watch_latency(server_ws: String, limit: Duration) -> Result<Option<Duration>> {
    let mut client = JanusClient::connect(&Endpoint::parse(&server_ws)?).await?;
    if let Err(e) = client.create_and_attach().await {
        crate::figures::progress(format!("a new client could not attach: {e:#}"));
        return Ok(None);
    }
    let started = Instant::now();
    client.send(json!({"janus": "message", "body": {"request": "watch"}}));
    match client.wait_for(limit, |m| m["janus"] == "event").await {
        Ok(event) => {
            ensure!(event["jsep"]["type"] == "offer", "watch answered {event}");
            Ok(Some(started.elapsed()))
        }
        Err(_) => Ok(None),
    }
}

/// How a playing viewer fared over a window.
pub struct Viewing {
    pub fps: f64,
    /// The longest time without a frame.
    pub longest_gap: Duration,
}

/// Frames `peer` receives while `task` runs, over at least `min_window` (and at most
/// `limit`); returns how the viewer fared and the task's result.
pub async fn fps_while<T>(
    peer: &mut ReceiverPeer,
    mut task: tokio::task::JoinHandle<T>,
    min_window: Duration,
    limit: Duration,
) -> Result<(Viewing, T)> {
    while peer.try_next_frame().is_some() {}
    let started = tokio::time::Instant::now();
    let mut last_frame = started;
    let mut longest_gap = Duration::ZERO;
    let mut frames = 0usize;
    let mut result = None;
    loop {
        let elapsed = started.elapsed();
        if result.is_some() && elapsed >= min_window {
            break;
        }
        if elapsed >= limit {
            bail!("the measured task did not end within {limit:?}");
        }
        tokio::select! {
            r = &mut task, if result.is_none() => result = Some(r?),
            f = peer.next_frame() => match f {
                Some(_) => {
                    frames += 1;
                    longest_gap = longest_gap.max(last_frame.elapsed());
                    last_frame = tokio::time::Instant::now();
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    let longest_gap = longest_gap.max(last_frame.elapsed());
    let fps = frames as f64 / started.elapsed().as_secs_f64();
    let viewing = Viewing { fps, longest_gap };
    Ok((viewing, result.expect("the task ended")))
}
