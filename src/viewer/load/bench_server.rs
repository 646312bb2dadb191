//! The peregrine a benchmark runs against: started on a file source on free loopback
//! ports, watched from outside (/proc) and inside (/state).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::procstat;
use crate::viewer::http;
use crate::viewer::janus_client::Endpoint;

/// peregrine on free loopback ports; killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// `host:port` of the main HTTP port (/state, /stream).
    pub http: String,
    /// The Janus WebSocket API.
    pub ws: Endpoint,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl ServerProcess {
    /// Start `peregrine` on `input` played at `fps`, with `extra` arguments after ours
    /// (a sound source, say), and wait until it answers.
    pub async fn start(
        peregrine: &Path,
        input: &Path,
        fps: u32,
        extra: &[String],
    ) -> Result<ServerProcess> {
        let (http, ws, jhttp) = (free_port()?, free_port()?, free_port()?);
        let child = Command::new(peregrine)
            .args(["--host", "127.0.0.1", "--udp-port-range", "0"])
            .args(["--port", &http.to_string()])
            .args(["--janus-ws-port", &ws.to_string()])
            .args(["--janus-http-port", &jhttp.to_string()])
            .arg("--source")
            .arg(input)
            .args(["--desired-fps", &fps.to_string()])
            // Every client of the benchmark comes from 127.0.0.1: the per-address cap
            // that guards a real server would end the steps, not the server's capacity.
            .args(["--max-connections-per-ip", "0"])
            // Each viewer is a Janus session: the default cap (1000) would end the
            // steps at 1000 viewers, whatever the server could hold.
            .args(["--max-sessions", "0"])
            // Nor may the viewer cap (1000 by default): the steps go on until loss.
            .args(["--max-viewers", "1000000"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            // Its log would interleave with the table; RUST_LOG plus a manual run shows it.
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", peregrine.display()))?;
        let mut server = ServerProcess {
            child,
            http: format!("127.0.0.1:{http}"),
            ws: Endpoint::parse(&format!("ws://127.0.0.1:{ws}/"))?,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Viewers retry `watch` while the source starts, as pages do.
            if server.state().await.is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!("peregrine exited at start ({status})");
            }
            if Instant::now() > deadline {
                bail!("peregrine did not answer /state within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn gone(&self) -> bool {
        std::fs::metadata(format!("/proc/{}", self.child.id())).is_err()
    }

    pub fn rss_kib(&self) -> Result<u64> {
        procstat::rss_kib(self.child.id())
    }

    pub async fn state(&self) -> Result<Value> {
        let (status, body) = http::request(&self.http, "GET", "/state", None).await?;
        if status != 200 {
            bail!("/state answered {status}");
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// CPU and /state now.
    pub async fn sample(&self) -> Result<Sample> {
        let (busy, _) = procstat::machine_ms()?;
        Ok(Sample {
            at: Instant::now(),
            server_ms: procstat::cpu_ms(self.child.id())?,
            server_threads: procstat::threads(self.child.id())?,
            load_ms: procstat::cpu_ms(std::process::id())?,
            machine_busy_ms: busy,
            state: self.state().await?,
        })
    }

    /// Wait (up to 15 s) until `/state` shows no `what` left, as `left` counts them.
    pub async fn wait_until_none(&self, what: &str, left: impl Fn(&Value) -> u64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(s) = self.state().await {
                if left(&s) == 0 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("warning: {what} still present on the server 15 s after they left");
    }
}

/// What was measured at one moment.
pub struct Sample {
    pub at: Instant,
    /// CPU time of the server so far, ms.
    pub server_ms: f64,
    /// The same, thread by thread.
    pub server_threads: Vec<procstat::ThreadCpu>,
    /// CPU time of this process (the load) so far, ms.
    pub load_ms: f64,
    /// Busy CPU time of the machine so far, ms.
    pub machine_busy_ms: f64,
    pub state: Value,
}

/// CPU use between two samples, in % of one core.
pub struct CpuUse {
    pub secs: f64,
    pub server_pct: f64,
    pub load_pct: f64,
    pub machine_pct: f64,
}

impl CpuUse {
    pub fn between(a: &Sample, b: &Sample) -> CpuUse {
        let secs = b.at.duration_since(a.at).as_secs_f64();
        let pct = |d: f64| d / secs / 10.0;
        CpuUse {
            secs,
            server_pct: pct(b.server_ms - a.server_ms),
            load_pct: pct(b.load_ms - a.load_ms),
            machine_pct: pct(b.machine_busy_ms - a.machine_busy_ms),
        }
    }

    /// Server CPU in ms per second per one of `n` clients.
    pub fn server_ms_per_client_s(&self, n: usize) -> f64 {
        self.server_pct * 10.0 / n.max(1) as f64
    }
}

/// Say who ran out of CPU when the figures are not the server's alone.
pub fn cpu_notes(cpu: &CpuUse, cores: usize) -> Vec<String> {
    let capacity = cores as f64 * 100.0;
    let mut notes = Vec::new();
    if cpu.machine_pct >= 0.9 * capacity {
        let others = (cpu.machine_pct - cpu.server_pct - cpu.load_pct).max(0.0);
        if others > 0.2 * capacity {
            // Then neither measured process had the machine: the figures are not theirs.
            notes.push(format!("CPU saturated: other processes used {others:.0} %"));
        } else if cpu.load_pct > cpu.server_pct {
            notes.push("load generator was the bottleneck".to_string());
        } else {
            notes.push("CPU saturated".to_string());
        }
    }
    notes
}
