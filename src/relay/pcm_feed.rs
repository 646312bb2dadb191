//! A stream's sound for the JSMpeg transcoder: its Opus decoded to 48 kHz stereo
//! s16le and written into a FIFO (in a private directory) that ffmpeg reads as its
//! second input, beside the H.264 on its standard input.
//!
//! ffmpeg counts both inputs' timestamps from zero, so the sound is laid on the video's
//! timeline by capture time: a frame captured `t` after the first picture ffmpeg got
//! is written at `t` into the sound. Gaps (a failing or idle source, lost frames) are
//! filled with silence in real time, so ffmpeg never waits for sound and the picture
//! never stalls for it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nix::sys::stat::Mode;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use crate::media::audio::opus::{OpusDecoder, FRAME_LEN};
use crate::media::audio::{CHANNELS, FRAME_SAMPLES, SAMPLE_RATE};
use crate::media::clock;
use crate::media::hub::{Hub, StartAt};

/// How long to wait for a frame before looking whether silence is due.
const TICK: Duration = Duration::from_millis(20);
/// Silence fills a gap only once the sound is this much behind the clock: frames
/// arrive some milliseconds after their capture, and must not find their place taken.
const FILL_BEHIND_US: u64 = 100_000;
/// ffmpeg's arguments for the FIFO's format.
pub const FFMPEG_FORMAT: [&str; 6] = ["-f", "s16le", "-ar", "48000", "-ac", "2"];

/// A FIFO in a directory of its own, both removed when dropped.
pub struct PcmFifo {
    dir: PathBuf,
    path: PathBuf,
}

impl PcmFifo {
    /// A new FIFO that only this user can open.
    pub fn create() -> io::Result<PcmFifo> {
        let template = std::env::temp_dir().join("peregrine-sound-XXXXXX");
        let dir = nix::unistd::mkdtemp(&template)?;
        let path = dir.join("pcm");
        if let Err(e) = nix::unistd::mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR) {
            let _ = std::fs::remove_dir(&dir);
            return Err(e.into());
        }
        Ok(PcmFifo { dir, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PcmFifo {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Feed `hub`'s sound into the FIFO at `path` until writing fails (ffmpeg ended).
/// `origin` tells the capture time (CLOCK_MONOTONIC µs) of the first picture ffmpeg
/// got: where the sound's timeline starts.
pub async fn feed(
    path: &Path,
    hub: Arc<Hub>,
    mut origin: watch::Receiver<Option<u64>>,
) -> anyhow::Result<()> {
    // Listening starts the sound source while ffmpeg starts.
    let mut sub = hub.subscribe(StartAt::NextKeyframe);
    let mut fifo = open_writer(path).await.context("the sound FIFO")?;
    let origin_us = loop {
        if let Some(at) = *origin.borrow_and_update() {
            break at;
        }
        origin.changed().await.context("the transcoder ended")?;
    };
    let mut timeline = Timeline::new(origin_us);
    let mut decoder = OpusDecoder::new()?;
    let mut pcm = vec![0i16; FRAME_LEN];
    let mut bytes = Vec::with_capacity(FRAME_LEN * 4);
    loop {
        bytes.clear();
        if let Ok(frame) = tokio::time::timeout(TICK, sub.recv()).await {
            let Some(frame) = frame else {
                return Ok(());
            };
            let samples = match decoder.decode(&frame.data, &mut pcm) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!("a sound frame did not decode: {e}");
                    continue;
                }
            };
            let place = timeline.place(frame.capture_us, samples as u64);
            silence(&mut bytes, place.silence);
            if place.keep {
                bytes.extend(
                    pcm[..samples * CHANNELS]
                        .iter()
                        .flat_map(|s| s.to_le_bytes()),
                );
            }
        }
        silence(&mut bytes, timeline.fill(clock::monotonic_us()));
        fifo.write_all(&bytes)
            .await
            .context("writing sound to ffmpeg")?;
    }
}

/// Open the FIFO for writing once ffmpeg has opened it for reading (until then the
/// open fails with ENXIO).
async fn open_writer(path: &Path) -> io::Result<pipe::Sender> {
    loop {
        match pipe::OpenOptions::new().open_sender(path) {
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

/// Append `frames` stereo frames of silence.
fn silence(bytes: &mut Vec<u8>, frames: u64) {
    bytes.resize(bytes.len() + frames as usize * CHANNELS * 2, 0);
}

/// Where a decoded frame goes in the sound written so far.
#[derive(Debug, PartialEq, Eq)]
struct Place {
    /// Frames of silence to write first (a gap before it).
    silence: u64,
    /// Write the frame (false: it comes too late, its time is already written).
    keep: bool,
}

/// The sound written to ffmpeg, in frames (samples per channel) since `origin_us`.
struct Timeline {
    origin_us: u64,
    written: u64,
}

impl Timeline {
    fn new(origin_us: u64) -> Timeline {
        Timeline {
            origin_us,
            written: 0,
        }
    }

    /// The frame index of a capture time.
    fn index(&self, capture_us: u64) -> u64 {
        let since = capture_us.saturating_sub(self.origin_us);
        (u128::from(since) * u128::from(SAMPLE_RATE) / 1_000_000) as u64
    }

    /// Place `len` frames captured at `capture_us`. A frame less than half a frame off
    /// its place is written where the sound stands (the difference is jitter of the
    /// clocks, not a gap).
    fn place(&mut self, capture_us: u64, len: u64) -> Place {
        let at = self.index(capture_us);
        let slack = FRAME_SAMPLES as u64 / 2;
        let place = if capture_us < self.origin_us || at + slack <= self.written {
            Place {
                silence: 0,
                keep: false,
            }
        } else if at > self.written + slack {
            Place {
                silence: at - self.written,
                keep: true,
            }
        } else {
            Place {
                silence: 0,
                keep: true,
            }
        };
        self.written += place.silence + if place.keep { len } else { 0 };
        place
    }

    /// Frames of silence to write at `now_us` so the sound keeps up with the clock
    /// while no frames come.
    fn fill(&mut self, now_us: u64) -> u64 {
        let due = self.index(now_us.saturating_sub(FILL_BEHIND_US));
        let fill = due.saturating_sub(self.written);
        self.written += fill;
        fill
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::FRAME_US;

    const T0: u64 = 10_000_000;

    #[test]
    fn frames_are_placed_by_capture_time_and_gaps_become_silence() {
        let mut t = Timeline::new(T0);
        let frame = FRAME_SAMPLES as u64;
        let keep = |silence| Place {
            silence,
            keep: true,
        };
        let drop = Place {
            silence: 0,
            keep: false,
        };
        // Sound from before the first picture is not on the timeline.
        assert_eq!(t.place(T0 - FRAME_US, frame), drop);
        // Sound captured 100 ms after the first picture starts 100 ms in.
        assert_eq!(t.place(T0 + 100_000, frame), keep(4800));
        assert_eq!(t.written, 4800 + frame);
        // The next frame follows, a little jitter or not.
        assert_eq!(t.place(T0 + 120_000 + 300, frame), keep(0));
        // A frame lost: 20 ms of silence.
        assert_eq!(t.place(T0 + 160_000, frame), keep(frame));
        // A frame whose time is written already is dropped.
        assert_eq!(t.place(T0 + 140_000, frame), drop);
        assert_eq!(t.written, 8640);
    }

    #[test]
    fn silence_keeps_up_with_the_clock_only_when_frames_are_late() {
        let mut t = Timeline::new(T0);
        assert_eq!(t.fill(T0 + 50_000), 0, "not behind yet");
        assert_eq!(t.fill(T0 + 300_000), 9600, "200 ms of silence");
        assert_eq!(t.fill(T0 + 300_000), 0);
        // A frame captured meanwhile has lost its place.
        assert!(!t.place(T0 + 150_000, FRAME_SAMPLES as u64).keep);
        // Live frames arriving soon after capture are never overtaken.
        let mut now = T0 + 300_000;
        for _ in 0..10 {
            assert!(t.place(now - FRAME_US, FRAME_SAMPLES as u64).keep);
            now += FRAME_US;
            assert_eq!(t.fill(now), 0);
        }
    }

    #[tokio::test]
    async fn the_fifo_is_private_and_removed() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let fifo = PcmFifo::create().unwrap();
        let meta = std::fs::metadata(fifo.path()).unwrap();
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dir = fifo.path().parent().unwrap().to_path_buf();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(fifo);
        assert!(!dir.exists());
    }
}
