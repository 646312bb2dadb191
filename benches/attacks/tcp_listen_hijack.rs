//! A second connection to the `tcp-listen://` source while the first encoder streams:
//! does its video reach the viewers? The encoders are this benchmark, pushing the test
//! pattern (640x360 for the real one, 320x240 for the intruder, so every decoded picture
//! shows whose it is) as a raw H.264 byte stream at 30 fps.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use peregrine::media::encoder::H264Encoder;
use peregrine::media::VideoSettings;
use peregrine::source::pattern::TestPattern;
use peregrine::viewer::decoder::H264Decoder;
use peregrine::viewer::receiver::ReceiverPeer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::clients::join;
use crate::figures::{progress, Row};
use crate::server::{free_port, Server, NOFILE};

const NAME: &str = "tcp-listen hijack";
/// How long the intruder pushes.
const INTRUSION: Duration = Duration::from_secs(5);

/// Two seconds of the test pattern at `w`x`h`, a keyframe every second.
fn encode(w: u32, h: u32) -> Result<Vec<Vec<u8>>> {
    let cfg = VideoSettings {
        width: w,
        height: h,
        fps: 30,
        bitrate_kbps: 1000,
        gop: 30,
    };
    let mut pattern = TestPattern::new(w, h).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut encoder = H264Encoder::new(&cfg)?;
    let mut out = Vec::new();
    for i in 0..60u32 {
        let picture = encoder
            .encode(pattern.draw(i, 0), u64::from(i) * 33_000)?
            .context("the encoder skipped a picture")?;
        out.push(picture.data.to_vec());
    }
    Ok(out)
}

/// What happened to a pusher's connection.
struct Pushed {
    frames: usize,
    /// When the server closed it (end of stream or write error), since it connected.
    closed_after: Option<Duration>,
}

/// Push `frames` in a loop at 30 fps to `port` until `stop` or the connection ends.
/// A write the server does not take within 0.5 s is abandoned and the next one tried.
fn push(port: u16, frames: Arc<Vec<Vec<u8>>>, stop: Arc<AtomicBool>) -> JoinHandle<Result<Pushed>> {
    tokio::spawn(async move {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let connected = Instant::now();
        let (mut rd, mut wr) = stream.into_split();
        let closed_at = Arc::new(Mutex::new(None));
        let watcher = {
            let closed_at = closed_at.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok(n) = rd.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                closed_at.lock().unwrap().get_or_insert(connected.elapsed());
            })
        };
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) && closed_at.lock().unwrap().is_none() {
            tick.tick().await;
            let write = wr.write_all(&frames[sent % frames.len()]);
            match tokio::time::timeout(Duration::from_millis(500), write).await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(_)) => {
                    closed_at.lock().unwrap().get_or_insert(connected.elapsed());
                }
                Err(_) => {}
            }
        }
        watcher.abort();
        let closed_after = *closed_at.lock().unwrap();
        Ok(Pushed {
            frames: sent,
            closed_after,
        })
    })
}

/// Pictures decoded in `window`, by size: (640x360, 320x240, other).
async fn decode_sizes(
    peer: &mut ReceiverPeer,
    decoder: &mut H264Decoder,
    window: Duration,
) -> (usize, usize, usize) {
    let deadline = tokio::time::Instant::now() + window;
    let mut sizes = (0, 0, 0);
    while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, peer.next_frame()).await {
        match decoder.decode(&frame.data) {
            Ok(Some(p)) if (p.width, p.height) == (640, 360) => sizes.0 += 1,
            Ok(Some(p)) if (p.width, p.height) == (320, 240) => sizes.1 += 1,
            Ok(Some(_)) => sizes.2 += 1,
            Ok(None) => {}
            Err(_) => peer.send_pli(),
        }
    }
    sizes
}

pub async fn run(bin: &Path) -> Result<Vec<Row>> {
    let real = Arc::new(encode(640, 360)?);
    let intruder_frames = Arc::new(encode(320, 240)?);
    let port = free_port();
    let args = vec![
        "--source".to_string(),
        format!("tcp-listen://127.0.0.1:{port}"),
    ];
    let server = Server::start(bin, &args, NOFILE).await?;

    let stop_real = Arc::new(AtomicBool::new(false));
    let first = push(port, real, stop_real.clone());
    let (_viewer, mut peer) = join(&server).await.context("a viewer")?;
    let mut decoder = H264Decoder::new()?;
    let before = decode_sizes(&mut peer, &mut decoder, Duration::from_secs(2)).await;
    progress(format!(
        "{NAME}: the viewer decoded {} pictures of the encoder in 2 s",
        before.0
    ));
    if before.0 == 0 {
        bail!("the viewer got no pictures from the first encoder ({before:?})");
    }

    let stop_intruder = Arc::new(AtomicBool::new(false));
    let second = push(port, intruder_frames, stop_intruder.clone());
    let during = decode_sizes(&mut peer, &mut decoder, INTRUSION).await;
    let width = server
        .state()
        .await
        .map(|s| s["source"]["width"].to_string())
        .unwrap_or_else(|e| format!("{e:#}"));
    stop_intruder.store(true, Ordering::Relaxed);
    let intruder = second.await??;
    stop_real.store(true, Ordering::Relaxed);
    let first = first.await??;
    let intruder_fate = match intruder.closed_after {
        Some(d) => format!(
            "closed by the server after {d:.1?} ({} frames written)",
            intruder.frames
        ),
        None => format!(
            "kept open; {} frames written in {INTRUSION:?}",
            intruder.frames
        ),
    };
    let first_fate = match first.closed_after {
        Some(_) => "its connection closed by the server".to_string(),
        None => "kept streaming".to_string(),
    };
    progress(format!(
        "{NAME}: during the intrusion the viewer decoded {} of the encoder, {} of the intruder; \
         intruder {intruder_fate}; first encoder {first_fate}",
        during.0, during.1
    ));
    Ok(vec![
        Row::new(
            NAME,
            "second connection while the first streams",
            intruder_fate,
        ),
        Row::new(
            NAME,
            format!(
                "viewer's pictures in the {} s after it connected",
                INTRUSION.as_secs()
            ),
            format!(
                "{} from the encoder, {} from the intruder",
                during.0, during.1
            ),
        ),
        Row::new(NAME, "source width in /state afterwards", width),
        Row::new(NAME, "first encoder", first_fate),
    ])
}
