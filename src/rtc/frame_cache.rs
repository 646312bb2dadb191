//! Each stream's latest picture as packetized, shared by the engine shards: every shard
//! subscribes to the hub and gets the same `Arc<Picture>`; the first to take it
//! packetizes it, the others reuse those packets. Entries are keyed by the picture
//! itself (a weak reference compared by address), so a stale entry never matches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::frame::OutFrame;
use super::subscriptions::StreamKey;
use crate::media::Picture;

/// A picture (weakly held, to know it again) and its packets.
type Packetized = (Weak<Picture>, Arc<OutFrame>);

#[derive(Default)]
pub struct FrameCache {
    latest: Mutex<HashMap<StreamKey, Packetized>>,
}

impl FrameCache {
    /// `au` of the stream `key` packetized: by another shard already, or now by `make`.
    pub fn get_or_make(
        &self,
        key: StreamKey,
        au: &Arc<Picture>,
        make: impl FnOnce() -> Option<OutFrame>,
    ) -> Option<Arc<OutFrame>> {
        let Ok(mut latest) = self.latest.lock() else {
            return make().map(Arc::new);
        };
        if let Some((picture, frame)) = latest.get(&key) {
            if Weak::as_ptr(picture) == Arc::as_ptr(au) && picture.strong_count() > 0 {
                return Some(frame.clone());
            }
        }
        // Made under the lock: the other shards wait for it rather than make it again.
        let frame = Arc::new(make()?);
        latest.retain(|_, (picture, _)| picture.strong_count() > 0);
        latest.insert(key, (Arc::downgrade(au), frame.clone()));
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_is_packetized_once_for_every_shard() {
        let cache = FrameCache::default();
        let au = Arc::new(Picture::video(
            vec![0, 0, 0, 1, 0x65, 1, 2, 3],
            true,
            (2, 2),
            1,
        ));
        let mut made = 0;
        let mut make = || {
            made += 1;
            OutFrame::packetize(&au, 1150)
        };
        let first = cache.get_or_make(1, &au, &mut make).expect("frame");
        let again = cache.get_or_make(1, &au, &mut make).expect("frame");
        assert!(Arc::ptr_eq(&first, &again));
        let next = Arc::new(Picture::video(vec![0, 0, 0, 1, 0x41, 9], false, (2, 2), 2));
        let other = cache
            .get_or_make(1, &next, || OutFrame::packetize(&next, 1150))
            .expect("frame");
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(made, 1);
    }
}
