//! Log lines about things anyone on the network can cause (garbage datagrams, refused
//! candidates or viewers) are limited to one per period, saying how many were left out,
//! so a flood of bad input cannot flood the log too.

use std::time::{Duration, Instant};

/// The period used for the engine's rate-limited lines.
pub const LOG_PERIOD: Duration = Duration::from_secs(10);

/// Allows one log line per period.
#[derive(Debug)]
pub struct LogLimiter {
    period: Duration,
    next: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub const fn new(period: Duration) -> LogLimiter {
        LogLimiter {
            period,
            next: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be written now, `n` being the events left unlogged
    /// since the last line; `None` (and the event counted) otherwise.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|next| now < next) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + self.period);
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl Default for LogLimiter {
    fn default() -> LogLimiter {
        LogLimiter::new(LOG_PERIOD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_left_out() {
        let mut limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.allow(t0), Some(0));
        for i in 1..=1000 {
            assert_eq!(limiter.allow(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(limiter.allow(t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(limiter.allow(t0 + Duration::from_secs(11)), None);
    }
}
