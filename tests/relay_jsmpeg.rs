//! The JSMpeg relay end to end: ffmpeg uploads MPEG-TS, WebSocket clients receive it.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use support::{http_request, Server};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "s3cret-upload";

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ffmpeg_upload(port: u16, input: &[&str], output: &[&str]) -> Result<Proc> {
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(input)
        .args(["-f", "mpegts", "-muxdelay", "0.001"])
        .args(output)
        .arg(format!("http://127.0.0.1:{port}/upload/{SECRET}"))
        .stdin(Stdio::null())
        .spawn()
        .context("start ffmpeg (is it installed?)")?;
    Ok(Proc(child))
}

fn video_upload(port: u16) -> Result<Proc> {
    ffmpeg_upload(
        port,
        &["-f", "lavfi", "-i", "testsrc=size=640x360:rate=30"],
        &["-codec:v", "mpeg1video", "-b:v", "1000k", "-bf", "0"],
    )
}

/// A second, audio-only upload, with its own PIDs so both streams stay apart in the TS.
fn audio_upload(port: u16) -> Result<Proc> {
    ffmpeg_upload(
        port,
        &["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"],
        &[
            "-codec:a",
            "mp2",
            "-b:a",
            "128k",
            "-mpegts_service_id",
            "2",
            "-mpegts_pmt_start_pid",
            "0x1100",
            "-mpegts_start_pid",
            "0x200",
        ],
    )
}

/// Everything a WebSocket client receives on `path` for `duration`.
async fn receive(port: u16, path: &str, duration: Duration) -> Result<Vec<u8>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}"))
        .await
        .with_context(|| format!("connect {path}"))?;
    let mut data = Vec::new();
    let started = Instant::now();
    let deadline = started + duration;
    while let Ok(next) = tokio::time::timeout_at(deadline.into(), ws.next()).await {
        match next {
            Some(Ok(Message::Binary(b))) => {
                if data.is_empty() {
                    println!("{path}: first data after {:?}", started.elapsed());
                }
                data.extend_from_slice(&b)
            }
            Some(Ok(_)) => {}
            other => bail!("{path} ended early: {other:?}"),
        }
    }
    Ok(data)
}

#[tokio::test]
async fn video_and_audio_uploads_reach_viewers_as_valid_ts() -> Result<()> {
    let server = Server::start(&["--jsmpeg-secret", SECRET]).await?;
    let port = server.http_port;
    let _video = video_upload(port)?;
    let _audio = audio_upload(port)?;
    server
        .wait_state(Duration::from_secs(15), |s| s["relay"]["uploads"] == 2)
        .await?;
    // Viewers on both paths JSMpeg pages use.
    let (ts, root) = tokio::join!(
        receive(port, "/jsmpeg", Duration::from_secs(5)),
        receive(port, "/", Duration::from_secs(2)),
    );
    let (ts, root) = (ts?, root?);
    assert!(ts.len() > 100_000, "only {} bytes in 5 s", ts.len());
    assert_eq!(ts.len() % 188, 0, "viewers get whole packets");
    assert!(ts.chunks(188).all(|p| p[0] == 0x47), "every packet in sync");
    assert!(
        root.len() > 10_000 && root[0] == 0x47,
        "/ upgrade relays too"
    );
    let first = &ts[..188];
    let pid = (u16::from(first[1] & 0x1f) << 8) | u16::from(first[2]);
    assert!(
        pid == 0 || first[1] & 0x40 != 0,
        "a viewer starts at a PAT or a unit start"
    );

    let path = std::env::temp_dir().join(format!("peregrine-relay-{}.ts", std::process::id()));
    std::fs::write(&path, &ts)?;
    let probe = Command::new("ffprobe")
        .args(["-hide_banner", "-v", "warning", "-show_entries"])
        .args(["stream=codec_name", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .context("run ffprobe")?;
    let streams = String::from_utf8_lossy(&probe.stdout);
    let warnings = String::from_utf8_lossy(&probe.stderr);
    println!("ffprobe streams: {streams:?}; warnings: {warnings:?}");
    assert!(streams.contains("mpeg1video"), "{streams}");
    assert!(streams.contains("mp2"), "{streams}");
    assert!(
        !warnings.to_lowercase().contains("sync"),
        "sync errors: {warnings}"
    );
    let _ = std::fs::remove_file(&path);
    Ok(())
}

#[tokio::test]
async fn wrong_secret_and_garbage_are_refused() -> Result<()> {
    let server = Server::start(&["--jsmpeg-secret", SECRET]).await?;
    let port = server.http_port;
    let packet = {
        let mut p = vec![0xffu8; 188 * 4];
        for chunk in p.chunks_mut(188) {
            chunk[..4].copy_from_slice(&[0x47, 0x40, 0x00, 0x10]);
        }
        p
    };
    let viewer = tokio::spawn(receive(port, "/jsmpeg", Duration::from_secs(2)));
    server
        .wait_state(Duration::from_secs(5), |s| {
            s["relay"]["jsmpeg_viewers"] == 1
        })
        .await?;

    let (status, _) = http_request(port, "POST", "/upload/wrong", Some(&packet)).await?;
    assert_eq!(status, 403);
    let (status, _) = http_request(port, "PUT", "/upload/s3cret-uploa", Some(&packet)).await?;
    assert_eq!(status, 403);
    let garbage = b"this is not a transport stream at all, just some text".repeat(10);
    let (status, body) =
        http_request(port, "POST", &format!("/upload/{SECRET}"), Some(&garbage)).await?;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("MPEG"));
    assert!(
        viewer.await??.is_empty(),
        "nothing is relayed from refused uploads"
    );
    let state = server.state().await?;
    assert_eq!(state["relay"]["uploads_rejected"], 3);
    assert!(state["relay"]["upload_bytes"].as_u64() <= Some(garbage.len() as u64));

    // A good, non-chunked upload is accepted with 200.
    let (status, _) =
        http_request(port, "PUT", &format!("/upload/{SECRET}"), Some(&packet)).await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_connect_disconnect_cycles_leave_nothing_behind() -> Result<()> {
    let server = Server::start(&["--jsmpeg-secret", SECRET, "--resolution", "320x240"]).await?;
    let port = server.http_port;
    let _video = video_upload(port)?;
    // Warm up once so first-use allocations do not count as growth.
    receive(port, "/jsmpeg", Duration::from_millis(500)).await?;
    let before = server.state().await?["relay"]["rss_kb"]
        .as_u64()
        .unwrap_or(0);
    let started = Instant::now();
    for batch in 0..100 {
        let mut cycles = tokio::task::JoinSet::new();
        for i in 0..10 {
            cycles.spawn(async move {
                let path = ["/jsmpeg", "/", "/h264"][(batch + i) % 3];
                let (mut ws, _) =
                    tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}"))
                        .await?;
                // Some read a message first, some leave at once; half close politely.
                if i % 2 == 0 {
                    let _ = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
                    ws.close(None).await?;
                } else {
                    ws.send(Message::Text("hi".into())).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = cycles.join_next().await {
            r??;
        }
    }
    println!(
        "1000 connect/disconnect cycles in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let state = server
        .wait_state(Duration::from_secs(10), |s| {
            let r = &s["relay"];
            r["jsmpeg_viewers"] == 0 && r["h264_clients"] == 0 && r["tasks"] == 0
        })
        .await?;
    let after = state["relay"]["rss_kb"].as_u64().unwrap_or(0);
    println!("relay after the cycles: {}", state["relay"]);
    println!("resident memory {before} KiB before, {after} KiB after");
    assert!(state["relay"]["connections_total"].as_u64() >= Some(1000));
    assert!(
        after < before + 32 * 1024,
        "memory grew from {before} KiB to {after} KiB"
    );
    Ok(())
}

#[tokio::test]
async fn transcode_without_ffmpeg_is_a_clear_error() -> Result<()> {
    let server = Server::start(&["--jsmpeg-ffmpeg", "/nonexistent/ffmpeg"]).await?;
    let url = format!("ws://127.0.0.1:{}/jsmpeg", server.http_port);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or(&[]));
            assert!(body.contains("ffmpeg"), "{body}");
        }
        other => bail!("expected 503, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn transcoder_runs_only_while_viewers_watch() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240"]).await?;
    let port = server.http_port;
    let (a, b) = tokio::join!(
        receive(port, "/jsmpeg", Duration::from_secs(8)),
        receive(port, "/", Duration::from_secs(6)),
    );
    let (a, b) = (a?, b?);
    assert!(a.len() > 10_000 && a[0] == 0x47, "{} bytes", a.len());
    assert!(b.len() > 1_000 && b[0] == 0x47, "{} bytes", b.len());
    let state = server
        .wait_state(Duration::from_secs(10), |s| {
            s["relay"]["transcoder"]["ffmpeg_running"] == 0
        })
        .await?;
    assert_eq!(
        state["relay"]["transcoder"]["ffmpeg_starts"], 1,
        "one ffmpeg for both viewers"
    );
    Ok(())
}

#[tokio::test]
async fn jsmpeg_header_for_the_old_player() -> Result<()> {
    let server = Server::start(&["--jsmpeg-secret", SECRET, "--jsmpeg-header"]).await?;
    let port = server.http_port;
    let _video = video_upload(port)?;
    server
        .wait_state(Duration::from_secs(15), |s| s["relay"]["uploads"] == 1)
        .await?;
    let data = receive(port, "/jsmpeg", Duration::from_secs(3)).await?;
    assert!(data.len() > 20_000, "only {} bytes", data.len());
    assert_eq!(&data[..8], b"jsmp\x02\x80\x01\x68", "jsmp, 640, 360");
    assert_eq!(
        &data[8..12],
        &[0, 0, 1, 0xb3],
        "raw MPEG-1 video from a sequence header"
    );
    assert!(
        !data[8..].windows(4).any(|w| w == b"jsmp"),
        "the header comes once"
    );
    Ok(())
}

/// One request from the local address `from` (any 127.0.0.0/8 address works on
/// loopback): the status and the whole response as text.
async fn request_from(
    from: std::net::IpAddr,
    port: u16,
    path: &str,
    body: &[u8],
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((from, 0).into())?;
    let mut conn = socket.connect(([127, 0, 0, 1], port).into()).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    // A refused upload may be answered (and closed) before the body is all sent.
    let _ = conn.write_all(body).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {text:?}"))?;
    Ok((status, text))
}

fn ts_packets(count: usize) -> Vec<u8> {
    let mut p = vec![0xffu8; 188 * count];
    for chunk in p.chunks_mut(188) {
        chunk[..4].copy_from_slice(&[0x47, 0x40, 0x00, 0x10]);
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_the_secret_is_throttled_per_address_and_logged_sparingly() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("peregrine-guess-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log_path = dir.join("server.log");
    let server = Server::start_logged(
        &["--jsmpeg-secret", SECRET],
        std::fs::File::create(&log_path)?,
    )
    .await?;
    let port = server.http_port;
    let packets = ts_packets(4);

    // Twenty addresses guess twelve times each.
    let started = Instant::now();
    let mut statuses = std::collections::BTreeMap::new();
    for host in 10..30u8 {
        let from = std::net::IpAddr::from([127, 0, 0, host]);
        for guess in 0..12 {
            let path = format!("/upload/guess-{host}-{guess}");
            let (status, _) = request_from(from, port, &path, &packets).await?;
            let want = if guess < 10 { 403 } else { 429 };
            assert_eq!(status, want, "guess {guess} from {from}");
            *statuses.entry(status).or_insert(0) += 1;
        }
    }
    println!("240 guesses in {:?}: {statuses:?}", started.elapsed());

    // A blocked address is refused even with the right secret, and told when to retry.
    let blocked = std::net::IpAddr::from([127, 0, 0, 10]);
    let (status, response) =
        request_from(blocked, port, &format!("/upload/{SECRET}"), &packets).await?;
    assert_eq!(status, 429);
    assert!(
        response.to_ascii_lowercase().contains("retry-after:"),
        "{response}"
    );
    // Everybody else still uploads.
    let (status, _) = request_from(
        std::net::IpAddr::from([127, 0, 0, 1]),
        port,
        &format!("/upload/{SECRET}"),
        &packets,
    )
    .await?;
    assert_eq!(status, 200);
    let state = server.state().await?;
    assert_eq!(state["relay"]["uploads_rejected"], 200);
    assert_eq!(state["relay"]["uploads_throttled"], 41);

    // A line per 10 s with a count, not one per guess.
    let log = std::fs::read_to_string(&log_path)?;
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let bound = 1 + started.elapsed().as_secs() as usize / 10;
    assert!(lines("refused: wrong secret") <= bound, "{log}");
    assert!(lines("refusing the address") <= bound, "{log}");
    assert!(log.contains("refused=1"), "{log}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn a_short_upload_secret_stops_the_start() -> Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .args(["--host", "127.0.0.1", "--port", "0", "--source", "testsrc"])
        .args(["--jsmpeg-secret", "x"])
        .stdin(Stdio::null())
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("jsmpeg_secret must be at least 8"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_after_a_valid_stream_never_reach_viewers() -> Result<()> {
    let server = Server::start(&["--jsmpeg-secret", SECRET]).await?;
    let port = server.http_port;
    let viewer = tokio::spawn(receive(port, "/jsmpeg", Duration::from_secs(3)));
    server
        .wait_state(Duration::from_secs(5), |s| {
            s["relay"]["jsmpeg_viewers"] == 1
        })
        .await?;

    let valid = include_bytes!("fixtures/testsrc_160x120.ts").to_vec();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..(256 << 10))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let body = [valid.clone(), noise].concat();
    let (status, response) = request_from(
        std::net::IpAddr::from([127, 0, 0, 1]),
        port,
        &format!("/upload/{SECRET}"),
        &body,
    )
    .await?;
    assert_eq!(status, 400, "{response}");
    assert!(response.contains("sync"), "{response}");

    let received = viewer.await??;
    println!(
        "viewer received {} bytes of the {} valid ones",
        received.len(),
        valid.len()
    );
    assert!(!received.is_empty(), "the valid part never arrived");
    assert!(
        valid.ends_with(&received),
        "the viewer got bytes that were not part of the valid stream"
    );
    Ok(())
}

/// The children of process `pid` (all its threads'), from `/proc`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// A server killed outright (a crash, SIGKILL: no clean-up runs) takes its transcoder
/// with it, even one that would not notice its input closing, as ffmpeg waiting to open
/// the sound's FIFO does not.
#[tokio::test]
async fn a_killed_server_leaves_no_transcoder_behind() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("peregrine-stand-in-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let stand_in = dir.join("ffmpeg");
    std::fs::write(&stand_in, "#!/bin/sh\nexec sleep 300\n")?;
    std::fs::set_permissions(
        &stand_in,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let mut server = Server::start(&["--jsmpeg-ffmpeg", stand_in.to_str().unwrap()]).await?;
    let url = format!("ws://127.0.0.1:{}/jsmpeg", server.http_port);
    let (_viewer, _) = tokio_tungstenite::connect_async(url).await?;
    server
        .wait_state(Duration::from_secs(10), |s| {
            s["relay"]["transcoder"]["ffmpeg_running"] == 1
        })
        .await?;
    let helpers = children_of(server.pid());
    assert_eq!(helpers.len(), 1, "one transcoder: {helpers:?}");
    let helper = helpers[0];
    assert!(!support::process_ended(helper));

    server.kill_outright();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !support::process_ended(helper) {
        if Instant::now() > deadline {
            // Not left for the rest of the run either way.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(helper as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            bail!("the transcoder {helper} outlived the killed server");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
