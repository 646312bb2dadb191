//! JSMpeg from peregrine's own source: while JSMpeg viewers are connected, one ffmpeg
//! child turns the hub's H.264 into MPEG-1 video in MPEG-TS, with the stream's sound
//! (decoded from Opus, see [`pcm_feed`]) as MP2 audio when it has sound. It starts with
//! the first viewer and stops after the last; if it dies while viewers remain it is
//! restarted.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use super::jsmpeg::TsBus;
use super::mpegts::PacketSplitter;
use super::pcm_feed::{self, PcmFifo};
use super::RelayConfig;
use crate::media::hub::{Hub, StartAt};
use crate::media::Stream;

/// ffmpeg could not be found.
#[derive(Debug, thiserror::Error)]
#[error(
    "JSMpeg needs ffmpeg to transcode the camera's H.264 to MPEG-1, and {0:?} was not found; \
     install ffmpeg, point --jsmpeg-ffmpeg at it, or upload MPEG-TS with --jsmpeg-secret"
)]
pub struct FfmpegMissing(String);

/// Frame rates MPEG-1 video can signal; others are converted to the nearest one above.
const MPEG1_RATES: &[u32] = &[24, 25, 30, 50, 60];
/// MP2 bitrate of the sound, kbit/s (JSMpeg's own examples use 128k).
const MP2_KBPS: u32 = 128;

pub struct Transcoder {
    hub: Arc<Hub>,
    /// The stream's sound, to carry as MP2; `None` without sound, and for the old
    /// jsmpg.js (`--jsmpeg-header`), which plays video only.
    audio: Option<Arc<Hub>>,
    bus: TsBus,
    ffmpeg: String,
    kbps: u32,
    fps: u32,
    state: Mutex<State>,
    running: Arc<AtomicUsize>,
    starts: AtomicU64,
}

#[derive(Default)]
struct State {
    viewers: usize,
    stop: Option<watch::Sender<bool>>,
}

/// Keeps the transcoder running while alive.
pub struct ViewerGuard {
    transcoder: Arc<Transcoder>,
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        let mut state = self.transcoder.state();
        state.viewers = state.viewers.saturating_sub(1);
        if state.viewers == 0 {
            if let Some(stop) = state.stop.take() {
                let _ = stop.send(true);
            }
        }
    }
}

impl Transcoder {
    pub fn new(stream: &Stream, bus: TsBus, cfg: &RelayConfig) -> Arc<Transcoder> {
        Arc::new(Transcoder {
            hub: stream.hub().clone(),
            audio: stream.audio().filter(|_| !cfg.jsmpeg_header).cloned(),
            bus,
            ffmpeg: cfg.ffmpeg.clone(),
            kbps: cfg.transcode_kbps.max(100),
            fps: stream.fps(),
            state: Mutex::new(State::default()),
            running: Arc::new(AtomicUsize::new(0)),
            starts: AtomicU64::new(0),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the ffmpeg program can be found (checked for each new viewer so that
    /// installing ffmpeg needs no restart).
    pub fn check_available(&self) -> Result<PathBuf, FfmpegMissing> {
        find_program(&self.ffmpeg).ok_or_else(|| FfmpegMissing(self.ffmpeg.clone()))
    }

    /// A viewer arrived; the first one starts ffmpeg.
    pub fn viewer_joined(self: &Arc<Self>) -> ViewerGuard {
        let mut state = self.state();
        state.viewers += 1;
        if state.stop.is_none() {
            let (tx, rx) = watch::channel(false);
            state.stop = Some(tx);
            let this = self.clone();
            tokio::spawn(async move { this.supervise(rx).await });
        }
        ViewerGuard {
            transcoder: self.clone(),
        }
    }

    pub fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "viewers": self.state().viewers,
            "ffmpeg_running": self.running.load(Ordering::SeqCst),
            "ffmpeg_starts": self.starts.load(Ordering::Relaxed),
        })
    }

    async fn supervise(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            let program = match self.check_available() {
                Ok(p) => p,
                Err(err) => {
                    tracing::error!("{err}");
                    return;
                }
            };
            match self.run_once(&program, &mut stop).await {
                Ok(()) => return,
                Err(err) => tracing::warn!("transcoder: {err:#}; restarting in 1 s"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Run one ffmpeg until told to stop (Ok) or until it fails (Err).
    async fn run_once(
        &self,
        program: &Path,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let rate = MPEG1_RATES
            .iter()
            .copied()
            .find(|&r| r >= self.fps)
            .unwrap_or(60);
        // The sound's FIFO, removed when this run ends.
        let fifo = match self.audio {
            Some(_) => Some(PcmFifo::create().context("a FIFO for the sound")?),
            None => None,
        };
        let mut command = Command::new(program);
        crate::sys::process::end_with_this_process(&mut command);
        command
            .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
            .args(["-fflags", "nobuffer", "-flags", "low_delay"])
            .args(["-probesize", "32", "-analyzeduration", "1"])
            .args([
                "-threads",
                "1",
                "-f",
                "h264",
                "-framerate",
                &self.fps.to_string(),
                "-i",
                "pipe:0",
            ]);
        match &fifo {
            Some(fifo) => {
                command
                    .args(pcm_feed::FFMPEG_FORMAT)
                    .arg("-i")
                    .arg(fifo.path())
                    .args(["-map", "0:v", "-map", "1:a", "-codec:a", "mp2"])
                    .args(["-b:a", &format!("{MP2_KBPS}k")]);
            }
            None => {
                command.arg("-an");
            }
        }
        let mut child = command
            .args(["-f", "mpegts", "-codec:v", "mpeg1video", "-bf", "0"])
            .args(["-r", &rate.to_string(), "-b:v", &format!("{}k", self.kbps)])
            .args(["-muxdelay", "0.001", "-flush_packets", "1", "pipe:1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", program.display()))?;
        self.starts.fetch_add(1, Ordering::Relaxed);
        let _running = RunningGuard::new(&self.running);
        tracing::info!("transcoder started for JSMpeg viewers");
        let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            anyhow::bail!("ffmpeg pipes missing");
        };
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::warn!("ffmpeg: {line}");
            }
        });
        let hub = self.hub.clone();
        // The capture time of the first picture ffmpeg gets: where its timeline starts.
        let (origin_tx, origin) = watch::channel(None);
        let feed = async move {
            let mut sub = hub.subscribe(StartAt::NextKeyframe);
            while let Some(au) = sub.recv().await {
                if origin_tx.borrow().is_none() {
                    origin_tx.send_replace(Some(au.capture_us));
                }
                stdin.write_all(&au.data).await?;
            }
            anyhow::Ok(())
        };
        let sound = async {
            match (&fifo, &self.audio) {
                (Some(fifo), Some(audio)) => {
                    pcm_feed::feed(fifo.path(), audio.clone(), origin).await
                }
                _ => std::future::pending().await,
            }
        };
        let bus = self.bus.clone();
        let read = async move {
            let mut splitter = PacketSplitter::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = stdout.read(&mut buf).await?;
                if n == 0 {
                    anyhow::bail!("ffmpeg closed its output");
                }
                bus.publish(splitter.push(&buf[..n])?);
            }
        };
        let result = tokio::select! {
            r = feed => r.and_then(|()| anyhow::bail!("the source ended")),
            r = sound => r.and_then(|()| anyhow::bail!("the sound ended")),
            r = read => r,
            _ = stop.wait_for(|s| *s) => Ok(()),
        };
        let _ = child.start_kill();
        let _ = child.wait().await;
        if result.is_ok() {
            tracing::info!("transcoder stopped: no JSMpeg viewers left");
        }
        result
    }
}

struct RunningGuard<'a>(&'a AtomicUsize);

impl<'a> RunningGuard<'a> {
    fn new(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::SeqCst);
        RunningGuard(c)
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Resolve a program name like the shell does (a path is taken as it is).
fn find_program(name: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_exec(p))
}
