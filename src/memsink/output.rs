//! Feeds the hub's pictures into a memsink, as µStreamer's H.264 worker does: only while
//! the sink has a reader (or still needs its first frame), starting each active period
//! with a keyframe and turning readers' `wants.key` into keyframe requests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::layout::{FrameMeta, FORMAT_H264};
use super::writer::{PutOutcome, SinkConfig, SinkWriter};
use super::{monotonic_s, us_to_s};
use crate::media::hub::{StartAt, Subscriber};
use crate::media::{Hub, Picture};

/// How often an idle sink looks for a reader.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Longest wait for a picture before `stop` is looked at again.
const RECV_STEP: Duration = Duration::from_millis(100);
/// Least time between two puts: readers poll the sink every millisecond or so, and a
/// frame overwritten before they looked is lost to them (with everything predicted
/// from it). Live pictures are tens of milliseconds apart; only a backlog is slowed.
const BACKLOG_PACING: Duration = Duration::from_millis(4);
/// Pictures waiting beyond this mean the writer stalled: they are dropped, and the
/// stream resumes at a keyframe asked for at once.
const MAX_PACED_BACKLOG: usize = 2;

/// Create the sink now (so a bad name or permission fails at startup) and start the
/// thread that feeds it. `gop` is copied into every frame, as µStreamer does.
pub fn spawn(
    cfg: SinkConfig,
    gop: u32,
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    spawn_reporting(cfg, gop, hub, stop, Arc::default())
}

/// As [`spawn`], keeping `readers` set while the sink has a reader (for `/state`).
pub fn spawn_reporting(
    cfg: SinkConfig,
    gop: u32,
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
    readers: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let writer = SinkWriter::open(cfg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("memsink output runtime")?;
    std::thread::Builder::new()
        .name("memsink-out".into())
        .spawn(move || runtime.block_on(run(writer, gop, hub, stop, readers)))
        .context("starting the memsink output thread")
}

fn meta_of(au: &Picture, gop: u32) -> FrameMeta {
    let captured = us_to_s(au.capture_us);
    FrameMeta {
        width: au.width,
        height: au.height,
        format: FORMAT_H264,
        stride: 0,
        // Readers (µStreamer's Janus plugin, kvmd) tell NO SIGNAL from live by this.
        online: au.online(),
        key: au.key,
        gop,
        grab_begin_ts: captured,
        grab_end_ts: captured,
        encode_begin_ts: captured,
        encode_end_ts: monotonic_s(),
    }
}

async fn run(
    mut writer: SinkWriter,
    gop: u32,
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
    readers: Arc<AtomicBool>,
) {
    let mut feeding: Option<Subscriber> = None;
    let mut written: u64 = 0;
    let mut geometry = (0, 0);
    let mut skip_to_key = false;
    let mut last_put: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        readers.store(writer.has_clients(), Ordering::Relaxed);
        let Some(sub) = feeding.as_mut() else {
            if writer.check(None) {
                tracing::info!(sink = writer.name(), "memsink has a reader; feeding it");
                // Starts at the next keyframe, which subscribing requests.
                feeding = Some(hub.subscribe(StartAt::NextKeyframe));
            } else {
                tokio::time::sleep(IDLE_POLL).await;
            }
            continue;
        };
        let au = match tokio::time::timeout(RECV_STEP, sub.recv()).await {
            Err(_) => continue,
            Ok(None) => break,
            Ok(Some(au)) => au,
        };
        let meta = meta_of(&au, gop);
        // Like µStreamer, ask without the frame (its size and key flag change with every
        // picture); a new picture size is written even without readers.
        let resized = (au.width, au.height) != geometry;
        if !writer.check(None) && !resized {
            tracing::info!(sink = writer.name(), written, "memsink has no reader; idle");
            feeding = None;
            continue;
        }
        // The sink holds one frame: pictures written faster than readers poll are
        // overwritten unseen, and the ones after them decode wrong. A short backlog is
        // paced out; a long one (the writer stalled) is dropped for a new keyframe.
        let behind = sub.waiting();
        if behind > MAX_PACED_BACKLOG && !skip_to_key {
            tracing::debug!(
                sink = writer.name(),
                behind,
                "memsink writer behind; skipping to a keyframe"
            );
            skip_to_key = true;
            hub.request_keyframe();
        }
        if skip_to_key && !(au.key && behind == 0) {
            continue;
        }
        skip_to_key = false;
        if let Some(last) = last_put {
            let since = last.elapsed();
            if since < BACKLOG_PACING {
                tokio::time::sleep(BACKLOG_PACING - since).await;
            }
        }
        match writer.put(&meta, &au.data) {
            Ok(PutOutcome::Written { wants_key }) => {
                written += 1;
                last_put = Some(std::time::Instant::now());
                geometry = (au.width, au.height);
                if wants_key {
                    hub.request_keyframe();
                }
            }
            Ok(PutOutcome::TooBig | PutOutcome::Busy) => {
                // Readers miss this picture: what follows cannot be decoded without it,
                // so they get nothing until a new keyframe, which is asked for now.
                skip_to_key = true;
                hub.request_keyframe();
            }
            Err(e) => {
                tracing::warn!(sink = writer.name(), "memsink put failed: {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    tracing::info!(sink = writer.name(), written, "memsink output stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_signal_pictures_are_written_offline() {
        let mut picture = Picture::video(vec![0, 0, 0, 1, 0x65], true, (640, 480), 1_000_000);
        assert!(meta_of(&picture, 60).online);
        picture.placeholder = true;
        let meta = meta_of(&picture, 60);
        assert!(!meta.online);
        assert_eq!((meta.width, meta.height, meta.gop), (640, 480, 60));
    }
}
