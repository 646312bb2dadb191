//! The capture clock: CLOCK_MONOTONIC in microseconds, the clock µStreamer stamps its
//! frames with, so timestamps from a memsink and from our own sources compare directly.

use std::time::{SystemTime, UNIX_EPOCH};

/// CLOCK_MONOTONIC now, in microseconds.
pub fn monotonic_us() -> u64 {
    crate::sys::clock::monotonic().as_micros() as u64
}

/// Wall-clock time now, in microseconds since the Unix epoch.
pub fn realtime_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Wall-clock time (µs since the Unix epoch) at which a monotonic reading was taken.
pub fn monotonic_to_realtime_us(capture_us: u64) -> u64 {
    let age = monotonic_us().saturating_sub(capture_us);
    realtime_us().saturating_sub(age)
}

/// Seconds between 1900 (NTP era 0) and 1970 (Unix epoch).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// 64-bit NTP timestamp (32.32 fixed point) of a wall-clock time in µs since the Unix epoch.
pub fn realtime_us_to_ntp(realtime_us: u64) -> u64 {
    let secs = realtime_us / 1_000_000 + NTP_UNIX_OFFSET_S;
    let frac = ((realtime_us % 1_000_000) << 32) / 1_000_000;
    (secs << 32) | frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_moves_forward() {
        let a = monotonic_us();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_us() >= a + 2_000);
    }

    #[test]
    fn ntp_conversion_matches_known_epoch() {
        // 1970-01-01T00:00:00.5Z is NTP 2208988800.5
        let ntp = realtime_us_to_ntp(500_000);
        assert_eq!(ntp >> 32, NTP_UNIX_OFFSET_S);
        assert_eq!(ntp & 0xffff_ffff, 1 << 31);
    }
}
