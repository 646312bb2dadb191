//! µStreamer's MJPEG output end to end against the real binary: ffmpeg and ffprobe as
//! the clients, a reader that never reads, 200 clients at once, a source that goes
//! away, and the requests that must be refused.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use support::{free_port, raw_request, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const BOUNDARY: &[u8] = b"--boundarydonotcross\r\n";

/// One part of a `/stream` response.
struct Part {
    /// Header lines, lowercase names.
    headers: String,
    jpeg: Vec<u8>,
}

impl Part {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A `/stream` client reading the multipart body itself (HTTP/1.0, as µStreamer
/// answers: the body is the raw multipart stream).
struct MjpegReader {
    conn: TcpStream,
    buf: Vec<u8>,
    head: String,
}

impl MjpegReader {
    async fn open(port: u16, path: &str) -> Result<MjpegReader> {
        let conn = TcpStream::connect(("127.0.0.1", port)).await?;
        Self::over(conn, path).await
    }

    async fn over(mut conn: TcpStream, path: &str) -> Result<MjpegReader> {
        conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut reader = MjpegReader {
            conn,
            buf: Vec::new(),
            head: String::new(),
        };
        let end = reader.fill_until(b"\r\n\r\n").await?;
        reader.head = String::from_utf8_lossy(&reader.buf[..end]).to_ascii_lowercase();
        reader.buf.drain(..end + 4);
        ensure!(
            reader.head.starts_with("http/1.0 200") || reader.head.starts_with("http/1.1 200"),
            "{}",
            reader.head
        );
        Ok(reader)
    }

    /// Read until `needle` is in the buffer; its position.
    async fn fill_until(&mut self, needle: &[u8]) -> Result<usize> {
        loop {
            if let Some(at) = self.buf.windows(needle.len()).position(|w| w == needle) {
                return Ok(at);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 65536];
        let n = self.conn.read(&mut chunk).await?;
        if n == 0 {
            bail!("the stream ended");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn next_part(&mut self) -> Result<Part> {
        while self.buf.len() < BOUNDARY.len() {
            self.fill().await?;
        }
        ensure!(
            self.buf.starts_with(BOUNDARY),
            "no boundary where a part starts"
        );
        self.buf.drain(..BOUNDARY.len());
        let end = self.fill_until(b"\r\n\r\n").await?;
        let headers = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let len: usize = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .context("no Content-Length")?
            .parse()?;
        while self.buf.len() < len + 2 {
            self.fill().await?;
        }
        let jpeg = self.buf[..len].to_vec();
        ensure!(
            &self.buf[len..len + 2] == b"\r\n",
            "no CRLF after the picture"
        );
        self.buf.drain(..len + 2);
        Ok(Part { headers, jpeg })
    }
}

/// Width and height of a JPEG, read by ffprobe from a file.
fn ffprobe_size(jpeg: &[u8]) -> Result<(u32, u32)> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("peregrine-snapshot-{}-{n}.jpg", std::process::id());
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, jpeg)?;
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
        ])
        .args(["-of", "csv=p=0"])
        .arg(&path)
        .output()
        .context("run ffprobe (install it with scripts/install-test-deps.sh)");
    let _ = std::fs::remove_file(&path);
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.trim().split(',').collect();
    ensure!(
        fields.len() == 3 && fields[0] == "mjpeg",
        "ffprobe said {text:?}"
    );
    Ok((fields[1].parse()?, fields[2].parse()?))
}

fn viewers(state: &Value) -> u64 {
    state["streams"]["default"]["viewers"].as_u64().unwrap_or(0)
}

fn hub_subscribers(state: &Value) -> u64 {
    state["source"]["subscribers"].as_u64().unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_reads_the_stream_and_ffprobe_the_snapshot() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240"]).await?;
    let port = server.http_port;

    let snapshot = raw_request(port, "GET", "/snapshot", &[("Connection", "close")]).await?;
    assert_eq!(snapshot.status, 200, "{}", snapshot.head);
    assert!(snapshot.head.contains("content-type: image/jpeg"));
    assert!(snapshot.head.contains("x-ustreamer-online: true"));
    assert!(snapshot.head.contains("x-ustreamer-width: 320"));
    assert_eq!(ffprobe_size(&snapshot.body)?, (320, 240));

    // ffmpeg finds the format from the Content-Type, as any MJPEG player does.
    let frames = 20;
    let url = format!("http://127.0.0.1:{port}/stream");
    let ffmpeg = tokio::task::spawn_blocking(move || {
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i", &url])
            .args(["-frames:v", &frames.to_string()])
            .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
            .stdin(Stdio::null())
            .output()
    });
    // While ffmpeg reads, it is a viewer of the stream, by transport.
    let state = server
        .wait_state(Duration::from_secs(20), |s| viewers(s) == 1)
        .await?;
    assert_eq!(state["mjpeg"]["stream_clients"], 1, "{state}");
    let out = tokio::time::timeout(Duration::from_secs(60), ffmpeg)
        .await
        .context("ffmpeg took over 60 s")???;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout.len(),
        frames * 320 * 240,
        "{frames} grey 320x240 pictures"
    );

    // Everyone gone: the tap lets go of the hub and the test pattern idles again.
    server
        .wait_state(Duration::from_secs(20), |s| {
            viewers(s) == 0 && hub_subscribers(s) == 0
        })
        .await?;
    let metrics = support::http_request(port, "GET", "/metrics", None).await?;
    let text = String::from_utf8_lossy(&metrics.1);
    assert!(text.contains("transport=\"mjpeg\""), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_carry_ustreamer_headers_and_options() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240", "--quality", "90"]).await?;
    let port = server.http_port;

    let mut plain = MjpegReader::open(port, "/stream").await?;
    assert!(
        plain
            .head
            .contains("content-type: multipart/x-mixed-replace;boundary=boundarydonotcross"),
        "{}",
        plain.head
    );
    let part = plain.next_part().await?;
    assert!(part.jpeg.starts_with(&[0xff, 0xd8]) && part.jpeg.ends_with(&[0xff, 0xd9]));
    assert!(part.header("X-Timestamp").is_some(), "{}", part.headers);
    assert!(
        part.header("X-UStreamer-Online").is_none(),
        "only on request"
    );

    // As kvmd reads it.
    let mut kvmd = MjpegReader::open(port, "/stream?extra_headers=1&key=vnc").await?;
    assert!(
        kvmd.head.contains("set-cookie: stream_client=vnc/"),
        "{}",
        kvmd.head
    );
    let part = kvmd.next_part().await?;
    assert_eq!(part.header("X-UStreamer-Online"), Some("true"));
    assert_eq!(part.header("X-UStreamer-Width"), Some("320"));
    assert_eq!(part.header("X-UStreamer-Height"), Some("240"));
    let state = server.state().await?;
    let clients = &state["mjpeg"]["streams"]["default"]["clients_stat"];
    let vnc = clients
        .as_object()
        .and_then(|m| m.values().find(|c| c["key"] == "vnc"))
        .with_context(|| format!("no client with key vnc in {clients}"))?;
    assert_eq!(vnc["extra_headers"], true, "{vnc}");
    // µStreamer's own place for the same, where kvmd looks: `result.stream`.
    let stream = &state["result"]["stream"];
    assert_eq!(stream["clients"], 2, "{stream}");
    let vnc = stream["clients_stat"]
        .as_object()
        .and_then(|m| m.values().find(|c| c["key"] == "vnc"))
        .with_context(|| format!("no client with key vnc in {stream}"))?;
    assert_eq!(vnc["extra_headers"], true, "{vnc}");
    assert!(
        vnc["fps"].is_u64() && stream["queued_fps"].is_u64(),
        "{stream}"
    );
    assert_eq!(
        state["result"]["encoder"]["quality"], 90,
        "--quality is reported"
    );

    let mut empty = MjpegReader::open(port, "/stream?zero_data=1").await?;
    let part = empty.next_part().await?;
    assert!(part.jpeg.is_empty() && part.header("Content-Length") == Some("0"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_reads_delays_nobody_and_memory_stays_bounded() -> Result<()> {
    let server = Server::start(&["--resolution", "640x360"]).await?;
    let port = server.http_port;

    // A tiny receive buffer and no reads at all.
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let stalled = socket.connect(([127, 0, 0, 1], port).into()).await?;
    let mut stalled = stalled;
    stalled
        .write_all(b"GET /stream HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    server
        .wait_state(Duration::from_secs(20), |s| viewers(s) == 1)
        .await?;

    let mut reader = MjpegReader::open(port, "/stream?extra_headers=1").await?;
    reader.next_part().await?;
    let rss_start = server.rss_kib()?;
    let started = Instant::now();
    let mut parts = 0;
    let mut worst_latency = 0.0f64;
    while started.elapsed() < Duration::from_secs(8) {
        let part = tokio::time::timeout(Duration::from_secs(2), reader.next_part())
            .await
            .context("the reading client waited over 2 s for a picture")??;
        parts += 1;
        let latency: f64 = part
            .header("X-UStreamer-Latency")
            .context("latency")?
            .parse()?;
        worst_latency = worst_latency.max(latency);
    }
    let rss_end = server.rss_kib()?;
    println!(
        "reader got {parts} pictures in 8 s, worst capture-to-send {worst_latency:.3} s, \
         RSS {rss_start} -> {rss_end} KiB"
    );
    // The pattern runs at 30 fps; a debug build encodes fewer, but never stalls.
    assert!(parts >= 40, "only {parts} pictures in 8 s");
    assert!(
        worst_latency < 1.0,
        "a picture was {worst_latency} s old when sent"
    );
    assert!(
        rss_end < rss_start + 16 * 1024,
        "memory grew from {rss_start} to {rss_end} KiB with a client that never reads"
    );
    drop(stalled);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_clients_at_once_are_served() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240"]).await?;
    let port = server.http_port;
    let mut readers = Vec::new();
    for _ in 0..200 {
        readers.push(MjpegReader::open(port, "/stream").await?);
    }
    let firsts = readers.iter_mut().map(|r| async move {
        tokio::time::timeout(Duration::from_secs(60), async {
            r.next_part().await?;
            r.next_part().await
        })
        .await
        .context("no picture within 60 s")?
    });
    let parts = futures_util::future::join_all(firsts).await;
    for (i, part) in parts.into_iter().enumerate() {
        let part = part.with_context(|| format!("client {i}"))?;
        assert!(part.jpeg.starts_with(&[0xff, 0xd8]), "client {i}");
    }
    let state = server.state().await?;
    assert_eq!(viewers(&state), 200, "{}", state["streams"]);
    assert_eq!(state["mjpeg"]["stream_clients"], 200);
    drop(readers);
    server
        .wait_state(Duration::from_secs(20), |s| {
            viewers(s) == 0 && s["mjpeg"]["stream_clients"] == 0
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_while_the_source_is_gone_is_503() -> Result<()> {
    let port = free_port();
    let listen_url = format!("tcp://127.0.0.1:{port}?listen=1");
    let mut encoder = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30"])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
        ])
        .args([
            "-tune",
            "zerolatency",
            "-g",
            "30",
            "-f",
            "h264",
            &listen_url,
        ])
        .stdin(Stdio::null())
        .spawn()
        .context("start ffmpeg")?;
    let server = Server::start(&["--source", &format!("tcp://127.0.0.1:{port}")]).await?;
    let http = server.http_port;
    let snapshot = |path: &'static str| async move {
        raw_request(http, "GET", path, &[("Connection", "close")]).await
    };
    // Live: the encoder's picture (kept alive by a /stream client meanwhile).
    let mut watcher = MjpegReader::open(http, "/stream?extra_headers=1").await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let part = watcher.next_part().await?;
        if part.header("X-UStreamer-Online") == Some("true") {
            break;
        }
        ensure!(Instant::now() < deadline, "never online");
    }
    let live = snapshot("/snapshot").await?;
    assert_eq!(live.status, 200, "{}", live.head);
    assert_eq!(ffprobe_size(&live.body)?, (320, 240));

    let _ = encoder.kill();
    let _ = encoder.wait();
    // The stream shows NO SIGNAL (X-UStreamer-Online: false); the snapshot refuses.
    loop {
        let part = watcher.next_part().await?;
        if part.header("X-UStreamer-Online") == Some("false") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the stream never showed NO SIGNAL"
        );
    }
    let gone = snapshot("/snapshot").await?;
    assert_eq!(gone.status, 503, "{}", gone.head);
    let body = String::from_utf8_lossy(&gone.body);
    assert!(body.contains("no signal"), "{body}");
    drop(watcher);

    // Nobody watching and the source still gone: the snapshot starts the tap, sees
    // NO SIGNAL and refuses too.
    let idle = snapshot("/snapshot").await?;
    assert_eq!(idle.status, 503, "{}", String::from_utf8_lossy(&idle.body));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_streams_and_bad_queries_are_refused_clearly() -> Result<()> {
    let server = Server::start(&["--resolution", "320x240"]).await?;
    let port = server.http_port;
    let get = |path: String| async move {
        raw_request(port, "GET", &path, &[("Connection", "close")]).await
    };
    for path in ["/stream?stream=nope", "/snapshot?stream=nope"] {
        let r = get(path.into()).await?;
        assert_eq!(r.status, 404, "{path}");
        assert!(String::from_utf8_lossy(&r.body).contains("no stream named \"nope\""));
    }
    let long_key = format!("/stream?key={}", "k".repeat(300));
    for path in [
        long_key.as_str(),
        "/stream?stream=a&stream=b",
        "/snapshot?key=a&key=b",
    ] {
        let r = get(path.into()).await?;
        assert_eq!(r.status, 400, "{path}: {}", r.head);
        assert!(!r.body.is_empty(), "{path}: a 400 says why");
    }
    // Values µStreamer does not understand switch an option off, as there.
    let mut reader = MjpegReader::open(port, "/stream?extra_headers=maybe&stream=default").await?;
    let part = reader.next_part().await?;
    assert!(part.header("X-UStreamer-Online").is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mjpeg_output_is_behind_the_password_and_cors_checks() -> Result<()> {
    let server = Server::start(&[
        "--resolution",
        "320x240",
        "--user",
        "admin",
        "--passwd",
        "pw",
    ])
    .await?;
    let port = server.http_port;
    let auth = server.authorization.clone().context("auth")?;
    for path in ["/stream", "/snapshot"] {
        let r = raw_request(port, "GET", path, &[("Connection", "close")]).await?;
        assert_eq!(r.status, 401, "{path} without the password");
    }
    // Any page may show the pictures (an <img> is a plain GET), but only allowed pages
    // may read them from a script: no CORS grant for a foreign origin.
    let foreign = raw_request(
        port,
        "GET",
        "/snapshot",
        &[
            ("Authorization", &auth),
            ("Origin", "http://evil.example"),
            ("Connection", "close"),
        ],
    )
    .await?;
    assert_eq!(foreign.status, 200);
    assert!(
        !foreign.head.contains("access-control-allow-origin"),
        "{}",
        foreign.head
    );
    let own = raw_request(
        port,
        "GET",
        "/snapshot",
        &[
            ("Authorization", &auth),
            ("Origin", &format!("http://127.0.0.1:{port}")),
            ("Connection", "close"),
        ],
    )
    .await?;
    assert_eq!(own.status, 200);
    assert!(
        own.head.contains(&format!(
            "access-control-allow-origin: http://127.0.0.1:{port}"
        )),
        "{}",
        own.head
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mjpeg_cameras_pictures_reach_the_stream_byte_identical() -> Result<()> {
    // A camera's own MJPEG, recorded as ffmpeg writes it, replayed through the camera
    // pipeline (the same path as a V4L2 device's buffers).
    let file = std::env::temp_dir().join(format!("peregrine-mjpeg-{}.mjpeg", std::process::id()));
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=30",
            "-frames:v",
            "30",
        ])
        .args([
            "-pix_fmt", "yuvj420p", "-c:v", "mjpeg", "-q:v", "5", "-f", "mjpeg",
        ])
        .arg(&file)
        .status()
        .context("run ffmpeg")?;
    ensure!(made.success(), "ffmpeg could not make the recording");
    let data = std::fs::read(&file)?;
    let recording = peregrine::source::camera::replay::Recording::mjpeg(&data, 320, 240);
    let source = file.to_str().context("temp path")?.to_string();
    let server = Server::start(&["--source", &source, "--resolution", "320x240"]).await;
    let _ = std::fs::remove_file(&file);
    let server = server?;
    assert_eq!(recording.frames.len(), 30);

    let mut reader = MjpegReader::open(server.http_port, "/stream?extra_headers=1").await?;
    for _ in 0..45 {
        let part = reader.next_part().await?;
        assert_eq!(part.header("X-UStreamer-Online"), Some("true"));
        assert!(
            recording.frames.contains(&part.jpeg),
            "a part of {} bytes is not one of the camera's pictures",
            part.jpeg.len()
        );
    }
    let snapshot = raw_request(
        server.http_port,
        "GET",
        "/snapshot",
        &[("Connection", "close")],
    )
    .await?;
    assert_eq!(snapshot.status, 200);
    assert!(
        recording.frames.contains(&snapshot.body),
        "the snapshot is the camera's"
    );
    let state = server.state().await?;
    let tap = &state["mjpeg"]["streams"]["default"];
    assert_eq!(tap["passthrough"], true, "{tap}");
    assert_eq!(tap["encoded"], 0, "nothing decoded or encoded: {tap}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_cameras_pictures_become_jpeg_without_h264_in_between() -> Result<()> {
    // A YUYV camera, recorded raw, replayed through the camera pipeline.
    let file = std::env::temp_dir().join(format!("peregrine-mjpeg-{}.yuyv", std::process::id()));
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30"])
        .args(["-frames:v", "30", "-pix_fmt", "yuyv422", "-f", "rawvideo"])
        .arg(&file)
        .status()
        .context("run ffmpeg")?;
    ensure!(made.success(), "ffmpeg could not make the recording");
    let source = file.to_str().context("temp path")?.to_string();
    let server = Server::start(&["--source", &source, "--resolution", "320x240"]).await;
    let _ = std::fs::remove_file(&file);
    let server = server?;

    let mut reader = MjpegReader::open(server.http_port, "/stream").await?;
    let mut pictures = Vec::new();
    for _ in 0..10 {
        pictures.push(reader.next_part().await?.jpeg);
    }
    assert_eq!(ffprobe_size(&pictures[9])?, (320, 240));
    let state = server.state().await?;
    let tap = &state["mjpeg"]["streams"]["default"];
    assert_eq!(tap["raw_input"], true, "{tap}");
    assert_eq!(tap["decoded"], 0, "no H.264 decoded for JPEG: {tap}");
    assert!(tap["encoded"].as_u64() >= Some(10), "{tap}");
    // Nobody watches H.264, so none was made.
    let frames = &state["streams"]["default"]["source"]["frames"];
    assert_eq!(frames, 0, "H.264 made for MJPEG clients only: {state}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpg_streamers_root_actions_are_the_stream_and_the_snapshot() -> Result<()> {
    // Printer front ends and old pages ask for `/?action=stream` (µStreamer answers it).
    let server = Server::start(&["--resolution", "320x240"]).await?;
    let port = server.http_port;
    let mut reader = MjpegReader::open(port, "/?action=stream&extra_headers=1").await?;
    let part = reader.next_part().await?;
    assert_eq!(
        part.header("X-UStreamer-Width"),
        Some("320"),
        "{}",
        part.headers
    );
    assert!(part.jpeg.starts_with(&[0xff, 0xd8]));

    let snapshot =
        raw_request(port, "GET", "/?action=snapshot", &[("Connection", "close")]).await?;
    assert_eq!(snapshot.status, 200);
    assert_eq!(ffprobe_size(&snapshot.body)?, (320, 240));
    // Any other `/` is still the page.
    let page = raw_request(port, "GET", "/?action=command", &[("Connection", "close")]).await?;
    assert_eq!(page.status, 200);
    assert!(
        String::from_utf8_lossy(&page.body).contains("<html"),
        "the page"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stream_is_reached_by_name() -> Result<()> {
    let server = Server::start_with_config(
        "source = \"testsrc\"\nresolution = \"320x240\"\n\
         [[stream]]\nname = \"cam2\"\nsource = \"testsrc\"\nresolution = \"640x360\"\n",
        &[],
    )
    .await?;
    let port = server.http_port;
    for (query, size) in [
        ("", (320, 240)),
        ("?stream=default", (320, 240)),
        ("?stream=cam2", (640, 360)),
    ] {
        let snapshot = raw_request(
            port,
            "GET",
            &format!("/snapshot{query}"),
            &[("Connection", "close")],
        )
        .await?;
        assert_eq!(snapshot.status, 200, "{query}");
        assert_eq!(ffprobe_size(&snapshot.body)?, size, "{query}");
    }
    let mut cam2 = MjpegReader::open(port, "/stream?stream=cam2&extra_headers=1").await?;
    let part = cam2.next_part().await?;
    assert_eq!(part.header("X-UStreamer-Width"), Some("640"));
    let state = server
        .wait_state(Duration::from_secs(20), |s| {
            s["streams"]["cam2"]["viewers"] == 1
        })
        .await?;
    assert_eq!(viewers(&state), 0, "the default stream has no viewer");
    Ok(())
}

/// One JPEG of a plain `colour` picture, as ffmpeg encodes it.
fn plain_jpeg(colour: &str) -> Result<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("color=c={colour}:size=320x240"),
        ])
        .args(["-frames:v", "1", "-pix_fmt", "yuvj420p", "-c:v", "mjpeg"])
        .args(["-f", "mjpeg", "-"])
        .stdin(Stdio::null())
        .output()
        .context("run ffmpeg")?;
    ensure!(
        out.status.success() && !out.stdout.is_empty(),
        "ffmpeg made no JPEG"
    );
    Ok(out.stdout)
}

/// Runs of identical consecutive pictures among the first `count` live parts of
/// `/stream{query}`, as (picture, run length).
async fn runs_of_parts(port: u16, query: &str, count: usize) -> Result<Vec<(Vec<u8>, usize)>> {
    let mut reader = MjpegReader::open(port, &format!("/stream?extra_headers=1{query}")).await?;
    let mut runs: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut live = 0;
    while live < count {
        let part = reader.next_part().await?;
        // NO SIGNAL until the camera is open.
        if part.header("X-UStreamer-Online") != Some("true") {
            continue;
        }
        live += 1;
        match runs.last_mut() {
            Some((picture, n)) if *picture == part.jpeg => *n += 1,
            _ => runs.push((part.jpeg, 1)),
        }
    }
    Ok(runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_same_frames_skips_a_still_cameras_repeated_pictures() -> Result<()> {
    // A camera showing a still picture: half a second of red, half a second of blue,
    // each picture byte-identical to the one before while the colour stays.
    let (red, blue) = (plain_jpeg("red")?, plain_jpeg("blue")?);
    let mut recording = Vec::new();
    for picture in [&red, &blue] {
        for _ in 0..15 {
            recording.extend_from_slice(picture);
        }
    }
    let file = std::env::temp_dir().join(format!("peregrine-still-{}.mjpeg", std::process::id()));
    std::fs::write(&file, &recording)?;
    let source = file.to_str().context("temp path")?.to_string();
    let start = |limit: &'static str| {
        let source = source.clone();
        async move {
            let args = ["--source", &source, "--resolution", "320x240"];
            Server::start(&[&args[..], &["--drop-same-frames", limit]].concat()).await
        }
    };
    let result = async {
        let server = start("120").await?;
        let port = server.http_port;
        // Only changes are sent: no picture twice in a row, red and blue in turn.
        let runs = runs_of_parts(port, "", 6).await?;
        ensure!(
            runs.iter().all(|(_, n)| *n == 1),
            "identical pictures sent in a row: {:?}",
            runs.iter().map(|r| r.1).collect::<Vec<_>>()
        );
        ensure!(runs.iter().all(|(p, _)| *p == red || *p == blue));
        // With dual_final_frames, the last picture of each change goes out twice.
        let runs = runs_of_parts(port, "&dual_final_frames=1", 9).await?;
        let lengths: Vec<usize> = runs.iter().map(|r| r.1).collect();
        ensure!(
            lengths[..lengths.len() - 1].iter().all(|n| *n == 2),
            "runs of identical parts: {lengths:?}"
        );
        drop(server);

        // A low limit: a still picture is still sent after that many skipped.
        let server = start("4").await?;
        let runs = runs_of_parts(server.http_port, "", 12).await?;
        let lengths: Vec<usize> = runs.iter().map(|r| r.1).collect();
        // 15 identical pictures, one in 5 sent: 3 each (fewer if the reader missed one).
        ensure!(
            lengths.iter().any(|n| *n > 1) && lengths.iter().all(|n| *n <= 3),
            "runs of identical parts: {lengths:?}"
        );
        Ok(())
    }
    .await;
    let _ = std::fs::remove_file(&file);
    result
}
