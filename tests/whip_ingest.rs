//! WHIP ingest end to end with the peregrine binary: aiortc, an independent WebRTC
//! stack, publishes H.264 to a stream whose source is `whip` (`tests/whip_publisher.py`)
//! and a Rust WebRTC viewer of that stream decodes its pictures; a second publisher is
//! refused while the first publishes, the stream shows NO SIGNAL once it leaves (by
//! DELETE or by closing its connection), and the next one takes over. Bad requests get clear HTTP errors and leave nothing.
//! The publisher's sound (a 1 kHz tone in Opus) is the stream's sound: a viewer that
//! asks for sound hears the tone.

mod support;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use peregrine::media::audio::level;
use peregrine::media::audio::opus::FRAME_LEN;
use peregrine::viewer::audio::{decode as decode_sound, ReceivedAudio};
use peregrine::viewer::decoder::{DecodedFrame, H264Decoder};
use peregrine::viewer::receiver::{ReceiverOptions, ReceiverPeer};
use serde_json::{json, Value};
use support::{raw_request_from, JanusClient, Reply, Server, Transport};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

const SDP: &str = "application/sdp";
const CONFIG: &str = "source = \"testsrc\"\nresolution = \"320x240\"\n\
                      [[stream]]\nname = \"cam\"\nsource = \"whip\"\nresolution = \"640x360\"\n";

async fn request(server: &Server, method: &str, path: &str, body: &str) -> Result<Reply> {
    let headers = [("Connection", "close"), ("Content-Type", SDP)];
    raw_request_from(
        None,
        server.http_port,
        method,
        path,
        &headers,
        body.as_bytes(),
    )
    .await
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        (n.trim() == name).then(|| v.trim())
    })
}

fn cam(state: &Value) -> &Value {
    &state["streams"]["cam"]["source"]
}

/// An aiortc publisher running `tests/whip_publisher.py`.
struct Publisher {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Publisher {
    async fn start(server: &Server) -> Result<Publisher> {
        Publisher::start_with(server, &[]).await
    }

    async fn start_with(server: &Server, extra: &[&str]) -> Result<Publisher> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/whip_publisher.py");
        let url = format!("http://127.0.0.1:{}/cam/whip", server.http_port);
        let mut child = tokio::process::Command::new("python3")
            .args([script, &url])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("run python3 (aiortc comes from scripts/install-test-deps.sh)")?;
        let stdout = child.stdout.take().context("stdout")?;
        Ok(Publisher {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The publisher's next report.
    async fn next(&mut self) -> Result<Value> {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .context("the publisher said nothing for 30 s")??
            .context("the publisher ended")?;
        Ok(serde_json::from_str(&line)?)
    }

    /// DELETE its session; its report.
    async fn delete(self) -> Result<Value> {
        self.tell("delete").await
    }

    /// Close its connection without a DELETE; its report.
    async fn close(self) -> Result<Value> {
        self.tell("close").await
    }

    async fn tell(mut self, what: &str) -> Result<Value> {
        let stdin = self.child.stdin.as_mut().context("stdin")?;
        stdin.write_all(format!("{what}\n").as_bytes()).await?;
        stdin.flush().await?;
        self.next().await
    }
}

/// A WHEP viewer of the `cam` stream, connected.
async fn viewer(server: &Server) -> Result<(ReceiverPeer, String)> {
    let (pending, offer) = ReceiverPeer::offer(Default::default()).await?;
    let posted = request(server, "POST", "/cam/whep", &offer).await?;
    assert_eq!(posted.status, 201, "{}", text(&posted));
    let location = header(&posted, "location").context("Location")?.to_string();
    let mut peer = pending.accept(&text(&posted))?;
    peer.wait_connected(Duration::from_secs(10)).await?;
    Ok((peer, location))
}

/// The publisher's pictures are bright; NO SIGNAL is dark grey with light letters.
fn is_published(frame: &DecodedFrame) -> bool {
    let mut sum = 0u64;
    for row in 0..frame.height {
        let line = &frame.y[row * frame.y_stride..row * frame.y_stride + frame.width];
        sum += line.iter().map(|&v| u64::from(v)).sum::<u64>();
    }
    sum / (frame.width * frame.height) as u64 >= 120
}

/// Decode `want` of the publisher's pictures, all 640×360. Pictures that do not
/// decode (those after a change of publisher, before its first keyframe) are passed
/// over, like NO SIGNAL ones.
async fn decode(peer: &mut ReceiverPeer, decoder: &mut H264Decoder, want: usize) -> Result<()> {
    let mut decoded = 0;
    let mut undecodable = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while decoded < want {
        let Ok(Some(frame)) = tokio::time::timeout_at(deadline, peer.next_frame()).await else {
            bail!("only {decoded} of {want} pictures decoded ({undecodable} did not decode)");
        };
        match decoder.decode(&frame.data) {
            Ok(Some(picture)) => {
                assert_eq!((picture.width, picture.height), (640, 360));
                if is_published(&picture) {
                    decoded += 1;
                }
            }
            Ok(None) => {}
            Err(_) => undecodable += 1,
        }
    }
    println!("{decoded} published pictures decoded, {undecodable} did not decode");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aiortc_publisher_is_the_stream_until_it_leaves_and_the_next_takes_over() -> Result<()> {
    let server = Server::start_with_config(CONFIG, &[]).await?;
    let state = server.state().await?;
    assert_eq!(cam(&state)["state"], "no_signal", "{state}");
    assert_eq!(state["whip"]["publishers"], 0, "{state}");

    let mut first = Publisher::start(&server).await?;
    let published = first.next().await?;
    let location = published["published"]
        .as_str()
        .context("published")?
        .to_string();
    assert!(location.starts_with("/whip/resource/"), "{published}");
    server
        .wait_state(Duration::from_secs(15), |s| cam(s)["state"] == "live")
        .await?;

    // A viewer joining asks for a keyframe: it reaches the publisher as PLI.
    let (mut peer, viewer_location) = viewer(&server).await?;
    let mut decoder = H264Decoder::new()?;
    decode(&mut peer, &mut decoder, 30).await?;
    let state = server
        .wait_state(Duration::from_secs(5), |s| {
            s["rtc"]["plis_sent"].as_u64() > Some(0)
        })
        .await?;
    assert_eq!(state["whip"]["publishers"], 1, "{state}");
    assert_eq!(state["whep"]["sessions"], 1, "the viewer alone: {state}");
    assert!(cam(&state)["rtp"]["pictures"].as_u64() > Some(0), "{state}");
    let metrics = request(&server, "GET", "/metrics", "").await?;
    assert!(
        text(&metrics).contains("\nperegrine_whip_publishers 1\n"),
        "{}",
        text(&metrics)
    );

    // Someone else may not publish meanwhile.
    let mut second = Publisher::start(&server).await?;
    let refused = second.next().await?;
    assert_eq!(refused["refused"], 409, "{refused}");

    let deleted = first.delete().await?;
    assert_eq!(deleted["deleted"], 200, "{deleted}");
    assert!(
        deleted["plis"].as_u64() > Some(0),
        "the publisher got PLI: {deleted}"
    );
    let again = request(&server, "DELETE", &location, "").await?;
    assert_eq!(again.status, 404, "{}", text(&again));
    server
        .wait_state(Duration::from_secs(10), |s| {
            cam(s)["state"] == "no_signal" && s["whip"]["publishers"] == 0
        })
        .await?;

    // The next publisher takes over; the same viewer sees it.
    let mut third = Publisher::start(&server).await?;
    assert!(third.next().await?["published"].is_string());
    server
        .wait_state(Duration::from_secs(15), |s| {
            cam(s)["state"] == "live" && s["whip"]["publishers"] == 1
        })
        .await?;
    decode(&mut peer, &mut decoder, 30).await?;
    // It leaves without a DELETE: its closed connection ends its session all the same.
    assert_eq!(third.close().await?["closed"], true);
    server
        .wait_state(Duration::from_secs(15), |s| {
            cam(s)["state"] == "no_signal" && s["whip"]["publishers"] == 0
        })
        .await?;
    let viewer_gone = request(&server, "DELETE", &viewer_location, "").await?;
    assert_eq!(viewer_gone.status, 200);
    server
        .wait_state(Duration::from_secs(10), |s| {
            s["whip"]["publishers"] == 0 && s["whep"]["sessions"] == 0 && s["rtc"]["peers"] == 0
        })
        .await?;
    Ok(())
}

/// `count` sound packets of a viewer that keeps them.
async fn sound_packets(peer: &mut ReceiverPeer, count: usize) -> Result<Vec<ReceivedAudio>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < count {
        match tokio::time::timeout_at(deadline, peer.next_audio()).await {
            Ok(Some(packet)) => out.push(packet),
            _ => bail!("only {} of {count} sound packets", out.len()),
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_with_sound_hears_the_publishers_tone() -> Result<()> {
    let server = Server::start_with_config(CONFIG, &[]).await?;
    let state = server.state().await?;
    let sound = &state["streams"]["cam"]["audio"];
    assert_eq!(sound["source"], "whip", "{state}");
    assert_eq!(sound["state"], "idle", "nobody publishes yet: {state}");

    let mut publisher = Publisher::start(&server).await?;
    assert!(publisher.next().await?["published"].is_string());
    server
        .wait_state(Duration::from_secs(15), |s| {
            cam(s)["state"] == "live" && s["streams"]["cam"]["audio"]["state"] == "live"
        })
        .await?;

    // A Janus viewer asking for sound, as a page with `audio: true` does.
    let mut janus = JanusClient::connect(&server, Transport::WebSocket).await?;
    janus.create_and_attach().await?;
    let offer = janus
        .watch_with(Some("cam"), Some(json!({"audio": true})))
        .await?;
    assert!(offer.contains("m=audio"), "the stream has sound: {offer}");
    let keep = ReceiverOptions {
        keep_audio: true,
        ..Default::default()
    };
    let (mut peer, answer) = ReceiverPeer::answer_with(&offer, keep).await?;
    janus.start(&answer).await?;
    peer.wait_connected(Duration::from_secs(10)).await?;

    let packets = sound_packets(&mut peer, 100).await?;
    let pcm = decode_sound(&packets)?;
    // Past the decoder's first frames, the publisher's tone.
    let tail = level::left(&pcm[FRAME_LEN * 10..]);
    assert_eq!(level::dominant_hz(&tail, &[440.0, 1000.0, 2000.0]), 1000.0);
    assert!(level::rms_dbfs(&tail) > -20.0, "{}", level::rms_dbfs(&tail));

    let state = server.state().await?;
    let sound = &state["streams"]["cam"]["audio"];
    assert_eq!(
        (sound["rate"].as_u64(), sound["channels"].as_u64()),
        (Some(48_000), Some(2))
    );
    assert!(sound["frames"].as_u64() >= Some(100), "{sound}");
    assert_eq!(sound["listeners"], 1, "{sound}");

    assert_eq!(publisher.delete().await?["deleted"], 200);
    server
        .wait_state(Duration::from_secs(10), |s| {
            s["whip"]["publishers"] == 0 && s["streams"]["cam"]["audio"]["state"] == "idle"
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publish_requests_get_clear_errors_and_leave_nothing() -> Result<()> {
    let server = Server::start_with_config(CONFIG, &[]).await?;
    let garbage = request(&server, "POST", "/cam/whip", "hello, not SDP").await?;
    assert_eq!(garbage.status, 400, "{}", text(&garbage));

    // A well-formed offer of video that is not H.264.
    let (_pending, offer) = ReceiverPeer::offer(Default::default()).await?;
    let vp8 = offer.replace("H264/90000", "VP8/90000");
    let no_h264 = request(&server, "POST", "/cam/whip", &vp8).await?;
    assert_eq!(no_h264.status, 400, "{}", text(&no_h264));
    assert!(text(&no_h264).contains("H.264"), "{}", text(&no_h264));

    let unknown = request(&server, "POST", "/nope/whip", &offer).await?;
    assert_eq!(unknown.status, 404, "{}", text(&unknown));
    // The default stream's source is the test pattern: it takes no publisher.
    let not_whip = request(&server, "POST", "/whip", &offer).await?;
    assert_eq!(not_whip.status, 403, "{}", text(&not_whip));
    let no_session = request(&server, "DELETE", "/whip/resource/0123", "").await?;
    assert_eq!(no_session.status, 404);

    let state = server
        .wait_state(Duration::from_secs(5), |s| {
            s["whip"]["publishers"] == 0 && s["rtc"]["peers"] == 0
        })
        .await?;
    assert_eq!(cam(&state)["state"], "no_signal", "{state}");
    // The refused offers freed the stream: a real publisher gets it.
    let mut publisher = Publisher::start(&server).await?;
    assert!(publisher.next().await?["published"].is_string());
    assert_eq!(publisher.delete().await?["deleted"], 200);
    Ok(())
}

/// A publisher whose RTP carries random bytes instead of H.264: counted as malformed,
/// no picture made, the stream stays NO SIGNAL, and nothing is left once it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_sending_garbage_makes_no_pictures_and_leaves_nothing() -> Result<()> {
    let server = Server::start_with_config(CONFIG, &[]).await?;
    let mut publisher = Publisher::start_with(&server, &["--garbage"]).await?;
    assert!(publisher.next().await?["published"].is_string());
    let state = server
        .wait_state(Duration::from_secs(15), |s| {
            cam(s)["rtp"]["malformed_packets"].as_u64() > Some(10)
        })
        .await?;
    let rtp = &cam(&state)["rtp"];
    assert_eq!(rtp["pictures"], 0, "{rtp}");
    assert_eq!(cam(&state)["state"], "no_signal", "{state}");
    assert_eq!(publisher.delete().await?["deleted"], 200);
    server
        .wait_state(Duration::from_secs(10), |s| {
            s["whip"]["publishers"] == 0 && s["rtc"]["peers"] == 0
        })
        .await?;
    Ok(())
}
