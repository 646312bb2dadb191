//! Sound on the viewer's side: the Opus packets a receiver got, decoded back into PCM to
//! check what arrived, and a microphone that sends a tone, as a browser's fake
//! microphone would.

use bytes::Bytes;

use crate::media::audio::opus::{OpusDecoder, OpusError, FRAME_LEN};
use crate::media::audio::signal::OpusTone;
use crate::media::audio::{FRAME_SAMPLES, OPUS_PAYLOAD_TYPE};

/// One audio RTP packet as received.
#[derive(Clone, Debug)]
pub struct ReceivedAudio {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload_type: u8,
    pub payload: Bytes,
}

/// Decode `packets` (in the order given) into interleaved stereo PCM; a packet that
/// does not decode is replaced by the decoder's concealment, as a browser would.
pub fn decode(packets: &[ReceivedAudio]) -> Result<Vec<i16>, OpusError> {
    let mut decoder = OpusDecoder::new()?;
    // Room for the longest Opus packet (120 ms).
    let mut out = vec![0i16; FRAME_LEN * 6];
    let mut pcm = Vec::with_capacity(packets.len() * FRAME_LEN);
    for p in packets {
        let samples = match decoder.decode(&p.payload, &mut out) {
            Ok(n) => n,
            Err(_) => decoder.conceal(&mut out)?,
        };
        pcm.extend_from_slice(&out[..samples * 2]);
    }
    Ok(pcm)
}

/// A microphone that plays a steady tone: one Opus RTP packet per 20 ms frame, with
/// the sequence numbers and 48 kHz timestamps a browser's would have.
pub struct ToneMic {
    tone: OpusTone,
    seq: u16,
    timestamp: u32,
}

impl ToneMic {
    pub fn new(hz: f64) -> Result<ToneMic, OpusError> {
        Ok(ToneMic {
            tone: OpusTone::new(hz, 0.5)?,
            seq: rand::random(),
            timestamp: rand::random(),
        })
    }

    /// The next packet, for the sender `ssrc`.
    pub fn next_packet(&mut self, ssrc: u32) -> Result<rtc::rtp::Packet, OpusError> {
        let payload = self.tone.next_frame()?;
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                payload_type: OPUS_PAYLOAD_TYPE,
                sequence_number: self.seq,
                timestamp: self.timestamp,
                ssrc,
                ..Default::default()
            },
            payload,
        };
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(FRAME_SAMPLES as u32);
        Ok(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::level;

    #[test]
    fn the_tone_mic_decodes_back_to_its_tone() {
        let mut mic = ToneMic::new(600.0).unwrap();
        let packets: Vec<ReceivedAudio> = (0..25)
            .map(|_| {
                let p = mic.next_packet(7).unwrap();
                ReceivedAudio {
                    ssrc: p.header.ssrc,
                    seq: p.header.sequence_number,
                    timestamp: p.header.timestamp,
                    marker: p.header.marker,
                    payload_type: p.header.payload_type,
                    payload: p.payload,
                }
            })
            .collect();
        for pair in packets.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq.wrapping_add(1));
            assert_eq!(pair[1].timestamp.wrapping_sub(pair[0].timestamp), 960);
        }
        let pcm = decode(&packets).unwrap();
        assert_eq!(pcm.len(), 25 * FRAME_LEN);
        let tail = level::left(&pcm[FRAME_LEN * 5..]);
        assert_eq!(level::dominant_hz(&tail, &[600.0, 1000.0]), 600.0);
    }
}
