//! `--whip-forward` end to end: the real binary publishes to a WHIP endpoint served
//! here, whose peer is the Rust WebRTC receiver (an independent stack: webrtc-rs
//! answering). The endpoint first refuses (503), so the client must come back after its
//! backoff; then it must send the offer as `application/sdp` with the Bearer token, take
//! the 201 answer, deliver decodable pictures, and DELETE the session at shutdown.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use peregrine::media::h264::{nal_type, nal_units, NalType};
use peregrine::viewer::decoder::H264Decoder;
use peregrine::viewer::receiver::ReceiverPeer;
use support::Server;
use tokio::sync::mpsc;

const TOKEN: &str = "s3cret-token";

/// What the endpoint saw.
#[derive(Default)]
struct Seen {
    posts: Vec<Instant>,
    deletes: Vec<Option<String>>,
}

#[derive(Clone)]
struct Endpoint {
    seen: Arc<Mutex<Seen>>,
    peers: mpsc::UnboundedSender<ReceiverPeer>,
}

async fn publish(State(ep): State<Endpoint>, headers: HeaderMap, offer: String) -> Response {
    let first = {
        let mut seen = ep.seen.lock().unwrap();
        seen.posts.push(Instant::now());
        seen.posts.len() == 1
    };
    if first {
        return (StatusCode::SERVICE_UNAVAILABLE, "not yet").into_response();
    }
    let text = |h| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    if text(header::CONTENT_TYPE) != "application/sdp" {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    if text(header::AUTHORIZATION) != format!("Bearer {TOKEN}") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let (peer, answer) = match ReceiverPeer::answer(&offer).await {
        Ok(x) => x,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let _ = ep.peers.send(peer);
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp"),
            // Relative to the endpoint, as some servers write it.
            (header::LOCATION, "../resource/1"),
        ],
        answer,
    )
        .into_response()
}

async fn end(State(ep): State<Endpoint>, headers: HeaderMap) -> StatusCode {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    ep.seen.lock().unwrap().deletes.push(auth);
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_forward_publishes_retries_and_deletes() -> Result<()> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (peers_tx, mut peers) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/whip/endpoint/cam", post(publish))
        .route("/whip/resource/1", delete(end))
        .with_state(Endpoint {
            seen: seen.clone(),
            peers: peers_tx,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/whip/endpoint/cam", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let server = Server::start(&[
        "--source",
        "testsrc",
        "--resolution",
        "320x240",
        "--h264-gop",
        "600",
        "--whip-forward",
        &url,
        "--whip-token",
        TOKEN,
    ])
    .await?;
    let mut peer = tokio::time::timeout(Duration::from_secs(10), peers.recv())
        .await
        .context("no second POST within 10 s")?
        .context("endpoint gone")?;
    {
        let seen = seen.lock().unwrap();
        let wait = seen.posts[1] - seen.posts[0];
        assert!(
            wait >= Duration::from_millis(900),
            "retried after a backoff, not at once ({wait:?})"
        );
    }
    peer.wait_connected(Duration::from_secs(10)).await?;
    let mut decoder = H264Decoder::new()?;
    let mut decoded = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while decoded < 30 {
        let frame = tokio::time::timeout_at(until.into(), peer.next_frame())
            .await
            .context("fewer than 30 pictures in 10 s")?
            .context("receiver ended")?;
        if let Some(pic) = decoder.decode(&frame.data)? {
            assert_eq!((pic.width, pic.height), (320, 240));
            decoded += 1;
        }
    }
    // The endpoint is a server: a flood of its PLIs (one every 20 ms for 4 s) gets about
    // one keyframe a second, not one every 0.5 s as a viewer's would. The GOP is 20 s.
    let flood_until = Instant::now() + Duration::from_secs(4);
    let mut next_pli = Instant::now();
    let mut keyframes = 0;
    while Instant::now() < flood_until {
        if Instant::now() >= next_pli {
            peer.send_pli();
            next_pli += Duration::from_millis(20);
        }
        let wait = tokio::time::timeout(Duration::from_millis(20), peer.next_frame()).await;
        if let Ok(Some(frame)) = wait {
            if nal_units(&frame.data).any(|n| nal_type(n) == Some(NalType::Idr)) {
                keyframes += 1;
            }
        }
    }
    println!("{keyframes} keyframes for 200 PLIs in 4 s");
    assert!(
        (2..=5).contains(&keyframes),
        "a server's PLI flood gets about one keyframe a second, got {keyframes}"
    );

    let state = server
        .wait_state(Duration::from_secs(5), |s| {
            s["whip_forwards"][0]["state"] == "connected"
        })
        .await?;
    let w = &state["whip_forwards"][0];
    println!("state: {w}");
    assert_eq!(w["sessions"], 1);
    assert_eq!(w["failures"], 1, "the refused POST");
    assert!(w["resource"]
        .as_str()
        .is_some_and(|r| r.ends_with("/whip/resource/1")));

    let (status, metrics) =
        support::http_request(server.http_port, "GET", "/metrics", None).await?;
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics)?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("peregrine_whip_forward_connected_total{") && l.ends_with(" 1")),
        "no connected WHIP session in /metrics"
    );

    // A clean stop ends the session on the server.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.lock().unwrap().deletes.is_empty() {
        assert!(Instant::now() < deadline, "no DELETE within 5 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen.lock().unwrap().deletes,
        [Some(format!("Bearer {TOKEN}"))]
    );
    Ok(())
}
