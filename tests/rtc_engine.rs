//! The WebRTC engine against real viewer peers over 127.0.0.1, fed with real H.264.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openh264::decoder::Decoder;
use openh264::encoder::{Encoder, FrameType};
use openh264::formats::{YUVBuffer, YUVSource};

use peregrine::media::{clock, h264, Hub, Picture};
use peregrine::rtc::{PeerEvent, PeerOptions, RemoteCandidate, RtcConfig, RtcEngine, RtcError};
use peregrine::viewer::depacketizer::ReceivedFrame;
use peregrine::viewer::receiver::ReceiverPeer;
use tokio::sync::mpsc;

const WIDTH: usize = 320;
const HEIGHT: usize = 240;
const PACKET_SIZE: usize = 1000;

/// Encodes a moving pattern at ~30 fps into the hub, honouring keyframe requests.
struct Feeder {
    stop: Arc<AtomicBool>,
    honor_keyframe_requests: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Feeder {
    fn start(hub: Arc<Hub>) -> Feeder {
        Feeder::sized(hub, WIDTH, HEIGHT)
    }

    /// A feeder of `width`×`height` pictures.
    fn sized(hub: Arc<Hub>, width: usize, height: usize) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let honor = Arc::new(AtomicBool::new(true));
        let (stop2, honor2) = (stop.clone(), honor.clone());
        let thread = std::thread::spawn(move || {
            let mut encoder = Encoder::new().expect("encoder");
            let (mut sps, mut pps): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
            let start = Instant::now();
            let mut n: u64 = 0;
            // Pictures published: the encoder may skip one (rate control), and a source
            // numbers what it publishes, so a skipped one is no gap.
            let mut seq: u64 = 0;
            while !stop2.load(Ordering::Relaxed) {
                let yuv = paint(n, width, height);
                if honor2.load(Ordering::Relaxed) && hub.keyframe_wanted() {
                    encoder.force_intra_frame();
                }
                let capture_us = clock::monotonic_us();
                let bitstream = encoder.encode(&yuv).expect("encode");
                let key = bitstream.frame_type() == FrameType::IDR;
                let data = bitstream.to_vec();
                for nal in h264::nal_units(&data) {
                    match h264::nal_type(nal) {
                        Some(h264::NalType::Sps) => sps = Some(nal.to_vec()),
                        Some(h264::NalType::Pps) => pps = Some(nal.to_vec()),
                        _ => {}
                    }
                }
                let mut au = Vec::new();
                let has_params = h264::nal_units(&data)
                    .any(|nal| h264::nal_type(nal) == Some(h264::NalType::Sps));
                // Every IDR must carry SPS+PPS in band: the offer has no sprop-parameter-sets.
                if key && !has_params {
                    for p in [&sps, &pps].into_iter().flatten() {
                        au.extend_from_slice(&[0, 0, 0, 1]);
                        au.extend_from_slice(p);
                    }
                }
                au.extend_from_slice(&data);
                if !data.is_empty() {
                    seq += 1;
                    hub.publish(Picture {
                        seq,
                        ..Picture::video(
                            Bytes::from(au),
                            key,
                            (width as u32, height as u32),
                            capture_us,
                        )
                    });
                }
                n += 1;
                let next = start + Duration::from_micros(n * 33_333);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        Feeder {
            stop,
            honor_keyframe_requests: honor,
            thread: Some(thread),
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A moving gradient with a bouncing block, so every frame differs.
fn paint(n: u64, width: usize, height: usize) -> YUVBuffer {
    let mut data = vec![0u8; width * height * 3 / 2];
    let t = n as usize;
    let bx = (t * 4) % (width - 32);
    for y in 0..height {
        for x in 0..width {
            let inside = x >= bx && x < bx + 32 && (y / 32) % 2 == 0;
            data[y * width + x] = if inside {
                235
            } else {
                ((x + y + t) % 200 + 16) as u8
            };
        }
    }
    let chroma = &mut data[width * height..];
    for (i, c) in chroma.iter_mut().enumerate() {
        *c = (128 + ((i + t) % 64) as i32 - 32) as u8;
    }
    YUVBuffer::from_vec(data, width, height)
}

fn config() -> RtcConfig {
    RtcConfig {
        rtp_packet_size: PACKET_SIZE,
        ..RtcConfig::loopback(peregrine::rtc::DEFAULT_MAX_VIEWERS)
    }
}

struct Viewer {
    id: u64,
    peer: ReceiverPeer,
    events: mpsc::UnboundedReceiver<PeerEvent>,
}

async fn connect_viewer(engine: &RtcEngine, hub: &Arc<Hub>) -> Viewer {
    let (tx, events) = mpsc::unbounded_channel();
    let (id, offer) = engine
        .create_offer(PeerOptions::new(hub.clone()), tx)
        .await
        .expect("offer");
    let (peer, answer) = ReceiverPeer::answer(&offer)
        .await
        .expect("receiver answers");
    engine
        .apply_answer(id, &answer)
        .await
        .expect("answer applies");
    Viewer { id, peer, events }
}

/// A viewer of `hub`'s stream whose connection is up.
async fn connected_viewer(engine: &RtcEngine, hub: &Arc<Hub>) -> Viewer {
    let mut v = connect_viewer(engine, hub).await;
    v.peer
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("connects");
    v
}

async fn frames(peer: &mut ReceiverPeer, count: usize, within: Duration) -> Vec<ReceivedFrame> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < count {
        match tokio::time::timeout_at(deadline, peer.next_frame()).await {
            Ok(Some(f)) => out.push(f),
            Ok(None) => panic!("receiver closed after {} frames", out.len()),
            Err(_) => panic!("only {} of {count} frames within {within:?}", out.len()),
        }
    }
    out
}

async fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

fn decode_all(frames: &[ReceivedFrame]) -> usize {
    decode_all_sized(frames, (WIDTH, HEIGHT))
}

/// Decode `frames`, each picture of `size`; returns the pictures decoded.
fn decode_all_sized(frames: &[ReceivedFrame], size: (usize, usize)) -> usize {
    let mut decoder = Decoder::new().expect("decoder");
    let mut pictures = 0;
    for (i, f) in frames.iter().enumerate() {
        match decoder.decode(&f.data) {
            Ok(Some(pic)) => {
                assert_eq!(pic.dimensions(), size, "frame {i}");
                pictures += 1;
            }
            Ok(None) => {}
            Err(e) => panic!("frame {i} does not decode: {e}"),
        }
    }
    pictures
}

fn check_packets(frames: &[ReceivedFrame]) {
    for f in frames {
        assert!(
            f.packet_sizes.iter().all(|&s| s <= PACKET_SIZE),
            "packet over {PACKET_SIZE} bytes: {:?}",
            f.packet_sizes
        );
        let last = f.markers.len() - 1;
        for (i, &m) in f.markers.iter().enumerate() {
            assert_eq!(m, i == last, "marker on packet {i} of {}", f.markers.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_receive_decodable_video() {
    let hub = Hub::new(30);
    let feeder = Feeder::start(hub.clone());
    assert!(wait_until(Duration::from_secs(5), || hub.params().is_some()).await);
    let engine = RtcEngine::start(config()).await.expect("engine starts");

    let mut viewers = Vec::new();
    for _ in 0..3 {
        viewers.push(connect_viewer(&engine, &hub).await);
    }
    for v in &mut viewers {
        v.peer
            .wait_connected(Duration::from_secs(10))
            .await
            .expect("connects");
        let ev = tokio::time::timeout(Duration::from_secs(5), v.events.recv()).await;
        assert_eq!(ev.ok().flatten(), Some(PeerEvent::Connected));
    }
    assert!(wait_until(Duration::from_secs(2), || engine.stats().connected == 3).await);

    let now_ntp = clock::realtime_us_to_ntp(clock::realtime_us());
    for v in &mut viewers {
        let got = frames(&mut v.peer, 60, Duration::from_secs(10)).await;
        assert!(
            h264::nal_units(&got[0].data).any(|n| h264::nal_type(n) == Some(h264::NalType::Sps)),
            "a viewer starts at a keyframe with SPS"
        );
        assert!(decode_all(&got) >= 60, "60 pictures decode");
        check_packets(&got);
        let abs = got[0]
            .abs_capture_time
            .expect("abs-capture-time on the first packet");
        let diff_s = (abs as i64 - now_ntp as i64).abs() >> 32;
        assert!(diff_s < 10, "abs-capture-time near now ({diff_s} s off)");
        // 90 kHz timestamps: ~3000 ticks per frame at 30 fps
        let span = got[59].rtp_timestamp.wrapping_sub(got[0].rtp_timestamp);
        assert!(
            (100_000..300_000).contains(&span),
            "59 frames span {span} ticks"
        );
    }
    assert!(engine.stats().rtp_packets_sent > 180);
    let stats = engine.stats();
    assert_eq!(
        (stats.direct_srtp_streams, stats.direct_srtp_refused),
        (3, 0),
        "each viewer's video is encrypted by the engine itself once connected"
    );

    // The sender reports map the RTP clock to the wall clock as the pictures were
    // captured: a picture's RTP timestamp, through the latest report, gives back the
    // capture time its abs-capture-time extension carries.
    for v in &mut viewers {
        let got = frames(&mut v.peer, 5, Duration::from_secs(5)).await;
        let stats = v.peer.stats().await.expect("receiver stats");
        let (sr_ntp, sr_rtp) = stats.video_sender_report.expect("a sender report");
        for f in &got {
            let abs = f.abs_capture_time.expect("abs-capture-time") as i128;
            let ticks = i128::from(f.rtp_timestamp.wrapping_sub(sr_rtp) as i32);
            let mapped = i128::from(sr_ntp) + (ticks << 32) / 90_000;
            let off_us = ((mapped - abs) * 1_000_000) >> 32;
            assert!(
                off_us.abs() < 2_000,
                "the report maps a picture {off_us} µs away from its capture time"
            );
        }
    }

    // A malformed answer is refused and harms no one.
    let (tx, _bad_events) = mpsc::unbounded_channel();
    let (bad_id, _) = engine
        .create_offer(PeerOptions::new(hub.clone()), tx)
        .await
        .expect("offer");
    let err = engine
        .apply_answer(bad_id, "this is not SDP")
        .await
        .unwrap_err();
    assert!(matches!(err, RtcError::InvalidSdp(_)), "{err:?}");
    let err = engine.apply_answer(bad_id, "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:x\r\na=ice-pwd:y\r\na=fingerprint:sha-256 zz\r\n").await.unwrap_err();
    assert!(matches!(err, RtcError::InvalidSdp(_)), "{err:?}");
    assert!(matches!(
        engine.apply_answer(9999, "v=0").await,
        Err(RtcError::NoSuchPeer)
    ));
    for v in &mut viewers {
        frames(&mut v.peer, 10, Duration::from_secs(5)).await;
    }

    // A PLI reaches the hub as a keyframe request.
    pause_keyframes(&feeder, &hub).await;
    let before = engine.stats().keyframe_requests;
    viewers[0].peer.send_pli();
    assert!(
        wait_until(Duration::from_secs(3), || engine.stats().keyframe_requests
            > before)
        .await,
        "PLI counted"
    );
    assert!(hub.keyframe_wanted(), "PLI turned into a keyframe request");
    feeder
        .honor_keyframe_requests
        .store(true, Ordering::Relaxed);

    // close_peer stops delivery; the count returns to 0.
    let closed = viewers.remove(0);
    engine.close_peer(closed.id, "test");
    engine.close_peer(bad_id, "test");
    let mut closed_peer = closed.peer;
    assert!(
        wait_until(Duration::from_secs(3), || engine.stats().peers
            == viewers.len())
        .await,
        "close_peer removes the peers: {:?}",
        engine.stats()
    );
    // Pictures already on their way may still land; none captured from now on may.
    let closed_at = clock::realtime_us_to_ntp(clock::realtime_us());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut late = Vec::new();
    while let Some(frame) = closed_peer.try_next_frame() {
        late.push(frame.abs_capture_time.expect("abs-capture-time"));
    }
    assert!(
        late.iter().all(|&t| t < closed_at),
        "no frames after close_peer: {} of {} captured after it",
        late.iter().filter(|&&t| t >= closed_at).count(),
        late.len()
    );
    for v in &mut viewers {
        frames(&mut v.peer, 10, Duration::from_secs(5)).await;
        engine.close_peer(v.id, "test");
    }
    assert!(wait_until(Duration::from_secs(2), || engine.stats().peers == 0).await);
    assert_eq!(engine.stats().connected, 0);
    // The engine drops its subscription on its next turn after the last peer goes.
    assert!(
        wait_until(Duration::from_secs(2), || hub.info().subscribers == 0).await,
        "no viewers, no subscription"
    );
    engine.shutdown().await;
    drop(feeder);
}

/// Stop the feeder from answering keyframe requests, at a moment when none is pending,
/// so a new request stays visible in the hub.
async fn pause_keyframes(feeder: &Feeder, hub: &Arc<Hub>) {
    for _ in 0..10 {
        feeder
            .honor_keyframe_requests
            .store(true, Ordering::Relaxed);
        assert!(wait_until(Duration::from_secs(3), || !hub.keyframe_wanted()).await);
        feeder
            .honor_keyframe_requests
            .store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !hub.keyframe_wanted() {
            return;
        }
    }
    panic!("the hub keeps asking for keyframes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_candidates_orientation_garbage_and_hangup() {
    let hub = Hub::new(30);
    let _feeder = Feeder::start(hub.clone());
    assert!(wait_until(Duration::from_secs(5), || hub.params().is_some()).await);
    let engine = RtcEngine::start(config()).await.expect("engine starts");

    let (tx, mut events) = mpsc::unbounded_channel();
    let opts = PeerOptions {
        orientation: 90,
        ..PeerOptions::new(hub.clone())
    };
    let (id, offer) = engine.create_offer(opts, tx).await.expect("offer");
    let sps = hub.params().expect("params").sps;
    let expected_profile = format!(
        "profile-level-id={:02x}{:02x}{:02x}",
        sps[1], sps[2], sps[3]
    );
    for needle in [
        "a=group:BUNDLE",
        "a=rtcp-mux",
        "a=setup:actpass",
        "a=ice-ufrag:",
        "a=ice-pwd:",
        "a=fingerprint:sha-256",
        "a=sendonly",
        "a=rtpmap:96 H264/90000",
        "packetization-mode=1",
        expected_profile.as_str(),
        "a=rtcp-fb:96 nack pli",
        "a=rtcp-fb:96 ccm fir",
        "a=extmap:1 urn:3gpp:video-orientation",
        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
        "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time",
        "a=ssrc:",
        "127.0.0.1",
    ] {
        assert!(offer.contains(needle), "offer lacks {needle:?}:\n{offer}");
    }

    // The answer's candidates arrive by trickle, before the answer itself, plus one that a
    // loopback-bound engine must ignore.
    let (mut peer, answer) = ReceiverPeer::answer(&offer).await.expect("answer");
    let candidates: Vec<String> = answer
        .lines()
        .filter_map(|l| l.strip_prefix("a="))
        .filter(|l| l.starts_with("candidate:"))
        .map(str::to_string)
        .collect();
    assert!(!candidates.is_empty());
    let bare_answer: String = answer
        .lines()
        .filter(|l| !l.starts_with("a=candidate:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    engine.add_remote_candidate(
        id,
        RemoteCandidate::Candidate("candidate:1 1 udp 2130706431 192.0.2.1 9 typ host".to_string()),
    );
    for c in candidates {
        engine.add_remote_candidate(id, RemoteCandidate::Candidate(c));
    }
    engine.add_remote_candidate(id, RemoteCandidate::Completed);
    engine
        .apply_answer(id, &bare_answer)
        .await
        .expect("answer applies");
    assert!(matches!(
        engine.apply_answer(id, &bare_answer).await,
        Err(RtcError::NoOffer)
    ));

    peer.wait_connected(Duration::from_secs(10))
        .await
        .expect("connects through trickled candidates");
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert_eq!(ev.ok().flatten(), Some(PeerEvent::Connected));

    // Garbage on the shared socket: random bytes, a STUN-looking packet for an unknown
    // ufrag, an empty datagram.
    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let target = engine.local_addr();
    let mut fake_stun = vec![0, 1, 0, 12, 0x21, 0x12, 0xa4, 0x42];
    fake_stun.extend_from_slice(&[1; 12]);
    fake_stun.extend_from_slice(&[0, 6, 0, 7]);
    fake_stun.extend_from_slice(b"nobody:x\0");
    for d in [
        &[0xde, 0xad, 0xbe, 0xef][..],
        &fake_stun,
        &[],
        &[0x80; 1400],
    ] {
        junk.send_to(d, target).await.expect("send");
    }

    let got = frames(&mut peer, 30, Duration::from_secs(10)).await;
    assert!(decode_all(&got) >= 30);
    check_packets(&got);
    for f in &got {
        assert_eq!(
            f.video_orientation,
            Some(3),
            "90° counter-clockwise is CVO 270° (R=3)"
        );
    }

    // The viewer hangs up (DTLS close_notify): the engine reports the peer closed.
    peer.close();
    let ev = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert!(
        matches!(&ev, Ok(Some(PeerEvent::Closed { reason })) if reason == "DTLS alert"),
        "closed viewer is reported: {ev:?}"
    );
    assert!(wait_until(Duration::from_secs(2), || engine.stats().peers == 0).await);
    engine.shutdown().await;
}

/// A viewer joining mid-GOP starts at once from the cached GOP: the keyframe another
/// viewer got, then every picture since, in order, all decodable, then live ones. The
/// source is told to ignore keyframe requests, so without the catch-up the newcomer would
/// get no decodable picture at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joining_mid_gop_gets_the_cached_keyframe_and_the_pictures_since() {
    let hub = Hub::new(30);
    let feeder = Feeder::start(hub.clone());
    assert!(wait_until(Duration::from_secs(5), || hub.params().is_some()).await);
    let engine = RtcEngine::start(config()).await.expect("engine starts");
    let mut first = connected_viewer(&engine, &hub).await;
    let start = frames(&mut first.peer, 1, Duration::from_secs(10)).await;
    assert!(
        h264::access_unit_is_key(&start[0].data),
        "first viewer starts at a keyframe"
    );
    let key_time = start[0].abs_capture_time.expect("abs-capture-time");
    // No keyframe from now on: a newcomer can only start from the cache.
    pause_keyframes(&feeder, &hub).await;
    let since = frames(&mut first.peer, 5, Duration::from_secs(5)).await;
    assert!(since.iter().all(|f| !h264::access_unit_is_key(&f.data)));

    let mut second = connected_viewer(&engine, &hub).await;
    let got = frames(&mut second.peer, 15, Duration::from_secs(10)).await;
    assert!(
        h264::access_unit_is_key(&got[0].data),
        "the newcomer starts at a keyframe"
    );
    assert_eq!(
        got[0].abs_capture_time,
        Some(key_time),
        "it is the keyframe the first viewer got, from the cache"
    );
    let times: Vec<u64> = got
        .iter()
        .map(|f| f.abs_capture_time.expect("abs-capture-time"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "the cached pictures come in order, then live ones: {times:?}"
    );
    for f in &since {
        let t = f.abs_capture_time.expect("abs-capture-time");
        assert!(times.contains(&t), "cached picture {t} was skipped");
    }
    assert_eq!(decode_all(&got), 15, "every picture decodes");
    assert!(
        got[1..].iter().all(|f| !h264::access_unit_is_key(&f.data)),
        "no second keyframe was needed"
    );
    drop(feeder);
}

/// One engine serves two streams: each viewer gets only the pictures of the stream it
/// watches, and a stream's hub has a subscriber only while someone watches it, so an
/// unwatched source idles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_viewer_gets_its_own_stream_and_an_unwatched_stream_idles() {
    const SMALL: (usize, usize) = (160, 96);
    let (big_hub, small_hub) = (Hub::new(30), Hub::new(30));
    let _big = Feeder::start(big_hub.clone());
    let _small = Feeder::sized(small_hub.clone(), SMALL.0, SMALL.1);
    assert!(
        wait_until(Duration::from_secs(5), || big_hub.params().is_some()
            && small_hub.params().is_some())
        .await
    );
    let engine = RtcEngine::start(config()).await.expect("engine starts");
    assert!(!big_hub.has_subscribers() && !small_hub.has_subscribers());

    let mut big = connected_viewer(&engine, &big_hub).await;
    assert!(big_hub.has_subscribers(), "a watched stream is subscribed");
    assert!(
        !small_hub.has_subscribers(),
        "a stream nobody watches has no subscriber"
    );
    // Decoded at the end as one sequence: later batches continue the first.
    let mut got_big = frames(&mut big.peer, 20, Duration::from_secs(10)).await;

    let mut small = connected_viewer(&engine, &small_hub).await;
    assert!(small_hub.has_subscribers());
    let (more_big, got_small) = tokio::join!(
        frames(&mut big.peer, 20, Duration::from_secs(10)),
        frames(&mut small.peer, 20, Duration::from_secs(10)),
    );
    got_big.extend(more_big);
    assert_eq!(
        decode_all_sized(&got_small, SMALL),
        20,
        "the second viewer gets the second stream's pictures only"
    );

    engine.close_peer(small.id, "test");
    assert!(
        wait_until(Duration::from_secs(2), || !small_hub.has_subscribers()).await,
        "the stream's last viewer gone, its hub has no subscriber"
    );
    assert!(big_hub.has_subscribers());
    got_big.extend(frames(&mut big.peer, 10, Duration::from_secs(5)).await);
    assert_eq!(
        decode_all_sized(&got_big, (WIDTH, HEIGHT)),
        50,
        "the first viewer keeps getting its own stream's pictures"
    );
    engine.close_peer(big.id, "test");
    assert!(wait_until(Duration::from_secs(2), || !big_hub.has_subscribers()).await);
    engine.shutdown().await;
}

/// WHEP's direction: the viewer offers, the engine answers. The viewer gets the same
/// stream as an offered-to viewer (starting at a keyframe with SPS, decodable, packets
/// within the size), and the peer is an ordinary one: counted, connected, closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_offers_gets_an_answer_and_the_stream() {
    let hub = Hub::new(30);
    let _feeder = Feeder::start(hub.clone());
    assert!(wait_until(Duration::from_secs(5), || hub.params().is_some()).await);
    let engine = RtcEngine::start(config()).await.expect("engine starts");

    let (pending, offer) = ReceiverPeer::offer(Default::default())
        .await
        .expect("receiver offers");
    let (tx, mut events) = mpsc::unbounded_channel();
    let (id, answer) = engine
        .answer_offer(PeerOptions::new(hub.clone()), &offer, tx)
        .await
        .expect("engine answers");
    assert!(answer.contains("a=sendonly"), "{answer}");
    assert!(answer.contains("a=candidate:"), "complete answer: {answer}");
    assert!(answer.contains("a=setup:passive"), "{answer}");
    assert!(answer.contains("H264/90000"), "{answer}");
    let mut peer = pending.accept(&answer).expect("answer applies");
    peer.wait_connected(Duration::from_secs(10))
        .await
        .expect("connects");
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert_eq!(ev.ok().flatten(), Some(PeerEvent::Connected));
    assert!(wait_until(Duration::from_secs(2), || engine.stats().connected == 1).await);

    let got = frames(&mut peer, 30, Duration::from_secs(10)).await;
    assert!(
        h264::nal_units(&got[0].data).any(|n| h264::nal_type(n) == Some(h264::NalType::Sps)),
        "the viewer starts at a keyframe with SPS"
    );
    assert!(decode_all(&got) >= 30, "30 pictures decode");
    check_packets(&got);

    engine.close_peer(id, "test over");
    assert!(wait_until(Duration::from_secs(2), || engine.stats().peers == 0).await);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_the_engine_cannot_answer_are_refused_and_leave_no_peer() {
    let hub = Hub::new(30);
    let engine = RtcEngine::start(config()).await.expect("engine starts");
    let (_pending, offer) = ReceiverPeer::offer(Default::default())
        .await
        .expect("receiver offers");
    let vp8 = offer
        .replace("H264/90000", "VP8/90000")
        .replace("packetization-mode=1", "x=1");
    for (what, sdp) in [
        ("garbage", "hello".to_string()),
        ("no H.264", vp8),
        ("no video", offer.replace("m=video ", "m=text ")),
    ] {
        let (tx, _events) = mpsc::unbounded_channel();
        let refused = engine
            .answer_offer(PeerOptions::new(hub.clone()), &sdp, tx)
            .await;
        assert!(
            matches!(refused, Err(RtcError::Unacceptable(_))),
            "{what}: {refused:?}"
        );
    }
    assert_eq!(engine.stats().peers, 0);
    assert!(
        !hub.has_subscribers(),
        "a refused offer does not start the source"
    );
    engine.shutdown().await;
}

/// Reception counters of `peer` once `cond` holds for them (polled), or a panic.
async fn stats_when(
    peer: &ReceiverPeer,
    within: Duration,
    what: &str,
    cond: impl Fn(&peregrine::viewer::receiver::ReceiverStats) -> bool,
) -> peregrine::viewer::receiver::ReceiverStats {
    let deadline = Instant::now() + within;
    loop {
        let stats = peer.stats().await.expect("receiver open");
        if cond(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "{what}: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_a_viewer_loses_are_sent_again_on_its_nacks() {
    let hub = Hub::new(30);
    let _feeder = Feeder::start(hub.clone());
    assert!(wait_until(Duration::from_secs(5), || hub.params().is_some()).await);
    let engine = RtcEngine::start(config()).await.expect("engine starts");
    let mut v = connected_viewer(&engine, &hub).await;
    frames(&mut v.peer, 5, Duration::from_secs(10)).await;

    // Every 10th video datagram is lost on the way in, for 400 packets.
    let before = v.peer.stats().await.expect("stats");
    v.peer.drop_media(10);
    let during = stats_when(&v.peer, Duration::from_secs(30), "400 packets", |s| {
        s.packets_expected >= before.packets_expected + 400
    })
    .await;
    v.peer.drop_media(0);
    let dropped = (during.packets_expected - before.packets_expected) / 10;
    // The NACKs for the last losses are answered too once nothing is dropped. Not all of
    // them need be: on a loaded machine a NACK can come after its packet left the history.
    let after = stats_when(&v.peer, Duration::from_secs(30), "losses repaired", |s| {
        s.packets_expected >= during.packets_expected + 100
            && s.packets_lost() <= before.packets_lost() + dropped / 4
    })
    .await;
    assert!(after.nacks_sent > before.nacks_sent, "{after:?}");
    let resent = engine.stats().retransmitted_packets;
    assert!(
        resent >= dropped / 2,
        "{resent} packets sent again for {dropped} lost"
    );
    // From the next keyframe on, the pictures decode.
    v.peer.send_pli();
    let mut got = Vec::new();
    while got.len() < 10 {
        let frame = frames(&mut v.peer, 1, Duration::from_secs(10))
            .await
            .remove(0);
        let key =
            h264::nal_units(&frame.data).any(|n| h264::nal_type(n) == Some(h264::NalType::Sps));
        if key || !got.is_empty() {
            got.push(frame);
        }
    }
    assert_eq!(decode_all(&got), 10, "pictures decode after the losses");
    engine.shutdown().await;
}

/// The UDP ports of the host candidates in an SDP.
fn candidate_ports(sdp: &str) -> Vec<u16> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .filter_map(|l| l.split(' ').nth(5)?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_spread_over_shards_on_one_port_and_all_get_pictures() {
    let hub = Hub::new(30);
    let _feeder = Feeder::start(hub.clone());
    assert!(wait_until(Duration::from_secs(5), || hub.params().is_some()).await);
    let engine = RtcEngine::start(RtcConfig {
        shards: 3,
        ..config()
    })
    .await
    .expect("engine starts");
    let port = engine.local_addr().port();

    // Viewers the engine offers to (Janus) and viewers that offer (WHEP, whose ICE
    // credentials the stack makes), in turns.
    let mut viewers = Vec::new();
    for i in 0..9 {
        let (tx, events) = mpsc::unbounded_channel();
        let (id, peer, ours) = if i % 3 == 2 {
            let (pending, offer) = ReceiverPeer::offer(Default::default())
                .await
                .expect("viewer offers");
            let (id, answer) = engine
                .answer_offer(PeerOptions::new(hub.clone()), &offer, tx)
                .await
                .expect("engine answers");
            (id, pending.accept(&answer).expect("answer applies"), answer)
        } else {
            let (id, offer) = engine
                .create_offer(PeerOptions::new(hub.clone()), tx)
                .await
                .expect("offer");
            let (peer, answer) = ReceiverPeer::answer(&offer).await.expect("answers");
            engine.apply_answer(id, &answer).await.expect("applies");
            (id, peer, offer)
        };
        let ports = candidate_ports(&ours);
        assert!(
            !ports.is_empty() && ports.iter().all(|&p| p == port),
            "every peer is on the engine's one port {port}: {ports:?}"
        );
        viewers.push(Viewer { id, peer, events });
    }
    for v in &mut viewers {
        v.peer
            .wait_connected(Duration::from_secs(10))
            .await
            .expect("connects");
    }
    assert!(wait_until(Duration::from_secs(5), || engine.stats().connected == 9).await);
    let shards = engine.stats().shards;
    assert_eq!(shards.len(), 3);
    assert!(
        shards.iter().all(|s| s.peers > 0 && s.connected == s.peers),
        "every shard holds connected viewers: {shards:?}"
    );

    for v in &mut viewers {
        let got = frames(&mut v.peer, 20, Duration::from_secs(10)).await;
        assert!(
            decode_all(&got) >= 20,
            "viewer {} decodes its pictures",
            v.id
        );
        check_packets(&got);
    }

    // Commands find the viewer's shard: a closed viewer leaves its shard.
    let closed = viewers.remove(0);
    engine.close_peer(closed.id, "test");
    assert!(wait_until(Duration::from_secs(3), || engine.stats().peers == 8).await);
    engine.shutdown().await;
    assert_eq!(engine.stats().peers, 0);
}
