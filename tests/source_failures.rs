//! A source that cannot be reached says so at the default log level, once, not at
//! every retry, and `/state` carries the reason the bundled page shows.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::Value;
use support::{free_port, http_request};

async fn state(port: u16) -> Result<Value> {
    let (status, body) = http_request(port, "GET", "/state", None).await?;
    if status != 200 {
        bail!("/state answered {status}");
    }
    Ok(serde_json::from_slice(&body)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_logged_at_the_default_level_once() -> Result<()> {
    // Nothing listens on a port just found free: connecting is refused.
    let refused = free_port();
    let http = free_port();
    let log = std::env::temp_dir().join(format!("peregrine-refused-{}.log", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .args(["--host", "127.0.0.1", "--udp-port-range", "0"])
        .args(["--port", &http.to_string()])
        .args(["--janus-ws-port", &free_port().to_string()])
        .args(["--janus-http-port", &free_port().to_string()])
        .args(["--source", &format!("tcp://127.0.0.1:{refused}")])
        // The default level, as a user runs it.
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    // Retries come at 0.25, 0.5, 1 and 2 s: wait for five failed attempts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let source = loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "peregrine exited ({status}): {}",
                std::fs::read_to_string(&log)?
            );
        }
        if let Ok(s) = state(http).await {
            if s["source"]["failures"].as_u64() >= Some(5) {
                break s["source"].clone();
            }
        }
        if Instant::now() > deadline {
            bail!("fewer than 5 attempts in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log)?;
    let _ = std::fs::remove_file(&log);
    println!("{text}");
    assert_eq!(source["state"], "no_signal", "{source}");
    let reason = source["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.to_lowercase().contains("connection refused"),
        "/state gives the reason: {source}"
    );
    let said: Vec<&str> = text
        .lines()
        .filter(|l| l.to_lowercase().contains("connection refused"))
        .collect();
    assert_eq!(
        said.len(),
        1,
        "said once, not at each of 5 retries: {said:?}"
    );
    assert!(said[0].contains("WARN"), "at warn level: {}", said[0]);
    assert!(
        said[0].contains(&format!("127.0.0.1:{refused}")),
        "{}",
        said[0]
    );
    Ok(())
}
