//! Sound: the one format audio travels in between sources, the WebRTC engine and the
//! microphone playback. Opus at 48 kHz in 20 ms frames, as browsers and the ustreamer
//! plugin use it; PCM in between is interleaved signed 16-bit stereo.

pub mod level;
pub mod mic;
pub mod opus;
pub mod published;
pub mod signal;

/// Samples per second of every audio frame (Opus's own rate, and WebRTC's clock for it).
pub const SAMPLE_RATE: u32 = 48_000;
/// Channels of the PCM exchanged with the codec (stereo, as the plugin sends).
pub const CHANNELS: usize = 2;
/// Samples per channel in one frame: 20 ms.
pub const FRAME_SAMPLES: usize = 960;
/// Length of one frame in microseconds.
pub const FRAME_US: u64 = 20_000;
/// The RTP payload type of Opus, in both directions (the plugin's, and what browsers use).
pub const OPUS_PAYLOAD_TYPE: u8 = 111;

/// The RTP timestamp (48 kHz) of audio captured at `capture_us` (CLOCK_MONOTONIC µs).
/// Frames stamped with capture times [`FRAME_US`] apart are exactly
/// [`FRAME_SAMPLES`] apart, and audio and video share one clock, so a browser that
/// lines up the two by their sender reports sees them in sync.
pub fn rtp_timestamp_48k(capture_us: u64) -> u32 {
    (u128::from(capture_us) * u128::from(SAMPLE_RATE) / 1_000_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_20_ms_apart_are_960_samples_apart() {
        let t0 = 1_234_567_890_123;
        for n in 0..100u64 {
            let a = rtp_timestamp_48k(t0 + n * FRAME_US);
            let b = rtp_timestamp_48k(t0 + (n + 1) * FRAME_US);
            assert_eq!(b.wrapping_sub(a), FRAME_SAMPLES as u32);
        }
    }
}
