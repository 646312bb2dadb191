//! peregrine-load against real servers: the benchmark machinery at N = 5 (a smoke run,
//! no speed assertion), both Janus transports, and clear failures.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use support::{free_port, Server};

fn load_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peregrine-load"))
}

fn peregrine_bin() -> PathBuf {
    std::env::var_os("PEREGRINE_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_peregrine").into())
        .into()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("peregrine-load-{name}-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A short 640x360 30 fps file with a 1 s GOP, made as scripts/bench.sh makes its input.
fn encode_input(dir: &Path) -> Result<PathBuf> {
    let file = dir.join("input.h264");
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi"])
        .args([
            "-i",
            "testsrc2=size=640x360:rate=30,format=yuv420p",
            "-t",
            "4",
        ])
        .args([
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-preset",
            "veryfast",
        ])
        .args([
            "-b:v",
            "1M",
            "-g",
            "30",
            "-keyint_min",
            "30",
            "-sc_threshold",
            "0",
        ])
        .args([
            "-x264-params",
            "repeat-headers=1",
            "-bsf:v",
            "h264_mp4toannexb",
        ])
        .args(["-f", "h264"])
        .arg(&file)
        .status()
        .context("run ffmpeg (scripts/install-test-deps.sh installs it)")?;
    ensure!(status.success(), "ffmpeg failed: {status}");
    Ok(file)
}

fn run(mut cmd: Command) -> Result<Output> {
    let out = cmd.output().context("run peregrine-load")?;
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    println!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(out)
}

#[test]
fn benchmark_smoke_run_with_five_viewers() -> Result<()> {
    let dir = temp_dir("bench");
    let input = encode_input(&dir)?;
    let json = dir.join("bench.json");
    let mut cmd = load_bin();
    cmd.arg("--bench")
        .arg(&input)
        .arg("--peregrine")
        .arg(peregrine_bin())
        .args([
            "--steps",
            "5,8",
            "--duration",
            "6",
            "--no-extend",
            "--quiet",
        ])
        .arg("--json")
        .arg(&json);
    let out = run(cmd)?;
    ensure!(out.status.success(), "benchmark failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        stdout.contains("viewers") && stdout.contains("srv99"),
        "no table printed"
    );

    let report: Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    let row = &report["rows"][0];
    ensure!(
        row["viewers"] == 5 && row["receiving"] == 5,
        "not all 5 viewers got video: {row}"
    );
    let num = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
    ensure!(num("fps_per_viewer") > 10.0, "frames do not flow: {row}");
    ensure!(
        num("server_cpu_pct") > 0.0 && num("server_cpu_pct") < 400.0,
        "odd server CPU: {row}"
    );
    ensure!(num("load_cpu_pct") > 0.0, "odd load CPU: {row}");
    ensure!(num("server_rss_kib") > 1000.0, "odd RSS: {row}");
    // What one more viewer costs is read between steps: none for the first.
    ensure!(row["rss_added_per_viewer_kib"].is_null(), "{row}");
    let second = &report["rows"][1];
    ensure!(
        second["viewers"] == 8 && second["rss_added_per_viewer_kib"].is_f64(),
        "no RSS per added viewer at the second step: {second}"
    );
    ensure!((0.0..50.0).contains(&num("loss_pct")), "odd loss: {row}");
    let ttff = num("ttff_p50_ms");
    ensure!(
        ttff > 0.0 && ttff < 10_000.0,
        "odd time to first frame: {row}"
    );
    let e2e = num("e2e_p50_ms");
    ensure!(e2e > 0.0 && e2e < 5_000.0, "odd end-to-end delay: {row}");
    let srv = num("server_delay_p99_us");
    ensure!(srv > 0.0 && srv < 5_000_000.0, "odd server delay: {row}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn load_against(url: &str, name: &str) -> Result<Value> {
    let json = temp_dir(name).join("load.json");
    let mut cmd = load_bin();
    cmd.args([
        "--server",
        url,
        "--viewers",
        "2",
        "--duration",
        "3",
        "--quiet",
    ])
    .arg("--json")
    .arg(&json);
    let out = tokio::task::spawn_blocking(move || run(cmd)).await??;
    ensure!(out.status.success(), "peregrine-load failed against {url}");
    Ok(serde_json::from_slice(&std::fs::read(&json)?)?)
}

/// Most viewers only count (SRTP still authenticated and decrypted), a sample decodes:
/// all of them must see the same stream whole, from the address given to --bind.
#[tokio::test]
async fn counting_viewers_and_the_decoded_sample_see_every_picture() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240", "--h264-gop", "15"]).await?;
    let json = temp_dir("light").join("load.json");
    let mut cmd = load_bin();
    cmd.args(["--server", &server.ws_url(), "--viewers", "4"])
        .args(["--decode-sample", "1", "--bind", "127.0.0.2"])
        .args(["--duration", "3", "--quiet", "--json"])
        .arg(&json);
    let out = tokio::task::spawn_blocking(move || run(cmd)).await??;
    ensure!(out.status.success(), "peregrine-load failed");
    let summary: Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    ensure!(summary["viewers_receiving"] == 4, "{summary}");
    ensure!(summary["viewers_held"] == 4, "{summary}");
    ensure!(summary["viewers_decoding"] == 1, "{summary}");
    ensure!(summary["decode_errors"] == 0, "{summary}");
    let viewers = summary["viewers"].as_array().context("no viewers")?;
    // Counting viewers hand the stack only each picture's first packet once they have a
    // keyframe: they still count what the decoding one sees, later keyframes included.
    let most_frames = viewers
        .iter()
        .filter_map(|v| v["frames"].as_u64())
        .max()
        .unwrap_or(0);
    for v in viewers {
        let frames = v["frames"].as_u64().unwrap_or(0);
        ensure!(
            frames * 10 >= most_frames * 9 && v["keyframes"].as_u64().unwrap_or(0) >= 3,
            "a viewer counted fewer pictures or keyframes than the others: {v}"
        );
    }
    for v in viewers {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        ensure!(
            n("frames") > 20 && n("keyframes") >= 1,
            "pictures not counted: {v}"
        );
        ensure!(
            n("packets_received") > n("frames"),
            "packets not counted: {v}"
        );
        ensure!(n("packets_lost") == 0, "loss on the loopback: {v}");
        ensure!(
            v["media_addr"]
                .as_str()
                .unwrap_or("")
                .starts_with("127.0.0.2:"),
            "--bind not used: {v}"
        );
        let decoded = n("pictures_decoded");
        if v["decoded"] == true {
            ensure!(
                decoded + 2 >= n("frames"),
                "the sample did not decode its pictures: {v}"
            );
        } else {
            ensure!(decoded == 0, "a counting viewer decoded: {v}");
        }
    }
    // Its candidate is the address the server sends to: a wildcard is refused.
    let mut cmd = load_bin();
    cmd.args(["--server", &server.ws_url(), "--bind", "0.0.0.0"]);
    let out = run(cmd)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("--bind needs a specific address"),
        "wildcard --bind accepted: {err}"
    );
    Ok(())
}

#[tokio::test]
async fn both_janus_transports_carry_viewers() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240", "--h264-gop", "15"]).await?;
    let ws = load_against(&server.ws_url(), "ws").await?;
    let http = format!("http://127.0.0.1:{}/janus", server.janus_http_port);
    let lp = load_against(&http, "lp").await?;
    for summary in [&ws, &lp] {
        ensure!(summary["viewers_receiving"] == 2, "{summary}");
        ensure!(summary["frames"].as_u64().unwrap_or(0) > 10, "{summary}");
        // The test pattern carries abs-capture-time, so delays are measured.
        ensure!(
            summary["end_to_end_ms"]["samples"].as_u64().unwrap_or(0) > 10,
            "{summary}"
        );
        ensure!(
            summary["viewers"][0]["packets_received"]
                .as_u64()
                .unwrap_or(0)
                > 0,
            "{summary}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn unreachable_or_foreign_servers_fail_clearly() -> Result<()> {
    let port = free_port();
    let mut cmd = load_bin();
    cmd.args([
        "--server",
        &format!("ws://127.0.0.1:{port}/"),
        "--viewers",
        "1",
    ]);
    let out = tokio::task::spawn_blocking(move || run(cmd)).await??;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("cannot use the Janus API"),
        "{err}"
    );

    // Something that is HTTP but not the Janus API: the main port's /state.
    let server = Server::start(&["--resolution", "320x240"]).await?;
    let mut cmd = load_bin();
    let url = format!("http://127.0.0.1:{}/state", server.http_port);
    cmd.args(["--server", &url, "--viewers", "1"]);
    let out = tokio::task::spawn_blocking(move || run(cmd)).await??;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("not a Janus"),
        "{err}"
    );

    let mut cmd = load_bin();
    cmd.args(["--server", "ftp://127.0.0.1/"]);
    let out = tokio::task::spawn_blocking(move || run(cmd)).await??;
    ensure!(!out.status.success(), "a bad scheme was accepted");
    Ok(())
}

#[test]
fn audio_modes_are_checked_before_anything_starts() -> Result<()> {
    for (args, wanted) in [
        (&["--audio", "both"][..], "--audio both needs --bench"),
        (&["--audio", "loud"][..], "unknown --audio \"loud\""),
    ] {
        let mut cmd = load_bin();
        cmd.args(["--server", "ws://127.0.0.1:9/"]).args(args);
        let out = run(cmd)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains(wanted),
            "{args:?}: {err}"
        );
    }
    Ok(())
}

/// A viewer joining mid-GOP gets the GOP so far as a burst: the progress lines count it
/// apart instead of reporting it as a frame rate far above the source's 30 fps.
#[tokio::test]
async fn the_catch_up_burst_is_not_reported_as_frame_rate() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240", "--h264-gop", "150"]).await?;
    // One viewer keeps the pattern running, so the GOP grows before the load joins.
    let (_janus, mut peer) = support::join(&server).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2500);
    while std::time::Instant::now() < deadline {
        let _ =
            tokio::time::timeout(std::time::Duration::from_millis(100), peer.next_frame()).await;
    }
    let mut cmd = load_bin();
    cmd.args([
        "--server",
        &server.ws_url(),
        "--viewers",
        "1",
        "--duration",
        "2",
    ]);
    let out = tokio::task::spawn_blocking(move || run(cmd)).await??;
    ensure!(out.status.success(), "peregrine-load failed");
    let err = String::from_utf8_lossy(&out.stderr);
    let rates: Vec<f64> = err
        .lines()
        .filter_map(|l| {
            l.split(" fps per viewer")
                .next()?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    ensure!(!rates.is_empty(), "no progress lines:\n{err}");
    for rate in &rates {
        ensure!(
            *rate < 45.0,
            "{rate} fps per viewer from a 30 fps source:\n{err}"
        );
    }
    ensure!(err.contains("catch-up frames"), "burst not shown:\n{err}");
    let summary = String::from_utf8_lossy(&out.stdout);
    ensure!(!summary.is_empty());
    Ok(())
}

/// `--transport both`: the WebRTC steps, then the MJPEG ones on a fresh server (a
/// 1-client step first, for the fixed cost), then both side by side.
#[test]
fn benchmark_runs_mjpeg_clients_beside_webrtc() -> Result<()> {
    let dir = temp_dir("bench-mjpeg");
    let input = encode_input(&dir)?;
    let json = dir.join("bench.json");
    let mut cmd = load_bin();
    cmd.arg("--bench")
        .arg(&input)
        .arg("--peregrine")
        .arg(peregrine_bin())
        .args(["--transport", "both", "--steps", "3", "--duration", "4"])
        .args(["--no-extend", "--quiet", "--json"])
        .arg(&json);
    let out = run(cmd)?;
    ensure!(out.status.success(), "benchmark failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for table in [
        "peregrine fan-out benchmark",
        "peregrine MJPEG fan-out benchmark",
        "WebRTC and MJPEG side by side",
    ] {
        ensure!(stdout.contains(table), "no {table:?} table printed");
    }

    let report: Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    ensure!(report["rows"][0]["viewers"] == 3, "{}", report["rows"]);
    let rows = &report["mjpeg"]["rows"];
    ensure!(
        rows[0]["clients"] == 1 && rows[1]["clients"] == 3,
        "the 1-client step does not come first: {rows}"
    );
    let row = &rows[1];
    let num = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
    ensure!(
        row["receiving"] == 3,
        "not all 3 clients got pictures: {row}"
    );
    ensure!(num("made_fps") > 5.0, "the server made no pictures: {row}");
    ensure!(num("fps_per_client") > 5.0, "pictures do not flow: {row}");
    ensure!(
        (0.0..=100.0).contains(&num("dropped_pct")),
        "odd dropped share: {row}"
    );
    ensure!(num("server_cpu_pct") > 0.0, "odd server CPU: {row}");
    ensure!(
        row["marginal_ms_per_client_s"].is_number(),
        "no marginal cost: {row}"
    );
    let e2e = num("e2e_p50_ms");
    ensure!(e2e > 0.0 && e2e < 5_000.0, "odd capture delay: {row}");
    ensure!(
        row["summary"].is_null(),
        "per-client figures leaked into the row"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn mjpeg_clients_count_whole_pictures() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240", "--h264-gop", "15"]).await?;
    let json = temp_dir("mjpeg").join("load.json");
    let mut cmd = load_bin();
    let url = format!("http://127.0.0.1:{}", server.http_port);
    cmd.args(["--transport", "mjpeg", "--server", &url])
        .args(["--viewers", "2", "--duration", "3", "--quiet", "--json"])
        .arg(&json);
    let out = tokio::task::spawn_blocking(move || run(cmd)).await??;
    ensure!(out.status.success(), "peregrine-load failed against {url}");
    let summary: Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    ensure!(summary["clients_receiving"] == 2, "{summary}");
    ensure!(summary["pictures"].as_u64().unwrap_or(0) > 20, "{summary}");
    ensure!(summary["not_jpeg"] == 0, "{summary}");
    ensure!(
        summary["picture_bytes_avg"].as_u64().unwrap_or(0) > 1000,
        "{summary}"
    );
    // extra_headers carries each picture's capture time.
    ensure!(
        summary["end_to_end_ms"]["samples"].as_u64().unwrap_or(0) > 20,
        "{summary}"
    );

    // The Janus HTTP port has no /stream: the answer says so.
    let mut cmd = load_bin();
    let url = format!("http://127.0.0.1:{}", server.janus_http_port);
    cmd.args(["--transport", "mjpeg", "--server", &url, "--viewers", "1"])
        .args(["--duration", "1", "--quiet"]);
    let out = tokio::task::spawn_blocking(move || run(cmd)).await??;
    let err = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("GET /stream?extra_headers=1 answered 404"),
        "{err}"
    );
    Ok(())
}
