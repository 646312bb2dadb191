//! The log as an operator sees it: the real binary with stderr to a pipe, real viewers
//! joining and leaving through the Janus API.

mod support;

use std::time::Duration;

use anyhow::{ensure, Result};
use peregrine::viewer::receiver::ReceiverPeer;
use serde_json::{json, Value};
use support::{join, Captured, JanusClient, Server, Transport};

const WAIT: Duration = Duration::from_secs(15);

/// Join one viewer and wait until it has received a picture.
async fn watch_a_picture(server: &Server) -> Result<(JanusClient, ReceiverPeer)> {
    let (janus, mut peer) = join(server).await?;
    tokio::time::timeout(WAIT, peer.next_frame())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no picture"))?;
    Ok((janus, peer))
}

fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

async fn wait_lines(log: &Captured, needle: &str, n: usize) -> Result<String> {
    log.wait_for(WAIT, |t| lines_with(t, needle).len() >= n)
        .await
}

#[tokio::test]
async fn default_log_is_plain_text_without_library_noise() -> Result<()> {
    let (server, log) = Server::start_piped(&["--resolution", "320x240"], None).await?;
    let (mut janus, _peer) = watch_a_picture(&server).await?;
    wait_lines(&log, "viewer connected", 1).await?;
    janus.request(json!({"janus": "hangup"})).await?;
    let text = wait_lines(&log, "viewer gone", 1).await?;
    let bytes = log.bytes();
    ensure!(
        !bytes.contains(&0x1b),
        "colour codes in a piped log:\n{text}"
    );
    ensure!(
        !text.contains("Unsupported Extension Type"),
        "DTLS noise:\n{text}"
    );
    ensure!(!text.contains("[OpenH264]"), "raw encoder output:\n{text}");
    // Every info line is peregrine's own: no library chatter at the default level.
    for line in lines_with(&text, " INFO ") {
        ensure!(!line.contains("rtc_"), "library INFO line: {line}");
    }
    ensure!(
        lines_with(&text, "DEBUG").is_empty(),
        "debug lines:\n{text}"
    );
    ensure!(text.contains("viewer page at"), "{text}");
    Ok(())
}

#[tokio::test]
async fn json_format_writes_one_object_per_line() -> Result<()> {
    let (server, log) =
        Server::start_piped(&["--resolution", "320x240", "--log-format", "json"], None).await?;
    let (janus, _peer) = watch_a_picture(&server).await?;
    drop(janus); // closes the WebSocket
    let text = wait_lines(&log, "viewer gone", 1).await?;
    let mut gone = None;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("not one JSON object: {line:?}: {e}"))?;
        ensure!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        ensure!(v["message"].is_string(), "{line}");
        if v["message"] == "viewer gone" {
            gone = Some(v);
        }
    }
    let gone = gone.expect("a viewer gone line");
    ensure!(gone["reason"] == "WebSocket closed", "{gone}");
    Ok(())
}

#[tokio::test]
async fn log_level_flag_enables_our_debug_lines() -> Result<()> {
    let (server, log) = Server::start_piped(&["--log-level", "debug"], None).await?;
    let mut janus = JanusClient::connect(&server, Transport::WebSocket).await?;
    janus.create_and_attach().await?;
    let text = wait_lines(&log, "Janus session created", 1).await?;
    ensure!(lines_with(&text, "Janus session created")[0].contains("DEBUG"));
    // Libraries stay at warn: no debug line is theirs.
    for line in lines_with(&text, "DEBUG") {
        ensure!(!line.contains("rtc_"), "library debug line: {line}");
    }
    Ok(())
}

#[tokio::test]
async fn rust_log_adds_to_the_defaults() -> Result<()> {
    let (server, log) = Server::start_piped(&[], Some("peregrine::janus=debug")).await?;
    let mut janus = JanusClient::connect(&server, Transport::WebSocket).await?;
    janus.create_and_attach().await?;
    let text = wait_lines(&log, "Janus session created", 1).await?;
    // The other info lines are still there: RUST_LOG added to the defaults.
    ensure!(text.contains("viewer page at"), "{text}");
    Ok(())
}

#[tokio::test]
async fn every_way_a_viewer_leaves_logs_viewer_gone_with_the_reason() -> Result<()> {
    let (server, log) = Server::start_piped(&["--resolution", "320x240"], None).await?;
    // Hangup.
    let (mut first, _p1) = watch_a_picture(&server).await?;
    first.request(json!({"janus": "hangup"})).await?;
    wait_lines(&log, "reason=hangup", 1).await?;
    // The WebSocket closes.
    let (second, _p2) = watch_a_picture(&server).await?;
    drop(second);
    let text = wait_lines(&log, "reason=WebSocket closed", 1).await?;
    ensure!(
        lines_with(&text, "viewer gone").len() == 2,
        "one line per viewer:\n{text}"
    );
    drop(first);

    // The session expires: the test's client sends no keepalives by itself.
    let (server, log) =
        Server::start_piped(&["--resolution", "320x240", "--session-timeout", "3"], None).await?;
    let (_third, _p3) = watch_a_picture(&server).await?;
    wait_lines(&log, "reason=session timed out", 1).await?;
    Ok(())
}
