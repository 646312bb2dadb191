//! The core promise, end to end with real processes and peers: the peregrine binary's
//! test pattern, through the Janus API (WebSocket and HTTP long-poll), into a real
//! WebRTC receiver peer, depacketized and decoded with openh264.

mod support;

use std::time::Duration;

use anyhow::{bail, Result};
use peregrine::source::pattern::read_code_strip;
use peregrine::viewer::decoder::H264Decoder;
use peregrine::viewer::receiver::ReceiverPeer;
use serde_json::json;
use support::{JanusClient, Server, Transport};

/// Join as janus.js does and return the connected receiver.
async fn join(server: &Server, transport: Transport) -> Result<(JanusClient, ReceiverPeer)> {
    let mut janus = JanusClient::connect(server, transport).await?;
    janus.create_and_attach().await?;
    let offer = janus.watch().await?;
    assert!(offer.contains("H264/90000"), "offer without H.264: {offer}");
    assert!(offer.contains("packetization-mode=1"), "{offer}");
    let (mut peer, answer) = ReceiverPeer::answer(&offer).await?;
    janus.start(&answer).await?;
    peer.wait_connected(Duration::from_secs(10)).await?;
    janus
        .wait_for(Duration::from_secs(10), |m| m["janus"] == "webrtcup")
        .await?;
    Ok((janus, peer))
}

/// Decode `want` pictures; checks their size and that the drawn frame counter only
/// moves forward.
async fn decode_frames(
    peer: &mut ReceiverPeer,
    decoder: &mut H264Decoder,
    want: usize,
    width: usize,
    height: usize,
) -> Result<()> {
    let mut decoded = 0;
    let mut last_counter = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while decoded < want {
        let Ok(Some(frame)) = tokio::time::timeout_at(deadline, peer.next_frame()).await else {
            bail!("only {decoded} of {want} pictures decoded");
        };
        let Some(picture) = decoder.decode(&frame.data)? else {
            continue;
        };
        assert_eq!((picture.width, picture.height), (width, height));
        let (counter, _ms) = read_code_strip(&picture.y, picture.y_stride, width, height)
            .expect("every picture carries a readable code strip");
        if let Some(last) = last_counter {
            assert!(
                counter > last,
                "frame counter went from {last} to {counter}"
            );
        }
        last_counter = Some(counter);
        decoded += 1;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_decodes_over_websocket_transport() -> Result<()> {
    let server = Server::start(&[]).await?;
    let (_janus, mut peer) = join(&server, Transport::WebSocket).await?;
    decode_frames(&mut peer, &mut H264Decoder::new()?, 60, 1280, 720).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_decodes_over_http_long_poll_transport() -> Result<()> {
    let server = Server::start(&[]).await?;
    let (_janus, mut peer) = join(&server, Transport::LongPoll).await?;
    decode_frames(&mut peer, &mut H264Decoder::new()?, 60, 1280, 720).await
}

/// A second stream of a `[[stream]]` table, watched by name through the Janus API: its
/// own pictures arrive, and an unknown name is refused with the plugin's 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_decodes_a_stream_watched_by_name() -> Result<()> {
    let server = Server::start_with_config(
        "source = \"testsrc\"\nresolution = \"320x240\"\n\
         [[stream]]\nname = \"cam2\"\nsource = \"testsrc\"\nresolution = \"640x360\"\n",
        &[],
    )
    .await?;

    let mut unknown = JanusClient::connect(&server, Transport::WebSocket).await?;
    unknown.create_and_attach().await?;
    let refused = unknown.watch_stream(Some("nope")).await.unwrap_err();
    assert!(format!("{refused:#}").contains("404"), "{refused:#}");

    let mut janus = JanusClient::connect(&server, Transport::WebSocket).await?;
    janus.create_and_attach().await?;
    let offer = janus.watch_stream(Some("cam2")).await?;
    let (mut peer, answer) = ReceiverPeer::answer(&offer).await?;
    janus.start(&answer).await?;
    peer.wait_connected(Duration::from_secs(10)).await?;
    decode_frames(&mut peer, &mut H264Decoder::new()?, 20, 640, 360).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_never_disturbs_a_playing_viewer() -> Result<()> {
    let server = Server::start(&["--resolution", "640x360"]).await?;
    let (_viewer, mut peer) = join(&server, Transport::WebSocket).await?;
    let mut decoder = H264Decoder::new()?;
    decode_frames(&mut peer, &mut decoder, 10, 640, 360).await?;

    // Protocol-level garbage on another connection: each gets Janus's own error code.
    let mut bad = JanusClient::connect(&server, Transport::WebSocket).await?;
    let cases = [
        (json!({"janus": "info2"}), 457),
        (json!({"janus": "keepalive", "session_id": 12345}), 458),
        (
            json!({"janus": "attach", "plugin": "janus.plugin.nope", "session_id": 1}),
            458,
        ),
    ];
    for (msg, code) in cases {
        let reply = bad.request(msg.clone()).await?;
        assert_eq!(reply["error"]["code"], code, "{msg} → {reply}");
    }
    bad.create_and_attach().await?;
    let reply = bad
        .request(json!({"janus": "attach", "plugin": "janus.plugin.nope"}))
        .await?;
    assert_eq!(reply["error"]["code"], 460, "{reply}");
    let reply = bad
        .request(json!({"janus": "message", "handle_id": 77, "body": {"request": "watch"}}))
        .await?;
    assert_eq!(reply["error"]["code"], 459, "{reply}");

    // A start with a garbage SDP answer after a real offer: an error for this client only.
    bad.watch().await?;
    bad.send(json!({"janus": "message", "body": {"request": "start"},
                    "jsep": {"type": "answer", "sdp": "v=0\r\nthis is not sdp"}}));
    let reply = bad
        .wait_for(Duration::from_secs(10), |m| {
            m["janus"] == "error" || m["plugindata"]["data"]["error_code"].is_number()
        })
        .await?;
    let code = reply["error"]["code"]
        .as_u64()
        .or_else(|| reply["plugindata"]["data"]["error_code"].as_u64());
    assert_eq!(code, Some(465), "garbage answer → {reply}");

    // A 10 MB message and a malformed frame over raw sockets.
    let big = format!(
        r#"{{"janus":"create","transaction":"x","pad":"{}"}}"#,
        "a".repeat(10 << 20)
    );
    let (status, _) = support::http_request(
        server.janus_http_port,
        "POST",
        "/janus",
        Some(big.as_bytes()),
    )
    .await?;
    assert!(
        status == 413 || status == 400,
        "10 MB body answered HTTP {status}"
    );
    let (status, body) =
        support::http_request(server.janus_http_port, "POST", "/janus", Some(b"{not json")).await?;
    assert_eq!(status, 200);
    let reply: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(reply["error"]["code"], 454, "{reply}");

    // A client that vanishes without hangup: its session and peer are reaped.
    let (vanishing, vanishing_peer) = join(&server, Transport::WebSocket).await?;
    server
        .wait_state(Duration::from_secs(5), |s| s["rtc"]["connected"] == 2)
        .await?;
    drop(vanishing);
    drop(vanishing_peer);
    drop(bad);
    server
        .wait_state(Duration::from_secs(10), |s| {
            s["janus"]["sessions"] == 1 && s["rtc"]["peers"] == 1
        })
        .await?;

    // And the first viewer still plays.
    decode_frames(&mut peer, &mut decoder, 30, 640, 360).await
}

/// A browser that cannot decode what is offered answers `m=video 0`. The viewer gets
/// Janus's SDP error and a hangup, and the peer is gone at once instead of checking ICE
/// pairs forever with no media behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_declining_the_video_ends_the_viewer_with_an_error() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240"]).await?;
    let mut janus = JanusClient::connect(&server, Transport::WebSocket).await?;
    janus.create_and_attach().await?;
    let offer = janus.watch().await?;
    let (_peer, answer) = ReceiverPeer::answer(&offer).await?;
    let declined = answer.replacen("m=video 9 ", "m=video 0 ", 1);
    assert_ne!(
        declined, answer,
        "the answer has an m=video 9 line: {answer}"
    );
    janus.send(json!({"janus": "message", "body": {"request": "start"},
                      "jsep": {"type": "answer", "sdp": declined}}));
    // The error answers the message; the hangup comes from the engine: either first.
    let (mut error, mut hangup) = (None, None);
    while error.is_none() || hangup.is_none() {
        let m = janus
            .wait_for(Duration::from_secs(10), |m| {
                m["janus"] == "error" || m["janus"] == "hangup"
            })
            .await?;
        if m["janus"] == "error" {
            error = Some(m);
        } else {
            hangup = Some(m);
        }
    }
    let (error, hangup) = (error.unwrap(), hangup.unwrap());
    assert_eq!(error["error"]["code"], 465, "{error}");
    let reason = error["error"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("m=video 0"), "{error}");
    assert!(
        hangup["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("declined"),
        "{hangup}"
    );
    server
        .wait_state(Duration::from_secs(5), |s| s["rtc"]["peers"] == 0)
        .await?;
    Ok(())
}
