//! Feeds a stream's JPEG pictures into a memsink, as µStreamer's JPEG sink (kvmd's VNC
//! server reads it): pictures are made and put only while the sink has a reader (or
//! still needs its first frame), so a stream nobody reads this way stays idle.
//!
//! The pictures come from the stream's [`JpegTap`]: an MJPEG camera's own JPEG
//! untouched, anything else decoded and encoded by the tap, shared with `/stream` and
//! `/snapshot`. The sink is one of the tap's clients only while it has a reader.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::layout::{FrameMeta, FORMAT_JPEG};
use super::us_to_s;
use super::writer::{PutOutcome, SinkConfig, SinkWriter};
use crate::media::jpeg_tap::{JpegClient, JpegPicture, JpegTap};

/// How often an idle sink looks for a reader.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Longest wait for a picture before the reader and `stop` are looked at again.
const RECV_STEP: Duration = Duration::from_millis(100);

/// Create the sink now (so a bad name or permission fails at startup) and start the
/// thread that feeds it, keeping `readers` set while it has a reader (for `/state`).
/// The thread runs its work on `runtime`, where the tap makes its pictures.
pub fn spawn(
    cfg: SinkConfig,
    tap: Arc<JpegTap>,
    stop: Arc<AtomicBool>,
    readers: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let writer = SinkWriter::open(cfg)?;
    std::thread::Builder::new()
        .name("memsink-jpeg".into())
        // Puts wait for readers' locks: on a thread of its own, never a runtime worker.
        .spawn(move || runtime.block_on(run(writer, tap, stop, readers)))
        .context("starting the JPEG memsink thread")
}

/// The frame meta µStreamer writes with a JPEG: no stride, no key frames, no GOP.
fn meta_of(picture: &JpegPicture) -> FrameMeta {
    let captured = us_to_s(picture.capture_us);
    FrameMeta {
        width: picture.width,
        height: picture.height,
        format: FORMAT_JPEG,
        stride: 0,
        // Readers tell NO SIGNAL from live by this.
        online: picture.online,
        key: false,
        gop: 0,
        grab_begin_ts: captured,
        grab_end_ts: captured,
        encode_begin_ts: us_to_s(picture.encode_begin_us),
        encode_end_ts: us_to_s(picture.encode_end_us),
    }
}

async fn run(
    mut writer: SinkWriter,
    tap: Arc<JpegTap>,
    stop: Arc<AtomicBool>,
    readers: Arc<AtomicBool>,
) {
    let mut client: Option<JpegClient> = None;
    let mut written: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        readers.store(writer.has_clients(), Ordering::Relaxed);
        let Some(pictures) = client.as_mut() else {
            if writer.check(None) {
                tracing::info!(sink = writer.name(), "memsink has a reader; feeding it");
                client = Some(tap.join());
            } else {
                tokio::time::sleep(IDLE_POLL).await;
            }
            continue;
        };
        let picture = match tokio::time::timeout(RECV_STEP, pictures.next()).await {
            Err(_) => None,
            // The tap is gone: the server is stopping.
            Ok(None) => break,
            Ok(Some(picture)) => Some(picture),
        };
        if !writer.check(None) {
            tracing::info!(sink = writer.name(), written, "memsink has no reader; idle");
            // Leaving the tap lets the source idle when nothing else wants pictures.
            client = None;
            continue;
        }
        let Some(picture) = picture else {
            continue;
        };
        match writer.put(&meta_of(&picture), &picture.data) {
            Ok(PutOutcome::Written { .. }) => written += 1,
            // Every JPEG stands alone: the next picture simply replaces this one.
            Ok(PutOutcome::TooBig | PutOutcome::Busy) => {}
            Err(e) => {
                tracing::warn!(sink = writer.name(), "memsink put failed: {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    readers.store(false, Ordering::Relaxed);
    tracing::info!(sink = writer.name(), written, "memsink output stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn frames_are_jpeg_without_key_or_gop_and_offline_for_no_signal() {
        let mut picture = JpegPicture {
            data: Bytes::from_static(b"\xff\xd8\xff\xd9"),
            width: 640,
            height: 480,
            online: true,
            capture_us: 2_000_000,
            encode_begin_us: 2_010_000,
            encode_end_us: 2_020_000,
        };
        let meta = meta_of(&picture);
        assert_eq!(
            (meta.width, meta.height, meta.format),
            (640, 480, FORMAT_JPEG)
        );
        assert!(meta.online && !meta.key);
        assert_eq!((meta.stride, meta.gop), (0, 0));
        assert_eq!(
            (meta.grab_begin_ts, meta.encode_begin_ts, meta.encode_end_ts),
            (2.0, 2.01, 2.02)
        );
        picture.online = false;
        assert!(!meta_of(&picture).online);
    }
}
