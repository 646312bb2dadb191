//! The sound of the real peregrine binary: what `/state` and `/metrics` say of each
//! stream's sound source, and the sound itself as JSMpeg viewers get it (MP2 in the
//! MPEG-TS, decoded here by ffmpeg), from the test tone and from ALSA capture of a file
//! through ALSA's `file` plugin (see [`support::alsa`]).

mod support;

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use peregrine::media::audio::level;
use peregrine::relay::mpegts;
use serde_json::Value;
use support::alsa::{sine, AlsaHome};
use support::Server;
use tokio_tungstenite::tungstenite::Message;

fn audio(state: &Value) -> &Value {
    &state["streams"]["default"]["audio"]
}

#[tokio::test]
async fn the_default_program_has_the_test_tone_idle_until_somebody_listens() -> Result<()> {
    let server = Server::start(&[]).await?;
    let state = server.state().await?;
    let sound = audio(&state);
    assert_eq!(sound["source"], "tone", "{sound}");
    assert_eq!(sound["state"], "idle", "{sound}");
    assert_eq!(sound["listeners"], 0);
    assert_eq!(sound["frames"], 0, "nothing is made for nobody");
    let (status, body) = support::http_request(server.http_port, "GET", "/metrics", None).await?;
    let metrics = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("peregrine_audio_frames_total{stream=\"default\"} 0"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn a_stream_without_sound_says_so() -> Result<()> {
    let server = Server::start(&["--audio", "none"]).await?;
    let state = server
        .wait_state(Duration::from_secs(5), |s| {
            s["streams"]["default"].is_object()
        })
        .await?;
    assert!(audio(&state).is_null(), "{state}");
    Ok(())
}

/// Everything a JSMpeg viewer of the default stream receives in `duration`.
async fn jsmpeg_viewer(port: u16, duration: Duration) -> Result<Vec<u8>> {
    let url = format!("ws://127.0.0.1:{port}/jsmpeg");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("connect /jsmpeg")?;
    let mut ts = Vec::new();
    let deadline = tokio::time::Instant::now() + duration;
    while let Ok(next) = tokio::time::timeout_at(deadline, ws.next()).await {
        match next {
            Some(Ok(Message::Binary(b))) => ts.extend_from_slice(&b),
            Some(Ok(_)) => {}
            other => bail!("/jsmpeg ended early: {other:?}"),
        }
    }
    Ok(ts)
}

/// The stream types the TS's program map lists, by elementary PID.
fn pmt_stream_types(ts: &[u8]) -> Vec<(u16, u8)> {
    let section = |packet: &[u8]| -> Option<Vec<u8>> {
        if !mpegts::payload_unit_start(packet) {
            return None;
        }
        let payload = mpegts::payload(packet);
        let pointer = usize::from(*payload.first()?);
        payload.get(1 + pointer..).map(<[u8]>::to_vec)
    };
    let packets = || ts.chunks_exact(mpegts::PACKET_SIZE);
    let Some(pmt_pid) = packets()
        .filter(|p| mpegts::pid(p) == 0)
        .find_map(section)
        .and_then(|pat| Some((u16::from(*pat.get(10)? & 0x1f) << 8) | u16::from(*pat.get(11)?)))
    else {
        return Vec::new();
    };
    let Some(pmt) = packets()
        .filter(|p| mpegts::pid(p) == pmt_pid)
        .find_map(section)
    else {
        return Vec::new();
    };
    let section_len = (usize::from(pmt[1] & 0x0f) << 8) | usize::from(pmt[2]);
    let end = (3 + section_len).saturating_sub(4).min(pmt.len());
    let info_len = (usize::from(pmt[10] & 0x0f) << 8) | usize::from(pmt[11]);
    let mut at = 12 + info_len;
    let mut streams = Vec::new();
    while at + 5 <= end {
        let pid = (u16::from(pmt[at + 1] & 0x1f) << 8) | u16::from(pmt[at + 2]);
        streams.push((pid, pmt[at]));
        at += 5 + ((usize::from(pmt[at + 3] & 0x0f) << 8) | usize::from(pmt[at + 4]));
    }
    streams
}

/// The TS's audio, decoded by ffmpeg: mono, 48 kHz.
fn decode_audio(ts: &[u8], name: &str) -> Result<Vec<i16>> {
    let path = std::env::temp_dir().join(format!("peregrine-{name}-{}.ts", std::process::id()));
    std::fs::write(&path, ts)?;
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(&path)
        .args([
            "-map", "0:a:0", "-f", "s16le", "-ac", "1", "-ar", "48000", "-",
        ])
        .output()
        .context("run ffmpeg (is it installed?)")?;
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        bail!("ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// What a JSMpeg viewer of `server` hears in 4 s, checked to be MPEG audio in the TS.
async fn jsmpeg_sound(server: &Server, name: &str) -> Result<Vec<i16>> {
    let ts = jsmpeg_viewer(server.http_port, Duration::from_secs(4)).await?;
    assert!(ts.len() > 50_000, "only {} bytes in 4 s", ts.len());
    let types = pmt_stream_types(&ts);
    assert!(
        types.iter().any(|&(_, t)| t == 0x03 || t == 0x04),
        "no MPEG audio in the program map: {types:?}"
    );
    assert!(
        types.iter().any(|&(_, t)| t == 0x01 || t == 0x02),
        "{types:?}"
    );
    decode_audio(&ts, name)
}

/// 100 ms windows of `pcm` and their loudness.
fn windows(pcm: &[i16]) -> Vec<(&[i16], f64)> {
    pcm.chunks_exact(4800)
        .map(|w| (w, level::rms_dbfs(w)))
        .collect()
}

const CANDIDATES: [f64; 5] = [440.0, 918.75, 1000.0, 1088.4, 2000.0];

#[tokio::test]
async fn the_tone_reaches_jsmpeg_viewers_as_mp2_beeps() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240"]).await?;
    let pcm = jsmpeg_sound(&server, "tone").await?;
    assert!(pcm.len() > 48_000 * 2, "{} samples of sound", pcm.len());
    let loud: Vec<_> = windows(&pcm)
        .into_iter()
        .filter(|(_, db)| *db > -30.0)
        .collect();
    let levels: Vec<_> = loud.iter().map(|(_, db)| format!("{db:.1}")).collect();
    println!(
        "{} samples; loud 100 ms windows (dBFS): {levels:?}",
        pcm.len()
    );
    // A 100 ms beep a second: in 4 s some three, each over one or two windows.
    assert!(
        (2..=10).contains(&loud.len()),
        "{} loud windows",
        loud.len()
    );
    for (window, db) in &loud {
        assert_eq!(level::dominant_hz(window, &CANDIDATES), 1000.0);
        assert!(*db < -8.0, "louder than the beep: {db} dBFS");
    }
    // A beep split across two of those windows is quieter in each (-12 dB for halves):
    // its level is read from the 100 ms that hold it best, in steps of 10 ms.
    let loudest = pcm
        .windows(4800)
        .step_by(480)
        .map(level::rms_dbfs)
        .fold(f64::MIN, f64::max);
    println!("the loudest 100 ms: {loudest:.1} dBFS");
    assert!(loudest > -12.0, "the beep at half scale is {loudest} dBFS");
    let quiet = windows(&pcm).iter().filter(|(_, db)| *db < -50.0).count();
    assert!(
        quiet * 10 > pcm.len() / 4800 * 6,
        "silence between the beeps"
    );
    Ok(())
}

/// ALSA capture from a 1 kHz file by the real binary, at `rate`, reaches a JSMpeg
/// viewer, and `/state` counts it while it listens.
async fn alsa_capture_through_the_binary(rate: u32) -> Result<()> {
    let home = AlsaHome::new(&format!("audio-capture-{rate}"));
    home.capture_pcm("capfile", &sine(1000.0, 0.5, rate, 2, 30.0));
    let rate_arg = rate.to_string();
    let args = [
        "--source",
        "testsrc",
        "--resolution",
        "320x240",
        "--audio-device",
        "capfile",
        "--audio-rate",
        &rate_arg,
    ];
    let server = Server::start_with_home(&args, &home.dir).await?;
    let live = server.wait_state(Duration::from_secs(20), |s| {
        audio(s)["state"] == "live" && audio(s)["frames"].as_u64() >= Some(50)
    });
    let name = format!("alsa-{rate}");
    let (pcm, state) = tokio::join!(jsmpeg_sound(&server, &name), live);
    let (pcm, state) = (pcm?, state?);
    let sound = audio(&state);
    assert_eq!(sound["source"], "alsa:capfile");
    assert_eq!(sound["rate"], rate, "{sound}");
    assert_eq!(sound["channels"], 2);
    assert!(sound["listeners"].as_u64() >= Some(1), "{sound}");
    // Past the start (which may be silence before the first frame), the file's tone.
    let first_sound = windows(&pcm)
        .iter()
        .position(|(_, db)| *db > -30.0)
        .context("no sound at all")?;
    let tail = &pcm[(first_sound + 2) * 4800..];
    assert!(
        tail.len() >= 48_000,
        "{} samples after the start",
        tail.len()
    );
    assert_eq!(level::dominant_hz(tail, &CANDIDATES), 1000.0);
    // The level of a typical 100 ms: on a busy machine the transcoder may fill a late
    // stretch with silence, which says nothing about the level captured.
    let mut levels: Vec<f64> = windows(tail).iter().map(|(_, db)| *db).collect();
    levels.sort_by(f64::total_cmp);
    let db = levels[levels.len() / 2];
    println!("{rate} Hz: sound from window {first_sound}, then {db:.2} dBFS; {sound}");
    assert!((db - -9.03).abs() < 2.0, "{db} dBFS");
    // Nobody listens any more: the device is closed again.
    server
        .wait_state(Duration::from_secs(10), |s| audio(s)["state"] == "idle")
        .await?;
    Ok(())
}

#[tokio::test]
async fn alsa_capture_at_48_khz_reaches_viewers() -> Result<()> {
    alsa_capture_through_the_binary(48_000).await
}

#[tokio::test]
async fn alsa_capture_at_44_1_khz_is_resampled_for_viewers() -> Result<()> {
    alsa_capture_through_the_binary(44_100).await
}

#[tokio::test]
async fn a_missing_alsa_device_is_reported_retried_and_leaves_the_video_alone() -> Result<()> {
    let home = AlsaHome::new("audio-missing");
    let args = ["--source", "testsrc", "--resolution", "320x240"];
    let args = [&args[..], &["--audio-device", "nosuchdevice"]].concat();
    let server = Server::start_with_home(&args, &home.dir).await?;
    let failing = server.wait_state(Duration::from_secs(20), |s| {
        audio(s)["state"] == "failing" && audio(s)["failures"].as_u64() >= Some(2)
    });
    let (ts, state) = tokio::join!(
        jsmpeg_viewer(server.http_port, Duration::from_secs(4)),
        failing
    );
    let (ts, state) = (ts?, state?);
    let error = audio(&state)["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("\"nosuchdevice\": no such capture device"),
        "{error}"
    );
    assert!(
        ts.len() > 50_000,
        "video stalled: {} bytes in 4 s",
        ts.len()
    );
    let pcm = decode_audio(&ts, "missing")?;
    assert!(
        level::rms_dbfs(&pcm) < -60.0,
        "silence while the device is missing"
    );
    assert_eq!(server.state().await?["pid"], server.pid(), "still running");
    Ok(())
}
