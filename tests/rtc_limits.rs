//! Hostile signalling against the WebRTC engine, with the real binary and real peers:
//! floods of trickled candidates and of `watch` must neither stall other viewers nor
//! grow the server without bound. Every flood is bounded in count and time.

mod support;

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use peregrine::rtc::receiver::ReceiverPeer;
use serde_json::{json, Value};
use support::{JanusClient, Server, Transport};

/// A new viewer's `watch` must get its offer within this while a flood goes on.
const WATCH_BOUND: Duration = Duration::from_secs(1);
/// How long the test waits for an offer at all, so a stalled engine fails it quickly
/// (before the caps, the offer after the 10,000 candidates took 30 s).
const WATCH_LIMIT: Duration = Duration::from_secs(5);

/// `count` loopback host candidates on distinct ports, as one trickle message (10,000
/// make about 0.9 MB, under the transports' 1 MB message limit).
fn candidate_flood(count: usize) -> Value {
    let candidates: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "candidate": format!(
                    "candidate:{i} 1 udp 2122260223 127.0.0.1 {} typ host",
                    10_000 + i
                ),
                "sdpMLineIndex": 0,
            })
        })
        .collect();
    json!({"janus": "trickle", "candidates": candidates})
}

/// Send a trickle message and wait for its ack.
async fn trickle(client: &mut JanusClient, msg: Value) -> Result<()> {
    let tx = client.send(msg);
    let reply = client
        .wait_for(Duration::from_secs(10), |m| m["transaction"] == tx)
        .await?;
    ensure!(reply["janus"] == "ack", "trickle answered {reply}");
    Ok(())
}

/// How long a fresh client's `watch` takes to bring its offer (failing after `limit`).
async fn watch_latency(server: &Server, limit: Duration) -> Result<Duration> {
    let mut client = JanusClient::connect(server, Transport::WebSocket).await?;
    client.create_and_attach().await?;
    let started = Instant::now();
    client.send(json!({"janus": "message", "body": {"request": "watch"}}));
    let event = client
        .wait_for(limit, |m| m["janus"] == "event")
        .await
        .map_err(|e| e.context(format!("no offer within {limit:?}")))?;
    ensure!(event["jsep"]["type"] == "offer", "watch answered {event}");
    Ok(started.elapsed())
}

/// Frames a playing viewer receives in `window`.
async fn frames_in(peer: &mut ReceiverPeer, window: Duration) -> usize {
    while peer.try_next_frame().is_some() {}
    let deadline = tokio::time::Instant::now() + window;
    let mut frames = 0;
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, peer.next_frame()).await {
        frames += 1;
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_flood_stalls_no_one() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240", "--h264-gop", "30"]).await?;
    let (_viewer, mut viewer_peer) = support::join(&server).await?;
    let baseline = frames_in(&mut viewer_peer, Duration::from_secs(1)).await;
    ensure!(
        baseline >= 20,
        "the viewer plays at {baseline} fps before any flood"
    );

    // 10,000 candidates (about 1 MB) before the answer.
    let mut attacker = JanusClient::connect(&server, Transport::WebSocket).await?;
    attacker.create_and_attach().await?;
    let offer = attacker.watch().await?;
    let flood = candidate_flood(10_000);
    eprintln!("early flood message: {} bytes", flood.to_string().len());
    trickle(&mut attacker, flood).await?;
    let early = watch_latency(&server, WATCH_LIMIT).await?;
    eprintln!("watch during the early flood: {early:?}");

    // The answer puts those candidates to work; then 1,000 more after it.
    let (_attacker_peer, answer) = ReceiverPeer::answer(&offer).await?;
    attacker.send(json!({"janus": "message", "body": {"request": "start"},
                         "jsep": {"type": "answer", "sdp": answer}}));
    let answered = watch_latency(&server, WATCH_LIMIT).await?;
    eprintln!("watch after the answer: {answered:?}");
    trickle(&mut attacker, candidate_flood(1_000)).await?;
    let late = watch_latency(&server, WATCH_LIMIT).await?;
    eprintln!("watch after the late flood: {late:?}");
    let fps = frames_in(&mut viewer_peer, Duration::from_secs(2)).await as f64 / 2.0;
    eprintln!("viewer: {baseline} fps before, {fps} fps during the floods");

    ensure!(
        early < WATCH_BOUND,
        "watch took {early:?} after 10,000 early candidates"
    );
    ensure!(
        answered < WATCH_BOUND,
        "watch took {answered:?} after the answer"
    );
    ensure!(
        late < WATCH_BOUND,
        "watch took {late:?} after 1,000 late candidates"
    );
    ensure!(
        fps >= baseline as f64 * 0.75,
        "the viewer dropped from {baseline} to {fps} fps"
    );
    Ok(())
}
