//! PiKVM's Direct H.264 mode (`/api/media/ws`, kvmd's media server protocol) against the
//! real binary, spoken as kvmd's web client speaks it: the `media` event, `start`,
//! `[0x00]` pings answered by `[0xFF]`, `[0x01]` keyframe requests and
//! `[0x01, key] + Annex-B` frames; pure mode; bad input; a client that never reads.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use peregrine::media::clock::realtime_us;
use peregrine::media::h264::{access_unit_is_key, nal_type, nal_units, parse_sps, NalType};
use peregrine::source::pattern::read_code_strip;
use peregrine::viewer::decoder::H264Decoder;
use serde_json::Value;
use support::Server;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const START: &str = r#"{"event_type":"start","event":{"type":"video","format":"h264"}}"#;

const UPGRADE: [(&str, &str); 4] = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

async fn connect(port: u16, path: &str) -> Result<Ws> {
    let url = format!("ws://127.0.0.1:{port}{path}");
    let (ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .with_context(|| format!("connect {url}"))?;
    Ok(ws)
}

/// The next message, within `within`.
async fn next(ws: &mut Ws, within: Duration) -> Result<Message> {
    match tokio::time::timeout(within, ws.next()).await {
        Ok(Some(Ok(message))) => Ok(message),
        Ok(other) => bail!("connection ended: {other:?}"),
        Err(_) => bail!("nothing within {within:?}"),
    }
}

/// The `media` event a non-pure client gets first, and its profile_level_id.
async fn media_event(ws: &mut Ws) -> Result<String> {
    let Message::Text(text) = next(ws, Duration::from_secs(5)).await? else {
        bail!("the first message is not the media event");
    };
    let event: Value = serde_json::from_str(text.as_str())?;
    assert_eq!(event["event_type"], "media", "{event}");
    let pli = event["event"]["video"]["h264"]["profile_level_id"]
        .as_str()
        .with_context(|| format!("no profile_level_id in {event}"))?
        .to_string();
    assert!(
        pli.len() == 6
            && pli
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
        "profile_level_id as kvmd writes it: {pli}"
    );
    Ok(pli)
}

/// The next video frame, `(key, access unit)`, skipping pongs; within `within`.
async fn next_video(ws: &mut Ws, within: Duration) -> Result<(bool, Vec<u8>)> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next(ws, left).await? {
            Message::Binary(data) if data.first() == Some(&0x01) && data.len() > 2 => {
                return Ok((data[1] == 1, data[2..].to_vec()));
            }
            Message::Binary(data) if data[..] == [0xFF] => continue,
            other => bail!("not a video frame: {other:?}"),
        }
    }
}

fn nal_types(au: &[u8]) -> Vec<NalType> {
    nal_units(au).filter_map(nal_type).collect()
}

/// The SPS's profile_level_id, as kvmd writes it.
fn sps_profile_level_id(au: &[u8]) -> Result<String> {
    let sps = nal_units(au)
        .find(|n| nal_type(n) == Some(NalType::Sps))
        .context("no SPS")?;
    Ok(parse_sps(sps)?.profile_level_id().to_ascii_uppercase())
}

async fn metrics(port: u16) -> Result<String> {
    let (status, body) = support::http_request(port, "GET", "/metrics", None).await?;
    assert_eq!(status, 200);
    Ok(String::from_utf8(body)?)
}

const DIRECT_VIEWERS: &str = r#"peregrine_viewers{stream="default",transport="direct"}"#;

/// kvmd's client session from start to end: media event, start, the first frame a
/// keyframe with SPS and PPS, decodable frames, ping and pong, a keyframe on request,
/// counted as a viewer while video flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvmd_client_session() -> Result<()> {
    // A GOP of 20 s: any keyframe after the first is one the client asked for.
    let server = Server::start(&["--resolution", "640x360", "--h264-gop", "600"]).await?;
    let port = server.http_port;
    let mut ws = connect(port, "/api/media/ws").await?;
    let announced = media_event(&mut ws).await?;
    // Connected but not started: not a viewer, and no video comes.
    assert!(tokio::time::timeout(Duration::from_millis(500), ws.next())
        .await
        .is_err());
    assert_eq!(server.state().await?["streams"]["default"]["viewers"], 0);

    ws.send(Message::text(START)).await?;
    let (key, au) = next_video(&mut ws, Duration::from_secs(10)).await?;
    let types = nal_types(&au);
    assert!(
        key && [NalType::Sps, NalType::Pps, NalType::Idr]
            .iter()
            .all(|t| types.contains(t)),
        "the first frame must be a key with SPS, PPS and IDR: key={key}, {types:?}"
    );
    assert!(au.starts_with(&[0, 0, 0, 1]) || au.starts_with(&[0, 0, 1]));
    let actual = sps_profile_level_id(&au)?;
    // Before the stream has run, kvmd's own default is announced.
    assert!(
        announced == actual || announced == "42E01F",
        "announced {announced}, SPS says {actual}"
    );

    let mut decoder = H264Decoder::new()?;
    let first = decoder.decode(&au)?.context("the keyframe decodes")?;
    assert_eq!((first.width, first.height), (640, 360));
    for i in 1..60 {
        let (key, au) = next_video(&mut ws, Duration::from_secs(2)).await?;
        assert_eq!(key, access_unit_is_key(&au), "frame {i}'s key flag");
        decoder.decode(&au)?;
    }

    let state = server
        .wait_state(Duration::from_secs(5), |s| {
            s["streams"]["default"]["viewers"] == 1
        })
        .await?;
    assert_eq!(state["relay"]["direct_clients"], 1);
    assert!(metrics(port)
        .await?
        .contains(&format!("{DIRECT_VIEWERS} 1")));

    // Ping: a pong comes, ahead of or between frames.
    ws.send(Message::binary(vec![0x00])).await?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Message::Binary(data) = next(&mut ws, left).await? {
            if data[..] == [0xFF] {
                break;
            }
        }
    }

    // A keyframe request is answered within a few frames, far before the GOP ends.
    let asked = Instant::now();
    ws.send(Message::binary(vec![0x01])).await?;
    loop {
        let (key, au) = next_video(&mut ws, Duration::from_secs(3)).await?;
        if key {
            let types = nal_types(&au);
            assert!(types.contains(&NalType::Sps) && types.contains(&NalType::Pps));
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "no keyframe on request"
        );
    }

    // The stream has run: a new client is told its own profile_level_id.
    let mut second = connect(port, "/api/media/ws").await?;
    assert_eq!(media_event(&mut second).await?, actual);

    drop((ws, second));
    server
        .wait_state(Duration::from_secs(5), |s| {
            s["streams"]["default"]["viewers"] == 0 && s["relay"]["direct_clients"] == 0
        })
        .await?;
    assert!(metrics(port)
        .await?
        .contains(&format!("{DIRECT_VIEWERS} 0")));
    Ok(())
}

/// `?video=h264`: raw access units from the first message on, nothing else, not even
/// a pong; on `/api/media/ws` and on kvmd-media's own `/ws`.
#[tokio::test]
async fn pure_mode_sends_access_units_only() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240"]).await?;
    let port = server.http_port;
    for path in ["/api/media/ws?video=h264", "/ws?video=h264"] {
        let mut ws = connect(port, path).await?;
        ws.send(Message::binary(vec![0x00])).await?;
        let mut decoder = H264Decoder::new()?;
        let mut decoded = 0;
        for i in 0..40 {
            let message = next(&mut ws, Duration::from_secs(10)).await?;
            let Message::Binary(au) = message else {
                bail!("{path}: message {i} is not binary: {message:?}");
            };
            assert!(
                au.starts_with(&[0, 0, 0, 1]) || au.starts_with(&[0, 0, 1]),
                "{path}: message {i} is not a bare Annex-B access unit"
            );
            if i == 0 {
                let types = nal_types(&au);
                assert!(types.contains(&NalType::Sps) && types.contains(&NalType::Idr));
            }
            if decoder.decode(&au)?.is_some() {
                decoded += 1;
            }
        }
        assert!(decoded >= 39, "{path}: decoded {decoded} of 40");
    }
    // A video format it does not serve is refused before the upgrade, as kvmd does.
    let reply = support::raw_request(port, "GET", "/api/media/ws?video=jpeg", &UPGRADE).await?;
    assert_eq!(reply.status, 400);
    let body: Value = serde_json::from_slice(&reply.body)?;
    assert_eq!(body["ok"], false);
    assert_eq!(body["result"]["error_msg"], "Unsupported video type");
    Ok(())
}

/// `GET /api/media` in kvmd's JSON shape; `?stream=` on every Direct URL, an unknown name
/// refused with 404 before any upgrade.
#[tokio::test]
async fn streams_by_name_and_the_media_description() -> Result<()> {
    let server = Server::start_with_config(
        "source = \"testsrc\"\nresolution = \"320x240\"\n\
         [[stream]]\nname = \"cam2\"\nsource = \"testsrc\"\nresolution = \"640x360\"\n",
        &[],
    )
    .await?;
    let port = server.http_port;

    let (status, body) = support::http_request(port, "GET", "/api/media", None).await?;
    assert_eq!(status, 200);
    let info: Value = serde_json::from_slice(&body)?;
    assert_eq!(info["ok"], true, "{info}");
    assert!(info["result"]["media"]["video"]["h264"]["profile_level_id"].is_string());

    for (query, size) in [("", (320, 240)), ("?stream=cam2", (640, 360))] {
        let mut ws = connect(port, &format!("/api/media/ws{query}")).await?;
        media_event(&mut ws).await?;
        ws.send(Message::text(START)).await?;
        let (_, au) = next_video(&mut ws, Duration::from_secs(10)).await?;
        let pic = H264Decoder::new()?.decode(&au)?.context("keyframe")?;
        assert_eq!((pic.width, pic.height), size, "{query}");
    }

    for path in ["/api/media/ws?stream=nope", "/ws?stream=nope"] {
        let reply = support::raw_request(port, "GET", path, &UPGRADE).await?;
        assert_eq!(reply.status, 404, "{path}");
        let body: Value = serde_json::from_slice(&reply.body)?;
        assert_eq!(body["ok"], false);
        assert!(
            body["result"]["error_msg"]
                .as_str()
                .is_some_and(|m| m.contains("no stream named \"nope\"")),
            "{body}"
        );
    }
    let (status, _) = support::http_request(port, "GET", "/api/media?stream=nope", None).await?;
    assert_eq!(status, 404);
    for path in [
        "/api/media/ws?stream=%ff",
        "/api/media/ws?stream=a&stream=b",
    ] {
        let reply = support::raw_request(port, "GET", path, &UPGRADE).await?;
        assert!(
            [400, 404].contains(&reply.status),
            "{path}: {}",
            reply.status
        );
    }
    Ok(())
}

/// Watches until told to stop: the frames received and the longest wait for one.
async fn watch(mut ws: Ws, stop: tokio::sync::watch::Receiver<bool>) -> Result<(usize, Duration)> {
    let (mut frames, mut longest) = (0, Duration::ZERO);
    let mut last = Instant::now();
    while !*stop.borrow() {
        let (_, au) = next_video(&mut ws, Duration::from_secs(2)).await?;
        assert!(!au.is_empty());
        frames += 1;
        if frames > 1 {
            longest = longest.max(last.elapsed());
        }
        last = Instant::now();
    }
    Ok((frames, longest))
}

async fn started_client(port: u16) -> Result<Ws> {
    let mut ws = connect(port, "/api/media/ws").await?;
    media_event(&mut ws).await?;
    ws.send(Message::text(START)).await?;
    Ok(ws)
}

/// The close code a connection ends with (`None`: closed without a close frame).
async fn closed_with(ws: &mut Ws) -> Result<Option<CloseCode>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => bail!("still open after 5 s"),
            Ok(Some(Ok(Message::Close(frame)))) => return Ok(frame.map(|f| f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return Ok(None),
        }
    }
}

/// Ping and expect the pong (skipping frames): the session is alive.
async fn assert_alive(ws: &mut Ws, what: &str) -> Result<()> {
    ws.send(Message::binary(vec![0x00])).await?;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next(ws, left).await {
            Ok(Message::Binary(data)) if data[..] == [0xFF] => return Ok(()),
            Ok(_) => continue,
            Err(e) => bail!("after {what}: {e}"),
        }
    }
}

/// Bad JSON, unknown events and opcodes are ignored as kvmd ignores them; an empty binary
/// message or an oversized one ends that session with a close code; a client watching
/// meanwhile sees none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_never_disturbs_anyone() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240"]).await?;
    let port = server.http_port;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let witness = tokio::spawn(watch(started_client(port).await?, stopped));

    let mut ws = connect(port, "/api/media/ws").await?;
    media_event(&mut ws).await?;
    let ignored: Vec<Message> = vec![
        Message::text("not json"),
        Message::text("{\"event_type\":"),
        Message::text("[1,2,3]"),
        Message::text(r#"{"event_type":"start"}"#),
        Message::text(r#"{"event_type":"no_such_event","event":{}}"#),
        Message::text(r#"{"event_type":"start","event":{"type":"video","format":"jpeg"}}"#),
        Message::text(format!("{}{}", "[".repeat(5000), "]".repeat(5000))),
        Message::binary(vec![0x07]),
        Message::binary(vec![0xFF, 1, 2, 3]),
    ];
    for message in ignored {
        let what = format!("{message:.40}");
        ws.send(message).await?;
        assert_alive(&mut ws, &what).await?;
    }
    // None of that started video.
    assert_eq!(server.state().await?["streams"]["default"]["viewers"], 1);
    ws.send(Message::binary(Vec::new())).await?;
    assert_eq!(closed_with(&mut ws).await?, Some(CloseCode::Unsupported));

    let mut long = started_client(port).await?;
    long.send(Message::text(" ".repeat(100 * 1024))).await?;
    assert_eq!(closed_with(&mut long).await?, Some(CloseCode::Size));

    // Far larger than any client message: dropped by the WebSocket layer unread.
    let mut huge = started_client(port).await?;
    let _ = huge.send(Message::binary(vec![0x00; 8 << 20])).await;
    closed_with(&mut huge).await?;

    server
        .wait_state(Duration::from_secs(5), |s| {
            s["relay"]["direct_clients"] == 1
        })
        .await?;
    let _ = stop.send(true);
    let (frames, longest) = witness.await??;
    assert!(
        frames > 5 && longest < Duration::from_millis(500),
        "the watching client got {frames} frames, once waiting {longest:?}"
    );
    Ok(())
}

/// A client that connects with a tiny receive window, starts video and never reads.
async fn stalled_client(port: u16) -> Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let tcp = socket.connect(([127, 0, 0, 1], port).into()).await?;
    let url = format!("ws://127.0.0.1:{port}/api/media/ws");
    let (mut ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)).await?;
    ws.send(Message::text(START)).await?;
    Ok(ws)
}

/// A client that never reads does not delay another: every picture reaches the reader
/// within a few milliseconds of its capture, and the stalled client makes the source
/// produce no stream of keyframes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_reads_does_not_delay_another() -> Result<()> {
    // A GOP of 100 s: any keyframe after the first is one somebody asked for.
    let server = Server::start(&["--resolution", "640x360", "--h264-gop", "3000"]).await?;
    let port = server.http_port;
    let stalled = stalled_client(port).await?;
    let mut reader = started_client(port).await?;
    let mut decoder = H264Decoder::new()?;
    let run_for = Duration::from_secs(6);
    let started = Instant::now();
    let (mut frames, mut worst_ms) = (0, 0);
    while started.elapsed() < run_for {
        let (_, au) = next_video(&mut reader, Duration::from_secs(1)).await?;
        let arrived_ms = (realtime_us() / 1000) as i64;
        frames += 1;
        if let Some(pic) = decoder.decode(&au)? {
            let (_, capture_ms) = read_code_strip(&pic.y, pic.y_stride, pic.width, pic.height)
                .context("code strip unreadable")?;
            worst_ms = worst_ms.max(arrived_ms - capture_ms as i64);
        }
    }
    let state = server.state().await?;
    println!("reader: {frames} frames in {run_for:?}, worst capture-to-arrival {worst_ms} ms");
    assert!(frames >= 150, "the reader got only {frames} frames in 6 s");
    assert!(
        worst_ms < 1000,
        "a frame reached the reader after {worst_ms} ms"
    );
    let keyframes = state["source"]["keyframes"].as_u64().unwrap_or(u64::MAX);
    assert!(keyframes <= 3, "{keyframes} keyframes in 6 s");
    assert_eq!(state["streams"]["default"]["viewers"], 2);
    drop(stalled);
    Ok(())
}

/// Noise at 640x360 as H.264 (about 3 MB/s): enough to fill a stalled client's socket
/// buffers in seconds. One IDR per 60-frame pass of the looping file.
fn noise_file(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let path = dir.join("noise.h264");
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg("nullsrc=s=640x360:r=30,geq=lum='random(1)*255':cb=128:cr=128")
        .args(["-frames:v", "60", "-c:v", "libx264", "-preset", "ultrafast"])
        .args([
            "-profile:v",
            "baseline",
            "-g",
            "60",
            "-qp",
            "30",
            "-f",
            "h264",
        ])
        .arg(&path)
        .status()
        .context("run ffmpeg (install it with scripts/install-test-deps.sh)")?;
    if !status.success() {
        bail!("ffmpeg failed: {status}");
    }
    Ok(path)
}

/// With a heavy stream the stalled client's queue overflows: it is emptied (memory stays
/// bounded) while the reader keeps receiving every frame without a pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_client_overflows_alone_and_memory_stays_bounded() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("peregrine-direct-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = noise_file(&dir)?;
    let server = Server::start(&["--source", file.to_str().context("path")?]).await?;
    let port = server.http_port;
    let stalled = stalled_client(port).await?;
    let mut reader = started_client(port).await?;
    let started = Instant::now();
    let (mut frames, mut longest, mut last) = (0u64, Duration::ZERO, Instant::now());
    // (reader frames, source frames) at the first look at /state.
    let mut first_look: Option<(u64, u64)> = None;
    let mut rss_at_start = None;
    let mut last_check = Instant::now();
    let overflowed_after = loop {
        let (_, au) = next_video(&mut reader, Duration::from_secs(2)).await?;
        assert!(au.len() > 1000, "noise pictures are large");
        frames += 1;
        if frames > 1 {
            longest = longest.max(last.elapsed());
        }
        last = Instant::now();
        if last_check.elapsed() >= Duration::from_millis(500) {
            last_check = Instant::now();
            let state = server.state().await?;
            let relay = state["relay"].clone();
            rss_at_start.get_or_insert(relay["rss_kb"].as_u64().context("rss_kb")?);
            first_look.get_or_insert((frames, state["source"]["frames"].as_u64().unwrap_or(0)));
            if relay["direct_overflows"].as_u64() >= Some(2) {
                break started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the stalled client's queue never overflowed: {relay}"
            );
        }
    };
    let state = server.state().await?;
    let relay = state["relay"].clone();
    let rss_now = relay["rss_kb"].as_u64().context("rss_kb")?;
    let rss_at_start = rss_at_start.unwrap_or(rss_now);
    println!(
        "overflowed twice after {overflowed_after:?}; reader {frames} frames, longest wait \
         {longest:?}; RSS {rss_at_start} -> {rss_now} KiB"
    );
    // Every picture published meanwhile reached the reader (give or take those in flight).
    let (frames_then, published_then) = first_look.context("no look at /state")?;
    let published = state["source"]["frames"].as_u64().unwrap_or(0) - published_then;
    let received = frames - frames_then;
    assert!(
        received + 3 >= published && published > 30,
        "the reader got {received} of {published} pictures"
    );
    assert!(
        longest < Duration::from_millis(500),
        "the reader waited {longest:?}"
    );
    // 32 queued frames of ~100 KB are at most a few MB, whatever the stall's length.
    assert!(
        rss_now < rss_at_start + 32 * 1024,
        "RSS grew {rss_at_start} -> {rss_now} KiB"
    );
    drop(stalled);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
