//! Telling a new viewer's catch-up burst from live video. A server that starts viewers
//! from the cached GOP (as peregrine does) sends the pictures since the last keyframe
//! much faster than real time; counted as frames per second, that burst reads as
//! "200 fps".
//!
//! A picture's *age* here is its arrival time minus its RTP time, both counted from the
//! viewer's first picture. Each picture of a burst is notably younger than every picture
//! before it; a live picture never is, however the network bunches them, because it was
//! produced no earlier than real time. So a picture is catch-up when it beats the
//! youngest age so far by half its media step. A pause inside the burst (a busy sender
//! missing its pacing tick) costs one picture, not the rest of the burst; only a quarter
//! second with no catch-up picture ends the burst for good.

use std::time::{Duration, Instant};

/// This long without a catch-up picture and the burst is over.
const QUIET_ENDS_BURST: Duration = Duration::from_millis(250);
/// RTP timestamps are 90 kHz.
const RTP_HZ: f64 = 90_000.0;

/// Per-viewer state.
#[derive(Default)]
pub struct CatchUp {
    /// Arrival and RTP timestamp of the first picture.
    first: Option<(Instant, u32)>,
    /// RTP timestamp of the previous picture.
    last_ts: u32,
    /// The youngest age seen so far, seconds.
    youngest: f64,
    /// Since when no picture has been catch-up.
    quiet_since: Option<Instant>,
    /// The burst is over; everything from now on is live.
    live: bool,
}

impl CatchUp {
    /// Whether the picture that arrived at `at` with RTP timestamp `rtp_ts` (90 kHz) is
    /// part of the catch-up burst. The first picture counts as live.
    pub fn is_catch_up(&mut self, at: Instant, rtp_ts: u32) -> bool {
        if self.live {
            return false;
        }
        let Some((t0, ts0)) = self.first else {
            self.first = Some((at, rtp_ts));
            self.last_ts = rtp_ts;
            self.quiet_since = Some(at);
            return false;
        };
        let wall_s = at.saturating_duration_since(t0).as_secs_f64();
        let media_s = f64::from(rtp_ts.wrapping_sub(ts0)) / RTP_HZ;
        let step_s = f64::from(rtp_ts.wrapping_sub(self.last_ts)) / RTP_HZ;
        self.last_ts = rtp_ts;
        // A timestamp that went backwards (a huge unsigned step) or jumped far ahead of
        // the clock is a new stream, not a burst.
        if media_s > wall_s + 10.0 || step_s > 10.0 {
            self.live = true;
            return false;
        }
        let age = wall_s - media_s;
        if step_s > 0.0 && age < self.youngest - step_s / 2.0 {
            self.youngest = age;
            self.quiet_since = None;
            return true;
        }
        self.youngest = self.youngest.min(age);
        let quiet_since = *self.quiet_since.get_or_insert(at);
        self.live = at.saturating_duration_since(quiet_since) >= QUIET_ENDS_BURST;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME_TS: u32 = 3000; // 30 fps at 90 kHz

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_fast_gop_then_real_time_pictures() {
        let mut c = CatchUp::default();
        let t0 = Instant::now();
        assert!(!c.is_catch_up(t0, 0), "the keyframe");
        // 40 pictures of the GOP 3 ms apart: catch-up.
        for i in 1..=40u32 {
            assert!(
                c.is_catch_up(t0 + ms(3 * u64::from(i)), i * FRAME_TS),
                "{i}"
            );
        }
        // Then live pictures every 33 ms.
        for i in 41..=60u32 {
            let at = t0 + ms(120 + 33 * u64::from(i - 40));
            assert!(!c.is_catch_up(at, i * FRAME_TS), "live picture {i}");
        }
        // Later bunching (one picture late, the next on time) is not catch-up.
        let at = t0 + ms(120 + 33 * 21);
        assert!(!c.is_catch_up(at + ms(30), 61 * FRAME_TS));
        assert!(!c.is_catch_up(at + ms(33), 62 * FRAME_TS));
    }

    #[test]
    fn a_late_pacing_tick_inside_the_burst_costs_one_picture() {
        let mut c = CatchUp::default();
        let t0 = Instant::now();
        c.is_catch_up(t0, 0);
        // Pictures 1 ms apart, but every tenth waits 40 ms (longer than its 33 ms
        // of media) for the sender's next pacing tick.
        let mut at = t0;
        let mut caught = 0;
        for i in 1..=80u32 {
            at += if i % 10 == 0 { ms(40) } else { ms(1) };
            caught += u32::from(c.is_catch_up(at, i * FRAME_TS));
        }
        assert!(caught >= 72, "only {caught} of 80 burst pictures caught");
        // Live afterwards.
        for i in 81..=100u32 {
            at += ms(33);
            assert!(!c.is_catch_up(at, i * FRAME_TS), "live picture {i}");
        }
    }

    #[test]
    fn a_viewer_that_starts_live_has_no_catch_up() {
        let mut c = CatchUp::default();
        let t0 = Instant::now();
        for i in 0..10u32 {
            let at = t0 + ms(33 * u64::from(i));
            assert!(!c.is_catch_up(at, (u32::MAX - 5 * FRAME_TS).wrapping_add(i * FRAME_TS)));
        }
    }

    #[test]
    fn a_timestamp_jump_is_not_a_burst() {
        let mut c = CatchUp::default();
        let t0 = Instant::now();
        c.is_catch_up(t0, 1_000_000);
        assert!(!c.is_catch_up(t0 + ms(33), 5));
        assert!(!c.is_catch_up(t0 + ms(34), 5 + FRAME_TS));
    }
}
