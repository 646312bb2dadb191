//! One Direct client's frames waiting to be sent, as kvmd keeps them: a bounded queue
//! that starts at a keyframe, and on overflow is emptied and waits for the next keyframe.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::media::Picture;

/// Frames a client may have waiting, as in kvmd.
pub const CLIENT_QUEUE_FRAMES: usize = 32;

/// What became of a picture offered to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offered {
    Queued,
    /// Not a keyframe while the queue waits for one.
    Skipped,
    /// The queue was full and has been emptied. `request_key`: ask the source for a
    /// keyframe. Not asked when the client took nothing since its last overflow: a
    /// client that reads nothing must not turn everyone's stream into keyframes.
    Overflowed {
        request_key: bool,
    },
}

pub struct ClientQueue {
    frames: VecDeque<Arc<Picture>>,
    capacity: usize,
    wait_key: bool,
    /// Whether a frame was taken since the last overflow.
    taken: bool,
}

impl ClientQueue {
    /// An empty queue that waits for a keyframe.
    pub fn new(capacity: usize) -> ClientQueue {
        ClientQueue {
            frames: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            wait_key: true,
            taken: true,
        }
    }

    pub fn offer(&mut self, picture: Arc<Picture>) -> Offered {
        if self.wait_key && !picture.key {
            return Offered::Skipped;
        }
        if self.frames.len() < self.capacity {
            self.wait_key = false;
            self.frames.push_back(picture);
            return Offered::Queued;
        }
        self.frames.clear();
        let request_key = std::mem::replace(&mut self.taken, false);
        // A keyframe that overflows the queue is where the client resumes.
        self.wait_key = !picture.key;
        let request_key = request_key && self.wait_key;
        if picture.key {
            self.frames.push_back(picture);
        }
        Offered::Overflowed { request_key }
    }

    pub fn take(&mut self) -> Option<Arc<Picture>> {
        let picture = self.frames.pop_front()?;
        self.taken = true;
        Some(picture)
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pic(key: bool, seq: u64) -> Arc<Picture> {
        Arc::new(Picture {
            seq,
            ..Picture::video(vec![0, 0, 0, 1, 0x65], key, (16, 16), 0)
        })
    }

    fn seqs(q: &mut ClientQueue) -> Vec<u64> {
        std::iter::from_fn(|| q.take()).map(|p| p.seq).collect()
    }

    #[test]
    fn starts_at_a_keyframe() {
        let mut q = ClientQueue::new(4);
        assert_eq!(q.offer(pic(false, 0)), Offered::Skipped);
        assert_eq!(q.offer(pic(true, 1)), Offered::Queued);
        assert_eq!(q.offer(pic(false, 2)), Offered::Queued);
        assert_eq!(seqs(&mut q), [1, 2]);
    }

    #[test]
    fn overflow_empties_the_queue_asks_for_a_key_and_resumes_there() {
        let mut q = ClientQueue::new(3);
        for seq in 0..3 {
            assert_eq!(q.offer(pic(seq == 0, seq)), Offered::Queued);
        }
        assert_eq!(
            q.offer(pic(false, 3)),
            Offered::Overflowed { request_key: true }
        );
        assert!(q.is_empty());
        assert_eq!(q.offer(pic(false, 4)), Offered::Skipped);
        assert_eq!(q.offer(pic(true, 5)), Offered::Queued);
        assert_eq!(q.offer(pic(false, 6)), Offered::Queued);
        assert_eq!(seqs(&mut q), [5, 6]);
    }

    #[test]
    fn a_client_that_takes_nothing_asks_for_a_key_once() {
        let mut q = ClientQueue::new(2);
        let mut requests = 0;
        for seq in 0..100 {
            if let Offered::Overflowed { request_key: true } = q.offer(pic(seq % 10 == 0, seq)) {
                requests += 1;
            }
            assert!(q.len() <= 2);
        }
        assert_eq!(requests, 1);
        // Once it reads again, its next overflow asks again.
        assert_eq!(q.offer(pic(true, 100)), Offered::Queued);
        assert_eq!(seqs(&mut q), [100]);
        q.offer(pic(false, 101));
        q.offer(pic(false, 102));
        assert_eq!(
            q.offer(pic(false, 103)),
            Offered::Overflowed { request_key: true }
        );
    }

    #[test]
    fn a_keyframe_that_overflows_is_kept() {
        let mut q = ClientQueue::new(2);
        q.offer(pic(true, 0));
        q.offer(pic(false, 1));
        assert_eq!(
            q.offer(pic(true, 2)),
            Offered::Overflowed { request_key: false }
        );
        assert_eq!(q.offer(pic(false, 3)), Offered::Queued);
        assert_eq!(seqs(&mut q), [2, 3]);
    }
}
