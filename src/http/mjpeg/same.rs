//! µStreamer's `--drop-same-frames N` for one `/stream` client: a picture identical to
//! the last one sent is skipped, at most N times in a row (so a still picture is still
//! sent now and then). With the client's `dual_final_frames`, the first identical
//! picture after a change is sent anyway: the last picture of a change goes out twice,
//! which makes browsers that draw a part only when the next one begins show it at once.

/// The skipping state of one client.
#[derive(Clone, Copy, Debug)]
pub struct SameFrames {
    /// Most identical pictures skipped in a row; 0: none.
    limit: u32,
    dual_final_frames: bool,
    /// Identical pictures skipped since the last one that was sent as new.
    dropped: u32,
    /// The last picture judged was sent as new (not skipped, not a dual).
    updated_prev: bool,
}

impl SameFrames {
    pub fn new(limit: u32, dual_final_frames: bool) -> SameFrames {
        SameFrames {
            limit,
            dual_final_frames,
            dropped: 0,
            updated_prev: false,
        }
    }

    /// Whether skipping is on at all (comparing pictures costs time otherwise spared).
    pub fn active(&self) -> bool {
        self.limit > 0
    }

    /// A new picture came: should it be sent? `same`: byte-identical to the last one
    /// sent; `online`: not NO SIGNAL (which is never skipped, as in µStreamer).
    pub fn send(&mut self, same: bool, online: bool) -> bool {
        if self.active() && online && same && self.dropped < self.limit {
            self.dropped += 1;
            let dual = self.dual_final_frames && self.updated_prev;
            self.updated_prev = false;
            return dual;
        }
        self.dropped = 0;
        self.updated_prev = true;
        true
    }

    /// The last picture was sent again because no new one came for a while.
    pub fn repeated(&mut self) {
        self.updated_prev = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is sent of `pictures` (true: identical to the previous picture).
    fn sent(mut filter: SameFrames, pictures: &[bool]) -> Vec<bool> {
        pictures
            .iter()
            .map(|&same| filter.send(same, true))
            .collect()
    }

    #[test]
    fn without_a_limit_everything_is_sent() {
        assert_eq!(
            sent(SameFrames::new(0, true), &[false, true, true]),
            [true; 3]
        );
    }

    #[test]
    fn at_most_n_identical_pictures_are_skipped_in_a_row() {
        let still = [false, true, true, true, true, true, true, true];
        assert_eq!(
            sent(SameFrames::new(3, false), &still),
            [true, false, false, false, true, false, false, false]
        );
        // A change resets the count.
        assert_eq!(
            sent(
                SameFrames::new(2, false),
                &[false, true, false, true, true, true]
            ),
            [true, false, true, false, false, true]
        );
    }

    #[test]
    fn dual_final_frames_sends_the_last_picture_of_a_change_twice() {
        let pictures = [false, true, true, true, false, false, true, true];
        assert_eq!(
            sent(SameFrames::new(100, true), &pictures),
            [true, true, false, false, true, true, true, false]
        );
    }

    #[test]
    fn no_signal_pictures_are_never_skipped() {
        let mut filter = SameFrames::new(10, false);
        assert!(filter.send(false, false));
        assert!(filter.send(true, false));
        assert!(filter.send(true, false));
    }

    #[test]
    fn a_repeat_counts_as_a_change_for_dual_final_frames() {
        let mut filter = SameFrames::new(10, true);
        assert!(filter.send(false, true));
        assert!(filter.send(true, true), "dual");
        assert!(!filter.send(true, true));
        filter.repeated();
        assert!(filter.send(true, true), "dual after the repeat");
    }
}
