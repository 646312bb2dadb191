//! Memory back to the system after viewers leave: each viewer's connection is a few
//! hundred small allocations that the allocator keeps once freed, so without this the
//! server's resident size after a burst of viewers stays at the burst's peak.

use std::time::Duration;

use tokio::sync::watch;

use super::RtcEngine;
use crate::sys;

/// How often the peer count is looked at. Trimming walks the heap (about a millisecond
/// per 100 MB), so it is done at most this often, and only after departures.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Until `shutdown` turns true: whenever fewer peers exist than at the last look, give
/// the freed heap back.
pub async fn give_back_after_departures(engine: RtcEngine, mut shutdown: watch::Receiver<bool>) {
    let mut last = engine.stats().peers;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let now = engine.stats().peers;
        if now < last {
            let trimmed = tokio::task::spawn_blocking(sys::memory::trim).await;
            tracing::debug!(
                peers_before = last,
                peers = now,
                ?trimmed,
                "freed memory returned"
            );
        }
        last = now;
    }
}
