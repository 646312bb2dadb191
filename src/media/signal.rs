//! A wake-up a blocked thread can wait on: whoever changes something the thread cares
//! about calls [`Signal::notify`]; the thread notes [`Signal::seen`] before it looks at
//! that state, then waits for a newer notification, so a change made between its look
//! and its wait is never missed.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

#[derive(Default)]
pub struct Signal {
    /// Bumped by every notification.
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Signal {
    /// Wake every thread waiting.
    pub fn notify(&self) {
        *self.lock() += 1;
        self.changed.notify_all();
    }

    /// The notifications so far; pass it to [`Signal::wait`].
    pub fn seen(&self) -> u64 {
        *self.lock()
    }

    /// Block until a notification newer than `seen`, or `deadline`. Returns whether
    /// one came.
    pub fn wait(&self, seen: u64, deadline: Instant) -> bool {
        let mut generation = self.lock();
        while *generation == seen {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            generation = match self.changed.wait_timeout(generation, left) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        // A plain counter: nothing to repair after a panic elsewhere.
        self.generation.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_notification_after_the_look_wakes_the_waiter() {
        let signal = Arc::new(Signal::default());
        let seen = signal.seen();
        let notifier = {
            let signal = signal.clone();
            std::thread::spawn(move || signal.notify())
        };
        let far = Instant::now() + Duration::from_secs(60);
        assert!(signal.wait(seen, far), "woken, not timed out");
        notifier.join().unwrap();
        // Nothing newer: the wait ends at its deadline.
        assert!(!signal.wait(signal.seen(), Instant::now()));
    }
}
