//! The engine's copy of the current GOP, already packetized, so a viewer that connects
//! mid-GOP starts from the last keyframe at once instead of waiting for the next one
//! (which a file or a camera without keyframe-on-request may be seconds away from).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frame::OutFrame;

/// A GOP whose newest picture is older than this is the past, not the stream: the source
/// has stalled or paused, and a viewer started from it would see an old picture and then
/// live pictures decoded against it.
pub const STALE_AFTER: Duration = Duration::from_secs(1);

/// Longest GOP kept, in pictures; a longer one is dropped and late viewers wait for the
/// next keyframe instead of getting a replay of many seconds.
const MAX_GOP_FRAMES: usize = 300;

#[derive(Default)]
pub struct GopCache {
    frames: Vec<Arc<OutFrame>>,
    /// Source sequence number of the last access unit seen, to notice skipped pictures.
    last_seq: Option<u64>,
    /// When the newest picture was added.
    last_push: Option<Instant>,
}

impl GopCache {
    /// Add the next access unit (`seq` from the source). A keyframe starts a new GOP; a
    /// gap or an over-long GOP empties the cache, since what follows cannot be decoded
    /// from the cached keyframe.
    pub fn push(&mut self, now: Instant, seq: u64, frame: &Arc<OutFrame>) {
        self.last_push = Some(now);
        let follows = self
            .last_seq
            .is_some_and(|last| seq == last.wrapping_add(1));
        self.last_seq = Some(seq);
        if frame.key {
            self.frames.clear();
            self.frames.push(frame.clone());
        } else if follows && !self.frames.is_empty() && self.frames.len() < MAX_GOP_FRAMES {
            self.frames.push(frame.clone());
        } else {
            self.frames.clear();
        }
    }

    /// The cached GOP, keyframe first, if it is still the live stream's at `now`; empty
    /// when there is none or it has gone stale.
    pub fn current(&self, now: Instant) -> &[Arc<OutFrame>] {
        match self.last_push {
            Some(t) if now.saturating_duration_since(t) <= STALE_AFTER => &self.frames,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(key: bool) -> Arc<OutFrame> {
        Arc::new(OutFrame {
            payloads: Vec::new(),
            timestamp: 0,
            key,
            playout_delay: Default::default(),
            abs_capture_time: Default::default(),
        })
    }

    #[test]
    fn keeps_from_the_last_keyframe_and_drops_on_a_gap() {
        let now = Instant::now();
        let mut gop = GopCache::default();
        gop.push(now, 0, &frame(false));
        assert!(gop.current(now).is_empty(), "no keyframe yet");
        gop.push(now, 1, &frame(true));
        gop.push(now, 2, &frame(false));
        assert_eq!(gop.current(now).len(), 2);
        gop.push(now, 3, &frame(true));
        gop.push(now, 4, &frame(false));
        assert_eq!(gop.current(now).len(), 2);
        assert!(gop.current(now)[0].key);
        gop.push(now, 6, &frame(false));
        assert!(gop.current(now).is_empty(), "picture 5 is missing");
        gop.push(now, 7, &frame(false));
        assert!(gop.current(now).is_empty());
        gop.push(now, 8, &frame(true));
        assert_eq!(gop.current(now).len(), 1);
    }

    #[test]
    fn a_gop_the_source_stopped_adding_to_goes_stale() {
        let t0 = Instant::now();
        let mut gop = GopCache::default();
        gop.push(t0, 1, &frame(true));
        gop.push(t0 + Duration::from_millis(500), 2, &frame(false));
        assert_eq!(gop.current(t0 + Duration::from_millis(1400)).len(), 2);
        assert!(
            gop.current(t0 + Duration::from_millis(1600)).is_empty(),
            "nothing new for over a second"
        );
    }
}
