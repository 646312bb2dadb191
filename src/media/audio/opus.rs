//! The Opus codec (libopus) in the one shape peregrine uses: 48 kHz stereo, 20 ms
//! frames of interleaved signed 16-bit PCM.

use bytes::Bytes;

use super::{CHANNELS, FRAME_SAMPLES, SAMPLE_RATE};

/// Largest Opus packet we make: RFC 6716 allows 1275 bytes per frame.
const MAX_PACKET: usize = 1275;

/// Interleaved samples in one frame (both channels).
pub const FRAME_LEN: usize = FRAME_SAMPLES * CHANNELS;

#[derive(Debug, thiserror::Error)]
#[error("Opus: {0}")]
pub struct OpusError(String);

impl From<opus::Error> for OpusError {
    fn from(e: opus::Error) -> Self {
        OpusError(e.to_string())
    }
}

/// Makes Opus frames for a stream's viewers.
pub struct OpusEncoder {
    encoder: opus::Encoder,
    packet: Vec<u8>,
}

impl OpusEncoder {
    /// A full-band music encoder (what the ustreamer plugin uses: `OPUS_APPLICATION_AUDIO`)
    /// at `bitrate_kbps`.
    pub fn new(bitrate_kbps: u32) -> Result<OpusEncoder, OpusError> {
        let mut encoder = opus::Encoder::new(
            SAMPLE_RATE,
            opus::Channels::Stereo,
            opus::Application::Audio,
        )?;
        let bps = i32::try_from(bitrate_kbps.saturating_mul(1000)).unwrap_or(i32::MAX);
        encoder.set_bitrate(opus::Bitrate::Bits(bps))?;
        Ok(OpusEncoder {
            encoder,
            packet: vec![0; MAX_PACKET],
        })
    }

    /// Encode one frame: exactly [`FRAME_LEN`] interleaved samples.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Bytes, OpusError> {
        if pcm.len() != FRAME_LEN {
            return Err(OpusError(format!(
                "a frame is {FRAME_LEN} samples, not {}",
                pcm.len()
            )));
        }
        let len = self.encoder.encode(pcm, &mut self.packet)?;
        Ok(Bytes::copy_from_slice(&self.packet[..len]))
    }
}

/// Turns one sender's Opus packets back into PCM.
pub struct OpusDecoder {
    decoder: opus::Decoder,
}

impl OpusDecoder {
    pub fn new() -> Result<OpusDecoder, OpusError> {
        Ok(OpusDecoder {
            decoder: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Stereo)?,
        })
    }

    /// Decode one packet into `out` (interleaved stereo, room for at least one frame);
    /// returns the samples per channel written. A packet of any length a browser
    /// sends (2.5 to 120 ms) decodes, as long as `out` has room for it.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, OpusError> {
        if packet.is_empty() {
            return Err(OpusError("empty packet".into()));
        }
        Ok(self.decoder.decode(packet, out, false)?)
    }

    /// Make up one frame for a packet that never came (libopus's loss concealment),
    /// into `out` (at least [`FRAME_LEN`] samples).
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, OpusError> {
        let len = out.len().min(FRAME_LEN);
        Ok(self.decoder.decode(&[], &mut out[..len], false)?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{level, signal};
    use super::*;

    #[test]
    fn a_tone_survives_the_round_trip() {
        let mut enc = OpusEncoder::new(64).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let pcm = signal::sine(1000.0, 0.5, SAMPLE_RATE, CHANNELS, 0, 25 * FRAME_SAMPLES);
        let mut decoded = Vec::new();
        let mut out = vec![0i16; FRAME_LEN];
        for frame in pcm.chunks(FRAME_LEN) {
            let packet = enc.encode(frame).unwrap();
            assert!(!packet.is_empty() && packet.len() <= MAX_PACKET);
            let n = dec.decode(&packet, &mut out).unwrap();
            assert_eq!(n, FRAME_SAMPLES);
            decoded.extend_from_slice(&out);
        }
        // Past the codec's start-up, the decoded sound is the tone.
        let tail = level::left(&decoded[FRAME_LEN * 5..]);
        assert_eq!(level::dominant_hz(&tail, &[440.0, 1000.0, 2000.0]), 1000.0);
        assert!(level::rms_dbfs(&tail) > -12.0, "{}", level::rms_dbfs(&tail));
    }

    #[test]
    fn wrong_sized_frames_and_garbage_are_errors_not_panics() {
        let mut enc = OpusEncoder::new(64).unwrap();
        assert!(enc.encode(&[0; 100]).is_err());
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = vec![0i16; FRAME_LEN];
        assert!(dec.decode(&[], &mut out).is_err());
        // Whatever libopus makes of junk, it must not crash; a code-3 packet that
        // claims more frames than the buffer holds is refused.
        let _ = dec.decode(&[0xff; 40], &mut out);
        let _ = dec.decode(&[0x03, 0xff, 0xff], &mut out);
        assert_eq!(dec.conceal(&mut out).unwrap(), FRAME_SAMPLES);
    }
}
