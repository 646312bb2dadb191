//! The capture times of a source's frames, counted rather than read: frame `n` of an
//! opening started at `t0` was captured at `t0 + n × 20 ms`, so RTP timestamps advance
//! by exactly 960 per frame. A frame is handed over only once all its sound could have
//! been captured, so a device that answers at once (ALSA's `null` plugin, a file)
//! still plays in real time.

use std::time::{Duration, Instant};

use crate::media::audio::FRAME_US;
use crate::media::clock;

/// A frame later than this is not delayed sound but lost sound (the device stalled or
/// the machine was busy): the count starts again from now, leaving a gap.
const MAX_LAG_US: u64 = 200_000;

/// Capture times by frame count.
pub struct FrameClock {
    /// When frame 0 would have begun.
    start_us: u64,
    frames: u64,
}

impl FrameClock {
    /// Counting from a first frame that begins at `start_us` (CLOCK_MONOTONIC).
    pub fn new(start_us: u64) -> FrameClock {
        FrameClock {
            start_us,
            frames: 0,
        }
    }

    /// When the next frame's first sample was captured.
    pub fn capture_us(&self) -> u64 {
        self.start_us + self.frames * FRAME_US
    }

    /// When the next frame is complete: the earliest it may be handed over.
    pub fn due_us(&self) -> u64 {
        self.capture_us() + FRAME_US
    }

    /// The next frame was handed over.
    pub fn advance(&mut self) {
        self.frames += 1;
    }

    /// When the next frame is more than [`MAX_LAG_US`] overdue at `now_us`, stamp it
    /// as complete now: timestamps jump forward over the lost sound instead of falling
    /// behind the clock for good. True when it did.
    pub fn catch_up(&mut self, now_us: u64) -> bool {
        if now_us <= self.due_us() + MAX_LAG_US {
            return false;
        }
        self.start_us = now_us - FRAME_US - self.frames * FRAME_US;
        true
    }

    /// Sound was lost (an overrun): count again from `now_us`, never backwards.
    pub fn restart(&mut self, now_us: u64) {
        let next = now_us.saturating_sub(FRAME_US).max(self.capture_us());
        self.start_us = next - self.frames * FRAME_US;
    }
}

/// Sleep until CLOCK_MONOTONIC reaches `due_us`, or until `deadline`, whichever comes
/// first. True when `due_us` was reached.
pub fn wait_until(due_us: u64, deadline: Instant) -> bool {
    let now = Instant::now();
    let left = Duration::from_micros(due_us.saturating_sub(clock::monotonic_us()));
    if left.is_zero() {
        return true;
    }
    let due = now + left;
    std::thread::sleep(due.min(deadline).saturating_duration_since(now));
    due <= deadline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_20_ms_apart_and_due_when_complete() {
        let mut clock = FrameClock::new(1_000_000);
        let mut stamps = Vec::new();
        for _ in 0..5 {
            assert_eq!(clock.due_us(), clock.capture_us() + FRAME_US);
            stamps.push(clock.capture_us());
            clock.advance();
        }
        assert_eq!(
            stamps,
            [1_000_000, 1_020_000, 1_040_000, 1_060_000, 1_080_000]
        );
    }

    #[test]
    fn a_long_stall_jumps_forward_and_an_overrun_never_goes_back() {
        let mut clock = FrameClock::new(1_000_000);
        clock.advance();
        // Due at 1_040_000: a little late is still the same sound.
        assert!(!clock.catch_up(1_040_000 + MAX_LAG_US));
        assert_eq!(clock.capture_us(), 1_020_000);
        assert!(clock.catch_up(5_000_000));
        assert_eq!(clock.due_us(), 5_000_000, "complete now");
        clock.advance();
        assert_eq!(clock.capture_us(), 5_000_000);
        clock.restart(5_010_000);
        assert_eq!(clock.capture_us(), 5_000_000, "not before the last frame");
        clock.restart(6_000_000);
        assert_eq!(clock.capture_us(), 5_980_000);
    }
}
