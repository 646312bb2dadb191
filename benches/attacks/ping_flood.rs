//! Janus WebSocket ping flood: clients send 1 MB text frames of `ping` requests and
//! never read the pongs. A Janus frame may hold several JSON objects one after the
//! other, so the main variant packs about 25,000 small pings into each frame (25,000
//! replies per frame read); the other is one ping with a 1 MB transaction (one 1 MB
//! reply). Resident memory with one such client, with five (`--ping-clients`), and
//! after they leave.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::clients::{ws_connect, ws_request, Ws};
use crate::figures::{mib, progress, Row};
use crate::server::{Server, RSS_CAP_MIB};

const NAME: &str = "ping flood";
/// What each client tries to send.
const MB_PER_CLIENT: usize = 10;
/// How long each client may try.
const FLOOD_TIME: Duration = Duration::from_secs(20);

/// A connected client with a session, which will never read again.
async fn flooder(server: &Server, n: usize) -> Result<Ws> {
    let mut ws = ws_connect(server, Duration::from_secs(5)).await?;
    let created = ws_request(
        &mut ws,
        json!({"janus": "create", "transaction": format!("c{n}")}),
        Duration::from_secs(5),
    )
    .await?;
    if created["janus"] != "success" {
        bail!("create answered {created}");
    }
    Ok(ws)
}

/// How a 1 MB frame is filled.
#[derive(Clone, Copy)]
enum Frame {
    /// About 25,000 pings one after the other.
    Batched,
    /// One ping with a 1 MB transaction.
    Padded,
}

impl Frame {
    fn text(self) -> String {
        match self {
            Frame::Batched => {
                let mut text = String::with_capacity(1_000_000);
                for i in 0.. {
                    let ping = json!({"janus": "ping", "transaction": format!("p{i}")}).to_string();
                    if text.len() + ping.len() > 1_000_000 {
                        break;
                    }
                    text.push_str(&ping);
                }
                text
            }
            Frame::Padded => {
                json!({"janus": "ping", "transaction": "x".repeat(1_000_000)}).to_string()
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            Frame::Batched => "1 MB frames of ~25,000 pings",
            Frame::Padded => "1 MB pings (1 MB transaction)",
        }
    }
}

/// Send up to [`MB_PER_CLIENT`] 1 MB frames within [`FLOOD_TIME`]; how many went out
/// (a send still blocked at the end means the server stopped reading).
async fn flood(ws: &mut Ws, frame: &str) -> usize {
    let ping = frame;
    let deadline = tokio::time::Instant::now() + FLOOD_TIME;
    let mut sent = 0;
    while sent < MB_PER_CLIENT {
        match tokio::time::timeout_at(deadline, ws.send(Message::text(ping))).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    sent
}

/// RSS once it has settled (two samples 0.5 s apart within 2%), at most after 5 s.
async fn settled_rss(server: &Server) -> Option<f64> {
    let mut last = server.rss_mib()?;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = server.rss_mib()?;
        if (now - last).abs() <= last * 0.02 {
            return Some(now);
        }
        last = now;
    }
    Some(last)
}

pub async fn run(bin: &Path, clients: usize) -> Result<Vec<Row>> {
    let mut rows = variant(bin, Frame::Batched, clients).await?;
    rows.extend(variant(bin, Frame::Padded, 1).await?);
    Ok(rows)
}

/// One client floods, then `clients - 1` more join it; then they all leave.
async fn variant(bin: &Path, frame: Frame, clients: usize) -> Result<Vec<Row>> {
    let text = frame.text();
    let label = frame.label();
    let args: Vec<String> = ["--source", "testsrc", "--resolution", "320x240"]
        .map(String::from)
        .to_vec();
    let mut server = Server::start(bin, &args, crate::server::NOFILE).await?;
    let mut rows = Vec::new();
    let idle = settled_rss(&server).await;
    progress(format!("{NAME}, {label}: idle RSS {}", mib(idle)));

    let mut first = flooder(&server, 0).await?;
    let sent = flood(&mut first, &text).await;
    let one = settled_rss(&server).await;
    progress(format!(
        "{NAME}, {label}: one client sent {sent} MB; RSS {}",
        mib(one)
    ));
    let grown = match (idle, one) {
        (Some(a), Some(b)) => format!(
            "+{:.0} MiB (peak {:.0} MiB; {sent} of {MB_PER_CLIENT} MB accepted)",
            b - a,
            server.peak_rss_mib()
        ),
        _ => "server gone".into(),
    };
    rows.push(Row::new(
        NAME,
        format!("{label}: RSS growth, one client sending 10 MB"),
        grown,
    ));

    // The others, all at once.
    let mut others = Vec::new();
    for n in 1..clients {
        others.push(flooder(&server, n).await?);
    }
    let floods = others.iter_mut().map(|ws| flood(ws, &text));
    let sent_more: Vec<usize> = futures_util::future::join_all(floods).await;
    let all = settled_rss(&server).await;
    let total: usize = sent + sent_more.iter().sum::<usize>();
    if clients > 1 {
        progress(format!(
            "{NAME}, {label}: {clients} clients sent {total} MB; RSS {} (peak {:.0} MiB)",
            mib(all),
            server.peak_rss_mib()
        ));
        rows.push(Row::new(
            NAME,
            format!("{label}: RSS with {clients} such clients"),
            format!(
                "{} (peak {:.0} MiB; {total} of {} MB accepted)",
                mib(all),
                server.peak_rss_mib(),
                clients * MB_PER_CLIENT
            ),
        ));
    }

    // They leave: their sessions go and the memory should come back.
    drop(first);
    drop(others);
    let sessions_gone = server
        .wait_state(Duration::from_secs(20), |s| s["janus"]["sessions"] == 0)
        .await
        .is_some_and(|s| s["janus"]["sessions"] == 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = settled_rss(&server).await;
    progress(format!(
        "{NAME}, {label}: after they left, RSS {}",
        mib(after)
    ));
    rows.push(Row::new(
        NAME,
        format!("{label}: RSS after the clients disconnect"),
        format!(
            "{}{}",
            mib(after),
            if sessions_gone {
                ""
            } else {
                " (sessions still open after 20 s)"
            }
        ),
    ));
    if server.was_capped() {
        rows.push(Row::new(
            NAME,
            "note",
            format!("server killed at the {RSS_CAP_MIB} MiB cap"),
        ));
    }
    if let Some(status) = server.exited() {
        rows.push(Row::new(
            NAME,
            "server",
            crate::server::describe_exit(status),
        ));
    }
    Ok(rows)
}
