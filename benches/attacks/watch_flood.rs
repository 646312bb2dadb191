//! 20,000 `watch` requests from one WebSocket, never answered. The attacker takes as
//! many handles as the server gives it (new sessions when a session is full) and sends
//! one watch per handle, or spreads the rest over the handles it got. Measured: what it
//! got (offers, errors by reason), the server's memory and peers, what a new viewer gets,
//! and the memory once the attacker has gone.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::clients::{janus, ws_connect, Ws};
use crate::figures::{mib, progress, Row};
use crate::server::Server;

const NAME: &str = "watch flood";
const WATCHES: usize = 20_000;
/// Requests in flight at once.
const BATCH: usize = 500;
/// The whole flood's time budget.
const BUDGET: Duration = Duration::from_secs(240);
/// How long to wait for the memory to come back after the attacker leaves (the
/// current code expires unanswered offers after 30 s).
const AFTER: Duration = Duration::from_secs(45);

/// Send `msgs` and collect the replies accepted by `is_reply`, until all came or
/// `limit` passed.
async fn batch(
    ws: &mut Ws,
    msgs: Vec<Value>,
    is_reply: impl Fn(&Value) -> bool,
    limit: Duration,
) -> Result<Vec<Value>> {
    let n = msgs.len();
    let deadline = tokio::time::Instant::now() + limit;
    for m in msgs {
        ws.feed(Message::text(m.to_string())).await?;
    }
    tokio::time::timeout_at(deadline, ws.flush())
        .await
        .map_err(|_| anyhow::anyhow!("requests not sent in time"))??;
    let mut replies = Vec::with_capacity(n);
    while replies.len() < n {
        let Ok(frame) = tokio::time::timeout_at(deadline, ws.next()).await else {
            break;
        };
        let Some(Ok(frame)) = frame else {
            bail!("the server closed the connection");
        };
        if let Message::Text(text) = frame {
            let v: Value = serde_json::from_str(&text)?;
            if is_reply(&v) {
                replies.push(v);
            }
        }
    }
    Ok(replies)
}

fn error_text(v: &Value) -> String {
    if v["janus"] == "error" {
        return format!(
            "{} {}",
            v["error"]["code"],
            v["error"]["reason"].as_str().unwrap_or("")
        );
    }
    let data = &v["plugindata"]["data"];
    format!(
        "{} {}",
        data["error_code"],
        data["error"].as_str().unwrap_or("")
    )
}

/// What the attacker got.
#[derive(Default)]
struct Tally {
    sessions: usize,
    handles: Vec<(u64, u64)>,
    offers: usize,
    unanswered: usize,
    /// Why sessions or handles were refused (how many depends on the batching).
    refusals: BTreeMap<String, usize>,
    /// Watches answered with an error, by error.
    errors: BTreeMap<String, usize>,
}

impl Tally {
    fn refusal(&mut self, v: &Value) {
        *self.refusals.entry(error_text(v)).or_default() += 1;
    }

    fn error(&mut self, v: &Value) {
        *self.errors.entry(error_text(v)).or_default() += 1;
    }
}

/// Take handles, sessions as needed, until the server refuses a session.
async fn take_handles(ws: &mut Ws, t: &mut Tally, deadline: Instant) -> Result<()> {
    let mut session = None;
    let mut tx = 0u64;
    while t.handles.len() < WATCHES && Instant::now() < deadline {
        let s = match session {
            Some(s) => s,
            None => {
                tx += 1;
                let msg = json!({"janus": "create", "transaction": format!("c{tx}")});
                let r = batch(
                    ws,
                    vec![msg],
                    |v| v["janus"] != "ack",
                    Duration::from_secs(10),
                )
                .await?;
                match r.first() {
                    Some(v) if v["janus"] == "success" => {
                        t.sessions += 1;
                        let s = v["data"]["id"].as_u64().unwrap_or_default();
                        session = Some(s);
                        s
                    }
                    Some(v) => {
                        t.refusal(v);
                        return Ok(());
                    }
                    None => bail!("create not answered"),
                }
            }
        };
        let n = BATCH.min(WATCHES - t.handles.len());
        let msgs = (0..n)
            .map(|_| {
                tx += 1;
                json!({"janus": "attach", "plugin": "janus.plugin.ustreamer", "session_id": s,
                       "transaction": format!("a{tx}")})
            })
            .collect();
        let replies = batch(
            ws,
            msgs,
            |v| v["janus"] == "success" || v["janus"] == "error",
            Duration::from_secs(60),
        )
        .await?;
        for v in &replies {
            if v["janus"] == "success" {
                t.handles
                    .push((s, v["data"]["id"].as_u64().unwrap_or_default()));
            } else {
                t.refusal(v);
                session = None;
            }
        }
        if replies.len() < n {
            bail!("{} attaches unanswered", n - replies.len());
        }
    }
    Ok(())
}

/// One watch per handle (cycling over them when there are fewer than [`WATCHES`]).
async fn watch_all(ws: &mut Ws, t: &mut Tally, deadline: Instant) -> Result<()> {
    if t.handles.is_empty() {
        return Ok(());
    }
    let mut sent = 0;
    while sent < WATCHES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            t.unanswered += WATCHES - sent;
            break;
        }
        let n = BATCH.min(WATCHES - sent);
        let msgs = (sent..sent + n)
            .map(|i| {
                let (s, h) = t.handles[i % t.handles.len()];
                json!({"janus": "message", "session_id": s, "handle_id": h,
                       "transaction": format!("w{i}"), "body": {"request": "watch"}})
            })
            .collect();
        let is_reply = |v: &Value| {
            v["janus"] == "error" || (v["janus"] == "event" && v["plugindata"].is_object())
        };
        let replies = batch(ws, msgs, is_reply, left.min(Duration::from_secs(60))).await?;
        for v in &replies {
            if v["jsep"]["type"] == "offer" {
                t.offers += 1;
            } else {
                t.error(v);
            }
        }
        t.unanswered += n - replies.len();
        sent += n;
        if sent % 5_000 == 0 {
            progress(format!(
                "{NAME}: {sent} watches sent, {} offers so far",
                t.offers
            ));
        }
    }
    Ok(())
}

/// What a new, well-behaved viewer gets now: its offer's time or the error.
async fn new_viewer(server: &Server) -> String {
    let attempt = async {
        let mut client = janus(server).await?;
        client.create_and_attach().await?;
        let started = Instant::now();
        client.send(json!({"janus": "message", "body": {"request": "watch"}}));
        let ev = client
            .wait_for(Duration::from_secs(30), |m| m["janus"] == "event")
            .await?;
        anyhow::Ok(if ev["jsep"]["type"] == "offer" {
            format!("offer in {:.0?}", started.elapsed())
        } else {
            format!("refused: {}", error_text(&ev))
        })
    };
    match attempt.await {
        Ok(s) => s,
        Err(e) => format!("failed: {e:#}"),
    }
}

pub async fn run(bin: &Path) -> Result<Vec<Row>> {
    let args: Vec<String> = ["--source", "testsrc", "--resolution", "320x240"]
        .map(String::from)
        .to_vec();
    let mut server = Server::start(bin, &args, crate::server::NOFILE).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = server.rss_mib();
    let started = Instant::now();
    let deadline = started + BUDGET;
    let mut ws = ws_connect(&server, Duration::from_secs(5)).await?;
    let mut t = Tally::default();
    let taken = take_handles(&mut ws, &mut t, deadline).await;
    progress(format!(
        "{NAME}: {} sessions, {} handles ({:?})",
        t.sessions,
        t.handles.len(),
        started.elapsed()
    ));
    let watched = match taken {
        Ok(()) => watch_all(&mut ws, &mut t, deadline).await,
        Err(e) => Err(e),
    };
    let took = started.elapsed();
    let during = server.rss_mib();
    let state = server.state().await.ok();
    let peers = state
        .as_ref()
        .map(|s| s["rtc"]["peers"].to_string())
        .unwrap_or("?".into());
    progress(format!(
        "{NAME}: {} offers, {} unanswered, watch errors {:?}, refusals {:?}; RSS {} -> {}; \
         peers {peers} ({took:.1?})",
        t.offers,
        t.unanswered,
        t.errors,
        t.refusals,
        mib(before),
        mib(during)
    ));
    let viewer = new_viewer(&server).await;
    progress(format!("{NAME}: a new viewer: {viewer}"));

    drop(ws);
    tokio::time::sleep(AFTER).await;
    let after = server.rss_mib();
    let left = match server.state().await {
        Ok(s) => format!(
            "{} peers, {} sessions left",
            s["rtc"]["peers"], s["janus"]["sessions"]
        ),
        Err(e) => format!("state unreadable: {e:#}"),
    };
    progress(format!(
        "{NAME}: after the attacker left: RSS {} ({left})",
        mib(after)
    ));

    let mut rows = vec![
        Row::new(
            NAME,
            "attacker's sessions / handles",
            format!("{} / {}", t.sessions, t.handles.len()),
        ),
        Row::new(
            NAME,
            "attacker's 20,000 watches",
            format!(
                "{} offers, {} errors, {} unanswered, in {:.0} s",
                t.offers,
                t.errors.values().sum::<usize>(),
                t.unanswered,
                took.as_secs_f64()
            ),
        ),
    ];
    if !t.refusals.is_empty() {
        let kinds: Vec<&str> = t.refusals.keys().map(String::as_str).collect();
        rows.push(Row::new(
            NAME,
            "sessions and handles refused with",
            kinds.join("; "),
        ));
    }
    for (what, n) in &t.errors {
        rows.push(Row::new(NAME, "watches refused", format!("{n} × {what}")));
    }
    if let Err(e) = watched {
        rows.push(Row::new(NAME, "flood ended early", format!("{e:#}")));
    }
    rows.push(Row::new(
        NAME,
        "RSS before → during",
        format!("{} → {} (peers {peers})", mib(before), mib(during)),
    ));
    rows.push(Row::new(
        NAME,
        "a new viewer's watch during the flood",
        viewer,
    ));
    rows.push(Row::new(
        NAME,
        format!("RSS {} s after the attacker left", AFTER.as_secs()),
        format!("{} ({left})", mib(after)),
    ));
    if let Some(status) = server.exited() {
        rows.push(Row::new(
            NAME,
            "server",
            crate::server::describe_exit(status),
        ));
    }
    Ok(rows)
}
