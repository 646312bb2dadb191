//! The memsink against an independent C implementation (tests/c/memsink.c, compiled here
//! with the system C compiler): peregrine's writer read by the C reader, and the C writer
//! feeding peregrine's `--source memsink:` into a real WebRTC receiver.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use peregrine::media::encoder::H264Encoder;
use peregrine::media::VideoSettings;
use peregrine::memsink::layout::{FrameMeta, FORMAT_H264, FORMAT_JPEG};
use peregrine::memsink::monotonic_s;
use peregrine::memsink::writer::{PutOutcome, SinkConfig, SinkWriter};
use peregrine::source::pattern::{read_code_strip, TestPattern};
use peregrine::viewer::decoder::H264Decoder;
use peregrine::viewer::receiver::ReceiverPeer;
use support::decode::is_no_signal;
use support::{join, JanusClient, Server, Transport};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 360;

/// The tests here run real readers and writers against each other at frame rate; run
/// side by side on a small machine, a reader starved of CPU misses frames and the
/// checks of what it got measure the machine, not the code. One at a time.
fn serial() -> Serial {
    while SERIAL
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    Serial
}

static SERIAL: AtomicBool = AtomicBool::new(false);

/// Held for a test's whole run, across awaits (a std mutex guard is not meant to be).
struct Serial;

impl Drop for Serial {
    fn drop(&mut self) {
        SERIAL.store(false, Ordering::Release);
    }
}

/// The C peer, compiled once per test binary.
fn c_tool() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/memsink.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("memsink-c-{}", std::process::id()));
        let status = Command::new("cc")
            .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2", "-o"])
            .arg(&out)
            .arg(&src)
            .args(["-lrt", "-lm"])
            .status()
            .expect("the system C compiler (cc) runs");
        assert!(status.success(), "compiling {} failed", src.display());
        out
    })
}

fn unique_name(tag: &str) -> String {
    format!("peregrine-it-{tag}-{}::h264", std::process::id())
}

fn shm_path(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name)
}

/// Removes the test's object however the test ends (writers are killed with SIGKILL).
struct RemoveShm(String);

impl Drop for RemoveShm {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(shm_path(&self.0));
    }
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Wait for the exit, for at most `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("process did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `count` pictures of the test pattern (counter = index), IDR every `gop`.
fn encode_frames(count: usize, gop: u32) -> Result<Vec<(bool, Vec<u8>)>> {
    let cfg = VideoSettings {
        width: WIDTH,
        height: HEIGHT,
        fps: 30,
        bitrate_kbps: 1000,
        gop,
    };
    let mut pattern = TestPattern::new(WIDTH, HEIGHT)?;
    let mut encoder = H264Encoder::new(&cfg)?;
    let mut frames = Vec::new();
    for i in 0..count {
        let picture = encoder
            .encode(pattern.draw(i as u32, 0), i as u64 * 33_000)?
            .context("encoder skipped a picture")?;
        frames.push((picture.key, picture.data.to_vec()));
    }
    assert!(frames[0].0, "the first picture is an IDR");
    Ok(frames)
}

fn write_frames_file(path: &Path, frames: &[(bool, Vec<u8>)]) -> Result<()> {
    let mut out = Vec::new();
    for (key, data) in frames {
        out.push(u8::from(*key));
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    std::fs::write(path, out)?;
    Ok(())
}

fn read_records(path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path)?;
    let mut records = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let len = u32::from_le_bytes(rest[..4].try_into()?) as usize;
        records.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    Ok(records)
}

/// `frame k=v k=v ...` lines printed by the C reader.
fn parse_meta(stdout: &str) -> Vec<HashMap<String, String>> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("frame "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn tmp_file(tag: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("memsink-{tag}-{}", std::process::id()))
}

/// Decode payloads in order; returns the code-strip counter of each decoded picture.
fn decode_counters(payloads: &[Vec<u8>]) -> Result<Vec<u32>> {
    let mut decoder = H264Decoder::new()?;
    let mut counters = Vec::new();
    for p in payloads {
        if let Some(picture) = decoder.decode(p)? {
            assert_eq!(
                (picture.width, picture.height),
                (WIDTH as usize, HEIGHT as usize)
            );
            let (counter, _) =
                read_code_strip(&picture.y, picture.y_stride, picture.width, picture.height)
                    .context("picture without a readable code strip")?;
            counters.push(counter);
        }
    }
    Ok(counters)
}

/// Run the C reader for `want` frames: (meta lines, payloads).
#[allow(clippy::type_complexity)]
fn c_read(
    name: &str,
    want: usize,
    timeout: Duration,
) -> Result<(Vec<HashMap<String, String>>, Vec<Vec<u8>>)> {
    let out = tmp_file(&format!("read-{}.bin", name.replace(':', "_")));
    let reader = Command::new(c_tool())
        .args(["read", name, &want.to_string()])
        .arg(&out)
        .arg("--key")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut reader = Proc(reader);
    let status = reader.wait_exit(timeout);
    let _ = reader.0.kill();
    let mut stdout = String::new();
    std::io::Read::read_to_string(
        reader.0.stdout.as_mut().context("reader stdout")?,
        &mut stdout,
    )?;
    let status = status.with_context(|| format!("C reader printed:\n{stdout}"))?;
    if !status.success() {
        bail!("C reader failed ({status}):\n{stdout}");
    }
    let payloads = read_records(&out)?;
    let _ = std::fs::remove_file(&out);
    Ok((parse_meta(&stdout), payloads))
}

/// Deterministic timestamps for picture `i`, so the C side's long doubles can be checked.
fn meta_for(i: usize, key: bool) -> FrameMeta {
    let base = 100_000.0 + i as f64 / 1000.0;
    FrameMeta {
        width: WIDTH,
        height: HEIGHT,
        format: FORMAT_H264,
        stride: 0,
        online: true,
        key,
        gop: 30,
        grab_begin_ts: base,
        grab_end_ts: base + 0.25,
        encode_begin_ts: base + 0.5,
        encode_end_ts: base + 0.75,
    }
}

#[test]
fn c_reader_takes_peregrine_frames_byte_exact() -> Result<()> {
    let _serial = serial();
    let frames = Arc::new(encode_frames(150, 30)?);
    let name = unique_name("creader");
    let _cleanup = RemoveShm(name.clone());
    let mut cfg = SinkConfig::new(&name);
    cfg.remove_on_exit = true;
    let mut writer = SinkWriter::open(cfg)?;

    let stop = Arc::new(AtomicBool::new(false));
    let writer_thread = {
        let (frames, stop) = (frames.clone(), stop.clone());
        std::thread::spawn(move || -> Result<usize> {
            let mut puts = 0;
            let mut i = 0;
            while i < frames.len() && !stop.load(Ordering::Relaxed) {
                let (key, data) = &frames[i];
                match writer.put(&meta_for(i, *key), data)? {
                    PutOutcome::Written { wants_key } => {
                        puts += 1;
                        i += 1;
                        if wants_key {
                            while i < frames.len() && !frames[i].0 {
                                i += 1;
                            }
                        }
                    }
                    PutOutcome::Busy => {}
                    PutOutcome::TooBig => bail!("test frame too big"),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(puts)
        })
    };

    let want = 40;
    let read = c_read(&name, want, Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let puts = writer_thread.join().expect("writer thread")?;
    let (metas, payloads) = read?;
    assert_eq!((metas.len(), payloads.len()), (want, want));
    println!("{puts} puts, {want} frames read by the C reader");

    // Every payload is byte-for-byte one of the frames, in order, with its meta.
    let mut last_index = None;
    let mut indices = Vec::new();
    for (payload, meta) in payloads.iter().zip(&metas) {
        let index = frames
            .iter()
            .enumerate()
            .skip(last_index.map_or(0, |i| i + 1))
            .find(|(_, (_, data))| data == payload)
            .map(|(i, _)| i)
            .context("the C reader got bytes that were never written")?;
        let expect = meta_for(index, frames[index].0);
        assert_eq!(meta["used"], payload.len().to_string());
        assert_eq!(meta["width"], WIDTH.to_string());
        assert_eq!(meta["height"], HEIGHT.to_string());
        assert_eq!(meta["format"], format!("{FORMAT_H264:08x}"));
        assert_eq!(meta["key"], u8::from(expect.key).to_string());
        assert_eq!(meta["online"], "1");
        assert_eq!(meta["gop"], "30");
        assert_eq!(meta["grab_begin"], format!("{:.3}", expect.grab_begin_ts));
        assert_eq!(meta["grab_end"], format!("{:.3}", expect.grab_end_ts));
        assert_eq!(
            meta["encode_begin"],
            format!("{:.3}", expect.encode_begin_ts)
        );
        assert_eq!(meta["encode_end"], format!("{:.3}", expect.encode_end_ts));
        last_index = Some(index);
        indices.push(index);
    }
    // The reader asked for a keyframe after its first frame; the writer jumped to one.
    assert!(
        indices[..3].iter().any(|&i| frames[i].0),
        "no keyframe soon after the request: {indices:?}"
    );

    // Decode each gap-free run that starts at a keyframe: every picture shows the
    // counter it was drawn with.
    let mut decoded = 0;
    let mut start = 0;
    while start < indices.len() {
        let mut end = start + 1;
        while end < indices.len() && indices[end] == indices[end - 1] + 1 {
            end += 1;
        }
        if frames[indices[start]].0 {
            let counters = decode_counters(&payloads[start..end])?;
            let expected: Vec<u32> = indices[start..end].iter().map(|&i| i as u32).collect();
            assert_eq!(counters, expected);
            decoded += counters.len();
        }
        start = end;
    }
    assert!(
        decoded >= want / 2,
        "only {decoded} of {want} frames decodable"
    );
    assert!(
        !shm_path(&name).exists(),
        "the writer removes the object on exit"
    );
    Ok(())
}

/// The counters of the decoded pictures in C-reader payloads. A reader polling a
/// one-frame sink may miss a frame on a loaded machine; decoding then restarts at the
/// next keyframe, as a real reader would.
fn decode_from_first_key(
    metas: &[HashMap<String, String>],
    payloads: &[Vec<u8>],
) -> Result<Vec<u32>> {
    let mut counters = Vec::new();
    let mut decoder: Option<H264Decoder> = None;
    for (meta, payload) in metas.iter().zip(payloads) {
        if meta["key"] == "1" {
            decoder = Some(H264Decoder::new()?);
        }
        let Some(dec) = decoder.as_mut() else {
            continue;
        };
        match dec.decode(payload) {
            Ok(Some(picture)) => {
                let (counter, _) =
                    read_code_strip(&picture.y, picture.y_stride, picture.width, picture.height)
                        .context("picture without a readable code strip")?;
                counters.push(counter);
            }
            Ok(None) => {}
            Err(e) => {
                println!("missed a frame ({e}); waiting for the next keyframe");
                decoder = None;
            }
        }
    }
    if counters.is_empty() {
        bail!("no picture decoded");
    }
    Ok(counters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_sink_of_the_binary_feeds_a_c_reader_only_while_it_reads() -> Result<()> {
    let _serial = serial();
    let name = unique_name("binsink");
    let _cleanup = RemoveShm(name.clone());
    let server = Server::start(&[
        "--resolution",
        "640x360",
        "--h264-sink",
        &name,
        "--h264-sink-rm",
        "--h264-sink-client-ttl",
        "1",
    ])
    .await?;
    let reading = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || c_read(&name, 45, Duration::from_secs(60)))
    };
    let (metas, payloads) = reading.await??;
    for m in &metas {
        assert_eq!(m["format"], format!("{FORMAT_H264:08x}"));
        assert_eq!((m["width"].as_str(), m["height"].as_str()), ("640", "360"));
        assert_eq!(m["online"], "1");
        assert_eq!(m["stride"], "0");
    }
    let counters = decode_from_first_key(&metas, &payloads)?;
    assert!(counters.len() >= 20, "decoded only {}", counters.len());
    assert!(
        counters.windows(2).all(|w| w[1] > w[0]),
        "counters not increasing: {counters:?}"
    );

    // The reader is gone: after the client TTL the sink stops pulling pictures.
    server
        .wait_state(Duration::from_secs(15), |s| s["source"]["subscribers"] == 0)
        .await?;
    // A new reader wakes it again, starting with a keyframe.
    let (metas, payloads) = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || c_read(&name, 10, Duration::from_secs(60))).await??
    };
    assert!(
        metas[..3].iter().any(|m| m["key"] == "1"),
        "no keyframe after waking"
    );
    assert!(!decode_from_first_key(&metas, &payloads)?.is_empty());
    drop(server);
    let _ = std::fs::remove_file(shm_path(&name));
    Ok(())
}

/// Frames for the C writer: 300 pictures (10 s at 30 fps), IDR every 30, written once.
fn frames_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = tmp_file("frames.bin");
        let frames = encode_frames(300, 30).expect("test pattern encodes");
        write_frames_file(&path, &frames).expect("frames file written");
        path
    })
}

fn start_c_writer(name: &str, extra: &[&str]) -> Result<Proc> {
    let child = Command::new(c_tool())
        .args(["write", name])
        .arg(frames_file())
        .args(["--size", "640", "360"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()?;
    Ok(Proc(child))
}

/// Decode `want` pictures from the viewer; their counters, which must increase.
async fn decode_viewer(
    peer: &mut ReceiverPeer,
    decoder: &mut H264Decoder,
    want: usize,
) -> Result<Vec<u32>> {
    let mut counters: Vec<u32> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while counters.len() < want {
        let Ok(Some(frame)) = tokio::time::timeout_at(deadline, peer.next_frame()).await else {
            bail!("only {} of {want} pictures decoded", counters.len());
        };
        // Across a writer outage the first pictures may reference ones never received:
        // ask for a keyframe as a browser would, and only count from there.
        let picture = match decoder.decode(&frame.data) {
            Ok(Some(picture)) => picture,
            Ok(None) => continue,
            Err(e) if counters.is_empty() => {
                note_skipped_picture(&e);
                peer.send_pli();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // While the writer is away (or not there yet) viewers get NO SIGNAL.
        if is_no_signal(&picture) {
            continue;
        }
        if (picture.width, picture.height) != (640, 360) {
            bail!("picture is {}x{}", picture.width, picture.height);
        }
        let (counter, _) = read_code_strip(&picture.y, picture.y_stride, 640, 360)
            .context("picture without a readable code strip")?;
        if let Some(&last) = counters.last() {
            if counter <= last {
                bail!("counter went from {last} to {counter} ({counters:?})");
            }
        }
        counters.push(counter);
    }
    Ok(counters)
}

/// Decode until the viewer shows the NO SIGNAL picture.
async fn wait_no_signal(peer: &mut ReceiverPeer, decoder: &mut H264Decoder) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let Ok(Some(frame)) = tokio::time::timeout_at(deadline, peer.next_frame()).await else {
            bail!("no NO SIGNAL picture while the writer was gone");
        };
        match decoder.decode(&frame.data) {
            Ok(Some(picture)) if is_no_signal(&picture) => return Ok(()),
            Ok(_) => {}
            Err(_) => peer.send_pli(),
        }
    }
}

fn note_skipped_picture(e: &dyn std::fmt::Display) {
    println!("before the first picture: {e}");
}

fn source_arg(name: &str) -> String {
    format!("memsink:{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_writer_feeds_a_webrtc_viewer_through_memsink_source() -> Result<()> {
    let _serial = serial();
    let name = unique_name("csrc");
    let _cleanup = RemoveShm(name.clone());
    // peregrine first (running once it answers /state): it waits for the sink to appear.
    let server = Server::start(&["--source", &source_arg(&name)]).await?;
    let _writer = start_c_writer(&name, &["--rm"])?;
    let (_janus, mut peer) = join(&server).await?;
    let counters = decode_viewer(&mut peer, &mut H264Decoder::new()?, 45).await?;
    println!(
        "decoded counters {}..{}",
        counters[0],
        counters[counters.len() - 1]
    );
    let state = server.state().await?;
    assert_eq!(state["source"]["width"], 640);
    assert_eq!(state["source"]["height"], 360);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_restarts_resume_frames_for_a_connected_viewer() -> Result<()> {
    let _serial = serial();
    let name = unique_name("restart");
    let _cleanup = RemoveShm(name.clone());
    let writer = start_c_writer(&name, &[])?;
    let server = Server::start(&["--source", &source_arg(&name)]).await?;
    let (_janus, mut peer) = join(&server).await?;
    let mut decoder = H264Decoder::new()?;
    decode_viewer(&mut peer, &mut decoder, 15).await?;
    // /state, which the bundled page shows as "no signal", follows the writer.
    server
        .wait_state(Duration::from_secs(5), |s| s["source"]["state"] == "live")
        .await?;

    // Killed mid-stream: the object stays with its last frame; a new writer reuses it.
    drop(writer);
    server
        .wait_state(Duration::from_secs(10), |s| {
            s["source"]["state"] == "no_signal" && s["source"]["interruptions"] == 1
        })
        .await?;
    // Viewers stay connected and see NO SIGNAL meanwhile.
    wait_no_signal(&mut peer, &mut decoder).await?;
    let writer = start_c_writer(&name, &[])?;
    let counters = decode_viewer(&mut peer, &mut decoder, 15).await?;
    println!("after a restart in place: {counters:?}");
    server
        .wait_state(Duration::from_secs(5), |s| s["source"]["state"] == "live")
        .await?;

    // Killed and the object removed and created anew (µStreamer with --h264-sink-rm).
    drop(writer);
    std::fs::remove_file(shm_path(&name))?;
    server
        .wait_state(Duration::from_secs(10), |s| {
            s["source"]["state"] == "no_signal" && s["source"]["interruptions"] == 2
        })
        .await?;
    while peer.try_next_frame().is_some() {}
    let _writer = start_c_writer(&name, &["--rm"])?;
    let counters = decode_viewer(&mut peer, &mut decoder, 15).await?;
    println!("after the object was recreated: {counters:?}");
    Ok(())
}

/// Wait until the log file contains `needle`.
async fn wait_log(path: &Path, needle: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.contains(needle) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("log never said {needle:?}:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_corrupt_and_wrong_version_sinks_are_survived() -> Result<()> {
    let _serial = serial();
    let name = unique_name("faults");
    let _cleanup = RemoveShm(name.clone());
    let log_path = tmp_file("faults.log");
    let log = std::fs::File::create(&log_path)?;
    let writer = start_c_writer(&name, &[])?;
    let server = Server::start_logged(&["--source", &source_arg(&name)], log).await?;
    let (_janus, mut peer) = join(&server).await?;
    let mut decoder = H264Decoder::new()?;
    decode_viewer(&mut peer, &mut decoder, 10).await?;
    drop(writer);

    let header_at = |bytes: &[u8]| -> Result<()> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(shm_path(&name))?;
        f.write_all_at(bytes, 0)?;
        Ok(())
    };
    // Garbage over the whole header: no magic, so "no frame yet".
    let garbage: Vec<u8> = (0..160u32).map(|i| (i * 37 + 11) as u8).collect();
    header_at(&garbage)?;
    wait_log(&log_path, "magic not set").await?;
    server.state().await?;

    // Valid magic and version but `used` beyond the data area.
    let mut corrupt = garbage.clone();
    corrupt[..8].copy_from_slice(&0xCAFE_BABE_CAFE_BABEu64.to_le_bytes());
    corrupt[8..12].copy_from_slice(&10u32.to_le_bytes());
    corrupt[16..24].copy_from_slice(&0x1234_5678u64.to_le_bytes());
    corrupt[24..32].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    header_at(&corrupt)?;
    wait_log(&log_path, "corrupt header").await?;
    server.state().await?;

    // A writer of another protocol version.
    let old = start_c_writer(&name, &["--version", "9"])?;
    wait_log(&log_path, "protocol version mismatch: sink=9, required=10").await?;
    server.state().await?;
    drop(old);

    // A valid writer returns: the same viewer gets pictures again.
    while peer.try_next_frame().is_some() {}
    let _writer = start_c_writer(&name, &["--rm"])?;
    let counters = decode_viewer(&mut peer, &mut decoder, 10).await?;
    println!("after the faults: {counters:?}");
    let _ = std::fs::remove_file(&log_path);
    Ok(())
}

/// `last_client_ts` of the sink, read as any other process would.
fn last_client_ts(name: &str) -> Result<f64> {
    use peregrine::memsink::layout::Abi;
    use peregrine::memsink::shm::{OpenMode, ShmObject};
    let layout = Abi::host().context("known ABI")?.layout();
    let shm = ShmObject::open(name, layout.header_size, OpenMode::Existing)?;
    let mut raw = vec![0u8; layout.header_size];
    shm.read(0, &mut raw)?;
    Ok(layout.decode(&raw).last_client_ts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_reads_the_sink_only_while_somebody_watches() -> Result<()> {
    let _serial = serial();
    let name = unique_name("lazy");
    let _cleanup = RemoveShm(name.clone());
    let _writer = start_c_writer(&name, &["--rm"])?;
    let (server, log) = Server::start_piped(&["--source", &source_arg(&name)], None).await?;
    // A window with nobody watching: nothing to wait for, since nothing may happen.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(last_client_ts(&name)?, 0.0, "read without any viewer");

    // A Janus handle opens the source, as the ustreamer plugin does on attach.
    let mut janus = JanusClient::connect(&server, Transport::WebSocket).await?;
    janus.create_and_attach().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while last_client_ts(&name)? == 0.0 {
        if Instant::now() > deadline {
            bail!("the source never read the sink while a handle was attached");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
        .wait_state(Duration::from_secs(10), |s| {
            s["source"]["frames"].as_u64() > Some(5)
        })
        .await?;

    // Once the handle is gone the reads stop.
    drop(janus);
    server
        .wait_state(Duration::from_secs(20), |s| s["source"]["subscribers"] == 0)
        .await?;
    log.wait_for(Duration::from_secs(10), |t| {
        t.contains("memsink closed: nobody watching")
    })
    .await?;
    let stamped = last_client_ts(&name)?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        last_client_ts(&name)?,
        stamped,
        "still reading without viewers"
    );
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(&s[i..i + 2], 16)?))
        .collect()
}

/// Both `long double` encodings against the C compiler: x87 as `long double` on x86_64,
/// binary128 as `__float128` (the aarch64 `long double` format).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn long_double_codecs_agree_with_the_c_compiler() -> Result<()> {
    let _serial = serial();
    use peregrine::memsink::layout::{binary128_decode, binary128_encode, x87_decode};
    for text in [
        "0",
        "1",
        "-2.5",
        "12345.678",
        "1000000.001",
        "1234567.891",
        "0.001",
    ] {
        let value: f64 = text.parse()?;
        let out = Command::new(c_tool())
            .args(["ld", text, &hex(&binary128_encode(value))])
            .output()?;
        assert!(out.status.success());
        let stdout = String::from_utf8(out.stdout)?;
        let fields: Vec<&str> = stdout.split_whitespace().collect();
        let [x87, quad, back] = fields[..] else {
            bail!("unexpected output {stdout:?}");
        };
        if cfg!(target_arch = "x86_64") {
            assert_eq!(x87_decode(&unhex(x87)?), value, "x87 {text}");
        }
        assert_eq!(binary128_decode(&unhex(quad)?), value, "binary128 {text}");
        assert_eq!(
            back,
            format!("{value:.6}"),
            "C reading our binary128 of {text}"
        );
    }
    Ok(())
}

/// What one put of a [`LiveWriter`] did.
#[derive(Clone, Copy, Debug)]
struct Put {
    counter: u32,
    key: bool,
    /// A reader asked for a keyframe (the writer makes its next picture one).
    wants_key: bool,
}

/// A writer as µStreamer runs one: each picture of the test pattern is drawn and encoded
/// when it is due, stamped with its capture time on CLOCK_MONOTONIC, and a reader's
/// keyframe request makes the next picture an IDR.
struct LiveWriter {
    sink: SinkWriter,
    pattern: TestPattern,
    encoder: H264Encoder,
    gop: u32,
    /// Drawn into the next picture.
    counter: u32,
}

impl LiveWriter {
    fn open(name: &str, gop: u32) -> Result<LiveWriter> {
        let mut cfg = SinkConfig::new(name);
        cfg.remove_on_exit = true;
        let encoder = H264Encoder::new(&VideoSettings {
            width: WIDTH,
            height: HEIGHT,
            fps: 30,
            bitrate_kbps: 1000,
            gop,
        })?;
        Ok(LiveWriter {
            sink: SinkWriter::open(cfg)?,
            pattern: TestPattern::new(WIDTH, HEIGHT)?,
            encoder,
            gop,
            counter: 0,
        })
    }

    /// Draw and encode the next picture: (counter, key, Annex-B data).
    fn encode_next(&mut self) -> Result<(u32, bool, Vec<u8>)> {
        let counter = self.counter;
        self.counter += 1;
        let picture = self
            .encoder
            .encode(self.pattern.draw(counter, 0), u64::from(counter) * 33_000)?
            .context("encoder skipped a picture")?;
        Ok((counter, picture.key, picture.data.to_vec()))
    }

    /// Put one encoded picture captured at `grab_begin_ts` (CLOCK_MONOTONIC seconds).
    fn put(&mut self, counter: u32, key: bool, data: &[u8], grab_begin_ts: f64) -> Result<Put> {
        let meta = FrameMeta {
            width: WIDTH,
            height: HEIGHT,
            format: FORMAT_H264,
            stride: 0,
            online: true,
            key,
            gop: self.gop,
            grab_begin_ts,
            grab_end_ts: grab_begin_ts,
            encode_begin_ts: grab_begin_ts,
            encode_end_ts: grab_begin_ts,
        };
        match self.sink.put(&meta, data)? {
            PutOutcome::Written { wants_key } => {
                if wants_key {
                    self.encoder.force_keyframe();
                }
                Ok(Put {
                    counter,
                    key,
                    wants_key,
                })
            }
            other => bail!("picture {counter} not written: {other:?}"),
        }
    }
}

/// Controls for a [`LiveWriter`] running on its own thread at 30 fps.
#[derive(Clone, Default)]
struct WriterControl {
    stop: Arc<AtomicBool>,
    /// Leave out the next P-frame that is well into its GOP (set back once done).
    drop_one: Arc<AtomicBool>,
    /// The counter of the picture left out.
    dropped: Arc<Mutex<Option<u32>>>,
    puts: Arc<Mutex<Vec<Put>>>,
}

impl WriterControl {
    fn puts(&self) -> Vec<Put> {
        self.puts.lock().unwrap().clone()
    }

    fn dropped(&self) -> Option<u32> {
        *self.dropped.lock().unwrap()
    }
}

/// Write fresh pictures at 30 fps until stopped (at most 20 s), starting with an IDR.
fn spawn_live_writer(
    mut writer: LiveWriter,
    control: WriterControl,
) -> std::thread::JoinHandle<Result<()>> {
    std::thread::spawn(move || {
        writer.encoder.force_keyframe();
        let frame_time = Duration::from_micros(33_333);
        let start = Instant::now();
        let mut since_key = 0u32;
        for n in 0..600u32 {
            if control.stop.load(Ordering::Relaxed) {
                break;
            }
            let due = start + frame_time * n;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let (counter, key, data) = writer.encode_next()?;
            since_key = if key { 0 } else { since_key + 1 };
            // A P-frame 20 pictures (over 0.6 s) after its IDR: the server's keyframe
            // request for the gap is not held back by its minimum keyframe spacing.
            let last_wanted_key = control.puts.lock().unwrap().last().map(|p| p.wants_key);
            if control.drop_one.load(Ordering::Relaxed)
                && !key
                && since_key >= 20
                && last_wanted_key == Some(false)
            {
                control.drop_one.store(false, Ordering::Relaxed);
                *control.dropped.lock().unwrap() = Some(counter);
                continue;
            }
            let put = writer.put(counter, key, &data, monotonic_s())?;
            control.puts.lock().unwrap().push(put);
        }
        Ok(())
    })
}

/// One picture as the viewer decoded it.
#[derive(Debug, PartialEq)]
enum Seen {
    Pattern(u32),
    NoSignal,
}

/// Receive and decode until the next picture. Every picture must be NO SIGNAL or the
/// test pattern with a readable code strip: one decoded against a wrong reference shows
/// a smeared strip. Decode errors are tolerated (with a PLI, as a browser sends) only
/// while `started` is false.
async fn next_picture(
    peer: &mut ReceiverPeer,
    decoder: &mut H264Decoder,
    deadline: tokio::time::Instant,
    started: bool,
) -> Result<Seen> {
    loop {
        let Ok(Some(frame)) = tokio::time::timeout_at(deadline, peer.next_frame()).await else {
            bail!("no picture before the deadline");
        };
        let picture = match decoder.decode(&frame.data) {
            Ok(Some(picture)) => picture,
            Ok(None) => continue,
            Err(e) if !started => {
                note_skipped_picture(&e);
                peer.send_pli();
                continue;
            }
            Err(e) => bail!("the viewer could not decode a picture: {e}"),
        };
        if is_no_signal(&picture) {
            return Ok(Seen::NoSignal);
        }
        if (picture.width, picture.height) != (WIDTH as usize, HEIGHT as usize) {
            bail!("picture is {}x{}", picture.width, picture.height);
        }
        let (counter, _) =
            read_code_strip(&picture.y, picture.y_stride, picture.width, picture.height)
                .context("the viewer decoded a picture without a readable code strip")?;
        return Ok(Seen::Pattern(counter));
    }
}

/// Append the next test-pattern picture's counter, which must be above the last one.
async fn next_counter(
    peer: &mut ReceiverPeer,
    decoder: &mut H264Decoder,
    deadline: tokio::time::Instant,
    counters: &mut Vec<u32>,
) -> Result<()> {
    loop {
        match next_picture(peer, decoder, deadline, !counters.is_empty()).await? {
            Seen::NoSignal if counters.is_empty() => continue,
            Seen::NoSignal => bail!("NO SIGNAL while the writer was live ({counters:?})"),
            Seen::Pattern(counter) => {
                if let Some(&last) = counters.last() {
                    if counter <= last {
                        bail!("counter went from {last} to {counter} ({counters:?})");
                    }
                }
                counters.push(counter);
                return Ok(());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reference_picture_never_reaches_the_viewer() -> Result<()> {
    let _serial = serial();
    let name = unique_name("lostref");
    let _cleanup = RemoveShm(name.clone());
    // A long GOP: only the key request for the gap brings the next IDR soon.
    let writer = LiveWriter::open(&name, 300)?;
    let control = WriterControl::default();
    let writing = spawn_live_writer(writer, control.clone());
    let stop_writer = StopOnDrop(control.stop.clone());

    let server = Server::start(&["--source", &source_arg(&name)]).await?;
    let (_janus, mut peer) = join(&server).await?;
    let mut decoder = H264Decoder::new()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut counters = Vec::new();
    while counters.len() < 30 {
        next_counter(&mut peer, &mut decoder, deadline, &mut counters).await?;
    }
    control.drop_one.store(true, Ordering::Relaxed);
    // Until 30 pictures after the gap were shown: playback resumes.
    loop {
        next_counter(&mut peer, &mut decoder, deadline, &mut counters).await?;
        if let Some(dropped) = control.dropped() {
            if counters.iter().filter(|&&c| c > dropped).count() >= 30 {
                break;
            }
        }
    }
    drop(stop_writer);
    writing.join().expect("writer thread")?;

    let dropped = control.dropped().context("no picture left out")?;
    let puts = control.puts();
    // The writer left the picture out only with no key request pending, so a request
    // after it is for the gap.
    let after: Vec<&Put> = puts.iter().filter(|p| p.counter > dropped).collect();
    let asked = after
        .iter()
        .find(|p| p.wants_key)
        .context("the writer was never asked for a keyframe after the gap")?;
    let repaired = after
        .iter()
        .find(|p| p.key)
        .context("no keyframe after the gap")?;
    assert!(asked.counter < repaired.counter, "{after:?}");
    println!(
        "left out {dropped}, asked for a keyframe at {}, IDR at {}; viewer decoded {:?}",
        asked.counter, repaired.counter, counters
    );
    // Pictures between the gap and the IDR would decode against the wrong reference.
    let shown_broken: Vec<u32> = counters
        .iter()
        .copied()
        .filter(|&c| c > dropped && c < repaired.counter)
        .collect();
    assert_eq!(
        shown_broken,
        Vec::<u32>::new(),
        "pictures of a broken chain shown"
    );
    let state = server.state().await?;
    let lost = state["source"]["lost_references"].as_u64();
    assert!(
        lost >= Some(1),
        "lost_references {lost:?}: {}",
        state["source"]
    );
    Ok(())
}

/// Stops a writer thread however the test ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_frame_left_in_the_sink_is_not_shown() -> Result<()> {
    let _serial = serial();
    let name = unique_name("stale");
    let _cleanup = RemoveShm(name.clone());
    // The sink holds one keyframe captured 5 s ago, as after a writer stopped.
    let mut writer = LiveWriter::open(&name, 30)?;
    let (stale, key, data) = writer.encode_next()?;
    assert!(key);
    let captured = monotonic_s() - 5.0;
    assert!(captured > 0.0, "CLOCK_MONOTONIC below 5 s");
    writer.put(stale, key, &data, captured)?;
    writer.counter = 100;

    let server = Server::start(&["--source", &source_arg(&name)]).await?;
    let (_janus, mut peer) = join(&server).await?;
    let mut decoder = H264Decoder::new()?;
    // The source has read the sink (and so the frame) once it stamped its visit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while last_client_ts(&name)? == 0.0 {
        if Instant::now() > deadline {
            bail!("the source never read the sink");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first picture the viewer gets is NO SIGNAL (the sink has no live frame), never
    // the old one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    if let Seen::Pattern(counter) = next_picture(&mut peer, &mut decoder, deadline, false).await? {
        bail!("the viewer was shown the stale picture {counter}");
    }

    // The writer comes back: its fresh pictures play.
    let control = WriterControl::default();
    let writing = spawn_live_writer(writer, control.clone());
    let stop_writer = StopOnDrop(control.stop.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut counters = Vec::new();
    while counters.len() < 30 {
        next_counter(&mut peer, &mut decoder, deadline, &mut counters).await?;
    }
    drop(stop_writer);
    writing.join().expect("writer thread")?;
    println!("after the stale frame: {counters:?}");
    assert!(
        counters.iter().all(|&c| c >= 100),
        "the stale picture {stale} was shown: {counters:?}"
    );
    Ok(())
}

/// Read frames from the binary's sink from its first keyframe on; after `before` frames,
/// hold the sink lock for `hold`, as a stuck reader would, then read `after` more.
/// Returns the frames (key, data) and the index of the first one read after the hold.
#[allow(clippy::type_complexity)]
fn read_across_a_held_lock(
    name: &str,
    before: usize,
    hold: Duration,
    after: usize,
) -> Result<(Vec<(bool, Vec<u8>)>, usize)> {
    use peregrine::memsink::layout::Abi;
    use peregrine::memsink::reader::{Get, SinkReader};
    use peregrine::memsink::shm::{OpenMode, ShmObject};
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reader = SinkReader::open(name, Duration::from_secs(1))?;
    let mut frames: Vec<(bool, Vec<u8>)> = Vec::new();
    let mut released_at = None;
    while frames.len() < before + after {
        if Instant::now() > deadline {
            bail!("only {} frames read", frames.len());
        }
        if frames.len() == before && released_at.is_none() {
            let layout = Abi::host().context("known ABI")?.layout();
            let holder = ShmObject::open(name, layout.header_size, OpenMode::Existing)?;
            let Some(lock) = holder.lock_timed(Duration::from_secs(1))? else {
                bail!("could not take the sink lock");
            };
            std::thread::sleep(hold);
            lock.unlock()?;
            released_at = Some(frames.len());
        }
        match reader.get(frames.is_empty())? {
            Get::Frame(frame) if frames.is_empty() && !frame.meta.key => {}
            Get::Frame(frame) => frames.push((frame.meta.key, frame.data)),
            Get::NoData => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    Ok((frames, released_at.unwrap_or(before)))
}

/// A reader that stalls while holding the sink lock makes the writer give up on a picture
/// (Busy). Every reader must then get nothing it cannot decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_busy_sink_the_writer_goes_on_at_a_keyframe() -> Result<()> {
    let _serial = serial();
    let name = unique_name("busy");
    let _cleanup = RemoveShm(name.clone());
    // 10 fps: what queues up while the sink is held stays within the hub's queue.
    let (_server, log) = Server::start_piped(
        &[
            "--resolution",
            "640x360",
            "--desired-fps",
            "10",
            "--h264-sink",
            &name,
            "--h264-sink-rm",
        ],
        Some("peregrine::memsink=debug"),
    )
    .await?;
    // Held past the writer's 1 s put timeout: it gives up on at least one picture.
    let (frames, released_at) = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || {
            read_across_a_held_lock(&name, 10, Duration::from_millis(1500), 15)
        })
        .await??
    };
    log.wait_for(Duration::from_secs(5), |l| l.contains("memsink busy"))
        .await?;
    // Every frame decodes: a P-frame after the picture the writer gave up on would be
    // decoded against the wrong reference (openh264 reports the lost reference).
    let keys: Vec<bool> = frames.iter().map(|f| f.0).collect();
    let payloads: Vec<Vec<u8>> = frames.into_iter().map(|(_, data)| data).collect();
    let counters =
        decode_counters(&payloads).with_context(|| format!("frames read (key flags) {keys:?}"))?;
    assert_eq!(counters.len(), payloads.len(), "{counters:?}");
    // Pictures are missing only where the writer gave up, and it went on at a keyframe.
    let gaps: Vec<usize> = (1..counters.len())
        .filter(|&i| counters[i] != counters[i - 1] + 1)
        .collect();
    assert!(
        gaps.iter().any(|&i| i >= released_at),
        "no picture missing after the sink was held: {counters:?}"
    );
    for &i in &gaps {
        assert!(
            counters[i] > counters[i - 1] && keys[i],
            "after picture {} came {} (key: {}): {counters:?}",
            counters[i - 1],
            counters[i],
            keys[i]
        );
    }
    println!("read across the busy sink: {counters:?}");
    Ok(())
}

/// Shrink the object to nothing, as `truncate -s 0 /dev/shm/NAME` does.
fn truncate_object(name: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(name))?
        .set_len(0)?;
    Ok(())
}

/// The full size of an H.264 sink on this machine.
fn sink_size(name: &str) -> Result<u64> {
    use peregrine::memsink::layout::{data_size_for_name, Abi};
    let layout = Abi::host().context("known ABI")?.layout();
    Ok((layout.header_size + data_size_for_name(name)?) as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_truncated_under_the_reading_server_is_survived() -> Result<()> {
    let _serial = serial();
    let name = unique_name("trunc-src");
    let _cleanup = RemoveShm(name.clone());
    let log_path = tmp_file("trunc-src.log");
    let writer = start_c_writer(&name, &[])?;
    let server = Server::start_logged(
        &["--source", &source_arg(&name)],
        std::fs::File::create(&log_path)?,
    )
    .await?;
    let (_janus, mut peer) = join(&server).await?;
    let mut decoder = H264Decoder::new()?;
    decode_viewer(&mut peer, &mut decoder, 10).await?;

    // Another local process shrinks the object while peregrine reads it every
    // millisecond. (The C writer maps it, so it dies of SIGBUS here; peregrine must not.)
    truncate_object(&name)?;
    drop(writer);
    wait_log(&log_path, "truncated by another process").await?;
    server
        .wait_state(Duration::from_secs(10), |s| {
            s["source"]["state"] == "no_signal"
        })
        .await
        .context("peregrine no longer answers after the truncation")?;
    wait_no_signal(&mut peer, &mut decoder).await?;

    // The object is whole again (a writer restarts and sizes it): video resumes on the
    // same connection.
    while peer.try_next_frame().is_some() {}
    let _writer = start_c_writer(&name, &["--rm"])?;
    let counters = decode_viewer(&mut peer, &mut decoder, 10).await?;
    println!("after the truncation: {counters:?}");
    let _ = std::fs::remove_file(&log_path);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_truncated_under_the_writing_server_is_restored() -> Result<()> {
    let _serial = serial();
    let name = unique_name("trunc-sink");
    let _cleanup = RemoveShm(name.clone());
    let log_path = tmp_file("trunc-sink.log");
    let server = Server::start_logged(
        &[
            "--resolution",
            "640x360",
            "--h264-sink",
            &name,
            "--h264-sink-client-ttl",
            "1",
        ],
        std::fs::File::create(&log_path)?,
    )
    .await?;
    let first = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || c_read(&name, 10, Duration::from_secs(60))).await??
    };
    assert!(!decode_from_first_key(&first.0, &first.1)?.is_empty());

    for round in 0..3 {
        truncate_object(&name)?;
        // The writer notices on its next look at the object and gives it its size back.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(shm_path(&name))?.len() != sink_size(&name)? {
            if Instant::now() > deadline {
                bail!("round {round}: the writer never restored the object's size");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
            .state()
            .await
            .with_context(|| format!("round {round}: peregrine died"))?;
    }
    wait_log(&log_path, "truncated by another process; restored its size").await?;

    // A reader that comes afterwards gets decodable pictures again.
    let (metas, payloads) = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || c_read(&name, 15, Duration::from_secs(60))).await??
    };
    assert!(!decode_from_first_key(&metas, &payloads)?.is_empty());
    let _ = std::fs::remove_file(&log_path);
    Ok(())
}

/// Run the binary with `--h264-sink NAME` until it either fails or serves.
async fn sink_start_error(name: &str) -> Result<Option<String>> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .args(["--source", "testsrc", "--h264-sink", name])
        .args(["--host", "127.0.0.1", "--udp-port-range", "0"])
        .args([
            "--port",
            "0",
            "--janus-ws-port",
            "0",
            "--janus-http-port",
            "0",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(5), out).await {
        Ok(out) => {
            let out = out?;
            assert!(!out.status.success());
            Ok(Some(String::from_utf8_lossy(&out.stderr).into_owned()))
        }
        // Still running: it took the sink.
        Err(_) => Ok(None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_someone_else_created_is_refused_and_our_own_is_reused() -> Result<()> {
    let _serial = serial();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let name = unique_name("owner");
    let _cleanup = RemoveShm(name.clone());
    let path = shm_path(&name);

    // Pre-created writable by everyone: anyone could read or forge the frames.
    std::fs::write(&path, b"")?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    let err = sink_start_error(&name)
        .await?
        .context("a world-writable object was used")?;
    println!("{err}");
    assert!(err.contains(&name), "{err}");
    assert!(err.contains("writable by every user"), "{err}");
    assert!(err.contains(&format!("rm /dev/shm/{name}")), "{err}");
    assert_eq!(std::fs::metadata(&path)?.len(), 0, "the object was touched");

    // Pre-created by another user (the tests run as root, which may hand it over).
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        std::os::unix::fs::chown(&path, Some(65534), Some(65534))?;
        let err = sink_start_error(&name)
            .await?
            .context("another user's object was used")?;
        assert!(err.contains("belongs to uid 65534"), "{err}");
    }

    // Our own stale object (a previous run without --h264-sink-rm): taken over, with
    // the mode asked for and the full size.
    std::fs::remove_file(&path)?;
    std::fs::write(&path, b"stale")?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    assert!(
        sink_start_error(&name).await?.is_none(),
        "our own stale object was refused"
    );
    let meta = std::fs::metadata(&path)?;
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(meta.len(), sink_size(&name)?);
    Ok(())
}

fn unique_jpeg_name(tag: &str) -> String {
    format!("peregrine-it-{tag}-{}::jpeg", std::process::id())
}

/// A JPEG decoded as a grey picture: (width, height, luma).
fn decode_jpeg_luma(jpeg: &[u8]) -> Result<(usize, usize, Vec<u8>)> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::Luma);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
    let luma = decoder
        .decode()
        .map_err(|e| anyhow::anyhow!("not a JPEG: {e:?}"))?;
    let info = decoder.info().context("no JPEG header")?;
    Ok((usize::from(info.width), usize::from(info.height), luma))
}

/// The JPEG sink's `has_clients` in `/state`, and whether the stream makes JPEG now.
fn jpeg_sink_reader(state: &serde_json::Value) -> Option<bool> {
    state["result"]["sinks"]["jpeg"]["has_clients"].as_bool()
}

fn jpeg_idle(state: &serde_json::Value) -> bool {
    let tap = &state["mjpeg"]["streams"]["default"];
    jpeg_sink_reader(state) == Some(false)
        && tap["running"] == false
        && tap["clients"] == 0
        && state["source"]["subscribers"] == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jpeg_sink_feeds_a_c_reader_only_while_it_reads() -> Result<()> {
    let _serial = serial();
    let name = unique_jpeg_name("jpegsink");
    let _cleanup = RemoveShm(name.clone());
    let server = Server::start(&[
        "--resolution",
        "320x240",
        "--jpeg-sink",
        &name,
        "--jpeg-sink-rm",
        "--jpeg-sink-client-ttl",
        "1",
    ])
    .await?;
    // Without a reader (after the first frame that initialises the object), no picture
    // is made for the sink.
    server
        .wait_state(Duration::from_secs(20), jpeg_idle)
        .await?;

    let reading = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || c_read(&name, 60, Duration::from_secs(60)))
    };
    let state = server
        .wait_state(Duration::from_secs(20), |s| {
            jpeg_sink_reader(s) == Some(true) && s["mjpeg"]["streams"]["default"]["running"] == true
        })
        .await?;
    assert!(
        state["result"]["sinks"].get("h264").is_none(),
        "only the JPEG sink is configured: {state}"
    );
    let (metas, payloads) = reading.await??;
    let mut counters = Vec::new();
    for (m, jpeg) in metas.iter().zip(&payloads) {
        assert_eq!(m["format"], format!("{FORMAT_JPEG:08x}"));
        assert_eq!((m["width"].as_str(), m["height"].as_str()), ("320", "240"));
        assert_eq!((m["stride"].as_str(), m["gop"].as_str()), ("0", "0"));
        assert_eq!((m["online"].as_str(), m["key"].as_str()), ("1", "0"));
        let (w, h, luma) = decode_jpeg_luma(jpeg)?;
        assert_eq!((w, h), (320, 240));
        if let Some((counter, _)) = read_code_strip(&luma, w, w, h) {
            counters.push(counter);
        }
    }
    // The first frame may be the one left from before the reader came.
    assert!(
        counters.len() >= 50,
        "code strip read in {}",
        counters.len()
    );
    assert!(
        counters[1..].windows(2).all(|w| w[1] > w[0]),
        "pictures not live and in order: {counters:?}"
    );

    // The reader is gone: after the client TTL the sink leaves the tap, which lets go
    // of the hub, and the test pattern idles.
    server
        .wait_state(Duration::from_secs(15), jpeg_idle)
        .await?;
    // A new reader wakes it again.
    let (metas, payloads) = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || c_read(&name, 5, Duration::from_secs(60))).await??
    };
    assert_eq!(metas.len(), 5);
    assert_eq!(decode_jpeg_luma(&payloads[4])?.0, 320);
    // Stopped as a service manager stops it: --jpeg-sink-rm removes the object.
    let term = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()?;
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while shm_path(&name).exists() {
        assert!(
            Instant::now() < deadline,
            "--jpeg-sink-rm removes the object at exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mjpeg_cameras_pictures_reach_the_jpeg_sink_byte_identical() -> Result<()> {
    let _serial = serial();
    // A camera's own MJPEG, recorded as ffmpeg writes it, replayed through the camera
    // pipeline (the same path as a V4L2 device's buffers).
    let file = tmp_file("camera").with_extension("mjpeg");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30"])
        .args(["-frames:v", "30", "-pix_fmt", "yuvj420p", "-c:v", "mjpeg"])
        .args(["-q:v", "5", "-f", "mjpeg"])
        .arg(&file)
        .status()
        .context("run ffmpeg")?;
    anyhow::ensure!(made.success(), "ffmpeg could not make the recording");
    let data = std::fs::read(&file)?;
    let recording = peregrine::source::camera::replay::Recording::mjpeg(&data, 320, 240);
    assert_eq!(recording.frames.len(), 30);
    let name = unique_jpeg_name("camsink");
    let _cleanup = RemoveShm(name.clone());
    let source = file.to_str().context("temp path")?.to_string();
    let server = Server::start(&[
        "--source",
        &source,
        "--resolution",
        "320x240",
        "--jpeg-sink",
        &name,
    ])
    .await;
    let _ = std::fs::remove_file(&file);
    let server = server?;

    let (metas, payloads) = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || c_read(&name, 45, Duration::from_secs(60))).await??
    };
    // Until the camera is open the stream shows NO SIGNAL (offline frames); from its
    // first picture on, every frame is the camera's own.
    let first_live = metas
        .iter()
        .position(|m| m["online"] == "1")
        .context("no live frame")?;
    assert!(
        metas.len() - first_live >= 30,
        "{} live frames",
        metas.len() - first_live
    );
    for (m, jpeg) in metas.iter().zip(&payloads).skip(first_live) {
        assert_eq!(m["format"], format!("{FORMAT_JPEG:08x}"));
        assert_eq!(m["online"], "1");
        assert!(
            recording.frames.contains(jpeg),
            "a frame of {} bytes is not one of the camera's pictures",
            jpeg.len()
        );
    }
    let state = server.state().await?;
    let tap = &state["mjpeg"]["streams"]["default"];
    assert_eq!(tap["passthrough"], true, "{tap}");
    assert_eq!(tap["encoded"], 0, "nothing decoded or encoded: {tap}");
    Ok(())
}
