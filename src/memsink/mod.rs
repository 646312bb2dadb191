//! µStreamer's memsink: one frame (H.264 or JPEG) at a time in POSIX shared memory,
//! shared between one writer and any number of readers (protocol version 10).
//!
//! * [`layout`]: the header as data (offsets per ABI, `long double` encodings).
//! * [`shm`]: the shared-memory object and its `flock`.
//! * [`writer`] / [`reader`]: the server and client sides of the protocol.
//! * [`output`]: a task that feeds a hub's H.264 pictures into a sink.
//! * [`jpeg_output`]: a task that feeds a stream's JPEG pictures into a sink.
pub mod jpeg_output;
pub mod layout;
pub mod output;

pub mod reader;
pub mod shm;
pub mod writer;

/// CLOCK_MONOTONIC in seconds, rounded to whole milliseconds as µStreamer stamps frames.
pub fn monotonic_s() -> f64 {
    let now = crate::sys::clock::monotonic();
    let ms = (f64::from(now.subsec_nanos()) / 1e6).round();
    now.as_secs() as f64 + ms / 1000.0
}

/// A monotonic microsecond reading as memsink seconds (ms granular).
pub fn us_to_s(us: u64) -> f64 {
    (us / 1000) as f64 / 1000.0
}

/// Memsink seconds as monotonic microseconds; negative or absurd values give 0.
pub fn s_to_us(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 && s < 1e12 {
        (s * 1e6).round() as u64
    } else {
        0
    }
}

/// The "triple32" integer mixer µStreamer builds frame ids from.
fn triple32(mut x: u32) -> u32 {
    x ^= x >> 17;
    x = x.wrapping_mul(0xED5A_D4BB);
    x ^= x >> 11;
    x = x.wrapping_mul(0xAC4C_1B51);
    x ^= x >> 15;
    x = x.wrapping_mul(0x3184_8BAB);
    x ^= x >> 14;
    x
}

/// Frame id for a monotonic microsecond reading, as µStreamer computes it.
pub fn frame_id(t_us: u64) -> u64 {
    let lo = triple32(t_us as u32);
    let hi = triple32(t_us.wrapping_add(12345) as u32);
    u64::from(lo) | (u64::from(hi) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_vectors() {
        assert_eq!(triple32(1), 0x0427_41D6);
        assert_eq!(triple32(12345), 0xF904_EB67);
        assert_eq!(frame_id(1_000_000), 0xEB41_9EEB_FC73_B35F);
    }

    #[test]
    fn seconds_are_ms_granular() {
        let ms = monotonic_s() * 1000.0;
        assert!((ms - ms.round()).abs() < 1e-3, "{ms}");
        assert_eq!(us_to_s(12_345_678_901), 12345.678);
        assert_eq!(s_to_us(12345.678), 12_345_678_000);
        assert_eq!(s_to_us(f64::NAN), 0);
    }
}
