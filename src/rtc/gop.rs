//! The engine's copy of the current GOP, already packetized, so a viewer that connects
//! mid-GOP starts from the last keyframe at once instead of waiting for the next one
//! (which a file or a camera without keyframe-on-request may be seconds away from).

use std::sync::Arc;

use super::peer::OutFrame;

/// Longest GOP kept, in pictures; a longer one is dropped and late viewers wait for the
/// next keyframe instead of getting a replay of many seconds.
const MAX_GOP_FRAMES: usize = 300;

#[derive(Default)]
pub struct GopCache {
    frames: Vec<Arc<OutFrame>>,
    /// Source sequence number of the last access unit seen, to notice skipped pictures.
    last_seq: Option<u64>,
}

impl GopCache {
    /// Add the next access unit (`seq` from the source). A keyframe starts a new GOP; a
    /// gap or an over-long GOP empties the cache, since what follows cannot be decoded
    /// from the cached keyframe.
    pub fn push(&mut self, seq: u64, frame: &Arc<OutFrame>) {
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

    /// Forget everything (the subscription ended).
    pub fn clear(&mut self) {
        self.frames.clear();
        self.last_seq = None;
    }

    /// The cached GOP, keyframe first; empty when there is none.
    pub fn frames(&self) -> &[Arc<OutFrame>] {
        &self.frames
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
        let mut gop = GopCache::default();
        gop.push(0, &frame(false));
        assert!(gop.frames().is_empty(), "no keyframe yet");
        gop.push(1, &frame(true));
        gop.push(2, &frame(false));
        assert_eq!(gop.frames().len(), 2);
        gop.push(3, &frame(true));
        gop.push(4, &frame(false));
        assert_eq!(gop.frames().len(), 2);
        assert!(gop.frames()[0].key);
        gop.push(6, &frame(false));
        assert!(gop.frames().is_empty(), "picture 5 is missing");
        gop.push(7, &frame(false));
        assert!(gop.frames().is_empty());
        gop.push(8, &frame(true));
        assert_eq!(gop.frames().len(), 1);
        gop.clear();
        assert!(gop.frames().is_empty());
    }
}
