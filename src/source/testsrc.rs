//! The generated test pattern, encoded with openh264.
//!
//! One OS thread draws [`TestPattern`] pictures at the configured rate, encodes them as
//! constrained-baseline H.264 (no B-frames, so no reordering delay) and publishes them
//! into the hub. It works only while someone is subscribed: without viewers it idles in
//! short sleeps and starts again with an IDR.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::pattern::TestPattern;
use crate::media::encoder::{EncoderSettings, H264Encoder};
use crate::media::{clock, Hub};

#[derive(Clone, Debug)]
pub struct TestsrcConfig {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub gop: u32,
    /// Delay before the first picture each time a viewer wakes the source, as a camera
    /// takes a moment to start; zero in normal use.
    pub warmup: Duration,
}

impl TestsrcConfig {
    pub fn encoder_settings(&self) -> EncoderSettings {
        EncoderSettings {
            width: self.width,
            height: self.height,
            fps: self.fps,
            bitrate_kbps: self.bitrate_kbps,
            gop: self.gop,
        }
    }
}

/// Longest single sleep, so `stop` and new subscribers are noticed quickly.
const SLEEP_STEP: Duration = Duration::from_millis(10);
/// How often a keyframe request is looked for between pictures.
const KEY_POLL_STEP: Duration = Duration::from_millis(2);

/// Start the encoder thread. It publishes into `hub` while anyone is subscribed, idles
/// otherwise, honours keyframe requests, and exits when `stop` is set.
pub fn spawn(
    cfg: TestsrcConfig,
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    if cfg.fps == 0 || cfg.fps > 240 {
        anyhow::bail!("testsrc fps must be 1..=240, got {}", cfg.fps);
    }
    let pattern = TestPattern::new(cfg.width, cfg.height)?;
    let encoder = H264Encoder::new(&cfg.encoder_settings())?;
    std::thread::Builder::new()
        .name("testsrc".into())
        .spawn(move || run(cfg, pattern, encoder, &hub, &stop))
        .context("starting the testsrc thread")
}

fn run(
    cfg: TestsrcConfig,
    mut pattern: TestPattern,
    mut encoder: H264Encoder,
    hub: &Hub,
    stop: &AtomicBool,
) {
    tracing::info!(
        width = cfg.width,
        height = cfg.height,
        fps = cfg.fps,
        bitrate_kbps = cfg.bitrate_kbps,
        gop = cfg.gop,
        "test pattern source started"
    );
    let period = Duration::from_nanos(1_000_000_000 / u64::from(cfg.fps));
    let mut seq: u64 = 0;
    let mut errors: u64 = 0;
    // The deadline of the next picture; None while idle.
    let mut schedule: Option<Instant> = None;
    let mut last_picture: Option<Instant> = None;

    while !stop.load(Ordering::Relaxed) {
        if !hub.has_subscribers() {
            if schedule.take().is_some() {
                tracing::debug!("testsrc idle: no subscribers");
            }
            std::thread::sleep(SLEEP_STEP);
            continue;
        }
        let deadline = match schedule {
            Some(deadline) => deadline,
            None => {
                tracing::debug!("testsrc active");
                // Whoever arrives first must be able to start decoding at once.
                encoder.force_keyframe();
                Instant::now() + cfg.warmup
            }
        };
        // A requested keyframe (a viewer waiting to start) is encoded at once rather
        // than at the next tick, but never sooner than half a period after the last
        // picture, so a flood of requests cannot raise the frame rate.
        let earliest_key = last_picture.map_or(deadline, |t| t + period / 2);
        let Some(deadline) = wait_for_picture(deadline, earliest_key, hub, stop) else {
            break;
        };
        last_picture = Some(Instant::now());

        let capture_us = clock::monotonic_us();
        let wall_ms = clock::realtime_us() / 1000;
        if hub.keyframe_due(clock::monotonic_us()) {
            encoder.force_keyframe();
        }
        // The strip carries the low 32 bits of seq; wrapping is intended.
        let frame = pattern.draw(seq as u32, wall_ms);
        match encoder.encode(frame, capture_us) {
            Ok(Some(mut picture)) => {
                picture.seq = seq;
                hub.publish(picture);
            }
            Ok(None) => tracing::trace!(seq, "encoder skipped a picture"),
            Err(e) => {
                // Log the first failure and then every 100th, not 30 lines a second.
                if errors.is_multiple_of(100) {
                    tracing::warn!(seq, errors = errors + 1, "testsrc encoding failed: {e:#}");
                }
                errors += 1;
            }
        }
        seq += 1;
        schedule = Some(next_deadline(deadline, period, Instant::now()));
    }
    tracing::info!(pictures = seq, "test pattern source stopped");
}

/// The deadline after `deadline`. Deadlines advance by exactly one period, so the rate does
/// not drift; after falling more than a period behind the schedule restarts from `now`
/// rather than bursting to catch up.
fn next_deadline(deadline: Instant, period: Duration, now: Instant) -> Instant {
    let next = deadline + period;
    if now > next + period {
        now
    } else {
        next
    }
}

/// Sleep until `deadline` in short steps; false when `stop` was set meanwhile.
/// Sleep until `deadline`, or until `earliest_key` once a keyframe has been requested.
/// Returns the moment the picture is due (the schedule continues from it), or None when
/// `stop` was set.
fn wait_for_picture(
    deadline: Instant,
    earliest_key: Instant,
    hub: &Hub,
    stop: &AtomicBool,
) -> Option<Instant> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let now = Instant::now();
        if now >= deadline {
            return Some(deadline);
        }
        if now >= earliest_key && hub.keyframe_due(clock::monotonic_us()) {
            return Some(now);
        }
        std::thread::sleep((deadline - now).min(KEY_POLL_STEP));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_do_not_drift_and_do_not_burst() {
        let t0 = Instant::now();
        let period = Duration::from_millis(33);
        assert_eq!(
            next_deadline(t0, period, t0 + Duration::from_millis(5)),
            t0 + period
        );
        // Slightly late: keep the grid.
        assert_eq!(
            next_deadline(t0, period, t0 + Duration::from_millis(50)),
            t0 + period
        );
        // Far behind: restart from now.
        let late = t0 + Duration::from_millis(200);
        assert_eq!(next_deadline(t0, period, late), late);
    }
}
