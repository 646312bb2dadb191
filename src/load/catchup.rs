//! Telling a new viewer's catch-up burst from live video. A server that starts viewers
//! from the cached GOP (as peregrine does) sends the pictures since the last keyframe
//! much faster than real time; counted as frames per second, that burst reads as
//! "200 fps". A picture belongs to the burst while pictures arrive several times faster
//! than their RTP timestamps advance; the first one that does not ends it for good.

use std::time::Instant;

/// Pictures arriving this many times faster than real time are catch-up.
const BURST_SPEEDUP: f64 = 4.0;

/// Per-viewer state: the previous picture, and whether live video has begun.
#[derive(Default)]
pub struct CatchUp {
    last: Option<(Instant, u32)>,
    live: bool,
}

impl CatchUp {
    /// Whether the picture that arrived at `at` with RTP timestamp `rtp_ts` (90 kHz) is
    /// part of the catch-up burst. The first picture counts as live.
    pub fn is_catch_up(&mut self, at: Instant, rtp_ts: u32) -> bool {
        let previous = self.last.replace((at, rtp_ts));
        if self.live {
            return false;
        }
        let Some((t0, ts0)) = previous else {
            return false;
        };
        let media_s = f64::from(rtp_ts.wrapping_sub(ts0)) / 90_000.0;
        let wall_s = at.saturating_duration_since(t0).as_secs_f64();
        // A timestamp that went backwards or jumped hours is not a burst either.
        let burst = media_s > 0.0 && media_s < 10.0 && wall_s * BURST_SPEEDUP < media_s;
        self.live = !burst;
        burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const FRAME_TS: u32 = 3000; // 30 fps at 90 kHz

    #[test]
    fn a_fast_gop_then_real_time_pictures() {
        let mut c = CatchUp::default();
        let t0 = Instant::now();
        assert!(!c.is_catch_up(t0, 0), "the keyframe");
        // 40 pictures of the GOP 3 ms apart: catch-up.
        for i in 1..=40u32 {
            let at = t0 + Duration::from_millis(3 * u64::from(i));
            assert!(c.is_catch_up(at, i * FRAME_TS), "picture {i}");
        }
        // Then live pictures every 33 ms; later bunching does not count as catch-up.
        let live = t0 + Duration::from_millis(120 + 33);
        assert!(!c.is_catch_up(live, 41 * FRAME_TS));
        assert!(!c.is_catch_up(live + Duration::from_millis(1), 42 * FRAME_TS));
    }

    #[test]
    fn a_viewer_that_starts_live_has_no_catch_up() {
        let mut c = CatchUp::default();
        let t0 = Instant::now();
        for i in 0..10u32 {
            let at = t0 + Duration::from_millis(33 * u64::from(i));
            assert!(!c.is_catch_up(at, (u32::MAX - 5 * FRAME_TS).wrapping_add(i * FRAME_TS)));
        }
    }
}
