//! Every ffmpeg command in the README is run here against the real binary, so none can
//! drift into one that does not work (or, as once, one that produces High 4:4:4, which
//! browsers do not decode over WebRTC).
//!
//! The commands are taken from the README's `sh` blocks and inline code as written,
//! with only these substitutions:
//! - `ffmpeg` gets `-hide_banner -loglevel error -nostdin -t 4`: a bounded run;
//! - the camera: `-f v4l2 -input_format mjpeg -i /dev/video0` reads an MJPEG recording
//!   ffmpeg made beforehand, and `-f v4l2 -i /dev/video0` reads ffmpeg's test source;
//! - addresses and names: `tcp://127.0.0.1:8000` and `rtp://127.0.0.1:5004` are the
//!   ports peregrine listens on,
//!   `HOST:8080` its HTTP address, `SECRET` its upload secret, `cam.mjpeg` a temporary
//!   file, and `peregrine` the binary under test on free loopback ports.
//!
//! A new ffmpeg command in the README fails [`every_readme_ffmpeg_command_runs`] until
//! it is given a check here.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use peregrine::viewer::decoder::H264Decoder;
use peregrine::viewer::janus_client::{Endpoint, JanusClient};
use peregrine::viewer::receiver::ReceiverPeer;
use serde_json::Value;
use support::{free_port, http_request, Server};

const README: &str = include_str!("../README.md");
const LIMIT: &str = "ffmpeg -hide_banner -loglevel error -nostdin -t 4 ";

/// The ffmpeg commands of the README: whole commands (with an input), in `sh` code
/// blocks (continuation lines joined) or in inline code.
fn readme_ffmpeg_commands() -> Vec<String> {
    let mut commands = Vec::new();
    let mut prose = String::new();
    let mut block: Option<String> = None;
    let mut pending = String::new();
    for line in README.lines() {
        if let Some(fence) = line.trim_start().strip_prefix("```") {
            block = match block {
                None => Some(fence.to_string()),
                Some(_) => None,
            };
            continue;
        }
        match &block {
            Some(lang) if lang == "sh" => {
                let code = line.trim();
                if code.starts_with('#') {
                    continue;
                }
                match code.strip_suffix('\\') {
                    Some(part) => pending.push_str(part),
                    None => {
                        pending.push_str(code);
                        commands.push(std::mem::take(&mut pending));
                    }
                }
            }
            Some(_) => {}
            None => {
                prose.push_str(line);
                prose.push(' ');
            }
        }
    }
    // Inline code spans sit between pairs of backticks (and may span lines).
    commands.extend(prose.split('`').skip(1).step_by(2).map(str::to_string));
    commands
        .into_iter()
        .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|c| c.starts_with("ffmpeg ") && c.contains(" -i "))
        .collect()
}

/// `bash -c command` in a process group of its own (pipelines included), killed when
/// dropped.
struct Shell(Child);

impl Shell {
    fn start(command: &str) -> Result<Shell> {
        use std::os::unix::process::CommandExt;
        println!("$ {command}");
        let child = Command::new("bash")
            .args(["-c", command])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .context("bash")?;
        Ok(Shell(child))
    }

    fn wait(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Only the process group this test started.
        let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

fn limited(command: &str) -> String {
    command.replacen("ffmpeg ", LIMIT, 1)
}

async fn state(port: u16) -> Result<Value> {
    let (status, body) = http_request(port, "GET", "/state", None).await?;
    if status != 200 {
        bail!("/state answered {status}");
    }
    Ok(serde_json::from_slice(&body)?)
}

async fn wait_state(port: u16, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = state(port).await {
            if pred(&s) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("state never matched: {s}");
            }
        } else if Instant::now() > deadline {
            bail!("no /state on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The profile every browser decodes: baseline with constraint_set1 (constrained
/// baseline), `42c0..` or `42e0..`.
fn assert_browser_profile(source: &Value) {
    let id = source["profile_level_id"].as_str().unwrap_or_default();
    let bytes = u32::from_str_radix(id, 16).unwrap_or(0);
    assert!(
        id.len() == 6 && bytes >> 16 == 0x42 && (bytes >> 8) & 0x40 != 0,
        "constrained baseline wanted, got {source}"
    );
}

/// Join as janus.js does over the WebSocket transport at `ws_port` and decode
/// `pictures` pictures of `size`.
async fn decode_pictures(ws_port: u16, pictures: usize, size: (usize, usize)) -> Result<()> {
    let endpoint = Endpoint::parse(&format!("ws://127.0.0.1:{ws_port}/"))?;
    let mut janus = JanusClient::connect(&endpoint).await?;
    janus.create_and_attach().await?;
    let offer = janus.watch().await?;
    let (mut peer, answer) = ReceiverPeer::answer(&offer).await?;
    janus.start(&answer).await?;
    peer.wait_connected(Duration::from_secs(10)).await?;
    let mut decoder = H264Decoder::new()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut decoded = 0;
    while decoded < pictures {
        let Ok(Some(frame)) = tokio::time::timeout_at(deadline, peer.next_frame()).await else {
            bail!("decoded {decoded} of {pictures} pictures");
        };
        if let Ok(Some(picture)) = decoder.decode(&frame.data) {
            if (picture.width, picture.height) == size {
                decoded += 1;
            }
        }
    }
    Ok(())
}

/// `ffmpeg ... -f h264 tcp://127.0.0.1:8000` pushing into `--source tcp-listen://`.
async fn run_push(command: &str) -> Result<()> {
    let server = Server::start(&["--source", "tcp-listen://127.0.0.1:0"]).await?;
    let kind = server.state().await?["source"]["kind"].clone();
    let listen = kind.as_str().and_then(|k| k.strip_prefix("tcp-listen://"));
    let listen = listen.with_context(|| format!("listen address in {kind}"))?;
    let mut ffmpeg = Shell::start(
        &limited(command).replace("tcp://127.0.0.1:8000", &format!("tcp://{listen}")),
    )?;
    let s = server
        .wait_state(Duration::from_secs(15), |s| s["source"]["state"] == "live")
        .await?;
    assert_browser_profile(&s["source"]);
    decode_pictures(server.ws_port, 10, (640, 360)).await?;
    assert!(ffmpeg.wait(Duration::from_secs(20))?.success());
    Ok(())
}

/// `ffmpeg ... -f rtp rtp://127.0.0.1:5004` sending to `--source rtp-listen://`.
async fn run_rtp(command: &str) -> Result<()> {
    let server = Server::start(&["--source", "rtp-listen://127.0.0.1:0"]).await?;
    // The source names the port it got once it is open.
    let state = server
        .wait_state(Duration::from_secs(10), |s| {
            s["source"]["kind"]
                .as_str()
                .is_some_and(|k| !k.ends_with(":0"))
        })
        .await?;
    let kind = state["source"]["kind"].clone();
    let listen = kind.as_str().and_then(|k| k.strip_prefix("rtp-listen://"));
    let listen = listen.with_context(|| format!("listen address in {kind}"))?;
    // ffmpeg prints the session's SDP on its standard output.
    let command = limited(command).replace("rtp://127.0.0.1:5004", &format!("rtp://{listen}"));
    let mut ffmpeg = Shell::start(&format!("{command} > /dev/null"))?;
    let s = server
        .wait_state(Duration::from_secs(15), |s| s["source"]["state"] == "live")
        .await?;
    assert_browser_profile(&s["source"]);
    decode_pictures(server.ws_port, 10, (640, 360)).await?;
    assert!(ffmpeg.wait(Duration::from_secs(20))?.success());
    Ok(())
}

/// `ffmpeg ... -f h264 - | peregrine --source -`.
async fn run_pipe(command: &str, bin: &str) -> Result<()> {
    let (http, ws) = (free_port(), free_port());
    let peregrine = format!(
        "| {bin} --host 127.0.0.1 --udp-port-range 0 --port {http} --janus-ws-port {ws} \
         --janus-http-port {} ",
        free_port()
    );
    let _pipeline = Shell::start(&limited(command).replace("| peregrine ", &peregrine))?;
    let s = wait_state(http, Duration::from_secs(20), |s| {
        s["source"]["state"] == "live"
    })
    .await?;
    assert_eq!(s["source"]["kind"], "-");
    assert_browser_profile(&s["source"]);
    decode_pictures(ws, 10, (640, 360)).await
}

/// `ffmpeg -f v4l2 -input_format mjpeg -i /dev/video0 -c copy -f mjpeg cam.mjpeg`, then
/// `peregrine --source cam.mjpeg` replays the recording.
async fn run_recording(command: &str, dir: &Path) -> Result<()> {
    let camera = dir.join("camera.mjpeg");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x480:rate=30",
            "-t",
            "2",
        ])
        .args(["-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-f", "mjpeg"])
        .arg(&camera)
        .status()?;
    assert!(status.success(), "recording the stand-in camera");
    let recording = dir.join("cam.mjpeg");
    let command = limited(command)
        .replace(
            "-f v4l2 -input_format mjpeg -i /dev/video0",
            &format!("-f mjpeg -i {}", camera.display()),
        )
        .replace("cam.mjpeg", &recording.display().to_string());
    assert!(Shell::start(&command)?
        .wait(Duration::from_secs(20))?
        .success());
    let recording = recording.display().to_string();
    let server = Server::start(&["--source", &recording, "--resolution", "640x480"]).await?;
    decode_pictures(server.ws_port, 10, (640, 480)).await
}

/// `ffmpeg -f v4l2 -i /dev/video0 -f mpegts ... http://HOST:8080/upload/SECRET`, and
/// with `USER:PASS@` to a server started with `--user` / `--passwd`.
async fn run_upload(command: &str) -> Result<()> {
    let secret = "readme-secret";
    let mut args = vec!["--jsmpeg-secret", secret];
    if command.contains("USER:PASS@") {
        args.extend(["--user", "readme-user", "--passwd", "readme-pass"]);
    }
    let server = Server::start(&args).await?;
    let command = limited(command)
        .replace(
            "-f v4l2 -i /dev/video0",
            "-re -f lavfi -i testsrc=size=640x360:rate=30",
        )
        .replace("HOST:8080", &format!("127.0.0.1:{}", server.http_port))
        .replace("USER:PASS", "readme-user:readme-pass")
        .replace("SECRET", secret);
    let mut ffmpeg = Shell::start(&command)?;
    let s = server
        .wait_state(Duration::from_secs(15), |s| {
            s["relay"]["uploads"] == 1 && s["relay"]["upload_bytes"].as_u64() > Some(50_000)
        })
        .await?;
    assert_eq!(s["relay"]["uploads_rejected"], 0);
    assert!(ffmpeg.wait(Duration::from_secs(20))?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_ffmpeg_command_runs() -> Result<()> {
    let commands = readme_ffmpeg_commands();
    println!("{commands:#?}");
    let bin = std::env::var("PEREGRINE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_peregrine").to_string());
    let dir: PathBuf =
        std::env::temp_dir().join(format!("peregrine-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for command in &commands {
        if command.ends_with(" tcp://127.0.0.1:8000") {
            run_push(command).await
        } else if command.ends_with(" rtp://127.0.0.1:5004") {
            run_rtp(command).await
        } else if command.ends_with("| peregrine --source -") {
            run_pipe(command, &bin).await
        } else if command.ends_with(" cam.mjpeg") {
            run_recording(command, &dir).await
        } else if command.contains("/upload/SECRET") {
            run_upload(command).await
        } else {
            bail!("no test runs this README command; add one here: {command}");
        }
        .with_context(|| format!("README command: {command}"))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        commands.len(),
        6,
        "push, pipe, RTP, camera recording, upload, upload with a password"
    );
    Ok(())
}
