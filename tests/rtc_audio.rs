//! Sound through the WebRTC engine against real viewer peers over 127.0.0.1: a stream's
//! Opus frames reach the viewers that asked for them, a viewer's microphone reaches the
//! stream's playback, and feedback is told apart by media SSRC.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use peregrine::media::audio::mic::{MicEvent, MicInput};
use peregrine::media::audio::opus::{OpusEncoder, FRAME_LEN};
use peregrine::media::audio::signal;
use peregrine::media::audio::{
    self, level, CHANNELS, FRAME_SAMPLES, FRAME_US, OPUS_PAYLOAD_TYPE, SAMPLE_RATE,
};
use peregrine::media::{clock, Hub, Picture, VideoSettings};
use peregrine::rtc::{PeerEvent, PeerOptions, RtcConfig, RtcEngine};
use peregrine::source::testsrc::{self, TestsrcConfig};
use peregrine::viewer::audio::{decode, ReceivedAudio};
use peregrine::viewer::receiver::{About, ReceiverOptions, ReceiverPeer};
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(10);

fn config() -> RtcConfig {
    RtcConfig::loopback(10)
}

/// A stream: the test pattern (small) as its pictures, a 1000 Hz tone as its sound.
struct Stream {
    video: Arc<Hub>,
    sound: Arc<Hub>,
    /// CLOCK_MONOTONIC µs of the tone's first frame; frame n is captured n × 20 ms later.
    tone_t0_us: u64,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Stream {
    fn start() -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let video = Hub::new(30);
        let cfg = TestsrcConfig {
            video: VideoSettings {
                width: 320,
                height: 240,
                fps: 15,
                bitrate_kbps: 300,
                gop: 30,
            },
            warmup: Duration::ZERO,
        };
        let pattern = testsrc::spawn(cfg, video.clone(), stop.clone()).expect("test pattern");
        let sound = Hub::new(30);
        let tone_t0_us = clock::monotonic_us();
        let tone = spawn_tone(sound.clone(), tone_t0_us, stop.clone());
        Stream {
            video,
            sound,
            tone_t0_us,
            stop,
            threads: vec![pattern, tone],
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Publish a 1000 Hz sine as Opus frames on the clock: frame n covers the 20 ms from
/// `t0_us + n × 20 ms` and is published once that time has passed, as a capture would.
fn spawn_tone(hub: Arc<Hub>, t0_us: u64, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut encoder = OpusEncoder::new(64).expect("encoder");
        let mut n: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let capture_us = t0_us + n * FRAME_US;
            let due = capture_us + FRAME_US;
            let now = clock::monotonic_us();
            if now < due {
                std::thread::sleep(Duration::from_micros(due - now));
            }
            let pcm = signal::sine(
                1000.0,
                0.5,
                SAMPLE_RATE,
                CHANNELS,
                n * FRAME_SAMPLES as u64,
                FRAME_SAMPLES,
            );
            let frame = encoder.encode(&pcm).expect("encode");
            hub.publish(Picture::audio(frame, capture_us));
            n += 1;
        }
    })
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

/// The SSRC of the first `a=ssrc:` line of the `kind` section of `sdp`.
fn offered_ssrc(sdp: &str, kind: &str) -> Option<u32> {
    let start = format!("m={kind} ");
    sdp.lines()
        .skip_while(|l| !l.starts_with(&start))
        .skip(1)
        .take_while(|l| !l.starts_with("m="))
        .find_map(|l| l.strip_prefix("a=ssrc:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

struct Viewer {
    id: u64,
    peer: ReceiverPeer,
    offer: String,
    events: mpsc::UnboundedReceiver<PeerEvent>,
}

async fn connected_viewer(engine: &RtcEngine, opts: PeerOptions, how: ReceiverOptions) -> Viewer {
    let (tx, events) = mpsc::unbounded_channel();
    let (id, offer) = engine.create_offer(opts, tx).await.expect("offer");
    let (mut peer, answer) = ReceiverPeer::answer_with(&offer, how)
        .await
        .expect("the viewer answers");
    engine
        .apply_answer(id, &answer)
        .await
        .expect("answer applies");
    peer.wait_connected(TIMEOUT).await.expect("connects");
    Viewer {
        id,
        peer,
        offer,
        events,
    }
}

async fn audio_packets(peer: &mut ReceiverPeer, count: usize) -> Vec<ReceivedAudio> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while out.len() < count {
        match tokio::time::timeout_at(deadline, peer.next_audio()).await {
            Ok(Some(p)) => out.push(p),
            Ok(None) => panic!("receiver closed after {} audio packets", out.len()),
            Err(_) => panic!("only {} of {count} audio packets", out.len()),
        }
    }
    out
}

async fn video_frames(peer: &mut ReceiverPeer, count: usize) {
    for i in 0..count {
        match tokio::time::timeout(TIMEOUT, peer.next_frame()).await {
            Ok(Some(_)) => {}
            other => panic!("video frame {i}: {:?}", other.map(|f| f.is_some())),
        }
    }
}

fn keep_audio() -> ReceiverOptions {
    ReceiverOptions {
        keep_audio: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_asked_for_sound_hears_the_tone_in_sync_with_the_pictures() {
    let stream = Stream::start();
    let engine = RtcEngine::start(config()).await.expect("engine");
    let opts = PeerOptions {
        audio: Some(stream.sound.clone()),
        ..PeerOptions::new(stream.video.clone())
    };
    let (tx, _events) = mpsc::unbounded_channel();
    let (id, offer) = engine.create_offer(opts, tx).await.expect("offer");
    assert!(
        !stream.sound.has_subscribers(),
        "the sound is listened to only once a viewer is connected"
    );
    let (mut peer, answer) = ReceiverPeer::answer_with(&offer, keep_audio())
        .await
        .expect("answer");
    engine.apply_answer(id, &answer).await.expect("applies");
    peer.wait_connected(TIMEOUT).await.expect("connects");
    assert!(wait_until(TIMEOUT, || stream.sound.has_subscribers()).await);

    let video_ssrc = offered_ssrc(&offer, "video").expect("video ssrc");
    let audio_ssrc = offered_ssrc(&offer, "audio").expect("audio ssrc");
    assert_ne!(video_ssrc, audio_ssrc);

    // A second of sound: one Opus frame per packet, consecutive sequence numbers,
    // timestamps 960 apart on the capture clock, payload type 111, never a marker.
    let packets = audio_packets(&mut peer, 50).await;
    let t0 = audio::rtp_timestamp_48k(stream.tone_t0_us);
    for p in &packets {
        assert_eq!(p.ssrc, audio_ssrc);
        assert_eq!(p.payload_type, OPUS_PAYLOAD_TYPE);
        assert!(!p.marker);
        assert_eq!(p.timestamp.wrapping_sub(t0) % FRAME_SAMPLES as u32, 0);
    }
    for pair in packets.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq.wrapping_add(1), "no gap");
        assert_eq!(pair[1].timestamp.wrapping_sub(pair[0].timestamp), 960);
    }
    let pcm = decode(&packets).expect("decodes");
    let tail = level::left(&pcm[FRAME_LEN * 5..]);
    assert_eq!(level::dominant_hz(&tail, &[440.0, 1000.0, 2000.0]), 1000.0);
    assert!(level::rms_dbfs(&tail) > -15.0, "{}", level::rms_dbfs(&tail));

    video_frames(&mut peer, 10).await;
    // The browser lines sound and pictures up by the sender reports of both.
    let reported = async {
        loop {
            let s = peer.stats().await.expect("stats");
            if s.video_sender_reports > 0 && s.audio_sender_reports > 0 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let stats = tokio::time::timeout(TIMEOUT, reported)
        .await
        .expect("sender reports about both the video and the audio");
    assert!(stats.audio_packets_received >= 50);
    assert_eq!(stats.audio_packets_lost(), 0);
    assert!(engine.stats().audio_packets_sent >= 50);

    // The last listener gone, the sound is not listened to any more.
    engine.close_peer(id, "test");
    assert!(wait_until(TIMEOUT, || !stream.sound.has_subscribers()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sound_asked_or_with_it_declined_the_video_plays_alone() {
    let stream = Stream::start();
    let engine = RtcEngine::start(config()).await.expect("engine");

    let mut plain = connected_viewer(
        &engine,
        PeerOptions::new(stream.video.clone()),
        keep_audio(),
    )
    .await;
    assert!(!plain.offer.contains("m=audio"), "{}", plain.offer);
    video_frames(&mut plain.peer, 10).await;

    let with_sound = PeerOptions {
        audio: Some(stream.sound.clone()),
        ..PeerOptions::new(stream.video.clone())
    };
    let declining = ReceiverOptions {
        decline_audio: true,
        ..keep_audio()
    };
    let mut declined = connected_viewer(&engine, with_sound, declining).await;
    assert!(declined.offer.contains("m=audio"));
    video_frames(&mut declined.peer, 10).await;

    for v in [&plain, &declined] {
        let s = v.peer.stats().await.expect("stats");
        assert_eq!(s.audio_packets_received, 0);
        assert!(s.packets_received > 0);
    }
    assert!(!stream.sound.has_subscribers(), "nobody listens");
    assert_eq!(engine.stats().audio_packets_sent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_talking_viewers_microphone_reaches_the_playback() {
    let stream = Stream::start();
    let engine = RtcEngine::start(config()).await.expect("engine");
    let (mic, mut playback) = MicInput::channel(512);
    // Microphone only: the audio m-line is recvonly on our side.
    let opts = PeerOptions {
        mic: Some(mic),
        ..PeerOptions::new(stream.video.clone())
    };
    let talking = ReceiverOptions {
        mic_tone_hz: Some(440.0),
        ..Default::default()
    };
    let mut viewer = connected_viewer(&engine, opts, talking).await;
    assert!(viewer.offer.contains("a=recvonly"), "{}", viewer.offer);

    let mut packets = Vec::new();
    while packets.len() < 50 {
        match tokio::time::timeout(TIMEOUT, playback.recv()).await {
            Ok(Some(MicEvent::Packet(p))) => packets.push(p),
            other => panic!("after {} packets: {other:?}", packets.len()),
        }
    }
    assert!(packets.iter().all(|p| p.talker == viewer.id));
    for pair in packets.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq.wrapping_add(1));
        assert_eq!(pair[1].timestamp.wrapping_sub(pair[0].timestamp), 960);
    }
    let received: Vec<ReceivedAudio> = packets
        .iter()
        .map(|p| ReceivedAudio {
            ssrc: 0,
            seq: p.seq,
            timestamp: p.timestamp,
            marker: false,
            payload_type: OPUS_PAYLOAD_TYPE,
            payload: p.payload.clone(),
        })
        .collect();
    let pcm = decode(&received).expect("decodes");
    let tail = level::left(&pcm[FRAME_LEN * 5..]);
    assert_eq!(level::dominant_hz(&tail, &[440.0, 1000.0]), 440.0);

    // The engine says the microphone started (Janus `media`), and counts it.
    let event = tokio::time::timeout(TIMEOUT, async {
        loop {
            match viewer.events.recv().await {
                Some(PeerEvent::MicReceiving { mid }) => return mid,
                Some(_) => continue,
                None => panic!("events ended"),
            }
        }
    })
    .await
    .expect("a mic event");
    assert!(!event.is_empty());
    assert!(wait_until(TIMEOUT, || engine.stats().mic_packets_received >= 50).await);

    // The talker leaving is told at once.
    engine.close_peer(viewer.id, "test");
    let left = tokio::time::timeout(TIMEOUT, async {
        loop {
            match playback.recv().await {
                Some(MicEvent::Left(talker)) => return talker,
                Some(MicEvent::Packet(_)) => continue,
                None => panic!("playback channel closed"),
            }
        }
    })
    .await
    .expect("left");
    assert_eq!(left, viewer.id);
    viewer.peer.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyframe_request_from_the_audio_senders_ssrc_still_reaches_the_video() {
    let stream = Stream::start();
    let engine = RtcEngine::start(config()).await.expect("engine");
    let (mic, _playback) = MicInput::channel(512);
    let opts = PeerOptions {
        audio: Some(stream.sound.clone()),
        mic: Some(mic),
        ..PeerOptions::new(stream.video.clone())
    };
    let talking = ReceiverOptions {
        mic_tone_hz: Some(440.0),
        keep_audio: true,
        ..Default::default()
    };
    let mut viewer = connected_viewer(&engine, opts, talking).await;
    assert!(viewer.offer.contains("a=sendrecv"), "{}", viewer.offer);
    let mic_ssrc = viewer.peer.mic_ssrc().expect("a microphone track");
    // Both of the sender's SSRCs known to the viewer.
    video_frames(&mut viewer.peer, 3).await;
    audio_packets(&mut viewer.peer, 3).await;
    let before = engine.stats();

    // As Chrome >= 147 sends them: sender SSRC = its audio sender's. Requests about
    // our audio come first; the FIR about the video after them is the sign that they
    // have all been handled (one socket, one loop, in order).
    viewer.peer.send_pli_as(Some(mic_ssrc), About::Audio);
    viewer.peer.send_fir_as(Some(mic_ssrc), About::Audio);
    viewer.peer.send_fir_as(Some(mic_ssrc), About::Video);
    let firs = before.firs_received + 1;
    assert!(wait_until(TIMEOUT, || engine.stats().firs_received >= firs).await);
    let after = engine.stats();
    assert_eq!(
        after.firs_received, firs,
        "the FIR about the audio is not the video's"
    );
    assert_eq!(after.plis_received, before.plis_received, "nor the PLI");

    viewer.peer.send_pli_as(Some(mic_ssrc), About::Video);
    let plis = before.plis_received + 1;
    assert!(wait_until(TIMEOUT, || engine.stats().plis_received >= plis).await);
    assert_eq!(engine.stats().plis_received, plis);
    assert_eq!(
        engine.stats().keyframe_requests,
        before.keyframe_requests + 2
    );
}
