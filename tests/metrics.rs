//! `/metrics` against the real server binary: a real WebRTC viewer (the Rust receiver
//! peer, with its own RTCP reports and NACKs) and a jmuxer-style `/h264` client are
//! followed by the counters, refusals are counted by reason, and every exposition is
//! validated by Prometheus's own `promtool check metrics`.

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use serde_json::json;
use support::{JanusClient, Server, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WEBRTC_VIEWERS: &str = r#"peregrine_viewers{stream="default",transport="webrtc"}"#;
const H264WS_VIEWERS: &str = r#"peregrine_viewers{stream="default",transport="h264ws"}"#;
const WEBRTC_BYTES: &str = r#"peregrine_sent_bytes_total{transport="webrtc"}"#;
const WEBRTC_PACKETS: &str = r#"peregrine_sent_packets_total{transport="webrtc"}"#;
const H264WS_BYTES: &str = r#"peregrine_sent_bytes_total{transport="h264ws"}"#;
const H264WS_PACKETS: &str = r#"peregrine_sent_packets_total{transport="h264ws"}"#;
const RTP_PACKETS: &str = "peregrine_webrtc_rtp_packets_sent_total";
const KEYFRAMES: &str = "peregrine_webrtc_keyframes_sent_total";
const TTFF_COUNT: &str = "peregrine_webrtc_time_to_first_frame_seconds_count";
const TTFF_SUM: &str = "peregrine_webrtc_time_to_first_frame_seconds_sum";
const SEND_DELAY_COUNT: &str = "peregrine_webrtc_send_delay_seconds_count";
const PLIS: &str = r#"peregrine_webrtc_keyframe_requests_total{type="pli"}"#;
const NACKS: &str = "peregrine_webrtc_nacks_received_total";
const RETRANSMITTED: &str = "peregrine_webrtc_retransmitted_packets_total";
const DIRECT_SRTP: &str = "peregrine_webrtc_direct_srtp_streams_total";
const DIRECT_SRTP_REFUSED: &str = "peregrine_webrtc_direct_srtp_refused_total";
const LOSS_COUNT: &str = "peregrine_webrtc_receiver_loss_ratio_count";
const JITTER_COUNT: &str = "peregrine_webrtc_receiver_jitter_seconds_count";
const PEERS: &str = "peregrine_webrtc_peers";
const SESSIONS: &str = "peregrine_janus_sessions";
const HANDLES: &str = "peregrine_janus_handles";
const SOURCE_UP: &str = r#"peregrine_source_up{stream="default",kind="testsrc"}"#;
const SOURCE_FRAMES: &str = r#"peregrine_source_frames_total{stream="default"}"#;

const DEADLINE: Duration = Duration::from_secs(30);

fn rejections(reason: &str) -> String {
    format!(r#"peregrine_rejections_total{{reason="{reason}"}}"#)
}

/// One scrape: every sample by its series (name and labels as exposed).
struct Scrape {
    text: String,
    samples: HashMap<String, f64>,
}

impl Scrape {
    fn parse(text: String) -> Result<Scrape> {
        let mut samples = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| anyhow!("not a sample: {line:?}"))?;
            let value: f64 = value
                .parse()
                .with_context(|| format!("value of {line:?}"))?;
            samples.insert(series.to_string(), value);
        }
        Ok(Scrape { text, samples })
    }

    /// A series' value; a missing series fails the test.
    fn get(&self, series: &str) -> f64 {
        match self.samples.get(series) {
            Some(v) => *v,
            None => panic!("no {series} in\n{}", self.text),
        }
    }
}

/// `GET /metrics` over a plain socket, to see the response's own header lines.
async fn scrape_raw(port: u16) -> Result<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8(response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of head in {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200 ") {
        bail!("/metrics answered {head}");
    }
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .ok_or_else(|| anyhow!("no Content-Type in {head}"))?;
    Ok((content_type, body.to_string()))
}

async fn scrape(server: &Server) -> Result<Scrape> {
    let (status, body) = support::http_request(server.http_port, "GET", "/metrics", None).await?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    Scrape::parse(String::from_utf8(body)?)
}

/// Scrape until `pred` holds, for up to [`DEADLINE`].
async fn wait_metrics(
    server: &Server,
    what: &str,
    pred: impl Fn(&Scrape) -> bool,
) -> Result<Scrape> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let m = scrape(server).await?;
        if pred(&m) {
            return Ok(m);
        }
        if Instant::now() > deadline {
            bail!("{what}: not seen within {DEADLINE:?} in\n{}", m.text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prometheus's own check of an exposition: it must parse, and lint without a word.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian's `prometheus` package \
                 (scripts/install-test-deps.sh does)"
            )
        });
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(text.as_bytes())
            .expect("promtool reads the exposition");
    }
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {} {said}\n--- exposition:\n{text}",
        out.status
    );
}

/// One request with an `Origin` header, over a plain socket; returns the status code.
async fn request_from_page(port: u16, origin: &str) -> Result<u16> {
    let body = r#"{"janus":"ping","transaction":"x"}"#;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!(
        "POST /janus HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("no status in {response:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_viewers_traffic_feedback_and_refusals() -> Result<()> {
    let server = Server::start(&[
        "--resolution",
        "640x360",
        "--max-viewers",
        "1",
        "--max-sessions-per-connection",
        "1",
        "--header-timeout",
        "2",
    ])
    .await?;

    // Before anyone watches: the format Prometheus asks for, valid, every series there.
    let (content_type, idle) = scrape_raw(server.http_port).await?;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    promtool_check(&idle);
    let idle = Scrape::parse(idle)?;
    assert_eq!(idle.get(WEBRTC_VIEWERS), 0.0);
    assert_eq!(idle.get(H264WS_VIEWERS), 0.0);
    assert_eq!(idle.get(TTFF_COUNT), 0.0);
    assert_eq!(idle.get(SOURCE_UP), 1.0);
    assert!(idle.get("process_resident_memory_bytes") > 1e6);
    assert!(idle.get("process_open_fds") >= 3.0);
    for reason in [
        "viewer_cap",
        "origin",
        "header_timeout",
        "session_cap_per_connection",
    ] {
        assert_eq!(idle.get(&rejections(reason)), 0.0, "{reason}");
    }

    // A WebRTC viewer joins through the Janus API and receives pictures.
    let (mut janus, mut peer) = support::join(&server).await?;
    tokio::time::timeout(DEADLINE, peer.next_frame())
        .await
        .context("no picture received")?
        .context("receiver closed")?;
    let watching = wait_metrics(&server, "viewer, keyframe and time to first frame", |m| {
        m.get(WEBRTC_VIEWERS) == 1.0
            && m.get(PEERS) == 1.0
            && m.get(TTFF_COUNT) == 1.0
            && m.get(KEYFRAMES) >= 1.0
            && m.get(SEND_DELAY_COUNT) >= 1.0
            && m.get(DIRECT_SRTP) == 1.0
    })
    .await?;
    assert_eq!(watching.get(DIRECT_SRTP_REFUSED), 0.0);
    assert_eq!(watching.get(SESSIONS), 1.0);
    assert_eq!(watching.get(HANDLES), 1.0);
    let ttff = watching.get(TTFF_SUM);
    assert!(
        ttff > 0.0 && ttff < DEADLINE.as_secs_f64(),
        "time to first frame {ttff} s"
    );
    assert!(watching.get(SOURCE_FRAMES) > 0.0);

    // Traffic counters grow between two scrapes while the viewer plays.
    let later = wait_metrics(&server, "bytes and packets growing", |m| {
        m.get(WEBRTC_BYTES) > watching.get(WEBRTC_BYTES)
            && m.get(WEBRTC_PACKETS) > watching.get(WEBRTC_PACKETS)
            && m.get(RTP_PACKETS) > watching.get(RTP_PACKETS)
    })
    .await?;
    assert!(later.get(WEBRTC_BYTES) > later.get(WEBRTC_PACKETS) * 12.0);

    // The viewer's RTCP: receiver reports, a PLI, and NACKs for packets lost on purpose.
    peer.send_pli();
    peer.drop_media(25);
    let feedback = wait_metrics(&server, "PLI, NACKs, retransmissions, reports", |m| {
        m.get(PLIS) >= 1.0
            && m.get(NACKS) >= 1.0
            && m.get(RETRANSMITTED) >= 1.0
            && m.get(LOSS_COUNT) >= 1.0
            && m.get(JITTER_COUNT) >= 1.0
    })
    .await?;
    peer.drop_media(0);
    let receiver = peer.stats().await.context("receiver stats")?;
    assert!(
        receiver.nacks_sent >= 1 && receiver.plis_sent >= 1,
        "{receiver:?}"
    );
    assert!(
        feedback.get(NACKS) <= receiver.nacks_sent as f64,
        "the server counts no more NACKs than the viewer sent: {receiver:?}"
    );

    // A jmuxer-style client on /h264.
    let url = format!("ws://127.0.0.1:{}/h264", server.http_port);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let mut received = 0usize;
    for _ in 0..3 {
        let msg = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .context("no /h264 message")?
            .context("/h264 closed")??;
        received += msg.into_data().len();
    }
    wait_metrics(&server, "the /h264 client and its bytes", |m| {
        m.get(H264WS_VIEWERS) == 1.0
            && m.get(H264WS_PACKETS) >= 3.0
            && m.get(H264WS_BYTES) >= received as f64
    })
    .await?;
    drop(ws);

    // Refusals, each counted under its reason.
    let mut second = JanusClient::connect(&server, Transport::LongPoll).await?;
    second.create_and_attach().await?;
    second.send(json!({"janus": "message", "body": {"request": "watch"}}));
    let refused = second.wait_for(DEADLINE, |m| m["janus"] == "event").await?;
    assert_eq!(
        refused["plugindata"]["data"]["error_code"], 429,
        "{refused}"
    );
    let reply = janus
        .request(json!({"janus": "create", "session_id": 0}))
        .await?;
    assert_eq!(reply["error"]["code"], 472, "{reply}");
    let status = request_from_page(server.http_port, "http://elsewhere.example").await?;
    assert_eq!(status, 403);
    // A connection that never sends a request is closed after --header-timeout.
    let mut silent = TcpStream::connect(("127.0.0.1", server.http_port)).await?;
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(DEADLINE, silent.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    let refusals = wait_metrics(&server, "refusals by reason", |m| {
        m.get(&rejections("viewer_cap")) == 1.0
            && m.get(&rejections("session_cap_per_connection")) == 1.0
            && m.get(&rejections("origin")) == 1.0
            && m.get(&rejections("header_timeout")) >= 1.0
    })
    .await?;
    promtool_check(&refusals.text);

    // The viewer leaves: the gauges come back to zero.
    peer.close();
    janus.destroy();
    second.destroy();
    let gone = wait_metrics(&server, "viewer gone", |m| {
        m.get(WEBRTC_VIEWERS) == 0.0
            && m.get(PEERS) == 0.0
            && m.get(H264WS_VIEWERS) == 0.0
            && m.get(SESSIONS) == 0.0
            && m.get(HANDLES) == 0.0
    })
    .await?;
    assert_eq!(gone.get(TTFF_COUNT), 1.0);
    promtool_check(&gone.text);
    Ok(())
}
