//! Log lines that anyone on the network can trigger (refused connections, dropped
//! events, slow clients) are counted and written at most once per period, with the
//! number of occurrences since the last line, so a flood cannot flood the log too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One kind of event, logged at most once per `period`.
pub struct RateLimited {
    period: Duration,
    last: Mutex<Option<Instant>>,
    /// Occurrences not yet reported in a log line.
    pending: AtomicU64,
}

impl RateLimited {
    pub const fn new(period: Duration) -> RateLimited {
        RateLimited {
            period,
            last: Mutex::new(None),
            pending: AtomicU64::new(0),
        }
    }

    /// Count one occurrence. Returns how many occurred since the last returned count
    /// (this one included) when a line is due now, `None` when it is not.
    pub fn hit(&self) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= self.period);
        if !due {
            return None;
        }
        *last = Some(Instant::now());
        Some(self.pending.swap(0, Ordering::Relaxed))
    }
}

/// The period most such lines use.
pub const PERIOD: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_hit_logs_then_counts_until_the_period_ends() {
        let log = RateLimited::new(Duration::from_millis(200));
        assert_eq!(log.hit(), Some(1));
        for _ in 0..99 {
            assert_eq!(log.hit(), None);
        }
        std::thread::sleep(Duration::from_millis(220));
        assert_eq!(
            log.hit(),
            Some(100),
            "the line says how many were held back"
        );
        assert_eq!(log.hit(), None);
    }
}
