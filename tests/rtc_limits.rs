//! Hostile signalling against the WebRTC engine, with the real binary and real peers:
//! floods of trickled candidates and of `watch` must neither stall other viewers nor
//! grow the server without bound. Every flood is bounded in count and time.

mod support;

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use peregrine::rtc::{sdp, MAX_REMOTE_CANDIDATES};
use peregrine::viewer::receiver::ReceiverPeer;
use serde_json::{json, Value};
use support::{JanusClient, Server, Transport};
use tokio::net::UdpSocket;

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

/// Candidates trickled before the answer wait in the server, each taken against the
/// viewer's budget: spread over messages small enough to pass the per-message cap, only
/// the first [`MAX_REMOTE_CANDIDATES`] get connectivity checks once the answer comes,
/// so a client cannot aim the server's STUN traffic at more addresses than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_trickled_before_the_answer_are_capped_per_viewer() -> Result<()> {
    const EXTRA: usize = 5;
    let server = Server::start(&["--resolution", "320x240"]).await?;
    let mut targets = Vec::new();
    for _ in 0..MAX_REMOTE_CANDIDATES + EXTRA {
        targets.push(UdpSocket::bind("127.0.0.1:0").await?);
    }
    let mut client = JanusClient::connect(&server, Transport::WebSocket).await?;
    client.create_and_attach().await?;
    let offer = client.watch().await?;
    let mut foundation = 0;
    for chunk in targets.chunks(10) {
        let mut candidates = Vec::new();
        for socket in chunk {
            foundation += 1;
            let port = socket.local_addr()?.port();
            candidates.push(json!({
                "candidate": format!("candidate:{foundation} 1 udp 2122260223 127.0.0.1 {port} typ host"),
                "sdpMLineIndex": 0,
            }));
        }
        trickle(
            &mut client,
            json!({"janus": "trickle", "candidates": candidates}),
        )
        .await?;
    }
    // The viewer learns none of the server's candidates, so it never connects and the
    // server goes on checking every candidate it took.
    let blind_offer = sdp::retain_candidates(&offer, |_| false);
    let (_viewer, answer) = ReceiverPeer::answer(&blind_offer).await?;
    client.start(&answer).await?;

    // Two checks on each candidate within the budget mean the server has been round
    // its whole check list: one it took beyond the budget would have had a check too.
    let mut checks = vec![0usize; targets.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1500];
    while checks[..MAX_REMOTE_CANDIDATES].iter().any(|&n| n < 2) {
        ensure!(
            Instant::now() < deadline,
            "checks per trickled candidate after 10 s: {checks:?}"
        );
        for (socket, n) in targets.iter().zip(checks.iter_mut()) {
            while socket.try_recv_from(&mut buf).is_ok() {
                *n += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (socket, n) in targets.iter().zip(checks.iter_mut()) {
        while socket.try_recv_from(&mut buf).is_ok() {
            *n += 1;
        }
    }
    eprintln!("checks per trickled candidate: {checks:?}");
    ensure!(
        checks[MAX_REMOTE_CANDIDATES..].iter().all(|&n| n == 0),
        "candidates beyond the budget of {MAX_REMOTE_CANDIDATES} were checked: {checks:?}"
    );
    Ok(())
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u64) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib / 1024.0)
}

/// `watch` on many handles that never answer: beyond `--max-viewers` each gets a clear
/// error at once, peers stay at the limit, memory stays put and the playing viewer
/// keeps its frame rate. (PEREGRINE_WATCH_FLOOD=N and PEREGRINE_WATCH_FLOOD_MAX=M run a
/// bigger flood, for figures.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_flood_stops_at_max_viewers() -> Result<()> {
    const PER_CONNECTION: usize = 50;
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let total = env("PEREGRINE_WATCH_FLOOD", 300);
    let max_viewers = env("PEREGRINE_WATCH_FLOOD_MAX", 50);
    let max = max_viewers.to_string();
    // Many sessions per socket is the attack measured here, not the session caps.
    let server = Server::start(&[
        "--resolution",
        "320x240",
        "--max-viewers",
        &max,
        "--max-sessions-per-connection",
        "0",
    ])
    .await?;
    let pid = server.state().await?["pid"].as_u64().unwrap_or_default();
    let (_viewer, mut viewer_peer) = support::join(&server).await?;
    let baseline = frames_in(&mut viewer_peer, Duration::from_secs(1)).await;
    ensure!(
        baseline >= 20,
        "the viewer plays at {baseline} fps before any flood"
    );
    let rss_before = rss_mib(pid)?;

    let started = Instant::now();
    let (mut offers, mut refused) = (0, 0);
    let mut connections = Vec::new();
    for chunk in 0..total.div_ceil(PER_CONNECTION) {
        let mut client = JanusClient::connect(&server, Transport::WebSocket).await?;
        let count = PER_CONNECTION.min(total - chunk * PER_CONNECTION);
        let mut handles = Vec::new();
        for _ in 0..count {
            (client.session, client.handle) = (0, 0); // a session of its own each
            client.create_and_attach().await?;
            handles.push((client.session, client.handle));
        }
        // All at once, none answered (the events are read only afterwards).
        for (session, handle) in handles {
            (client.session, client.handle) = (session, handle);
            client.send(json!({"janus": "message", "body": {"request": "watch"}}));
        }
        for _ in 0..count {
            let event = client
                .wait_for(Duration::from_secs(10), |m| m["janus"] == "event")
                .await?;
            let data = &event["plugindata"]["data"];
            if event["jsep"]["type"] == "offer" {
                offers += 1;
            } else {
                ensure!(data["error_code"] == 429, "watch answered {event}");
                ensure!(
                    data["error"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("Too many viewers"),
                    "{event}"
                );
                refused += 1;
            }
        }
        connections.push(client);
    }
    let elapsed = started.elapsed();
    let rss_after = rss_mib(pid)?;
    let fps = frames_in(&mut viewer_peer, Duration::from_secs(2)).await as f64 / 2.0;
    let state = server.state().await?;
    eprintln!(
        "{total} watches in {elapsed:?}: {offers} offers, {refused} refused; \
         RSS {rss_before:.1} -> {rss_after:.1} MiB; viewer {baseline} -> {fps} fps; \
         peers {}",
        state["rtc"]["peers"]
    );
    // (Unanswered offers expire after 30 s, making room again in a longer flood.)
    if elapsed < peregrine::rtc::OFFER_TIMEOUT {
        ensure!(offers == max_viewers - 1, "{offers} offers made");
    }
    ensure!(refused == total - offers, "{refused} refused");
    ensure!(state["rtc"]["peers"] == max_viewers, "{state}");
    ensure!(
        rss_after - rss_before < 64.0,
        "RSS grew from {rss_before:.1} to {rss_after:.1} MiB"
    );
    ensure!(
        fps >= baseline as f64 * 0.75,
        "the viewer dropped from {baseline} to {fps} fps"
    );
    Ok(())
}

/// Garbage on the media port, and binding requests that name a viewer's ufrag without
/// its password, reach no peer and cost a few log lines at most, whatever their count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_dropped_quietly() -> Result<()> {
    let (server, log) = Server::start_piped(&["--resolution", "320x240"], Some("debug")).await?;
    let mut janus = JanusClient::connect(&server, Transport::WebSocket).await?;
    janus.create_and_attach().await?;
    let offer = janus.watch().await?;
    let ufrag = offer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap_or_default()
        .trim()
        .to_string();
    let port: u16 = offer
        .lines()
        .find(|l| l.starts_with("a=candidate:"))
        .and_then(|l| l.split_whitespace().nth(5))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no candidate port in {offer}"))?;
    // The viewer answers and plays: garbage that reached its peer would now be parsed.
    let (mut viewer_peer, answer) = ReceiverPeer::answer(&offer).await?;
    janus.start(&answer).await?;
    viewer_peer.wait_connected(Duration::from_secs(10)).await?;
    let lines_before = log.text().lines().count();

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let media = ("127.0.0.1", port);
    // An unsigned binding request with the viewer's ufrag, then garbage of every kind.
    let username = format!("{ufrag}:attacker");
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    stun.extend_from_slice(&[0x00, 0x06]);
    stun.extend_from_slice(&(username.len() as u16).to_be_bytes());
    stun.extend_from_slice(username.as_bytes());
    stun.resize(stun.len().div_ceil(4) * 4, 0);
    let body = (stun.len() - 20) as u16;
    stun[2..4].copy_from_slice(&body.to_be_bytes());
    for i in 0..2_000u32 {
        let datagram = match i % 4 {
            0 => stun.clone(),
            1 => vec![0x16, 0xfe, 0xfd, (i % 256) as u8, 0, 0, 0, 0],
            2 => vec![0x80, 96, (i >> 8) as u8, i as u8, 0, 0, 0, 1, 0, 0, 0, 2],
            _ => vec![(i % 256) as u8; 1 + (i as usize % 300)],
        };
        socket.send_to(&datagram, media).await?;
        if i % 200 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // The viewer still plays, and a new one connects and plays.
    let playing = frames_in(&mut viewer_peer, Duration::from_secs(1)).await;
    let (_viewer, mut peer) = support::join(&server).await?;
    let frames = frames_in(&mut peer, Duration::from_secs(1)).await;
    let text = log.text();
    let new_lines: Vec<&str> = text.lines().skip(lines_before).collect();
    let dropped: Vec<&&str> = new_lines
        .iter()
        .filter(|l| l.contains("datagram") || l.contains("STUN") || l.contains("discard"))
        .collect();
    eprintln!(
        "{} log lines about 2,000 bad datagrams: {dropped:#?}",
        dropped.len()
    );
    ensure!(playing >= 15, "the viewer got {playing} frames in a second");
    ensure!(
        frames >= 15,
        "the new viewer got {frames} frames in a second"
    );
    ensure!(dropped.len() <= 3, "{} lines: {dropped:#?}", dropped.len());
    Ok(())
}

/// With `--rtc-threads 3`, Janus viewers spread over the three engine shards (as
/// `/state` shows), each plays, and `--max-viewers` caps them all together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_viewers_caps_the_shards_together() -> Result<()> {
    let server = Server::start(&[
        "--resolution",
        "320x240",
        "--rtc-threads",
        "3",
        "--max-viewers",
        "6",
    ])
    .await?;
    let mut viewers = Vec::new();
    for _ in 0..6 {
        viewers.push(support::join(&server).await?);
    }
    for (_, peer) in &mut viewers {
        let frame = tokio::time::timeout(Duration::from_secs(10), peer.next_frame()).await;
        ensure!(matches!(frame, Ok(Some(_))), "a viewer gets pictures");
    }
    let mut extra = JanusClient::connect(&server, Transport::WebSocket).await?;
    extra.create_and_attach().await?;
    extra.send(json!({"janus": "message", "body": {"request": "watch"}}));
    let event = extra
        .wait_for(Duration::from_secs(10), |m| m["janus"] == "event")
        .await?;
    ensure!(
        event["plugindata"]["data"]["error_code"] == 429,
        "the seventh viewer is refused: {event}"
    );
    let state = server.state().await?;
    let shards = state["rtc"]["shards"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(shards.len() == 3, "{state}");
    ensure!(
        shards
            .iter()
            .all(|s| s["peers"] == 2 && s["connected"] == 2),
        "two viewers on each shard: {shards:?}"
    );
    ensure!(state["rtc"]["peers"] == 6, "{state}");
    Ok(())
}
