//! H.264 pushed as RTP (`--source rtp-listen://`) end to end: real ffmpeg sends RTP with
//! small packets (so most NAL units arrive as FU-A fragments), peregrine relays to a real
//! WebRTC receiver through the Janus API, and the receiver decodes what arrives. The
//! sender stops and another takes over; garbage datagrams arrive on the port meanwhile.
//! A publisher that listens for RTCP (as a WebRTC one does) gets keyframe requests.

mod support;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use peregrine::media::rtp::{self, RtpPacket};
use peregrine::rtc::packetizer::packetize;
use peregrine::source::annexb::AnnexBSplitter;
use peregrine::viewer::decoder::H264Decoder;
use serde_json::Value;
use support::decode::{decode_until, decode_while, KilledOnDrop};
use support::{join, Server};

/// The size of ffmpeg's pictures.
const FFMPEG_SIZE: (usize, usize) = (640, 360);

/// ffmpeg's test source as a camera would encode it (baseline, zero latency, a
/// keyframe every second), sent as RTP in packets of at most 600 bytes.
fn start_rtp_sender(port: u16) -> Result<KilledOnDrop> {
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=30"])
        .args(["-pix_fmt", "yuv420p", "-c:v", "libx264"])
        .args(["-profile:v", "baseline", "-tune", "zerolatency", "-g", "30"])
        .args(["-f", "rtp", "-pkt_size", "600"])
        .arg(format!("rtp://127.0.0.1:{port}"))
        // ffmpeg prints the session's SDP there.
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .context("start ffmpeg (install it with scripts/install-test-deps.sh)")?;
    Ok(KilledOnDrop(child))
}

fn source(state: &Value) -> &Value {
    &state["source"]
}

fn count(state: &Value, what: &str) -> u64 {
    source(state)["rtp"][what].as_u64().unwrap_or(0)
}

/// The port in `/state`'s source kind, once the source names the one it got.
fn listening_port(state: &Value) -> Option<u16> {
    let kind = source(state)["kind"].as_str()?;
    let port = kind.strip_prefix("rtp-listen://127.0.0.1:")?.parse().ok()?;
    (port != 0).then_some(port)
}

/// peregrine receiving RTP on a port the system picks; returns it and the port.
async fn listening_server() -> Result<(Server, u16)> {
    let server = Server::start(&["--source", "rtp-listen://127.0.0.1:0"]).await?;
    let state = server
        .wait_state(Duration::from_secs(10), |s| listening_port(s).is_some())
        .await?;
    let port = listening_port(&state).context("listen port")?;
    Ok((server, port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_from_ffmpeg_plays_and_a_new_sender_takes_over_after_no_signal() -> Result<()> {
    let (server, port) = listening_server().await?;
    let (_janus, mut peer) = join(&server).await?;
    let mut decoder = H264Decoder::new()?;
    let sender = start_rtp_sender(port)?;

    let got = decode_until(
        &mut peer,
        &mut decoder,
        60,
        0,
        FFMPEG_SIZE,
        Duration::from_secs(30),
    )
    .await?;
    println!("from the first sender: {got:?}");
    assert_eq!(got.other_size, 0, "{got:?}");
    let state = server
        .wait_state(Duration::from_secs(5), |s| source(s)["state"] == "live")
        .await?;
    let src = source(&state);
    println!("state while live: {src}");
    assert_eq!(
        (src["width"].as_u64(), src["height"].as_u64()),
        (Some(640), Some(360))
    );
    let from = src["rtp"]["sender"]
        .as_str()
        .context("no sender in /state")?;
    assert!(from.starts_with("127.0.0.1:"), "{src}");
    assert!(src["frames"].as_u64() > Some(30), "{src}");
    assert!(
        count(&state, "packets") > count(&state, "pictures"),
        "FU-A: {src}"
    );

    // The sender stops: NO SIGNAL, and nobody is named as sending.
    sender.kill();
    let state = server
        .wait_state(Duration::from_secs(10), |s| {
            source(s)["state"] == "no_signal" && source(s)["rtp"]["sender"].is_null()
        })
        .await?;
    println!("after the sender stopped: {}", source(&state));
    decode_until(
        &mut peer,
        &mut decoder,
        0,
        3,
        FFMPEG_SIZE,
        Duration::from_secs(10),
    )
    .await?;

    // Another sender (another source port) takes the stream; the same viewer decodes it.
    let restarted = Instant::now();
    let _sender = start_rtp_sender(port)?;
    let back = decode_until(
        &mut peer,
        &mut decoder,
        30,
        0,
        FFMPEG_SIZE,
        Duration::from_secs(20),
    )
    .await?;
    println!(
        "live again {} ms after the new sender started ({back:?})",
        restarted.elapsed().as_millis()
    );
    assert_eq!(back.other_size, 0, "{back:?}");
    let state = server.state().await?;
    assert_eq!(source(&state)["interruptions"], 1, "{state}");
    assert_ne!(
        source(&state)["rtp"]["sender"].as_str(),
        Some(from),
        "{state}"
    );
    Ok(())
}

/// Datagrams that are not RTP, and RTP whose payloads are not H.264.
fn garbage(n: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut not_rtp = Vec::new();
    let mut bad_payloads = Vec::new();
    for i in 0..n {
        let len = 1 + (next() % 1400) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        d[0] &= 0x3f; // RTP version 0
        not_rtp.push(d);
        let mut rtp = vec![
            0x80,
            96,
            (i >> 8) as u8,
            i as u8,
            0,
            0,
            (i / 4) as u8,
            0,
            1,
            2,
            3,
            4,
        ];
        rtp.extend((0..len).map(|_| next() as u8));
        bad_payloads.push(rtp);
    }
    (not_rtp, bad_payloads)
}

/// Send `datagrams` to `target` from `socket`, a batch at a time, over and over, until
/// `/state` matches `pred`: loopback drops what overflows the receive buffer of a
/// busy receiver, so a count is waited for, not assumed.
async fn send_until(
    server: &Server,
    socket: &UdpSocket,
    target: &str,
    datagrams: &[Vec<u8>],
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    for batch in datagrams.chunks(20).cycle() {
        for d in batch {
            socket.send_to(d, target)?;
        }
        let state = server.state().await?;
        if pred(&state) {
            return Ok(state);
        }
        if Instant::now() > deadline {
            bail!("state never matched: {}", source(&state));
        }
    }
    bail!("nothing to send")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_counted_and_the_stream_plays_on() -> Result<()> {
    let (server, port) = listening_server().await?;
    let (_janus, mut peer) = join(&server).await?;
    let mut decoder = H264Decoder::new()?;
    let target = format!("127.0.0.1:{port}");
    let (not_rtp, bad_payloads) = garbage(200);
    let mixed: Vec<Vec<u8>> = not_rtp
        .iter()
        .zip(&bad_payloads)
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();

    // Before anyone sends video: junk, and RTP with junk payloads, which makes its
    // sender the current one until it falls silent.
    let junk = UdpSocket::bind("127.0.0.1:0")?;
    let state = send_until(&server, &junk, &target, &mixed, |s| {
        count(s, "rejected_packets") >= 50 && count(s, "malformed_packets") >= 50
    })
    .await?;
    println!("after junk: {}", source(&state)["rtp"]);
    assert_eq!(source(&state)["state"], "no_signal", "{state}");
    decode_until(
        &mut peer,
        &mut decoder,
        0,
        2,
        FFMPEG_SIZE,
        Duration::from_secs(10),
    )
    .await?;

    // The junk sender is silent: a real one takes over and plays.
    let _sender = start_rtp_sender(port)?;
    decode_until(
        &mut peer,
        &mut decoder,
        30,
        0,
        FFMPEG_SIZE,
        Duration::from_secs(30),
    )
    .await?;

    // Junk from elsewhere while it plays: ignored, the video goes on.
    let other = UdpSocket::bind("127.0.0.1:0")?;
    let state = send_until(&server, &other, &target, &mixed, |s| {
        count(s, "ignored_packets") >= 50
    })
    .await?;
    println!(
        "after junk from a second address: {}",
        source(&state)["rtp"]
    );
    let got = decode_until(
        &mut peer,
        &mut decoder,
        60,
        0,
        FFMPEG_SIZE,
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(got.other_size, 0, "{got:?}");
    let state = server.state().await?;
    assert_eq!(source(&state)["state"], "live", "{state}");
    Ok(())
}

/// A WebRTC-style publisher: sends the pictures of an H.264 file as RTP (through
/// peregrine's own packetizer) at 30 fps, looping, and answers the RTCP picture loss
/// indications that come back as an encoder would, with a keyframe: it starts over at
/// the file's first picture, its only IDR. Stops when dropped.
struct Publisher {
    stop: Arc<AtomicBool>,
    plis: Arc<AtomicU64>,
    /// A PLI came: send the keyframe next.
    restart: Arc<AtomicBool>,
    /// Leave out one packet of the next picture that has several.
    drop_one: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

const PUBLISHER_SSRC: u32 = 0x1122_3344;

impl Publisher {
    fn start(target: String, h264: &[u8]) -> Result<Publisher> {
        let mut splitter = AnnexBSplitter::new();
        let mut pictures = Vec::new();
        splitter.push(h264, &mut pictures)?;
        splitter.flush(&mut pictures);
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let reader = socket.try_clone()?;
        reader.set_read_timeout(Some(Duration::from_millis(50)))?;
        let (stop, plis, restart, drop_one) = Default::default();
        let mut publisher = Publisher {
            stop,
            plis,
            restart,
            drop_one,
            threads: Vec::new(),
        };
        let (stop, plis) = (publisher.stop.clone(), publisher.plis.clone());
        let restart = publisher.restart.clone();
        publisher.threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                let Ok(n) = reader.recv(&mut buf) else {
                    continue;
                };
                let pli = n == 12 && buf[0] == 0x81 && buf[1] == 206;
                if pli && buf[8..12] == PUBLISHER_SSRC.to_be_bytes() {
                    plis.fetch_add(1, Ordering::Relaxed);
                    restart.store(true, Ordering::Relaxed);
                }
            }
        }));
        let (stop, drop_one) = (publisher.stop.clone(), publisher.drop_one.clone());
        let restart = publisher.restart.clone();
        publisher.threads.push(std::thread::spawn(move || {
            let (mut seq, mut ts) = (0u16, 0u32);
            let mut wire = Vec::new();
            let mut next = 0;
            while !stop.load(Ordering::Relaxed) {
                if restart.swap(false, Ordering::Relaxed) || next == pictures.len() {
                    next = 0;
                }
                let picture = &pictures[next];
                next += 1;
                let payloads = packetize(&picture.data, 300);
                let skip = payloads.len() > 2 && drop_one.swap(false, Ordering::Relaxed);
                ts = ts.wrapping_add(3000);
                for (i, p) in payloads.iter().enumerate() {
                    seq = seq.wrapping_add(1);
                    if skip && i == 1 {
                        continue;
                    }
                    let packet = RtpPacket {
                        marker: p.marker,
                        payload_type: 102,
                        sequence: seq,
                        timestamp: ts,
                        ssrc: PUBLISHER_SSRC,
                        payload: &p.payload,
                    };
                    wire.clear();
                    rtp::write(&packet, &mut wire);
                    let _ = socket.send_to(&wire, &target);
                }
                // A camera's pace.
                std::thread::sleep(Duration::from_millis(33));
            }
        }));
        Ok(publisher)
    }

    fn plis(&self) -> u64 {
        self.plis.load(Ordering::Relaxed)
    }

    /// Wait until more than `than` PLIs have come back.
    async fn wait_plis(&self, than: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        while self.plis() <= than {
            if Instant::now() > deadline {
                bail!("no keyframe request beyond {than} in {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(self.plis())
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// 10 s of ffmpeg's test source, 160x120, with one IDR: its stream has no keyframe
/// unless the publisher is asked for one.
fn long_gop_h264() -> Result<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=30",
            "-t",
            "10",
        ])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
        ])
        .args(["-tune", "zerolatency", "-g", "300", "-keyint_min", "300"])
        .args(["-sc_threshold", "0", "-f", "h264", "-"])
        .stdin(Stdio::null())
        .output()
        .context("run ffmpeg (install it with scripts/install-test-deps.sh)")?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!("ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_and_losses_reach_the_publisher_as_pli() -> Result<()> {
    let (server, port) = listening_server().await?;
    let h264 = long_gop_h264()?;
    let publisher = Publisher::start(format!("127.0.0.1:{port}"), &h264)?;
    server
        .wait_state(Duration::from_secs(10), |s| source(s)["state"] == "live")
        .await?;

    // A viewer asks for a keyframe (RTCP PLI to peregrine): the publisher is asked.
    let (_janus, mut peer) = join(&server).await?;
    let sent = count(&server.state().await?, "keyframe_requests");
    let deadline = Instant::now() + Duration::from_secs(10);
    while publisher.plis() <= sent {
        if Instant::now() > deadline {
            let state = server.state().await?;
            bail!(
                "the viewer's PLI never reached the publisher ({} received): {} {}",
                publisher.plis(),
                state["rtc"],
                source(&state)
            );
        }
        peer.send_pli();
        let _ = publisher.wait_plis(sent, Duration::from_millis(300)).await;
    }
    println!(
        "PLIs: {sent} sent before the viewer asked, {} after",
        publisher.plis()
    );

    // A packet lost on the way: the picture is dropped and a keyframe asked for.
    let state = server.state().await?;
    let (sent, keyframes) = (
        count(&state, "keyframe_requests"),
        source(&state)["keyframes"].clone(),
    );
    publisher.drop_one.store(true, Ordering::Relaxed);
    let state = server
        .wait_state(Duration::from_secs(5), |s| count(s, "lost_packets") >= 1)
        .await?;
    println!("after a loss: {}", source(&state)["rtp"]);
    assert!(count(&state, "dropped_pictures") >= 1, "{state}");
    publisher.wait_plis(sent, Duration::from_secs(5)).await?;
    // The file's own next IDR is up to 10 s away: a keyframe soon is the one asked for.
    server
        .wait_state(Duration::from_secs(3), |s| {
            source(s)["keyframes"].as_u64() > keyframes.as_u64()
        })
        .await?;

    // The stream plays on from the keyframe the publisher sent on request.
    let mut decoder = H264Decoder::new()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut decoded = 0;
    while decoded < 30 {
        let Ok(Some(frame)) = tokio::time::timeout_at(deadline, peer.next_frame()).await else {
            bail!("timed out after {decoded} pictures");
        };
        if let Ok(Some(picture)) = decoder.decode(&frame.data) {
            assert_eq!((picture.width, picture.height), (160, 120));
            decoded += 1;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sender_reaches_nobody_until_the_first_falls_silent() -> Result<()> {
    let (server, port) = listening_server().await?;
    let (_janus, mut peer) = join(&server).await?;
    let mut decoder = H264Decoder::new()?;
    let sender = start_rtp_sender(port)?;
    decode_until(
        &mut peer,
        &mut decoder,
        30,
        0,
        FFMPEG_SIZE,
        Duration::from_secs(30),
    )
    .await?;

    // Real video at 160x120 from a second address while ffmpeg sends 640x360.
    let intruder = Publisher::start(format!("127.0.0.1:{port}"), &long_gop_h264()?)?;
    let during = decode_until(
        &mut peer,
        &mut decoder,
        90,
        0,
        FFMPEG_SIZE,
        Duration::from_secs(30),
    )
    .await?;
    let state = server.state().await?;
    println!("while two send: {during:?}, {}", source(&state)["rtp"]);
    assert_eq!(
        during.other_size, 0,
        "the second sender's pictures were shown"
    );
    assert!(count(&state, "ignored_packets") > 0, "{state}");
    assert_eq!(
        intruder.plis(),
        0,
        "keyframe requests go to the current sender only"
    );

    // ffmpeg stops: after its silence the second sender has the stream.
    sender.kill();
    let taken = decode_while(
        &mut peer,
        &mut decoder,
        FFMPEG_SIZE,
        |got| got.other_size >= 30,
        Duration::from_secs(20),
    )
    .await?;
    println!("after the first sender stopped: {taken:?}");
    let state = server.state().await?;
    assert_eq!(
        (
            source(&state)["width"].as_u64(),
            source(&state)["height"].as_u64()
        ),
        (Some(160), Some(120))
    );
    Ok(())
}
