//! WHEP on the main port, end to end with the peregrine binary: a Rust WebRTC viewer
//! that offers (as WHEP players do) gets the answer, plays the stream and ends the
//! session; bad requests get clear HTTP errors and leave nothing behind.

mod support;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use peregrine::viewer::decoder::H264Decoder;
use peregrine::viewer::receiver::ReceiverPeer;
use serde_json::Value;
use support::{raw_request_from, Reply, Server};

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

async fn request(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Reply> {
    let mut all = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    raw_request_from(None, server.http_port, method, path, &all, body.as_bytes()).await
}

/// A header of a reply ([`Reply::head`] is all lowercase, values too).
fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        (n.trim() == name).then(|| v.trim())
    })
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// No WHEP session, no peer, no viewer left.
fn nothing_left(state: &Value) -> bool {
    let p = state;
    p["whep"]["sessions"] == 0
        && p["rtc"]["peers"] == 0
        && p["viewers"] == 0
        && p["streams"]["default"]["viewers_by"]["webrtc"] == 0
}

/// Decode `want` pictures of `width`×`height`.
async fn decode(
    peer: &mut ReceiverPeer,
    decoder: &mut H264Decoder,
    want: usize,
    (width, height): (usize, usize),
) -> Result<()> {
    let mut decoded = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while decoded < want {
        let Ok(Some(frame)) = tokio::time::timeout_at(deadline, peer.next_frame()).await else {
            bail!("only {decoded} of {want} pictures decoded");
        };
        if let Some(picture) = decoder.decode(&frame.data)? {
            assert_eq!((picture.width, picture.height), (width, height));
            decoded += 1;
        }
    }
    Ok(())
}

/// PATCH `frag` to a session, with `If-Match` when given.
async fn patch(
    server: &Server,
    location: &str,
    frag: &str,
    if_match: Option<&str>,
) -> Result<Reply> {
    let mut headers = vec![("Content-Type", SDPFRAG)];
    if let Some(tag) = if_match {
        headers.push(("If-Match", tag));
    }
    request(server, "PATCH", location, &headers, frag).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_offers_plays_trickles_and_deletes() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240"]).await?;
    let (pending, offer) = ReceiverPeer::offer(Default::default()).await?;
    let posted = request(&server, "POST", "/whep", &[("Content-Type", SDP)], &offer).await?;
    assert_eq!(posted.status, 201, "{}", text(&posted));
    assert_eq!(header(&posted, "content-type"), Some(SDP));
    let location = header(&posted, "location").context("Location")?.to_string();
    assert!(location.starts_with("/whep/resource/"), "{location}");
    let etag = header(&posted, "etag").context("ETag")?.to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(header(&posted, "accept-patch"), Some(SDPFRAG));
    let expose = header(&posted, "access-control-expose-headers").context("expose")?;
    for name in ["location", "etag", "link"] {
        assert!(expose.contains(name), "{expose}");
    }
    let answer = text(&posted);
    assert!(
        answer.contains("a=candidate:"),
        "a complete answer: {answer}"
    );

    let mut peer = pending.accept(&answer)?;
    peer.wait_connected(Duration::from_secs(10)).await?;
    let mut decoder = H264Decoder::new()?;
    decode(&mut peer, &mut decoder, 30, (320, 240)).await?;
    let state = server
        .wait_state(Duration::from_secs(5), |s| {
            s["streams"]["default"]["viewers_by"]["webrtc"] == 1
        })
        .await?;
    assert_eq!(state["whep"]["sessions"], 1);
    assert_eq!(state["rtc"]["connected"], 1);
    let metrics = text(&request(&server, "GET", "/metrics", &[], "").await?);
    assert!(
        metrics.contains("\nperegrine_whep_sessions 1\n"),
        "{metrics}"
    );

    // Trickle with a wrong ETag fails; `*` (an ICE restart) without new credentials is
    // malformed.
    let frag = "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n";
    assert_eq!(
        patch(&server, &location, frag, Some(&etag)).await?.status,
        204
    );
    assert_eq!(
        patch(&server, &location, frag, Some("\"not-the-tag\""))
            .await?
            .status,
        412
    );
    // Without If-Match, as the whip-whep player trickles.
    assert_eq!(patch(&server, &location, frag, None).await?.status, 204);
    let restart = patch(&server, &location, frag, Some("*")).await?;
    assert_eq!(restart.status, 400, "{}", text(&restart));
    let wrong_type = request(
        &server,
        "PATCH",
        &location,
        &[("Content-Type", "text/plain"), ("If-Match", &etag)],
        frag,
    )
    .await?;
    assert_eq!(wrong_type.status, 415);
    // Trickling to a live session did not disturb it.
    decode(&mut peer, &mut decoder, 10, (320, 240)).await?;

    let deleted = request(&server, "DELETE", &location, &[], "").await?;
    assert_eq!(deleted.status, 200);
    let again = request(&server, "DELETE", &location, &[], "").await?;
    assert_eq!(again.status, 404);
    let gone = request(
        &server,
        "PATCH",
        &location,
        &[("Content-Type", SDPFRAG), ("If-Match", &etag)],
        frag,
    )
    .await?;
    assert_eq!(gone.status, 404);
    server
        .wait_state(Duration::from_secs(5), nothing_left)
        .await?;
    Ok(())
}

/// The `a=ice-ufrag` and `a=ice-pwd` of an SDP or fragment.
fn credentials(sdp: &str) -> Option<(String, String)> {
    let value = |prefix: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(prefix))
            .map(str::to_string)
    };
    Some((value("a=ice-ufrag:")?, value("a=ice-pwd:")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_restart_answers_new_credentials_and_a_new_etag() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240"]).await?;
    let (pending, offer) = ReceiverPeer::offer(Default::default()).await?;
    let posted = request(&server, "POST", "/whep", &[("Content-Type", SDP)], &offer).await?;
    assert_eq!(posted.status, 201, "{}", text(&posted));
    let location = header(&posted, "location").context("Location")?.to_string();
    let etag = header(&posted, "etag").context("ETag")?.to_string();
    let answer = text(&posted);
    let (ufrag, pwd) = credentials(&answer).context("answer credentials")?;
    let mut peer = pending.accept(&answer)?;
    peer.wait_connected(Duration::from_secs(10)).await?;
    server
        .wait_state(Duration::from_secs(5), |s| {
            s["streams"]["default"]["viewers_by"]["webrtc"] == 1
        })
        .await?;

    let fresh = "a=ice-ufrag:fReSh\r\na=ice-pwd:fresh+password/0123456789\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n";
    let restarted = patch(&server, &location, fresh, Some("*")).await?;
    assert_eq!(restarted.status, 200, "{}", text(&restarted));
    assert_eq!(header(&restarted, "content-type"), Some(SDPFRAG));
    let new_etag = header(&restarted, "etag").context("new ETag")?.to_string();
    assert!(new_etag.starts_with('"') && new_etag != etag, "{new_etag}");
    let frag = text(&restarted);
    let (new_ufrag, new_pwd) = credentials(&frag).context("restart credentials")?;
    assert!(new_ufrag != ufrag && new_pwd != pwd, "{frag}");
    assert!(
        frag.contains("a=candidate:") && frag.contains("a=end-of-candidates"),
        "{frag}"
    );

    // The old ICE session's tag no longer matches; the new one's does.
    let trickle = "a=candidate:2 1 udp 2130706431 127.0.0.1 10 typ host\r\n";
    assert_eq!(
        patch(&server, &location, trickle, Some(&etag))
            .await?
            .status,
        412
    );
    assert_eq!(
        patch(&server, &location, trickle, Some(&new_etag))
            .await?
            .status,
        204
    );
    // A restart without credentials, or with malformed ones, is refused.
    for bad in [
        "a=ice-pwd:fresh+password/0123456789\r\n",
        "a=ice-ufrag:fReSh\r\n",
        "a=ice-ufrag:fR\r\na=ice-pwd:fresh+password/0123456789\r\n",
    ] {
        let refused = patch(&server, &location, bad, Some("*")).await?;
        assert_eq!(refused.status, 400, "{bad}: {}", text(&refused));
    }
    // Still the one session and peer: a restart opens nothing new.
    let state = server.state().await?;
    assert_eq!(state["whep"]["sessions"], 1, "{state}");
    assert_eq!(state["rtc"]["peers"], 1, "{state}");

    let deleted = request(&server, "DELETE", &location, &[], "").await?;
    assert_eq!(deleted.status, 200);
    server
        .wait_state(Duration::from_secs(5), nothing_left)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_leave_nothing() -> Result<()> {
    let server = Server::start(&[
        "--resolution",
        "320x240",
        "--ice-server",
        "stun:stun.example.org:3478",
    ])
    .await?;
    let (_pending, offer) = ReceiverPeer::offer(Default::default()).await?;
    let post = |path: &str, content_type: &str, body: String| {
        let server = &server;
        let (path, content_type) = (path.to_string(), content_type.to_string());
        async move {
            request(
                server,
                "POST",
                &path,
                &[("Content-Type", &content_type)],
                &body,
            )
            .await
        }
    };

    let garbage = post("/whep", SDP, "hello, I am not SDP".into()).await?;
    assert_eq!(garbage.status, 400);
    assert!(text(&garbage).contains("v=0"), "{}", text(&garbage));
    let vp8 = offer
        .replace("H264/90000", "VP8/90000")
        .replace("packetization-mode=1", "x=1");
    let no_h264 = post("/whep", SDP, vp8).await?;
    assert_eq!(no_h264.status, 400);
    assert!(text(&no_h264).contains("H.264"), "{}", text(&no_h264));
    let no_video = post("/whep", SDP, offer.replace("m=video ", "m=text ")).await?;
    assert_eq!(no_video.status, 400);
    assert_eq!(
        post("/whep", "text/plain", offer.clone()).await?.status,
        415
    );
    assert_eq!(post("/nope/whep", SDP, offer.clone()).await?.status, 404);
    let huge = post("/whep", SDP, "v=0\r\n".repeat(20_000)).await?;
    assert_eq!(huge.status, 413);

    let unknown = "/whep/resource/no-such-session";
    let patch = request(
        &server,
        "PATCH",
        unknown,
        &[("Content-Type", SDPFRAG), ("If-Match", "*")],
        "",
    )
    .await?;
    assert_eq!(patch.status, 404);
    assert_eq!(
        request(&server, "DELETE", unknown, &[], "").await?.status,
        404
    );

    let options = request(&server, "OPTIONS", "/whep", &[], "").await?;
    assert_eq!(options.status, 204);
    assert_eq!(header(&options, "accept-post"), Some(SDP));
    assert_eq!(
        header(&options, "link"),
        Some("<stun:stun.example.org:3478>; rel=\"ice-server\"")
    );
    let from_page = request(
        &server,
        "OPTIONS",
        "/whep",
        &[("Origin", "http://127.0.0.1:1")],
        "",
    )
    .await?;
    let methods = header(&from_page, "access-control-allow-methods").context("methods")?;
    assert!(methods.contains("patch"), "{methods}");
    assert_eq!(
        header(&from_page, "access-control-allow-origin"),
        Some("http://127.0.0.1:1")
    );
    let foreign = request(
        &server,
        "POST",
        "/whep",
        &[("Origin", "http://evil.example"), ("Content-Type", SDP)],
        &offer,
    )
    .await?;
    assert_eq!(foreign.status, 403, "the origin policy applies");

    let state = server.state().await?;
    assert!(nothing_left(&state), "{state}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_cap_and_the_api_secret_apply() -> Result<()> {
    let server = Server::start(&[
        "--resolution",
        "320x240",
        "--max-viewers",
        "1",
        "--janus-api-secret",
        "s3cret",
    ])
    .await?;
    let (first_peer, offer) = ReceiverPeer::offer(Default::default()).await?;
    let post = |auth: &'static str, body: String| {
        let server = &server;
        async move {
            let mut headers = vec![("Content-Type", SDP)];
            if !auth.is_empty() {
                headers.push(("Authorization", auth));
            }
            request(server, "POST", "/whep", &headers, &body).await
        }
    };
    let anonymous = post("", offer.clone()).await?;
    assert_eq!(anonymous.status, 401);
    assert_eq!(header(&anonymous, "www-authenticate"), Some("bearer"));
    assert_eq!(post("Bearer wrong", offer.clone()).await?.status, 401);
    let first = post("Bearer s3cret", offer).await?;
    assert_eq!(first.status, 201, "{}", text(&first));
    let mut first_peer = first_peer.accept(&text(&first))?;
    first_peer.wait_connected(Duration::from_secs(10)).await?;
    let (_second, offer) = ReceiverPeer::offer(Default::default()).await?;
    let second = post("Bearer s3cret", offer).await?;
    assert_eq!(second.status, 503, "{}", text(&second));

    let location = header(&first, "location").context("Location")?.to_string();
    let unauthorized = request(&server, "DELETE", &location, &[], "").await?;
    assert_eq!(unauthorized.status, 401);
    let deleted = request(
        &server,
        "DELETE",
        &location,
        &[("Authorization", "Bearer s3cret")],
        "",
    )
    .await?;
    assert_eq!(deleted.status, 200);
    server
        .wait_state(Duration::from_secs(5), nothing_left)
        .await?;
    Ok(())
}

/// aiortc, an independent WebRTC stack, as a WHEP player (`tests/whep_player.py`): it
/// offers H.264 and Opus on payload types of its own choosing, decodes pictures of the
/// stream's size, hears the sound, and DELETEs its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_plays_the_stream_as_a_whep_player() -> Result<()> {
    let server = Server::start(&["--resolution", "640x360"]).await?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/whep_player.py");
    let url = format!("http://127.0.0.1:{}/whep", server.http_port);
    let run = tokio::process::Command::new("python3")
        .args([script, &url, "--pictures", "30"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .context("the aiortc player did not finish within 60 s")?
        .context("run python3 (aiortc comes from scripts/install-test-deps.sh)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "aiortc player failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_str(stdout.lines().last().context("no output")?)?;
    assert!(result["pictures"].as_u64() >= Some(30), "{result}");
    assert_eq!(result["sizes"], serde_json::json!([[640, 360]]), "{result}");
    assert!(
        result["audio_frames"].as_u64() > Some(0),
        "the sound plays: {result}"
    );
    assert_eq!(result["delete"], 200, "{result}");
    println!(
        "WHEP TTFF aiortc (offer made → first picture decoded): {} ms",
        result["ttff_ms"]
    );
    server
        .wait_state(Duration::from_secs(5), nothing_left)
        .await?;
    Ok(())
}
