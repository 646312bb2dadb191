//! Sines to test sound with: the load generator's microphone, and the checks of every
//! part that carries sound (codec, capture, resampling, playback, WebRTC).

use bytes::Bytes;

use super::opus::{OpusEncoder, OpusError};
use super::{CHANNELS, FRAME_SAMPLES, SAMPLE_RATE};

/// `len` samples per channel of a sine at `hz`, `amplitude` of full scale, sampled at
/// `rate`, the same on each of `channels` (interleaved), starting at sample `start` so
/// that consecutive calls continue the wave.
pub fn sine(
    hz: f64,
    amplitude: f64,
    rate: u32,
    channels: usize,
    start: u64,
    len: usize,
) -> Vec<i16> {
    (start..start + len as u64)
        .flat_map(|n| {
            let t = n as f64 / f64::from(rate);
            let v = (amplitude * 32767.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
            std::iter::repeat_n(v, channels)
        })
        .collect()
}

/// A steady sine as Opus frames (48 kHz stereo, 20 ms each), as a talking browser sends.
pub struct OpusTone {
    encoder: OpusEncoder,
    hz: f64,
    amplitude: f64,
    samples: u64,
}

impl OpusTone {
    pub fn new(hz: f64, amplitude: f64) -> Result<OpusTone, OpusError> {
        Ok(OpusTone {
            encoder: OpusEncoder::new(64)?,
            hz,
            amplitude,
            samples: 0,
        })
    }

    /// The PCM of the next frame, without encoding it.
    pub fn next_pcm(&mut self) -> Vec<i16> {
        let pcm = sine(
            self.hz,
            self.amplitude,
            SAMPLE_RATE,
            CHANNELS,
            self.samples,
            FRAME_SAMPLES,
        );
        self.samples += FRAME_SAMPLES as u64;
        pcm
    }

    /// The next frame, encoded.
    pub fn next_frame(&mut self) -> Result<Bytes, OpusError> {
        let pcm = self.next_pcm();
        self.encoder.encode(&pcm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_calls_continue_the_wave() {
        let whole = sine(440.0, 0.5, 8000, 2, 0, 100);
        let mut parts = sine(440.0, 0.5, 8000, 2, 0, 40);
        parts.extend(sine(440.0, 0.5, 8000, 2, 40, 60));
        assert_eq!(whole, parts);
        assert_eq!(whole.len(), 200);
        assert!(whole.chunks(2).all(|lr| lr[0] == lr[1]));
    }
}
