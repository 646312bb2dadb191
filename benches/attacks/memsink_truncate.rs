//! A local process truncates the µStreamer memsink object while peregrine reads it
//! (`--source memsink:NAME`). The writer is a second peregrine (`--h264-sink NAME`),
//! stopped with SIGSTOP just before the truncation so that it neither restores the size
//! nor writes meanwhile. Does the reader survive, and does its viewer stay connected?

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::clients::{frames_in, join};
use crate::figures::{progress, Row};
use crate::server::{describe_exit, Server, NOFILE};

const NAME: &str = "memsink truncation";

/// Removes the object however the run ends.
struct RemoveShm(PathBuf);

impl Drop for RemoveShm {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

pub async fn run(bin: &Path) -> Result<Vec<Row>> {
    let name = format!("peregrine-attacks-{}::h264", std::process::id());
    let _cleanup = RemoveShm(PathBuf::from("/dev/shm").join(&name));
    let writer_args: Vec<String> = [
        "--source",
        "testsrc",
        "--resolution",
        "320x240",
        "--h264-gop",
        "30",
        "--h264-sink",
        &name,
    ]
    .map(String::from)
    .to_vec();
    let writer = Server::start(bin, &writer_args, NOFILE)
        .await
        .context("the writing peregrine")?;
    let reader_args = vec!["--source".to_string(), format!("memsink:{name}")];
    let mut reader = Server::start(bin, &reader_args, NOFILE)
        .await
        .context("the reading peregrine")?;
    let (_viewer, mut peer) = join(&reader).await.context("a viewer of the reader")?;
    let before = frames_in(&mut peer, Duration::from_secs(2)).await;
    progress(format!(
        "{NAME}: the viewer gets {before} frames in 2 s from the memsink"
    ));

    signal(writer.pid(), Signal::SIGSTOP);
    let shm = PathBuf::from("/dev/shm").join(&name);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shm)
        .and_then(|f| f.set_len(0))
        .context("truncate the object")?;
    progress(format!("{NAME}: truncated {}", shm.display()));

    // Either it dies at its next read, or it goes on; give it 3 s.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut died = None;
    while Instant::now() < deadline && died.is_none() {
        died = reader.exited();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rows = vec![Row::new(
        NAME,
        "viewer before",
        format!("{:.1} fps", before as f64 / 2.0),
    )];
    match died {
        Some(status) => {
            progress(format!("{NAME}: the reader {}", describe_exit(status)));
            rows.push(Row::new(
                NAME,
                "reading peregrine after the truncation",
                describe_exit(status),
            ));
            rows.push(Row::new(NAME, "viewer", "lost (server gone)"));
        }
        None => {
            let state = reader.state().await;
            let source = state
                .as_ref()
                .map(|s| format!("/state answers, source {}", s["source"]["state"]))
                .unwrap_or_else(|e| format!("/state: {e:#}"));
            let frames = frames_in(&mut peer, Duration::from_secs(3)).await;
            let logged = reader.log_contains("truncated");
            progress(format!(
                "{NAME}: the reader is up ({source}); viewer {frames} frames in 3 s"
            ));
            rows.push(Row::new(
                NAME,
                "reading peregrine after the truncation",
                format!(
                    "up; {source}{}",
                    if logged {
                        "; logged the truncation"
                    } else {
                        ""
                    }
                ),
            ));
            rows.push(Row::new(
                NAME,
                "viewer in the 3 s after",
                format!("connected, {:.1} fps", frames as f64 / 3.0),
            ));
        }
    }
    signal(writer.pid(), Signal::SIGKILL);
    signal(writer.pid(), Signal::SIGCONT);
    drop(writer);
    Ok(rows)
}
