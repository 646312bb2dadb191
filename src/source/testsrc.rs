//! The generated test pattern as a source.
//!
//! [`TestPattern`] pictures are drawn at the configured rate and handed to the runner,
//! which encodes them. The pattern runs only while someone watches, starts each time
//! with an IDR, and makes a requested keyframe at once rather than at the next tick.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lifecycle::StatusHandle;
use super::pattern::TestPattern;
use super::runner::{self, Closing, Demand, Next, RunWhen, RunnerConfig, Source};
use crate::media::VideoSettings;
use crate::media::{clock, Hub};

#[derive(Clone, Debug)]
pub struct TestsrcConfig {
    pub video: VideoSettings,
    /// Delay before the first picture each time a viewer wakes the source, as a camera
    /// takes a moment to start; zero in normal use.
    pub warmup: Duration,
}

/// Run the test pattern into `hub` until `stop` is set.
pub fn spawn(
    cfg: TestsrcConfig,
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let source = PatternSource::new(&cfg)?;
    let runner = RunnerConfig::new(cfg.video.size(), cfg.video);
    let status = StatusHandle::new("testsrc", "live");
    runner::spawn(Box::new(source), runner, hub, status, stop)
}

/// The pattern, drawn when each picture is due.
pub struct PatternSource {
    pattern: TestPattern,
    size: (u32, u32),
    fps: u32,
    period: Duration,
    warmup: Duration,
    /// Pictures drawn; the number in each picture.
    counter: u64,
    /// When the next picture is due.
    due: Instant,
    last_picture: Option<Instant>,
}

impl PatternSource {
    pub fn new(cfg: &TestsrcConfig) -> anyhow::Result<PatternSource> {
        let v = &cfg.video;
        v.check().map_err(|e| anyhow::anyhow!("testsrc: {e}"))?;
        Ok(PatternSource {
            pattern: TestPattern::new(v.width, v.height)?,
            size: v.size(),
            fps: v.fps,
            period: Duration::from_nanos(1_000_000_000 / u64::from(v.fps)),
            warmup: cfg.warmup,
            counter: 0,
            due: Instant::now(),
            last_picture: None,
        })
    }
}

impl Source for PatternSource {
    fn thread_name(&self) -> &'static str {
        "testsrc"
    }

    fn run_when(&self) -> RunWhen {
        RunWhen::WhileWatched
    }

    fn generated(&self) -> Option<(u32, u32, u32)> {
        Some((self.size.0, self.size.1, self.fps))
    }

    fn open(&mut self, _: &Demand) -> Result<(), String> {
        tracing::debug!("testsrc active");
        self.due = Instant::now() + self.warmup;
        self.last_picture = None;
        Ok(())
    }

    fn next(&mut self, demand: &Demand, deadline: Instant) -> Next<'_> {
        // A requested keyframe (a viewer waiting to start) is drawn at once rather than
        // at the next tick, but never sooner than half a period after the last picture,
        // so a flood of requests cannot raise the frame rate.
        let earliest_key = self.last_picture.map_or(self.due, |t| t + self.period / 2);
        let taken_at = loop {
            let seen = demand.seen();
            let now = Instant::now();
            if now >= self.due {
                break self.due;
            }
            let key_at = demand.keyframe_due_at().map(|t| t.max(earliest_key));
            if key_at.is_some_and(|t| now >= t) {
                break now;
            }
            if now >= deadline || demand.stopping() {
                return Next::Waiting;
            }
            let wake = key_at.map_or(self.due, |t| t.min(self.due)).min(deadline);
            demand.wait(seen, wake);
        };
        let now = Instant::now();
        self.last_picture = Some(now);
        self.due = next_deadline(taken_at, self.period, now);
        let capture_us = clock::monotonic_us();
        let wall_ms = clock::realtime_us() / 1000;
        // The strip carries the low 32 bits of the counter; wrapping is intended.
        let frame = self.pattern.draw(self.counter as u32, wall_ms);
        self.counter += 1;
        Next::Raw(frame, capture_us)
    }

    fn close(&mut self, _: Closing) {
        tracing::debug!("testsrc idle: no subscribers");
    }
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
