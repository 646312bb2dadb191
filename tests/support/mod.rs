//! Shared by the integration tests: run the real peregrine binary on free loopback
//! ports, and talk the Janus API to it over either transport like janus.js does.
#![allow(dead_code)]

pub mod alsa;
pub mod decode;

use std::io::Read;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
pub use peregrine::viewer::janus_client::Transport;
use peregrine::viewer::janus_client::{self, Endpoint};
use serde_json::{json, Value};

/// The peregrine binary under test: `PEREGRINE_BIN` runs a given build (as the browser
/// tests allow), else this crate's.
pub fn binary() -> PathBuf {
    std::env::var_os("PEREGRINE_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_peregrine").into())
        .into()
}

/// Run the binary with loopback defaults and then `args` to its exit, for starts that
/// must fail. A start that wrongly succeeds is killed after 20 s, so it cannot hang the
/// test (its exit code is then `None`).
pub fn run_to_exit(args: &[&str]) -> Output {
    let mut child = Command::new(binary())
        .args(["--host", "127.0.0.1", "--udp-port-range", "0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start peregrine");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait for peregrine").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("peregrine's output")
}

/// [`run_to_exit`] with the test pattern and a free port for every listener, so only
/// `args` can make the start fail.
pub fn run_to_exit_on_free_ports(args: &[&str]) -> Output {
    let ports = [free_port(), free_port(), free_port()].map(|p| p.to_string());
    let mut all = vec!["--source", "testsrc", "--port", &ports[0]];
    all.extend(["--janus-ws-port", &ports[1], "--janus-http-port", &ports[2]]);
    all.extend_from_slice(args);
    run_to_exit(&all)
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A peregrine process; killed when dropped.
pub struct Server {
    child: Child,
    pub http_port: u16,
    pub ws_port: u16,
    pub janus_http_port: u16,
    /// `Basic ...` for the `--user` / `--passwd` it was started with.
    pub authorization: Option<String>,
}

impl Server {
    pub async fn start(extra: &[&str]) -> Result<Server> {
        Self::start_with_output(extra, || Ok((Stdio::inherit(), Stdio::inherit()))).await
    }

    /// As [`Server::start`], with `toml` as its `--config` file (removed once it is read).
    pub async fn start_with_config(toml: &str, extra: &[&str]) -> Result<Server> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("peregrine-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, toml)?;
        let mut args = vec!["--config", path.to_str().context("temp path not UTF-8")?];
        args.extend_from_slice(extra);
        let server = Self::start(&args).await;
        let _ = std::fs::remove_file(&path);
        server
    }

    /// As [`Server::start`], with HOME set to `home`: the ALSA devices it defines (see
    /// [`alsa::AlsaHome`]) are the server's.
    pub async fn start_with_home(extra: &[&str], home: &std::path::Path) -> Result<Server> {
        let mut last_error = anyhow!("not started");
        for _attempt in 0..3 {
            let launch = Launch {
                rust_log: Some(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into())),
                capture: None,
                nofile: None,
                home: Some(home.to_path_buf()),
            };
            match Self::try_start(extra, Stdio::inherit(), Stdio::inherit(), launch).await {
                Ok(server) => return Ok(server),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// As [`Server::start`], with the process's log and error output in `log`.
    pub async fn start_logged(extra: &[&str], log: std::fs::File) -> Result<Server> {
        Self::start_with_output(extra, || {
            Ok((Stdio::from(log.try_clone()?), Stdio::from(log.try_clone()?)))
        })
        .await
    }

    /// As [`Server::start`], with stderr read from a pipe into the returned [`Captured`]
    /// and `RUST_LOG` as given (`None`: unset, so the program's own defaults apply).
    pub async fn start_piped(extra: &[&str], rust_log: Option<&str>) -> Result<(Server, Captured)> {
        let mut last_error = anyhow!("not started");
        for _attempt in 0..3 {
            let captured = Captured::default();
            let launch = Launch {
                rust_log: rust_log.map(String::from),
                capture: Some(captured.clone()),
                nofile: None,
                home: None,
            };
            match Self::try_start(extra, Stdio::null(), Stdio::piped(), launch).await {
                Ok(server) => return Ok((server, captured)),
                Err(e) => last_error = e.context(captured.text()),
            }
        }
        Err(last_error)
    }

    /// Start on free ports. A port found free can be taken by another process before
    /// peregrine binds it; then peregrine exits, or `/state` on that port is somebody
    /// else's. Both are told apart by the pid in `/state`, and the start is retried on
    /// fresh ports.
    async fn start_with_output(
        extra: &[&str],
        output: impl Fn() -> Result<(Stdio, Stdio)>,
    ) -> Result<Server> {
        Self::start_with_nofile(extra, output, None).await
    }

    /// As [`Server::start`], with the process's open-file limit (soft and hard) set to
    /// `nofile`, as a service under the common 1024 default runs.
    pub async fn start_fd_limited(extra: &[&str], nofile: u64) -> Result<Server> {
        Self::start_with_nofile(
            extra,
            || Ok((Stdio::inherit(), Stdio::inherit())),
            Some(nofile),
        )
        .await
    }

    async fn start_with_nofile(
        extra: &[&str],
        output: impl Fn() -> Result<(Stdio, Stdio)>,
        nofile: Option<u64>,
    ) -> Result<Server> {
        let mut last_error = anyhow!("not started");
        for _attempt in 0..3 {
            let (stdout, stderr) = output()?;
            let launch = Launch {
                rust_log: Some(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into())),
                capture: None,
                nofile,
                home: None,
            };
            match Self::try_start(extra, stdout, stderr, launch).await {
                Ok(server) => return Ok(server),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    async fn try_start(
        extra: &[&str],
        stdout: Stdio,
        stderr: Stdio,
        launch: Launch,
    ) -> Result<Server> {
        let (http_port, ws_port, janus_http_port) = (free_port(), free_port(), free_port());
        let mut command = Command::new(binary());
        command
            .args(["--host", "127.0.0.1", "--udp-port-range", "0"])
            .args(["--port", &http_port.to_string()])
            .args(["--janus-ws-port", &ws_port.to_string()])
            .args(["--janus-http-port", &janus_http_port.to_string()])
            .args(default_source(extra))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        match &launch.rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        if let Some(home) = &launch.home {
            command.env("HOME", home);
        }
        if let Some(n) = launch.nofile {
            use nix::sys::resource::{setrlimit, Resource};
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and only calls
            // setrlimit, which is async-signal-safe and allocates nothing.
            #[allow(unsafe_code)]
            unsafe {
                command.pre_exec(move || Ok(setrlimit(Resource::RLIMIT_NOFILE, n, n)?));
            }
        }
        let mut child = command.spawn().context("start peregrine")?;
        if let (Some(captured), Some(pipe)) = (&launch.capture, child.stderr.take()) {
            captured.read_from(pipe);
        }
        let mut server = Server {
            child,
            http_port,
            ws_port,
            janus_http_port,
            authorization: authorization_for(extra),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("peregrine exited at start ({status})");
            }
            if let Ok(state) = server.state().await {
                if state["pid"] == json!(server.child.id()) {
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

    /// SIGKILL, as a crash: no clean-up of the server's runs.
    pub fn kill_outright(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process's resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS in /proc/{}/status", self.pid()))
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.ws_port)
    }

    pub async fn state(&self) -> Result<Value> {
        let (status, body) = match &self.authorization {
            None => http_request(self.http_port, "GET", "/state", None).await?,
            Some(auth) => {
                let reply = raw_request(
                    self.http_port,
                    "GET",
                    "/state",
                    &[("Authorization", auth), ("Connection", "close")],
                )
                .await?;
                (reply.status, reply.body)
            }
        };
        if status != 200 {
            bail!("/state answered {status}");
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Wait until `/state` satisfies `pred`, for up to `timeout`.
    pub async fn wait_state(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state().await?;
            if pred(&state) {
                return Ok(state);
            }
            if Instant::now() > deadline {
                bail!("state never matched: {state}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_outright();
    }
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped).
#[allow(dead_code)]
pub fn process_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// How [`Server::try_start`] runs the process beyond its arguments.
struct Launch {
    /// `RUST_LOG` for the process; `None` removes it.
    rust_log: Option<String>,
    /// Where a piped stderr goes.
    capture: Option<Captured>,
    /// The process's open-file limit, when not inherited.
    nofile: Option<u64>,
    /// HOME, when not inherited (alsa-lib reads `HOME/.asoundrc`).
    home: Option<PathBuf>,
}

/// Bytes read from a child's pipe on a thread of their own, until it closes.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn read_from(&self, mut pipe: impl Read + Send + 'static) {
        let buf = self.0.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Wait until the output satisfies `pred`, for up to `timeout`; returns it.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text();
            if pred(&text) {
                return Ok(text);
            }
            if Instant::now() > deadline {
                bail!("output never matched:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `Basic base64(user:passwd)`.
pub fn basic(user: &str, passwd: &str) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:{passwd}").into_bytes();
    let mut out = String::from("Basic ");
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ABC[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// The `Authorization` value for the `--user` / `--passwd` among `args`.
fn authorization_for(args: &[&str]) -> Option<String> {
    let value = |flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let user = value("--user")?;
    let passwd = match value("--passwd-file") {
        Some(file) => std::fs::read_to_string(file)
            .ok()?
            .lines()
            .next()?
            .to_string(),
        None => value("--passwd").copied().unwrap_or("").to_string(),
    };
    Some(basic(user, &passwd))
}

/// An HTTP reply: status, head (lowercase) and body.
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// One request with `headers` to a loopback port, read until the server closes or the
/// body of `Content-Length` is in.
pub async fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply> {
    raw_request_from(None, port, method, path, headers, b"").await
}

/// As [`raw_request`], from the local address `from` (e.g. 127.0.0.2), with `body`.
pub async fn raw_request_from(
    from: Option<std::net::IpAddr>,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = connect_from(from, port).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    conn.write_all(req.as_bytes()).await?;
    conn.write_all(body).await?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match tokio::time::timeout(left, conn.read(&mut chunk)).await {
            Err(_) => break, // a WebSocket stays open: what came is the answer
            Ok(r) => r?,
        };
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let upgraded = head.starts_with("http/1.1 101");
            if upgraded || length.is_some_and(|n| raw.len() >= split + 4 + n) {
                break;
            }
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP answer ({} bytes)", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
    Ok(Reply {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    })
}

/// A TCP connection to a loopback port, from `from` when given.
pub async fn connect_from(
    from: Option<std::net::IpAddr>,
    port: u16,
) -> Result<tokio::net::TcpStream> {
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    Ok(match from {
        None => tokio::net::TcpStream::connect(to).await?,
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(std::net::SocketAddr::new(ip, 0))?;
            socket.connect(to).await?
        }
    })
}

/// One HTTP request to a loopback port (see [`peregrine::viewer::http::request`]).
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>)> {
    peregrine::viewer::http::request(&format!("127.0.0.1:{port}"), method, path, body).await
}

/// The library's Janus client, connected to a test server by transport.
pub struct JanusClient(janus_client::JanusClient);

impl JanusClient {
    pub async fn connect(server: &Server, transport: Transport) -> Result<JanusClient> {
        let url = match transport {
            Transport::WebSocket => format!("ws://127.0.0.1:{}/", server.ws_port),
            Transport::LongPoll => format!("http://127.0.0.1:{}/janus", server.janus_http_port),
        };
        Ok(JanusClient(
            janus_client::JanusClient::connect(&Endpoint::parse(&url)?).await?,
        ))
    }
}

impl std::ops::Deref for JanusClient {
    type Target = janus_client::JanusClient;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for JanusClient {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Join over the WebSocket transport as janus.js does (create, attach, watch with 503
/// retries, answer, start) and return the connected receiver.
pub async fn join(
    server: &Server,
) -> Result<(JanusClient, peregrine::viewer::receiver::ReceiverPeer)> {
    let mut janus = JanusClient::connect(server, Transport::WebSocket).await?;
    janus.create_and_attach().await?;
    let offer = janus.watch().await?;
    let (mut peer, answer) = peregrine::viewer::receiver::ReceiverPeer::answer(&offer).await?;
    janus.start(&answer).await?;
    peer.wait_connected(Duration::from_secs(10)).await?;
    Ok((janus, peer))
}

/// The test pattern unless the test names a source: without one, a machine with a
/// camera at /dev/video0 would stream the camera.
fn default_source(extra: &[&str]) -> &'static [&'static str] {
    if extra
        .iter()
        .any(|a| matches!(*a, "--source" | "--janus-config" | "--config" | "--device"))
    {
        &[]
    } else {
        &["--source", "testsrc"]
    }
}
