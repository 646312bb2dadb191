//! H.264 byte-stream inputs end to end: ffmpeg stands in for `libcamera-vid --inline`
//! (raw Annex-B over TCP, pushing and listening), peregrine relays to real WebRTC
//! receiver peers through the Janus API, and the peers decode what arrives. Encoders
//! are killed and restarted under connected viewers.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use peregrine::viewer::decoder::H264Decoder;
use serde_json::Value;
use support::decode::{decode_until, KilledOnDrop};
use support::{free_port, join, Server};

/// ffmpeg's test source, encoded as libcamera-vid would (baseline, zero latency,
/// a keyframe every second), written as a raw H.264 byte stream to `url`.
fn start_encoder(size: &str, url: &str) -> Result<KilledOnDrop> {
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", &format!("testsrc=size={size}:rate=30")])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
        ])
        .args([
            "-tune",
            "zerolatency",
            "-g",
            "30",
            "-bsf:v",
            "h264_mp4toannexb",
        ])
        .args(["-f", "h264", url])
        .stdin(Stdio::null())
        .spawn()
        .context("start ffmpeg (install it with scripts/install-test-deps.sh)")?;
    Ok(KilledOnDrop(child))
}

fn input(state: &Value) -> &Value {
    &state["source"]
}

/// peregrine listening for an encoder on a port the system picks (no race with the
/// other ports the test uses); returns the server and the URL to push to.
async fn listening_server(extra: &[&str]) -> Result<(Server, String)> {
    let mut args = vec!["--source", "tcp-listen://127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = Server::start(&args).await?;
    let state = server.state().await?;
    let kind = input(&state)["kind"].as_str().unwrap_or_default();
    let addr = kind
        .strip_prefix("tcp-listen://")
        .with_context(|| format!("listen address in {state}"))?;
    Ok((server, format!("tcp://{addr}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_stream_reaches_three_viewers_and_survives_an_encoder_restart() -> Result<()> {
    let (server, push_url) = listening_server(&["--resolution", "640x360"]).await?;
    let encoder = start_encoder("640x360", &push_url)?;

    let (mut j1, mut p1) = join(&server).await?;
    let (_j2, mut p2) = join(&server).await?;
    let (_j3, mut p3) = join(&server).await?;
    let (mut d1, mut d2, mut d3) = (
        H264Decoder::new()?,
        H264Decoder::new()?,
        H264Decoder::new()?,
    );
    let size = (640, 360);
    let t = Duration::from_secs(30);
    let (a, b, c) = tokio::join!(
        decode_until(&mut p1, &mut d1, 60, 0, size, t),
        decode_until(&mut p2, &mut d2, 60, 0, size, t),
        decode_until(&mut p3, &mut d3, 60, 0, size, t),
    );
    let (a, b, c) = (a?, b?, c?);
    println!("three viewers decoded {a:?} {b:?} {c:?}");
    assert_eq!(a.other_size + b.other_size + c.other_size, 0);

    let state = server
        .wait_state(Duration::from_secs(5), |s| s["viewers"] == 3)
        .await?;
    let inp = input(&state);
    assert_eq!(inp["state"], "live", "{state}");
    assert_eq!(
        (inp["width"].as_u64(), inp["height"].as_u64()),
        (Some(640), Some(360))
    );
    let fps = inp["fps"].as_f64().unwrap_or(0.0);
    assert!(fps > 10.0 && fps < 50.0, "measured fps {fps}");
    println!("state while live: {inp}");

    // The encoder dies: viewers stay connected and see NO SIGNAL.
    encoder.kill();
    server
        .wait_state(Duration::from_secs(10), |s| {
            input(s)["state"] == "no_signal"
        })
        .await?;
    let seen = decode_until(&mut p1, &mut d1, 0, 3, size, Duration::from_secs(10)).await?;
    println!("while the encoder is gone: {seen:?}");

    // A restarted encoder, at another size: the same peer decodes it, no new offer.
    let restarted = Instant::now();
    let _encoder = start_encoder("320x240", &push_url)?;
    let back = decode_until(&mut p1, &mut d1, 1, 0, (320, 240), Duration::from_secs(10)).await?;
    let elapsed = restarted.elapsed();
    println!(
        "live again {} ms after the encoder restart ({back:?})",
        elapsed.as_millis()
    );
    assert_eq!(back.other_size, 0, "no stale live pictures after NO SIGNAL");
    assert!(
        elapsed < Duration::from_secs(2),
        "first live picture {elapsed:?} after the restart"
    );
    decode_until(&mut p1, &mut d1, 30, 0, (320, 240), Duration::from_secs(10)).await?;
    decode_until(&mut p2, &mut d2, 30, 0, (320, 240), Duration::from_secs(10)).await?;
    let offers = j1
        .wait_for(Duration::from_millis(300), |m| m.get("jsep").is_some())
        .await;
    assert!(offers.is_err(), "no new offer expected: {offers:?}");
    let state = server.state().await?;
    assert_eq!(input(&state)["interruptions"], 1, "{state}");
    assert_eq!(input(&state)["width"], 320, "{state}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_to_a_listening_encoder_and_reconnects_after_it_restarts() -> Result<()> {
    let port = free_port();
    // peregrine first: it retries with backoff until the encoder listens.
    let server = Server::start(&["--source", &format!("tcp://127.0.0.1:{port}")]).await?;
    // free_port() hands out released ports; one of peregrine's own would be a false start.
    let own = [server.http_port, server.ws_port, server.janus_http_port];
    assert!(!own.contains(&port), "port {port} picked twice; rerun");
    let listen_url = format!("tcp://127.0.0.1:{port}?listen=1");
    let encoder = start_encoder("640x360", &listen_url)?;
    let (_janus, mut peer) = join(&server).await?;
    let mut decoder = H264Decoder::new()?;
    let t = Duration::from_secs(30);
    decode_until(&mut peer, &mut decoder, 60, 0, (640, 360), t).await?;

    encoder.kill();
    decode_until(&mut peer, &mut decoder, 0, 2, (640, 360), t).await?;
    let restarted = Instant::now();
    let _encoder = start_encoder("640x360", &listen_url)?;
    decode_until(&mut peer, &mut decoder, 1, 0, (640, 360), t).await?;
    println!(
        "reconnected and live {} ms after the encoder restart",
        restarted.elapsed().as_millis()
    );
    decode_until(&mut peer, &mut decoder, 30, 0, (640, 360), t).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_is_paced_and_looped() -> Result<()> {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/aud_2slices_160x120.h264"
    );
    let server = Server::start(&["--source", file, "--desired-fps", "30"]).await?;
    let (_janus, mut peer) = join(&server).await?;
    let mut decoder = H264Decoder::new()?;
    let started = Instant::now();
    // The file holds 30 pictures: 90 decoded means it looped at least twice.
    let got = decode_until(
        &mut peer,
        &mut decoder,
        90,
        0,
        (160, 120),
        Duration::from_secs(30),
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    println!("file: {got:?} in {secs:.2} s");
    assert!(secs > 2.0, "90 pictures at 30 fps cannot take {secs:.2} s");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_inputs_are_refused_and_the_server_keeps_serving() -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let (server, push_url) = listening_server(&[]).await?;
    let addr = push_url.trim_start_matches("tcp://").to_string();
    let (_janus, mut peer) = join(&server).await?;

    // An MPEG-TS stream pushed where raw H.264 was expected.
    let ts = include_bytes!("fixtures/testsrc_160x120.ts");
    let mut conn = tokio::net::TcpStream::connect(&addr).await?;
    let _ = conn.write_all(ts).await;
    let state = server
        .wait_state(Duration::from_secs(5), |s| {
            input(s)["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("MPEG-TS"))
        })
        .await?;
    println!("MPEG-TS: {}", input(&state)["last_error"]);
    drop(conn);

    // Random bytes: refused after a bounded amount.
    let mut conn = tokio::net::TcpStream::connect(&addr).await?;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..(256 << 10))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let _ = conn.write_all(&noise).await;
    server
        .wait_state(Duration::from_secs(5), |s| {
            input(s)["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("not H.264"))
        })
        .await?;
    drop(conn);

    // A truncated stream: real pictures cut short, then the connection ends.
    let h264 = include_bytes!("fixtures/aud_2slices_160x120.h264");
    let mut conn = tokio::net::TcpStream::connect(&addr).await?;
    let _ = conn.write_all(&h264[..h264.len() / 3]).await;
    drop(conn);

    // Through all of it the viewer stayed connected on NO SIGNAL, and real video plays.
    let _encoder = start_encoder("640x360", &push_url)?;
    let mut decoder = H264Decoder::new()?;
    let got = decode_until(
        &mut peer,
        &mut decoder,
        30,
        0,
        (640, 360),
        Duration::from_secs(30),
    )
    .await?;
    assert!(got.no_signal > 0, "{got:?}");
    Ok(())
}

#[test]
fn a_file_that_is_not_h264_stops_the_program_with_a_clear_message() -> Result<()> {
    let ts = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/testsrc_160x120.ts"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .args(["--host", "127.0.0.1", "--port", "0", "--source", ts])
        .stdin(Stdio::null())
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MPEG-TS"), "{stderr}");
    Ok(())
}

/// What ffmpeg makes with its defaults (High profile with B-frames) cannot be shown in
/// order by a WebRTC player: the server says so, once, where the user looks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_b_frames_is_reported() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("peregrine-bframes-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("defaults.h264");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=30",
            "-t",
            "2",
        ])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "h264"])
        .arg(&file)
        .status()
        .context("run ffmpeg")?;
    assert!(status.success());
    let log_path = dir.join("server.log");
    let server = Server::start_logged(
        &["--source", file.to_str().unwrap()],
        std::fs::File::create(&log_path)?,
    )
    .await?;
    let (_janus, _peer) = join(&server).await?;
    let state = server
        .wait_state(Duration::from_secs(10), |s| input(s)["b_frames"] == true)
        .await?;
    assert!(
        input(&state)["profile_level_id"]
            .as_str()
            .is_some_and(|p| p.starts_with("64")),
        "{state}"
    );
    let log = std::fs::read_to_string(&log_path)?;
    assert_eq!(log.matches("the stream has B-frames").count(), 1, "{log}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Whether `encoder` has exited (ffmpeg ends when peregrine closes its connection).
fn exited(encoder: &mut KilledOnDrop) -> Result<bool> {
    Ok(encoder.0.try_wait()?.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_encoder_cannot_take_over_a_pushed_stream() -> Result<()> {
    let (server, push_url) = listening_server(&["--resolution", "640x360"]).await?;
    let first = start_encoder("640x360", &push_url)?;
    let (_janus, mut peer) = join(&server).await?;
    let mut decoder = H264Decoder::new()?;
    let t = Duration::from_secs(30);
    decode_until(&mut peer, &mut decoder, 30, 0, (640, 360), t).await?;

    // Somebody else who can reach the port pushes their own video (another size, so
    // each picture shows whose it is) while the first encoder streams.
    let mut intruder = start_encoder("320x240", &push_url)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if exited(&mut intruder)? {
            break;
        }
        let state = server.state().await?;
        if input(&state)["width"] == 320 {
            bail!(
                "the second connection took over the stream: {}",
                input(&state)
            );
        }
        if Instant::now() > deadline {
            bail!("the second encoder's connection was never closed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two more seconds of video: all of it the first encoder's.
    let got = decode_until(&mut peer, &mut decoder, 60, 0, (640, 360), t).await?;
    println!("while a second encoder tried: {got:?}");
    assert_eq!(
        got.other_size, 0,
        "the viewer saw the second encoder's video"
    );
    let state = server.state().await?;
    assert_eq!(input(&state)["width"], 640, "{state}");
    assert_eq!(input(&state)["interruptions"], 0, "{state}");

    // Once the first encoder leaves, a new one takes over.
    first.kill();
    let _next = start_encoder("320x240", &push_url)?;
    decode_until(&mut peer, &mut decoder, 30, 0, (320, 240), t).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_allow_closes_connections_from_other_addresses() -> Result<()> {
    // Only 127.0.0.2 may push: ffmpeg connects from 127.0.0.1 and is closed at once.
    let (server, push_url) =
        listening_server(&["--resolution", "640x360", "--source-allow", "127.0.0.2"]).await?;
    let mut refused = start_encoder("640x360", &push_url)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !exited(&mut refused)? {
        if Instant::now() > deadline {
            bail!("a connection from outside source_allow was kept open");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = server.state().await?;
    assert_eq!(input(&state)["frames"], 0, "{state}");
    drop(server);

    // Listed, the same encoder streams.
    let (server, push_url) = listening_server(&[
        "--resolution",
        "640x360",
        "--source-allow",
        "127.0.0.2,127.0.0.1",
    ])
    .await?;
    let _encoder = start_encoder("640x360", &push_url)?;
    let (_janus, mut peer) = join(&server).await?;
    decode_until(
        &mut peer,
        &mut H264Decoder::new()?,
        30,
        0,
        (640, 360),
        Duration::from_secs(30),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_left_open_does_not_keep_the_stream() -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let (server, push_url) = listening_server(&["--resolution", "640x360"]).await?;
    let addr = push_url.trim_start_matches("tcp://").to_string();
    let (_janus, mut peer) = join(&server).await?;
    // An encoder that pushed, then hung without closing (a half-open connection after
    // a crash or a network loss): the socket stays open on this side.
    let mut stale = tokio::net::TcpStream::connect(&addr).await?;
    stale
        .write_all(include_bytes!("fixtures/aud_2slices_160x120.h264"))
        .await?;
    server
        .wait_state(Duration::from_secs(10), |s| input(s)["width"] == 160)
        .await?;
    // The restarted encoder is let in once the old connection has been silent for 2 s.
    let _encoder = start_encoder("640x360", &push_url)?;
    decode_until(
        &mut peer,
        &mut H264Decoder::new()?,
        30,
        0,
        (640, 360),
        Duration::from_secs(30),
    )
    .await?;
    drop(stale);
    Ok(())
}
