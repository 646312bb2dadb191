//! Trickled-candidate floods from one client: 1,000 candidates trickled one message
//! each after its answer, one message of 10,000 after its answer, and 40,000 before its
//! answer (then the answer). Measured meanwhile, each time on a fresh server with one
//! viewer playing: another client's `watch` → offer time, the playing viewer's frame
//! rate and longest wait for a frame, the server's CPU; for the early flood its memory.
//!
//! Every candidate is a loopback host candidate, so the connectivity checks a server
//! makes towards them stay on 127.0.0.1 (ports 10000 and up, below the ephemeral range).

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use peregrine::viewer::janus_client::JanusClient;
use peregrine::viewer::receiver::ReceiverPeer;
use serde_json::{json, Value};

use crate::clients::{fps_while, frames_in, janus, join, watch_latency, Viewing};
use crate::figures::{load1, progress, Row, Samples, Unit};
use crate::server::Server;

const NAME: &str = "candidate flood";
/// How long a `watch` may take before it counts as "no offer".
const WATCH_LIMIT: Duration = Duration::from_secs(60);
/// The viewer's frame rate is taken over at least this (and the whole watch).
const FPS_WINDOW: Duration = Duration::from_secs(3);

fn candidate(i: usize) -> Value {
    json!({
        "candidate": format!(
            "candidate:{i} 1 udp 2122260223 127.0.0.1 {} typ host",
            10_000 + i % 20_000
        ),
        "sdpMLineIndex": 0,
    })
}

fn server_args() -> Vec<String> {
    [
        "--source",
        "testsrc",
        "--resolution",
        "320x240",
        "--h264-gop",
        "30",
    ]
    .map(String::from)
    .to_vec()
}

/// A server with one viewer playing; its frame rate before any flood.
async fn playing(bin: &Path) -> Result<(Server, JanusClient, ReceiverPeer, f64)> {
    let server = Server::start(bin, &server_args(), crate::server::NOFILE).await?;
    let (viewer, mut peer) = join(&server).await?;
    let baseline = frames_in(&mut peer, Duration::from_secs(2)).await as f64 / 2.0;
    Ok((server, viewer, peer, baseline))
}

/// An attacker that watched: its client and the offer.
async fn attacker(server: &Server) -> Result<(JanusClient, String)> {
    let mut client = janus(server).await?;
    client.create_and_attach().await?;
    let offer = client.watch().await?;
    Ok((client, offer))
}

/// The attacker answers with a real peer's answer, but closes that peer at once: an
/// attacker has no reason to complete ICE, and the server goes on checking the
/// candidates it was given. What the server said, and when.
async fn answer(mut client: JanusClient, offer: String) -> (Said, JanusClient) {
    let started = Instant::now();
    let outcome = async {
        let (peer, sdp) = ReceiverPeer::answer(&offer).await?;
        peer.close();
        drop(peer);
        client.send(json!({"janus": "message", "body": {"request": "start"},
                           "jsep": {"type": "answer", "sdp": sdp}}));
        let event = client
            .wait_for(WATCH_LIMIT, |m| m["janus"] == "event")
            .await?;
        let status = &event["plugindata"]["data"]["result"]["status"];
        anyhow::ensure!(status == "started", "start answered {event}");
        anyhow::Ok(())
    }
    .await;
    let said = match outcome {
        Ok(()) => Said {
            what: "started".into(),
            took: Some(started.elapsed()),
        },
        Err(e) => Said {
            what: format!("{e:#}"),
            took: None,
        },
    };
    (said, client)
}

/// What the server answered to an attacker's step, and how long it took (`None`: not
/// all of it was answered).
struct Said {
    what: String,
    took: Option<Duration>,
}

/// Wait for the server's replies to `messages` trickles sent at `started`; what they
/// were, and when.
async fn trickle_replies(
    mut client: JanusClient,
    messages: usize,
    started: Instant,
) -> (Said, JanusClient) {
    let deadline = started + WATCH_LIMIT;
    let (mut acks, mut errors) = (0, 0);
    while acks + errors < messages {
        let left = deadline.saturating_duration_since(Instant::now());
        match client
            .wait_for(left, |m| m["janus"] == "ack" || m["janus"] == "error")
            .await
        {
            Ok(m) if m["janus"] == "ack" => acks += 1,
            Ok(_) => errors += 1,
            Err(_) => break,
        }
    }
    let said = Said {
        what: format!("{acks} acks, {errors} errors"),
        took: (acks + errors == messages).then(|| started.elapsed()),
    };
    (said, client)
}

/// What one step of an attack did to the others.
struct Effect {
    /// The server's answer to the attacker's step.
    step: Said,
    /// A new client's watch → offer, sent once the step was answered.
    watch: Option<Duration>,
    /// The playing viewer from the step to the new client's offer.
    viewing: Viewing,
    /// The server's CPU over that time, in % of one core.
    cpu_pct: f64,
}

/// Run the attacker's `step` (which hands the attacker back, still connected), then
/// time a new client's watch; the playing viewer and the server's CPU over the whole.
async fn effect<F>(
    server: &Server,
    viewer: &mut ReceiverPeer,
    step: F,
) -> Result<(Effect, JanusClient)>
where
    F: Future<Output = (Said, JanusClient)> + Send + 'static,
{
    let ws = server.ws_url();
    let (cpu_before, started) = (server.cpu_ms(), Instant::now());
    let task = tokio::spawn(async move {
        let (said, client) = step.await;
        let watch = watch_latency(ws, WATCH_LIMIT).await;
        (said, watch, client)
    });
    let (viewing, (step, watch, client)) =
        fps_while(viewer, task, FPS_WINDOW, WATCH_LIMIT * 3).await?;
    let cpu_pct = match (cpu_before, server.cpu_ms()) {
        (Some(a), Some(b)) => (b - a) / started.elapsed().as_secs_f64() / 10.0,
        _ => f64::NAN,
    };
    let effect = Effect {
        step,
        watch: watch?,
        viewing,
        cpu_pct,
    };
    Ok((effect, client))
}

fn describe(e: &Effect) -> String {
    let watch = e
        .watch
        .map(|d| format!("{d:.2?}"))
        .unwrap_or_else(|| format!("none in {WATCH_LIMIT:?}"));
    let took = e
        .step
        .took
        .map(|d| format!("in {d:.0?}"))
        .unwrap_or_else(|| "not all answered".into());
    format!(
        "{} {took}; watch {watch}; viewer {:.1} fps, longest gap {:.0?}; CPU {:.0} %",
        e.step.what, e.viewing.fps, e.viewing.longest_gap, e.cpu_pct
    )
}

/// The attacker watched and answered; then `flood` sends its trickles (`messages` of
/// them).
async fn after_answer(bin: &Path, flood: Vec<Value>) -> Result<(Effect, f64)> {
    let (server, _viewer, mut peer, baseline) = playing(bin).await?;
    let (client, offer) = attacker(&server).await?;
    let (_, mut client) = answer(client, offer).await;
    let messages = flood.len();
    let sent = Instant::now();
    for msg in flood {
        client.send(msg);
    }
    let (e, _client) = effect(&server, &mut peer, trickle_replies(client, messages, sent)).await?;
    Ok((e, baseline))
}

/// 1,000 candidates, one trickle message each.
fn one_by_one() -> Vec<Value> {
    (0..1_000)
        .map(|i| json!({"janus": "trickle", "candidate": candidate(i)}))
        .collect()
}

/// 10,000 candidates in one message (about 0.9 MB).
fn in_one_message() -> Vec<Value> {
    let all: Vec<Value> = (0..10_000).map(candidate).collect();
    vec![json!({"janus": "trickle", "candidates": all})]
}

/// 40,000 candidates in four messages before the answer, then the answer.
async fn early(bin: &Path) -> Result<(Effect, Effect, f64)> {
    let (server, _viewer, mut peer, _) = playing(bin).await?;
    let (mut client, offer) = attacker(&server).await?;
    let rss_before = server.rss_mib().unwrap_or(f64::NAN);
    let sent = Instant::now();
    for part in 0..4 {
        let chunk: Vec<Value> = (part * 10_000..(part + 1) * 10_000)
            .map(candidate)
            .collect();
        client.send(json!({"janus": "trickle", "candidates": chunk}));
    }
    let (flooded, client) = effect(&server, &mut peer, trickle_replies(client, 4, sent)).await?;
    let rss_growth = server.rss_mib().unwrap_or(f64::NAN) - rss_before;
    let (answered, _client) = effect(&server, &mut peer, answer(client, offer)).await?;
    Ok((flooded, answered, rss_growth))
}

/// The figures of one step over the runs.
struct Series {
    said: Vec<String>,
    answered: Samples,
    watch: Samples,
    fps: Samples,
    gap: Samples,
    cpu: Samples,
}

impl Series {
    fn new() -> Series {
        Series {
            said: Vec::new(),
            answered: Samples::new(Unit::Millis),
            watch: Samples::new(Unit::Millis),
            fps: Samples::new(Unit::Fps),
            gap: Samples::new(Unit::Millis),
            cpu: Samples::new(Unit::Percent),
        }
    }

    fn push(&mut self, e: &Effect, load: f64) {
        if !self.said.contains(&e.step.what) {
            self.said.push(e.step.what.clone());
        }
        self.answered.push_duration(e.step.took, load);
        self.watch.push_duration(e.watch, load);
        self.fps.push(Some(e.viewing.fps), load);
        self.gap.push_duration(Some(e.viewing.longest_gap), load);
        self.cpu.push(Some(e.cpu_pct), load);
    }

    fn rows(&self, what: &str, rows: &mut Vec<Row>) {
        let none = format!("no offer within {} s", WATCH_LIMIT.as_secs());
        rows.push(Row::new(
            NAME,
            format!("{what}: the server's replies"),
            format!(
                "{}, in {}",
                self.said.join(" / "),
                self.answered
                    .summary(&format!("not answered within {} s", WATCH_LIMIT.as_secs()))
            ),
        ));
        rows.push(Row::new(
            NAME,
            format!("{what}: another client's watch → offer"),
            self.watch.summary(&none),
        ));
        rows.push(Row::new(
            NAME,
            format!("{what}: the playing viewer meanwhile (fps; longest gap)"),
            format!("{}; {}", self.fps.brief(), self.gap.brief()),
        ));
        rows.push(Row::new(
            NAME,
            format!("{what}: server CPU (% of one core)"),
            self.cpu.brief(),
        ));
    }
}

pub async fn run(bin: &Path, runs: usize) -> Result<Vec<Row>> {
    let mut baseline = Samples::new(Unit::Fps);
    let (mut late, mut bulk) = (Series::new(), Series::new());
    let (mut early_flood, mut early_answer) = (Series::new(), Series::new());
    let mut early_rss = Samples::new(Unit::Mib);
    for run in 1..=runs {
        let load = load1();
        let (e, base) = after_answer(bin, one_by_one()).await?;
        progress(format!(
            "{NAME} run {run}, 1,000 trickles: {} (load {load:.2})",
            describe(&e)
        ));
        baseline.push(Some(base), load);
        late.push(&e, load);

        let load = load1();
        let (e, base) = after_answer(bin, in_one_message()).await?;
        progress(format!(
            "{NAME} run {run}, 10,000 in one message: {} (load {load:.2})",
            describe(&e)
        ));
        baseline.push(Some(base), load);
        bulk.push(&e, load);

        let load = load1();
        let (flooded, answered, rss) = early(bin).await?;
        progress(format!(
            "{NAME} run {run}, 40,000 early: {}; RSS +{rss:.0} MiB (load {load:.2})",
            describe(&flooded)
        ));
        let load = load1();
        progress(format!(
            "{NAME} run {run}, then the answer: {} (load {load:.2})",
            describe(&answered)
        ));
        early_flood.push(&flooded, load);
        early_answer.push(&answered, load);
        early_rss.push(Some(rss), load);
    }
    let mut rows = vec![Row::new(
        NAME,
        "a viewer playing, before any flood",
        baseline.brief(),
    )];
    late.rows("1,000 trickled one by one after the answer", &mut rows);
    bulk.rows("10,000 in one message after the answer", &mut rows);
    early_flood.rows("40,000 in 4 messages before the answer", &mut rows);
    rows.push(Row::new(
        NAME,
        "40,000 before the answer: RSS growth",
        early_rss.brief(),
    ));
    early_answer.rows("the answer after those 40,000", &mut rows);
    Ok(rows)
}
