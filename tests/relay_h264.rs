//! `/h264` end to end: many WebSocket clients against the real binary, one of which never
//! reads; the others must still get every keyframe promptly.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use peregrine::media::clock::realtime_us;
use peregrine::media::h264::{nal_type, nal_units, NalType};
use peregrine::source::pattern::read_code_strip;
use peregrine::viewer::decoder::H264Decoder;
use support::Server;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

/// Keyframes one client saw: frame counter → (capture time, ms from capture to arrival).
type Keyframes = BTreeMap<u32, (i64, i64)>;

fn is_key(au: &[u8]) -> bool {
    nal_units(au).any(|n| nal_type(n) == Some(NalType::Idr))
}

async fn read_client(port: u16, run_for: Duration) -> Result<(Keyframes, usize)> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/h264"))
        .await
        .context("connect /h264")?;
    let mut decoder = H264Decoder::new()?;
    let mut keys = Keyframes::new();
    let mut messages = 0;
    let deadline = Instant::now() + run_for;
    while let Ok(next) = tokio::time::timeout_at(deadline.into(), ws.next()).await {
        let au = match next {
            Some(Ok(Message::Binary(au))) => au,
            Some(Ok(_)) => continue,
            other => bail!("stream ended: {other:?}"),
        };
        let arrived_ms = (realtime_us() / 1000) as i64;
        if !au.starts_with(&[0, 0, 0, 1]) && !au.starts_with(&[0, 0, 1]) {
            bail!("message {messages} is not Annex-B");
        }
        if messages == 0 {
            let types: Vec<_> = nal_units(&au).filter_map(nal_type).collect();
            assert!(
                types.contains(&NalType::Sps) && types.contains(&NalType::Pps) && is_key(&au),
                "first access unit must be a keyframe with SPS/PPS, got {types:?}"
            );
        }
        messages += 1;
        if is_key(&au) {
            // Keyframes carry SPS/PPS and decode on their own.
            if let Some(pic) = decoder.decode(&au)? {
                let (counter, capture_ms) =
                    read_code_strip(&pic.y, pic.y_stride, pic.width, pic.height)
                        .context("code strip unreadable in a keyframe")?;
                keys.insert(counter, (capture_ms as i64, arrived_ms - capture_ms as i64));
            }
        }
    }
    Ok((keys, messages))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_clients_one_never_reading() -> Result<()> {
    let server = Server::start(&["--resolution", "640x360", "--h264-gop", "30"]).await?;
    let port = server.http_port;

    // The stalled client: a tiny receive buffer and no reads at all.
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let stream = socket.connect(([127, 0, 0, 1], port).into()).await?;
    let (stalled, _) =
        tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/h264"), stream).await?;

    let run_for = Duration::from_secs(10);
    let started_ms = (realtime_us() / 1000) as i64;
    let readers: Vec<_> = (0..9)
        .map(|_| tokio::spawn(read_client(port, run_for)))
        .collect();
    server
        .wait_state(Duration::from_secs(10), |s| {
            s["relay"]["h264_clients"] == 10
        })
        .await?;
    let mut results = Vec::new();
    for r in readers {
        results.push(r.await??);
    }
    let state = server.state().await?;
    println!("relay state with the stalled client: {}", state["relay"]);

    // Every keyframe captured well inside the window reached all nine readers in < 1 s.
    let window = (started_ms + 1500)..(started_ms + run_for.as_millis() as i64 - 2000);
    let mut produced = BTreeMap::new();
    for (keys, _) in &results {
        for (&counter, &(capture_ms, _)) in keys {
            if window.contains(&capture_ms) {
                produced.insert(counter, capture_ms);
            }
        }
    }
    assert!(
        produced.len() >= 4,
        "expected a keyframe a second, saw {produced:?}"
    );
    let mut worst = 0;
    for &counter in produced.keys() {
        for (i, (keys, _)) in results.iter().enumerate() {
            let Some(&(_, latency)) = keys.get(&counter) else {
                panic!("reader {i} never got keyframe {counter}");
            };
            assert!(
                latency < 1000,
                "reader {i} got keyframe {counter} after {latency} ms"
            );
            worst = worst.max(latency);
        }
    }
    for (i, (keys, messages)) in results.iter().enumerate() {
        println!(
            "reader {i}: {messages} access units, {} keyframes",
            keys.len()
        );
        assert!(
            *messages > 100,
            "reader {i} got only {messages} access units"
        );
    }
    println!(
        "{} keyframes reached all nine readers; worst capture-to-arrival {worst} ms",
        produced.len()
    );
    drop(stalled);
    Ok(())
}

/// The first picture `/h264{query}` sends, decoded: its size.
async fn first_picture_size(port: u16, query: &str) -> Result<(usize, usize)> {
    let url = format!("ws://127.0.0.1:{port}/h264{query}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("connect /h264")?;
    let mut decoder = H264Decoder::new()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Ok(next) = tokio::time::timeout_at(deadline.into(), ws.next()).await {
        let Some(Ok(Message::Binary(au))) = next else {
            bail!("stream ended: {next:?}");
        };
        if let Some(pic) = decoder.decode(&au)? {
            return Ok((pic.width, pic.height));
        }
    }
    bail!("no picture decoded from /h264{query} in 20 s")
}

#[tokio::test]
async fn each_stream_is_reached_by_name_and_an_unknown_name_is_404() -> Result<()> {
    let server = Server::start_with_config(
        "source = \"testsrc\"\nresolution = \"320x240\"\n\
         [[stream]]\nname = \"cam2\"\nsource = \"testsrc\"\nresolution = \"640x360\"\n",
        &[],
    )
    .await?;
    let port = server.http_port;
    assert_eq!(first_picture_size(port, "").await?, (320, 240));
    assert_eq!(
        first_picture_size(port, "?stream=default").await?,
        (320, 240)
    );
    assert_eq!(first_picture_size(port, "?stream=cam2").await?, (640, 360));
    let upgrade = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    for path in ["/h264?stream=nope", "/jsmpeg?stream=nope"] {
        let reply = support::raw_request(port, "GET", path, &upgrade).await?;
        assert_eq!(reply.status, 404, "{path}");
        let body = String::from_utf8_lossy(&reply.body);
        assert!(body.contains("no stream named \"nope\""), "{path}: {body}");
    }
    // Names no stream can have, or a query that is not one: refused before any upgrade.
    let long = format!("/h264?stream={}", "x".repeat(5000));
    for path in [
        "/h264?stream=%ff%fe",
        "/h264?stream=a%00b",
        "/jsmpeg?stream",
        long.as_str(),
    ] {
        let reply = support::raw_request(port, "GET", path, &upgrade).await?;
        assert!(
            [400, 404].contains(&reply.status),
            "{path}: {}",
            reply.status
        );
    }
    assert_eq!(
        first_picture_size(port, "?stream=cam2").await?,
        (640, 360),
        "still serving"
    );
    Ok(())
}
