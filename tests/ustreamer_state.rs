//! µStreamer's HTTP server as its clients meet it: `/state` read over `--unix` with curl
//! the way kvmd reads it (the keys and JSON types kvmd and its web client use), the
//! socket path rules (`--unix-rm`, `--unix-mode`), `--static`, and µStreamer flags
//! peregrine cannot honour refused by name.

mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use serde_json::Value;
use support::{free_port, http_request, raw_request, run_to_exit_on_free_ports, Server};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("peregrine-us-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `GET path` over the unix socket with curl, as a real local client; the body.
fn curl_unix(socket: &Path, path: &str) -> Result<(u16, Vec<u8>)> {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(["--write-out", "\n%{http_code}"])
        .arg("--unix-socket")
        .arg(socket)
        .arg(format!("http://localhost{path}"))
        .output()
        .context("run curl")?;
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = out.stdout;
    let split = text
        .iter()
        .rposition(|&b| b == b'\n')
        .context("no status line from curl")?;
    let status = std::str::from_utf8(&text[split + 1..])?.trim().parse()?;
    Ok((status, text[..split].to_vec()))
}

/// µStreamer's `result`, read and checked the way kvmd's streamer client and its web
/// pages use it; returns it for more checks.
fn kvmd_reads(body: &[u8]) -> Result<Value> {
    let doc: Value = serde_json::from_slice(body).context("/state is not JSON")?;
    assert_eq!(doc["ok"], Value::Bool(true), "{doc}");
    let ss = doc["result"].clone();
    // kvmd/apps/kvmd/streamer/params.py get_applied().
    assert!(ss["source"]["desired_fps"].is_u64(), "{ss}");
    let res = &ss["source"]["resolution"];
    assert!(res["width"].is_u64() && res["height"].is_u64(), "{ss}");
    assert!(ss["encoder"]["quality"].is_u64(), "{ss}");
    assert!(ss["encoder"]["type"].is_string(), "{ss}");
    assert!(
        ss["h264"]["bitrate"].is_u64() && ss["h264"]["gop"].is_u64(),
        "{ss}"
    );
    // web/share/js/kvm/stream_*.js: source.online, stream.clients_stat[id].fps.
    assert!(ss["source"]["online"].is_boolean(), "{ss}");
    assert!(ss["source"]["captured_fps"].is_u64(), "{ss}");
    assert!(ss["stream"]["clients"].is_u64(), "{ss}");
    assert!(ss["stream"]["queued_fps"].is_u64(), "{ss}");
    assert!(ss["stream"]["clients_stat"].is_object(), "{ss}");
    assert!(ss["instance_id"].is_string(), "{ss}");
    Ok(doc)
}

/// A finished start's exit code and what it wrote to stderr.
fn exit_of(out: std::process::Output) -> (Option<i32>, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr)
}

#[tokio::test]
async fn kvmd_reads_state_over_the_unix_socket() -> Result<()> {
    let dir = temp_dir("state");
    let socket = dir.join("ustreamer.sock");
    let socket_arg = socket.to_str().context("temp path not UTF-8")?;
    let sink = format!("peregrine-us-{}::h264", std::process::id());
    let server = Server::start(&[
        "--h264-sink",
        &sink,
        "--h264-sink-rm",
        "--unix",
        socket_arg,
        "--unix-mode=0660",
        "--resolution",
        "640x480",
        "--desired-fps",
        "15",
        "--h264-bitrate",
        "500",
        "--h264-gop",
        "30",
        "--instance-id",
        "kvm-1",
        // What kvmd passes besides, which peregrine always does.
        "--persistent",
        "--tcp-nodelay",
        "--no-log-colors",
    ])
    .await?;

    let meta = std::fs::symlink_metadata(&socket)?;
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);

    let (status, body) = curl_unix(&socket, "/state")?;
    assert_eq!(status, 200);
    let doc = kvmd_reads(&body)?;
    let ss = &doc["result"];
    assert_eq!(ss["instance_id"], "kvm-1");
    assert_eq!(ss["source"]["desired_fps"], 15);
    assert_eq!(ss["h264"]["bitrate"], 500);
    assert_eq!(ss["h264"]["gop"], 30);
    assert_eq!(ss["stream"]["clients"], 0);
    assert_eq!(
        ss["sinks"]["h264"]["has_clients"],
        Value::Bool(false),
        "{ss}"
    );
    // kvmd turns it into "WIDTHxHEIGHT" for its resolution selector.
    let res = &ss["source"]["resolution"];
    assert_eq!(format!("{}x{}", res["width"], res["height"]), "640x480");
    // peregrine's own keys are in the same document.
    assert_eq!(doc["pid"], server.pid());
    assert!(doc["streams"]["default"]["viewers"].is_u64(), "{doc}");

    // Frames flow while somebody watches: online, at about the rate asked for.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/h264", server.http_port))
            .await
            .context("connect /h264")?;
    let watcher = tokio::spawn(async move { while ws.next().await.is_some() {} });
    let deadline = Instant::now() + Duration::from_secs(20);
    let ss = loop {
        let (_, body) = curl_unix(&socket, "/state")?;
        let doc = kvmd_reads(&body)?;
        let ss = doc["result"].clone();
        // The rate is measured over the last pictures: right after the start it can
        // still read a burst, so wait for it to settle rather than take the first look.
        let fps = ss["source"]["captured_fps"].as_u64().unwrap_or(0);
        if ss["source"]["online"] == Value::Bool(true) && (5..=20).contains(&fps) {
            break ss;
        }
        if Instant::now() > deadline {
            bail!("never online at 5..=20 fps (15 asked) over the unix socket: {doc}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    watcher.abort();
    let fps = ss["source"]["captured_fps"].as_u64().unwrap_or(0);
    assert!(
        (5..=20).contains(&fps),
        "captured_fps {fps} for 15 asked: {ss}"
    );
    assert_eq!(ss["h264"]["online"], Value::Bool(true));
    assert_eq!(ss["source"]["resolution"]["width"], 640);
    assert_eq!(ss["source"]["resolution"]["height"], 480);

    // The same routes as the main port, e.g. an unknown stream.
    let (status, _) = curl_unix(&socket, "/state?stream=nope")?;
    assert_eq!(status, 404);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn an_existing_unix_path_is_refused_unless_unix_rm() -> Result<()> {
    let dir = temp_dir("exists");
    let socket = dir.join("ustreamer.sock");
    let socket_arg = socket.to_str().context("temp path not UTF-8")?;
    // Left behind by a streamer that died, as kvmd finds it on restart.
    drop(std::os::unix::net::UnixListener::bind(&socket)?);

    let (code, stderr) = exit_of(run_to_exit_on_free_ports(&["--unix", socket_arg]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(socket_arg) && stderr.contains("--unix-rm"),
        "{stderr}"
    );
    assert!(socket.exists(), "refused, the file stays");

    let server = Server::start(&[
        "--unix",
        socket_arg,
        "--unix-rm",
        "--fake-resolution",
        "1920x1080",
    ])
    .await?;
    let (status, body) = curl_unix(&socket, "/state")?;
    assert_eq!(status, 200);
    let doc = kvmd_reads(&body)?;
    let res = &doc["result"]["source"]["resolution"];
    assert_eq!(
        (&res["width"], &res["height"]),
        (&1920.into(), &1080.into())
    );
    drop(server);

    // A file that is not a socket is never removed, --unix-rm or not.
    let _ = std::fs::remove_file(&socket);
    std::fs::write(&socket, "keep me")?;
    let (code, stderr) = exit_of(run_to_exit_on_free_ports(&[
        "--unix",
        socket_arg,
        "--unix-rm",
    ]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&socket)?, "keep me");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn static_serves_a_folder_in_place_of_the_bundled_pages() -> Result<()> {
    let dir = temp_dir("static");
    let site = dir.join("site");
    std::fs::create_dir_all(site.join("js"))?;
    std::fs::write(site.join("index.html"), "<p>my kvm page</p>")?;
    std::fs::write(site.join("js/app.js"), "console.log(1)")?;
    std::fs::write(dir.join("secret.txt"), "outside")?;
    let site_arg = site.to_str().context("temp path not UTF-8")?;
    let server = Server::start(&["--static", site_arg]).await?;
    let port = server.http_port;

    let reply = raw_request(port, "GET", "/", &[("Connection", "close")]).await?;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"<p>my kvm page</p>");
    assert!(reply
        .head
        .to_ascii_lowercase()
        .contains("content-type: text/html"));
    let reply = raw_request(port, "GET", "/js/app.js", &[("Connection", "close")]).await?;
    assert_eq!(reply.status, 200);
    assert!(reply
        .head
        .to_ascii_lowercase()
        .contains("content-type: text/javascript"));
    for escape in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/js/../../secret.txt",
    ] {
        let reply = raw_request(port, "GET", escape, &[("Connection", "close")]).await?;
        assert_eq!(reply.status, 404, "{escape}");
        assert!(!String::from_utf8_lossy(&reply.body).contains("outside"));
    }
    let (status, _) = http_request(port, "GET", "/peregrine.js", None).await?;
    assert_eq!(status, 404, "the bundled pages give way to the folder");
    let (status, body) = http_request(port, "GET", "/state", None).await?;
    assert_eq!(status, 200);
    kvmd_reads(&body)?;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn ustreamer_flags_peregrine_cannot_honour_are_refused_by_name() -> Result<()> {
    for (args, named) in [
        (&["--dv-timings"][..], "--dv-timings"),
        (&["--workers=3"][..], "--workers"),
        (&["-b", "4"][..], "--buffers"),
        (&["--encoder=M2M-IMAGE"][..], "--encoder=M2M-IMAGE"),
    ] {
        let (code, stderr) = exit_of(run_to_exit_on_free_ports(args));
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
    Ok(())
}

#[tokio::test]
async fn exit_on_parent_death_stops_with_the_parent() -> Result<()> {
    let port = free_port();
    let port_arg = port.to_string();
    let (ws, http) = (free_port().to_string(), free_port().to_string());
    // A parent shell that starts peregrine, says its pid and waits, as kvmd does.
    let mut parent = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" "$@" >/dev/null 2>&1 & echo $!; wait"#)
        .arg(env!("CARGO_BIN_EXE_peregrine"))
        .args([
            "--host",
            "127.0.0.1",
            "--udp-port-range",
            "0",
            "--source",
            "testsrc",
        ])
        .args([
            "--port",
            &port_arg,
            "--janus-ws-port",
            &ws,
            "--janus-http-port",
            &http,
        ])
        .arg("--exit-on-parent-death")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    {
        use std::io::BufRead;
        let out = parent.stdout.take().context("no stdout")?;
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    let pid: u32 = line.trim().parse().context("no pid from the shell")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_request(port, "GET", "/state", None).await.is_err() {
        if Instant::now() > deadline || support::process_ended(pid) {
            let _ = parent.kill();
            bail!("peregrine never answered on {port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    parent.kill()?;
    parent.wait()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !support::process_ended(pid) {
        if Instant::now() > deadline {
            let _ = nix_kill(pid);
            bail!("peregrine {pid} still runs after its parent ended");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn nix_kill(pid: u32) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill").arg(pid.to_string()).status()
}
