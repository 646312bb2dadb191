//! A peer's audio m-line: the stream's sound out (Opus frames stamped with the viewer's
//! audio SSRC and sequence numbers) and the viewer's microphone in (its Opus packets
//! handed to the stream's playback, never waiting for it).

use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use super::frame::OutAudio;
use super::peer::{media_track, PeerNote};
use super::sdp::{self, AudioAnswer};
use super::RtcError;
use crate::media::audio::mic::{MicInput, MicPacket, TalkerId};
use crate::media::audio::{CHANNELS, OPUS_PAYLOAD_TYPE, SAMPLE_RATE};

/// Opus on PT 111, 48 kHz stereo, without feedback: no NACK, PLI or REMB on audio, as
/// the plugin offers it since 6.56.
pub fn opus_codec() -> RTCRtpCodecParameters {
    opus_codec_on(OPUS_PAYLOAD_TYPE)
}

/// [`opus_codec`] on another payload type: the one a viewer's offer gives Opus.
pub fn opus_codec_on(payload_type: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_string(),
            clock_rate: SAMPLE_RATE,
            channels: CHANNELS as u16,
            sdp_fmtp_line: sdp::OPUS_FMTP.to_string(),
            rtcp_feedback: vec![],
        },
        payload_type,
    }
}

/// What the audio m-line of an offer carries.
#[derive(Clone, Debug)]
pub struct AudioSetup {
    /// Our audio SSRC (announced even when only the microphone is on).
    pub ssrc: u32,
    /// Opus's payload type: ours in an offer, the viewer's in an answer.
    pub payload_type: u8,
    /// The stream's sound goes to the viewer.
    pub send: bool,
    /// The viewer's microphone comes in and is handed to this, as talker `talker`.
    pub mic: Option<(MicInput, TalkerId)>,
}

impl AudioSetup {
    /// sendonly (sound), sendrecv (sound and microphone) or recvonly (microphone), as
    /// the plugin offers them.
    fn direction(&self) -> RTCRtpTransceiverDirection {
        match (self.send, self.mic.is_some()) {
            (true, true) => RTCRtpTransceiverDirection::Sendrecv,
            (true, false) => RTCRtpTransceiverDirection::Sendonly,
            (false, _) => RTCRtpTransceiverDirection::Recvonly,
        }
    }
}

/// The audio m-line of one peer.
pub struct PeerAudio {
    ssrc: u32,
    seq: u16,
    offered_send: bool,
    /// Set once the answer takes our sound: the payload type it kept.
    payload_type: Option<u8>,
    /// The playback and our talker id, once the answer says the viewer sends.
    mic: Option<(MicInput, TalkerId)>,
    /// Offered, kept until the answer says whether the viewer sends.
    mic_offered: Option<(MicInput, TalkerId)>,
    mic_started: bool,
    /// The audio m-line's `a=mid`, as the offer gives it.
    mid: String,
    /// Microphone packets handed on and dropped, not yet told in a [`PeerNote::Mic`].
    mic_handed: u64,
    mic_dropped: u64,
    mic_untold: bool,
}

impl PeerAudio {
    /// Add the audio m-line to `pc`, after the video's: a track of ours when our sound
    /// goes out (sendonly, or sendrecv with the microphone), a bare receiving
    /// transceiver for the microphone alone (recvonly).
    pub fn add(pc: &mut RTCPeerConnection, setup: AudioSetup) -> Result<PeerAudio, RtcError> {
        let codec = opus_codec_on(setup.payload_type);
        let init = RTCRtpTransceiverInit {
            direction: setup.direction(),
            streams: vec![],
            send_encodings: vec![],
        };
        let transceiver = if setup.send {
            let track = media_track("audio", RtpCodecKind::Audio, setup.ssrc, &codec);
            pc.add_transceiver_from_track(track, Some(init))?
        } else {
            pc.add_transceiver_from_kind(RtpCodecKind::Audio, Some(init))?
        };
        pc.rtp_transceiver(transceiver)
            .ok_or_else(|| RtcError::Internal("no audio transceiver"))?
            .set_codec_preferences(vec![codec])?;
        Ok(PeerAudio {
            ssrc: setup.ssrc,
            seq: rand::random(),
            offered_send: setup.send,
            payload_type: None,
            mic: None,
            mic_offered: setup.mic,
            mic_started: false,
            mid: String::new(),
            mic_handed: 0,
            mic_dropped: 0,
            mic_untold: false,
        })
    }

    /// Note the m-line's `a=mid` from our offer.
    pub fn set_mid(&mut self, offer: &str) {
        self.mid = sdp::mid_of(offer, "audio").unwrap_or_default().to_string();
    }

    pub fn mid(&self) -> &str {
        &self.mid
    }

    /// Take what the answer did with the audio m-line: a declined one (or none) leaves
    /// the viewer without sound and microphone, and the video as it is.
    pub fn apply_answer(&mut self, answer: AudioAnswer) {
        let mic = self.mic_offered.take();
        let AudioAnswer::Accepted {
            payload_type,
            receives,
            sends,
        } = answer
        else {
            tracing::debug!("the viewer declined the audio");
            return;
        };
        if self.offered_send && receives {
            self.payload_type = Some(payload_type);
        }
        if sends {
            self.mic = mic;
        }
    }

    /// Whether our sound goes to the viewer (offered and taken by its answer).
    pub fn sends(&self) -> bool {
        self.payload_type.is_some()
    }

    /// The playback the viewer's microphone goes to, and its talker id, once its answer
    /// says it sends.
    pub fn mic(&self) -> Option<&(MicInput, TalkerId)> {
        self.mic.as_ref()
    }

    /// One Opus frame stamped for this viewer: its audio SSRC, its next sequence
    /// number, the payload type its answer kept, no marker. `None` when our sound does
    /// not go to it.
    pub fn stamp(&mut self, frame: &OutAudio) -> Option<rtc::rtp::Packet> {
        let payload_type = self.payload_type?;
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                marker: false,
                payload_type,
                sequence_number: self.seq,
                timestamp: frame.timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: frame.payload.clone(),
        };
        self.seq = self.seq.wrapping_add(1);
        Some(packet)
    }

    /// An RTP packet from the viewer (connected): its microphone, handed to the
    /// playback without waiting when the mic is on and the payload type is Opus's;
    /// anything else is dropped.
    pub fn hand_on(&mut self, packet: rtc::rtp::Packet) {
        let Some((mic, talker)) = &self.mic else {
            return;
        };
        if packet.header.payload_type != OPUS_PAYLOAD_TYPE {
            return;
        }
        let handed = mic.packet(MicPacket {
            talker: *talker,
            seq: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            payload: packet.payload,
        });
        if handed {
            self.mic_handed += 1;
        } else {
            self.mic_dropped += 1;
        }
        self.mic_untold = true;
    }

    /// The microphone packets handed on and dropped since the last note, if any;
    /// `started` the first time.
    pub fn take_note(&mut self) -> Option<PeerNote> {
        if !std::mem::take(&mut self.mic_untold) {
            return None;
        }
        Some(PeerNote::Mic {
            handed: std::mem::take(&mut self.mic_handed),
            dropped: std::mem::take(&mut self.mic_dropped),
            started: !std::mem::replace(&mut self.mic_started, true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::mic::MicEvent;
    use bytes::Bytes;

    fn rtp(payload_type: u8, seq: u16) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::Header {
                payload_type,
                sequence_number: seq,
                timestamp: u32::from(seq) * 960,
                ..Default::default()
            },
            payload: Bytes::from_static(b"opus"),
        }
    }

    fn audio(send: bool, mic: Option<MicInput>) -> PeerAudio {
        PeerAudio {
            ssrc: 42,
            seq: 65535,
            offered_send: send,
            payload_type: None,
            mic: None,
            mic_offered: mic.map(|m| (m, 7)),
            mic_started: false,
            mid: String::new(),
            mic_handed: 0,
            mic_dropped: 0,
            mic_untold: false,
        }
    }

    #[test]
    fn frames_are_stamped_only_once_the_answer_takes_the_sound() {
        let frame = OutAudio {
            payload: Bytes::from_static(b"frame"),
            timestamp: 1234,
        };
        let mut a = audio(true, None);
        assert!(a.stamp(&frame).is_none(), "no answer yet");
        a.apply_answer(AudioAnswer::Accepted {
            payload_type: 111,
            receives: true,
            sends: false,
        });
        let first = a.stamp(&frame).expect("stamped");
        let second = a.stamp(&frame).expect("stamped");
        assert_eq!((first.header.ssrc, first.header.payload_type), (42, 111));
        assert!(!first.header.marker);
        assert_eq!(first.header.timestamp, 1234);
        assert_eq!(second.header.sequence_number, 0, "wraps");
        assert_eq!(first.payload, frame.payload);

        let mut declined = audio(true, None);
        declined.apply_answer(AudioAnswer::Declined);
        assert!(!declined.sends() && declined.stamp(&frame).is_none());
    }

    #[test]
    fn only_opus_from_a_viewer_whose_answer_sends_reaches_the_playback() {
        let (mic, mut rx) = MicInput::channel(2);
        let mut a = audio(false, Some(mic));
        a.hand_on(rtp(111, 1));
        assert!(
            rx.try_recv().is_err(),
            "not before the answer says it sends"
        );
        a.apply_answer(AudioAnswer::Accepted {
            payload_type: 111,
            receives: false,
            sends: true,
        });
        a.hand_on(rtp(111, 2));
        a.hand_on(rtp(0, 3));
        a.hand_on(rtp(111, 4));
        a.hand_on(rtp(111, 5));
        match rx.try_recv() {
            Ok(MicEvent::Packet(p)) => assert_eq!((p.talker, p.seq), (7, 2)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            a.take_note(),
            Some(PeerNote::Mic {
                handed: 2,
                dropped: 1,
                started: true
            }),
            "PT 0 left out, the third Opus packet over the queue"
        );
        assert_eq!(a.take_note(), None);
        a.hand_on(rtp(111, 6));
        assert!(matches!(
            a.take_note(),
            Some(PeerNote::Mic { started: false, .. })
        ));
    }
}
