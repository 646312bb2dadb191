//! CLOCK_MONOTONIC as a reading, the clock µStreamer stamps frames with (`Instant` uses
//! the same clock but does not show its value, which memsink headers carry).

use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

/// Time since an unspecified start (boot, on Linux) that never goes back.
pub fn monotonic() -> Duration {
    // CLOCK_MONOTONIC always exists; zero would only mean "no clock", never a panic.
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(Duration::ZERO, Duration::from)
}
