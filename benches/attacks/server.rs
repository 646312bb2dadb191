//! The peregrine under test: started on free loopback ports with hard limits (open
//! files, no core dumps, killed with the benchmark), its memory watched and capped, its
//! log read from a pipe and kept bounded.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::TcpListener as StdListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use peregrine::viewer::load::procstat;
use serde_json::Value;

/// A server whose resident memory passes this is killed (the benchmark must not take
/// the machine down with it).
pub const RSS_CAP_MIB: u64 = 3072;
/// Address-space limit of the child, a second line behind the RSS watchdog.
const ADDRESS_SPACE_CAP: u64 = 16 << 30;
/// Default open-file limit of the child.
pub const NOFILE: u64 = 4096;
/// Log lines kept from the end of the server's output.
const LOG_TAIL_LINES: usize = 200;

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// What the child's log said, kept bounded however much it writes.
#[derive(Default)]
struct LogState {
    lines: u64,
    tail: VecDeque<String>,
    emfile: u64,
}

pub struct Server {
    child: Child,
    pub http_port: u16,
    pub ws_port: u16,
    pub janus_http_port: u16,
    log: Arc<Mutex<LogState>>,
    peak_rss_kib: Arc<AtomicU64>,
    capped: Arc<AtomicBool>,
    stop_watchdog: Arc<AtomicBool>,
}

impl Server {
    /// Start `bin` on 127.0.0.1 with `args` (which name the source) and an open-file
    /// limit of `nofile`; waits until `/state` answers with the child's pid.
    pub async fn start(bin: &Path, args: &[String], nofile: u64) -> Result<Server> {
        let mut last = anyhow!("not started");
        for _ in 0..3 {
            match Self::try_start(bin, args, nofile).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn try_start(bin: &Path, args: &[String], nofile: u64) -> Result<Server> {
        let (http_port, ws_port, janus_http_port) = (free_port(), free_port(), free_port());
        let mut command = Command::new(bin);
        command
            .args(["--host", "127.0.0.1", "--udp-port-range", "0"])
            .args(["--port", &http_port.to_string()])
            .args(["--janus-ws-port", &ws_port.to_string()])
            .args(["--janus-http-port", &janus_http_port.to_string()])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        limit_child(&mut command, nofile);
        let mut child = command
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let log = Arc::new(Mutex::new(LogState::default()));
        if let Some(pipe) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut l = log.lock().unwrap();
                    l.lines += 1;
                    if line.contains("Too many open files") {
                        l.emfile += 1;
                    }
                    if l.tail.len() == LOG_TAIL_LINES {
                        l.tail.pop_front();
                    }
                    l.tail.push_back(line);
                }
            });
        }
        let pid = child.id();
        let peak_rss_kib = Arc::new(AtomicU64::new(0));
        let capped = Arc::new(AtomicBool::new(false));
        let stop_watchdog = Arc::new(AtomicBool::new(false));
        spawn_watchdog(pid, &peak_rss_kib, &capped, &stop_watchdog);
        let mut server = Server {
            child,
            http_port,
            ws_port,
            janus_http_port,
            log,
            peak_rss_kib,
            capped,
            stop_watchdog,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "peregrine exited at start ({status}): {}",
                    server.log_tail(20)
                );
            }
            if let Ok(state) = server.state().await {
                if state["pid"] == pid {
                    return Ok(server);
                }
                bail!("port {http_port} is answered by another process");
            }
            if Instant::now() > deadline {
                bail!("peregrine did not answer /state within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in MiB (`None` once the process is gone).
    pub fn rss_mib(&self) -> Option<f64> {
        procstat::rss_kib(self.pid())
            .ok()
            .map(|k| k as f64 / 1024.0)
    }

    /// Highest resident memory seen by the watchdog (sampled every 100 ms), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.peak_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }

    /// Whether the watchdog killed the server for passing [`RSS_CAP_MIB`].
    pub fn was_capped(&self) -> bool {
        self.capped.load(Ordering::Relaxed)
    }

    /// CPU time used so far (user + system), in ms.
    pub fn cpu_ms(&self) -> Option<f64> {
        procstat::cpu_ms(self.pid()).ok()
    }

    /// The exit status, once the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `/state`, within 3 s.
    pub async fn state(&self) -> Result<Value> {
        let addr = format!("127.0.0.1:{}", self.http_port);
        let request = peregrine::viewer::http::request(&addr, "GET", "/state", None);
        let (status, body) = tokio::time::timeout(Duration::from_secs(3), request)
            .await
            .map_err(|_| anyhow!("/state did not answer within 3 s"))??;
        if status != 200 {
            bail!("/state answered {status}");
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Wait until `/state` satisfies `pred`, for up to `timeout`; the last state read.
    pub async fn wait_state(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(state) = self.state().await {
                if pred(&state) {
                    return Some(state);
                }
                last = Some(state);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        last
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.ws_port)
    }

    /// Log lines that said "Too many open files".
    pub fn emfile_lines(&self) -> u64 {
        self.log.lock().unwrap().emfile
    }

    pub fn log_tail(&self, n: usize) -> String {
        let l = self.log.lock().unwrap();
        let skip = l.tail.len().saturating_sub(n);
        l.tail
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether any kept log line contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        self.log
            .lock()
            .unwrap()
            .tail
            .iter()
            .any(|l| l.contains(needle))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_watchdog.store(true, Ordering::Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a process ended, for the table: `SIGBUS`, `exit 1`.
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.signal(), status.code()) {
        (Some(libc::SIGBUS), _) => "killed by SIGBUS".into(),
        (Some(libc::SIGKILL), _) => "killed by SIGKILL".into(),
        (Some(libc::SIGSEGV), _) => "killed by SIGSEGV".into(),
        (Some(libc::SIGABRT), _) => "aborted (SIGABRT)".into(),
        (Some(sig), _) => format!("killed by signal {sig}"),
        (None, Some(code)) => format!("exit {code}"),
        (None, None) => "ended".into(),
    }
}

/// Open files, address space and no core files for the child; it dies with us.
fn limit_child(command: &mut Command, nofile: u64) {
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (setrlimit, prctl) that allocate nothing.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            setrlimit(Resource::RLIMIT_NOFILE, nofile, nofile)?;
            setrlimit(Resource::RLIMIT_AS, ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP)?;
            setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
            set_pdeathsig(Signal::SIGKILL)?;
            Ok(())
        });
    }
}

/// Samples the child's RSS every 100 ms: keeps the peak, kills it above the cap.
fn spawn_watchdog(
    pid: u32,
    peak: &Arc<AtomicU64>,
    capped: &Arc<AtomicBool>,
    stop: &Arc<AtomicBool>,
) {
    let (peak, capped, stop) = (peak.clone(), capped.clone(), stop.clone());
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok(kib) = procstat::rss_kib(pid) else {
                break;
            };
            peak.fetch_max(kib, Ordering::Relaxed);
            if kib / 1024 > RSS_CAP_MIB {
                capped.store(true, Ordering::Relaxed);
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}
