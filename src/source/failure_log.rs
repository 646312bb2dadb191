//! Which source failures reach the log. A source that cannot connect retries every few
//! seconds for as long as it takes; each failure is worth saying once at warn level,
//! not once per retry forever. A new reason is said at once (at most every
//! [`MIN_GAP`]); the same reason again after [`REPEAT_AFTER`], with how many attempts
//! failed meanwhile.

use std::time::{Duration, Instant};

/// The same failure is logged again after this long.
pub const REPEAT_AFTER: Duration = Duration::from_secs(60);
/// Reasons that change faster than this (alternating errors) are not each logged.
pub const MIN_GAP: Duration = Duration::from_secs(5);

/// What to log for one failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Say it: the failure is new (or changed).
    New,
    /// Say it again: it has gone on, failing this many times since it was last said.
    Repeated(u64),
    /// Keep quiet: said recently.
    Quiet,
}

#[derive(Default)]
pub struct FailureLog {
    /// The reason last logged, and when.
    last: Option<(String, Instant)>,
    /// Failures not logged since then.
    quiet: u64,
}

impl FailureLog {
    pub fn judge(&mut self, why: &str, now: Instant) -> Verdict {
        let verdict = match &self.last {
            None => Verdict::New,
            Some((last, at)) => {
                let since = now.saturating_duration_since(*at);
                if since >= REPEAT_AFTER {
                    if last == why {
                        Verdict::Repeated(self.quiet + 1)
                    } else {
                        Verdict::New
                    }
                } else if last != why && since >= MIN_GAP {
                    Verdict::New
                } else {
                    Verdict::Quiet
                }
            }
        };
        if verdict == Verdict::Quiet {
            self.quiet += 1;
        } else {
            self.last = Some((why.to_string(), now));
            self.quiet = 0;
        }
        verdict
    }

    /// The source worked: its next failure is news again.
    pub fn reset(&mut self) {
        *self = FailureLog::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_said_once_then_again_after_a_while_with_a_count() {
        let mut log = FailureLog::default();
        let t0 = Instant::now();
        let refused = "cannot connect to 127.0.0.1:1: connection refused";
        assert_eq!(log.judge(refused, t0), Verdict::New);
        // Retries every 5 s for a minute: quiet.
        for i in 1..12 {
            let t = t0 + Duration::from_secs(5 * i);
            assert_eq!(log.judge(refused, t), Verdict::Quiet, "retry {i}");
        }
        assert_eq!(log.judge(refused, t0 + REPEAT_AFTER), Verdict::Repeated(12));
        assert_eq!(
            log.judge(refused, t0 + REPEAT_AFTER + Duration::from_secs(1)),
            Verdict::Quiet
        );
    }

    #[test]
    fn a_changed_reason_is_said_but_alternating_ones_are_not_each_said() {
        let mut log = FailureLog::default();
        let t0 = Instant::now();
        assert_eq!(log.judge("a", t0), Verdict::New);
        assert_eq!(log.judge("b", t0 + Duration::from_secs(1)), Verdict::Quiet);
        assert_eq!(log.judge("b", t0 + MIN_GAP), Verdict::New);
        assert_eq!(log.judge("a", t0 + MIN_GAP), Verdict::Quiet);
        log.reset();
        assert_eq!(
            log.judge("a", t0 + MIN_GAP),
            Verdict::New,
            "news after a reset"
        );
    }
}
