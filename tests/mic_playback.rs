//! The browsers' microphones played through the real ALSA code path: alsa-lib's own
//! `file` PCM plugin over its `null` plugin, defined in an asoundrc this test writes,
//! records every frame the playback writes. Talkers are fed as the WebRTC engine feeds
//! them (a `MicInput`), with real Opus packets, paced at 20 ms by the clock; the file's
//! sound is then measured.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use peregrine::media::audio::level;
use peregrine::media::audio::mic::{MicInput, MicPacket, TalkerId, MIC_QUEUE};
use peregrine::media::audio::signal::OpusTone;
use peregrine::media::audio::{FRAME_SAMPLES, SAMPLE_RATE};
use peregrine::mic::device::{AlsaMessages, AlsaPlayback};
use peregrine::mic::jitter::CAPACITY;
use peregrine::mic::{MicReport, MicStats};

const TICK: Duration = Duration::from_millis(20);
/// The PCMs the asoundrc defines, one output file each.
const DEVICES: [&str; 3] = ["play_two", "play_reordered", "play_flood"];

/// A home for alsa-lib, made (and `HOME` pointed at it) once, before any test opens a
/// device: alsa-lib reads `$HOME/.asoundrc` when it first loads its configuration.
fn alsa_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("peregrine-mic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut rc = String::new();
        for name in DEVICES {
            let out = dir.join(format!("{name}.raw"));
            rc.push_str(&format!(
                "pcm.{name} {{ type file; slave.pcm \"null\"; file \"{}\"; format \"raw\" }}\n",
                out.display()
            ));
        }
        std::fs::write(dir.join(".asoundrc"), rc).unwrap();
        std::env::set_var("HOME", &dir);
        dir
    })
}

/// A running playback on `device`, fed through `input`.
struct Playback {
    input: MicInput,
    stats: Arc<MicStats>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    out: PathBuf,
}

impl Playback {
    fn start(device: &str) -> Playback {
        let home = alsa_home();
        let (input, events) = MicInput::channel(MIC_QUEUE);
        let stats = Arc::new(MicStats::new(device));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = peregrine::mic::spawn(device, events, stats.clone(), stop.clone()).unwrap();
        Playback {
            input,
            stats,
            stop,
            thread: Some(thread),
            out: home.join(format!("{device}.raw")),
        }
    }

    fn report(&self) -> MicReport {
        self.stats.report()
    }

    /// Wait until the report satisfies `done`.
    fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&MicReport) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.report()) {
            assert!(Instant::now() < deadline, "{what}: {:?}", self.report());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }

    /// Stop the thread (closing the device) and read what was played: the left
    /// channel.
    fn finish(mut self) -> Vec<i16> {
        self.stop();
        let bytes = std::fs::read(&self.out).unwrap();
        let pcm: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        level::left(&pcm)
    }
}

impl Drop for Playback {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A talker's microphone: Opus packets of a sine.
fn tone(hz: f64) -> OpusTone {
    OpusTone::new(hz, 0.3).unwrap()
}

fn packet(talker: TalkerId, seq: u16, payload: Bytes) -> MicPacket {
    MicPacket {
        talker,
        seq,
        timestamp: u32::from(seq).wrapping_mul(FRAME_SAMPLES as u32),
        payload,
    }
}

/// Call `send(tick)` at each 20 ms tick of the clock, `ticks` times.
fn paced(ticks: usize, mut send: impl FnMut(usize)) {
    let start = Instant::now();
    for tick in 0..ticks {
        let due = start + TICK * tick as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        send(tick);
    }
}

/// 10 ms windows of mono sound.
const WINDOW: usize = SAMPLE_RATE as usize / 100;
/// A window at least this loud has the talker in it (a tone at 0.3 is about -13.5).
const HEARD_DBFS: f64 = -30.0;

/// The windows from the first one a talker is heard in to the last one, and where
/// they start (in samples).
fn heard_span(sound: &[i16]) -> (usize, &[i16]) {
    let windows: Vec<&[i16]> = sound.chunks(WINDOW).collect();
    let heard = |w: &&[i16]| level::rms_dbfs(w) > HEARD_DBFS;
    let first = windows.iter().position(heard).expect("nothing heard");
    let last = windows.iter().rposition(heard).unwrap();
    let start = first * WINDOW;
    (start, &sound[start..(last + 1) * WINDOW])
}

/// No window of the talker's span is silent.
fn assert_no_gap(span: &[i16]) {
    for (i, w) in span.chunks_exact(WINDOW).enumerate() {
        let db = level::rms_dbfs(w);
        assert!(db > HEARD_DBFS, "a gap at {} ms: {db:.1} dBFS", i * 10);
    }
}

fn powers(sound: &[i16]) -> (f64, f64, f64) {
    (
        level::power_at(sound, 700.0),
        level::power_at(sound, 1500.0),
        level::power_at(sound, 1100.0),
    )
}

#[test]
fn two_talkers_are_mixed_and_one_that_stops_leaves_no_gap() {
    let playback = Playback::start("play_two");
    let (mut a, mut b) = (tone(700.0), tone(1500.0));
    // A talks for 3 s; B for the first 1.5 s, then stops without leaving.
    paced(150, |tick| {
        playback
            .input
            .packet(packet(1, tick as u16, a.next_frame().unwrap()));
        if tick < 75 {
            playback
                .input
                .packet(packet(2, 5000 + tick as u16, b.next_frame().unwrap()));
        }
        if tick == 100 {
            let r = playback.report();
            assert!(r.open, "open while talking: {r:?}");
            assert_eq!(r.talkers, 1, "B timed out: {r:?}");
        }
    });
    playback.wait_for("A timed out too", Duration::from_secs(2), |r| {
        r.talkers == 0
    });
    playback.wait_for("closed a second after", Duration::from_secs(3), |r| !r.open);
    let report = playback.report();
    assert!(report.played >= 200, "A's 150 and B's 75: {report:?}");
    let sound = playback.finish();

    let (start, span) = heard_span(&sound);
    // The file starts with the device: its period of silence, then the first tick's
    // frame. A's first packet plays once its second is in, a tick or two later; the
    // device adds its period ahead of each frame on real hardware (not here).
    assert!(
        start <= 100 * 48,
        "A starts {} ms into the file",
        start / 48
    );
    let ms = |t: usize| &span[t * 48..];
    assert!(
        span.len() > 2900 * 48,
        "A was heard for 3 s: {} ms",
        span.len() / 48
    );
    assert_no_gap(span);
    // Both while both talk (past the codec's first frames)...
    for start in (100..1300).step_by(100) {
        let (a, b, neither) = powers(&ms(start)[..4800]);
        assert!(
            a > 100.0 * neither && b > 100.0 * neither,
            "at {start} ms: 700 Hz {a:.2e}, 1500 Hz {b:.2e}, 1100 Hz {neither:.2e}"
        );
    }
    // ...then A alone, once B's last packets and concealment have played out.
    for start in (1900..2800).step_by(100) {
        let (a, b, neither) = powers(&ms(start)[..4800]);
        assert!(
            a > 100.0 * neither && a > 1000.0 * b,
            "at {start} ms: 700 Hz {a:.2e}, 1500 Hz {b:.2e}, 1100 Hz {neither:.2e}"
        );
    }
}

#[test]
fn reordered_and_repeated_packets_play_without_gaps() {
    let playback = Playback::start("play_reordered");
    let mut a = tone(700.0);
    let packets: Vec<Bytes> = (0..100).map(|_| a.next_frame().unwrap()).collect();
    // Each tick sends pairs swapped (1, 0, 3, 2, ...) and repeats the last packet.
    paced(100, |tick| {
        let seq = tick ^ 1;
        playback
            .input
            .packet(packet(1, seq as u16, packets[seq].clone()));
        if tick > 0 {
            let last = (tick - 1) ^ 1;
            playback
                .input
                .packet(packet(1, last as u16, packets[last].clone()));
        }
    });
    playback.wait_for("the talker timed out", Duration::from_secs(2), |r| {
        r.talkers == 0
    });
    let report = playback.report();
    // The first packet sets the play point, so seq 0 (sent after it) is late.
    assert!(report.played >= 98, "{report:?}");
    assert!(report.dropped >= 99, "the repeats: {report:?}");
    let sound = playback.finish();
    let (_, span) = heard_span(&sound);
    assert!(span.len() > 1900 * 48, "{} ms", span.len() / 48);
    assert_no_gap(span);
    let (a, b, neither) = powers(&span[4800..]);
    assert!(a > 100.0 * neither && a > 100.0 * b);
}

#[test]
fn a_flooding_talker_is_held_in_bounded_buffers() {
    let playback = Playback::start("play_flood");
    let mut tone = tone(700.0);
    let payload = tone.next_frame().unwrap();
    let mut seq = 0u16;
    let mut sent = 0u64;
    let mut most_held = 0;
    let until = Instant::now() + Duration::from_secs(1);
    // As fast as the hand-over queue takes them: far more than real time.
    while Instant::now() < until {
        for _ in 0..MIC_QUEUE {
            if playback.input.packet(packet(9, seq, payload.clone())) {
                sent += 1;
                seq = seq.wrapping_add(1);
            }
        }
        most_held = most_held.max(playback.report().buffered);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(sent > 10 * 50, "a flood: {sent} packets in a second");
    assert!(most_held <= CAPACITY, "held {most_held}");
    playback.wait_for("the flood drained", Duration::from_secs(2), |r| {
        r.talkers == 0 && r.buffered == 0
    });
    let report = playback.report();
    assert!(report.played <= 80, "played in real time: {report:?}");
    assert_eq!(
        report.dropped + report.played,
        sent,
        "everything else dropped: {report:?}"
    );
    playback.finish();
}

#[test]
fn a_device_that_cannot_be_opened_says_why_and_talkers_are_still_taken_in() {
    alsa_home();
    let mut messages = AlsaMessages::capture();
    let Err(e) = AlsaPlayback::open("no_such_pcm") else {
        panic!("opened a device that does not exist");
    };
    let said = messages.take();
    assert!(
        said.contains("no_such_pcm"),
        "alsa-lib's reason: {e} ({said})"
    );

    let playback = Playback::start("no_such_pcm");
    let mut a = tone(700.0);
    paced(25, |tick| {
        playback
            .input
            .packet(packet(1, tick as u16, a.next_frame().unwrap()));
    });
    let report = playback.report();
    assert!(!report.open, "{report:?}");
    assert!(
        report.played >= 20,
        "decoded and mixed all the same: {report:?}"
    );
}

#[tokio::test]
async fn state_reports_the_microphone_of_each_stream_that_has_one() -> anyhow::Result<()> {
    let toml = "source = \"testsrc\"\nmic_device = \"plughw:UAC2Gadget,0\"\n\
                [[stream]]\nname = \"door\"\nsource = \"testsrc\"\n";
    let server = support::Server::start_with_config(toml, &[]).await?;
    let state = server.state().await?;
    let mic = &state["streams"]["default"]["mic"];
    assert_eq!(mic["device"], "plughw:UAC2Gadget,0", "{state}");
    // Nobody talks: the device is not opened (here it does not even exist).
    assert_eq!(mic["open"], false, "{state}");
    assert_eq!(mic["talkers"], 0, "{state}");
    for key in ["played", "concealed", "dropped", "underruns"] {
        assert_eq!(mic[key], 0, "{key}: {state}");
    }
    assert_eq!(mic["level_dbfs"], -120.0, "{state}");
    assert!(
        state["streams"]["door"].get("mic").is_none(),
        "a stream without a device has no mic: {state}"
    );
    Ok(())
}
