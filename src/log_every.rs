//! Log lines that a remote party can trigger at will (a refused connection, a wrong
//! secret) are said at most once per period, with how many were left unsaid.

use std::time::{Duration, Instant};

pub struct LogEvery {
    every: Duration,
    last: Option<Instant>,
    unsaid: u64,
}

impl LogEvery {
    pub const fn new(every: Duration) -> LogEvery {
        LogEvery {
            every,
            last: None,
            unsaid: 0,
        }
    }

    /// One more event: `Some(n)` when it should be logged now, `n` being the events
    /// since the last line (this one included); `None` to keep quiet.
    pub fn event(&mut self, now: Instant) -> Option<u64> {
        self.unsaid += 1;
        let due = self
            .last
            .is_none_or(|at| now.saturating_duration_since(at) >= self.every);
        if !due {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unsaid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_the_first_then_one_per_period_with_a_count() {
        let mut log = LogEvery::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(log.event(t0), Some(1));
        for i in 1..1000 {
            assert_eq!(log.event(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(log.event(t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(log.event(t0 + Duration::from_secs(11)), None);
    }
}
