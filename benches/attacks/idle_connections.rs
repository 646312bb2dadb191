//! 1,100 idle TCP connections to a server whose open-file limit is 1024 (a service
//! under the common default): can a new client still open a Janus WebSocket and
//! `create` a session, and how long does it take?

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use tokio::net::TcpStream;

use crate::clients::{ws_connect, ws_request};
use crate::figures::{load1, progress, Row, Samples, Unit};
use crate::server::Server;

const NAME: &str = "idle connections";
const IDLE: usize = 1_100;
const NOFILE: u64 = 1024;
/// How long the new client may take to connect and create a session.
const LIMIT: Duration = Duration::from_secs(15);

/// Connect, open a Janus WebSocket and `create`; the time it took, `None` past [`LIMIT`].
async fn create_latency(server: &Server) -> Option<Duration> {
    let started = Instant::now();
    let attempt = async {
        let mut ws = ws_connect(server, LIMIT).await?;
        let msg = json!({"janus": "create", "transaction": "new"});
        let reply = ws_request(&mut ws, msg, LIMIT).await?;
        anyhow::ensure!(reply["janus"] == "success", "create answered {reply}");
        anyhow::Ok(())
    };
    match tokio::time::timeout(LIMIT, attempt).await {
        Ok(Ok(())) => Some(started.elapsed()),
        _ => None,
    }
}

pub async fn run(bin: &Path, runs: usize) -> Result<Vec<Row>> {
    let args: Vec<String> = ["--source", "testsrc", "--resolution", "320x240"]
        .map(String::from)
        .to_vec();
    let mut latency = Samples::new(Unit::Millis);
    let mut opened_counts = Vec::new();
    let mut emfile = Vec::new();
    let mut state_after = Vec::new();
    for run in 1..=runs {
        let server = Server::start(bin, &args, NOFILE).await?;
        let ports = [server.ws_port, server.janus_http_port, server.http_port];
        let mut idle = Vec::with_capacity(IDLE);
        for i in 0..IDLE {
            let connect = TcpStream::connect(("127.0.0.1", ports[i % ports.len()]));
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), connect).await {
                idle.push(s);
            }
        }
        let load = load1();
        let took = create_latency(&server).await;
        let state = match server.state().await {
            Ok(_) => "answers".to_string(),
            Err(e) => format!("{e:#}"),
        };
        progress(format!(
            "{NAME} run {run}: {} idle connections open; new client's create: {}; /state {state}; \
             {} \"Too many open files\" log lines (load {load:.2})",
            idle.len(),
            took.map(|d| format!("{d:.2?}"))
                .unwrap_or_else(|| format!("none in {LIMIT:?}")),
            server.emfile_lines()
        ));
        latency.push_duration(took, load);
        opened_counts.push(idle.len().to_string());
        emfile.push(server.emfile_lines().to_string());
        if !state_after.contains(&state) {
            state_after.push(state);
        }
        drop(idle);
    }
    let none = format!("no session within {} s", LIMIT.as_secs());
    Ok(vec![
        Row::new(
            NAME,
            "idle connections opened (server limit 1024 files)",
            opened_counts.join(", "),
        ),
        Row::new(
            NAME,
            "a new client's WebSocket connect + create",
            latency.summary(&none),
        ),
        Row::new(
            NAME,
            "\"Too many open files\" lines in the server log",
            emfile.join(", "),
        ),
        Row::new(NAME, "/state during the flood", state_after.join("; ")),
    ])
}
