//! A WHIP publisher's side of a peer: its video RTP, decrypted, handed to the stream's
//! source without waiting ([`PublisherTap`]), and the keyframe requests the source
//! makes written back to it as RTCP PLI; its Opus, when the stream takes its sound,
//! published as the stream's sound ([`PublishedSound`]).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use rtc::peer_connection::transport::RTCDtlsTransportState;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::shared::marshal::Marshal;

use crate::media::audio::published::PublishedSound;
use crate::media::clock;
use crate::media::publisher::PublisherTap;

pub struct PeerIngest {
    tap: PublisherTap,
    /// The H.264 payload type the answer took; anything else on the connection (the
    /// offer's other sections) is not handed on.
    payload_type: u8,
    receiver: RTCRtpReceiverId,
    /// The publisher's video SSRC, once its first packet came: what a PLI names.
    media_ssrc: Option<u32>,
    /// Where the publisher's datagrams come from, shown as the source's sender.
    remote: Option<SocketAddr>,
    /// Its sound, when the answer took it (on the offer's Opus payload type).
    sound: Option<PublishedSound>,
    pub handed: u64,
    pub dropped: u64,
}

impl PeerIngest {
    /// `opus`: the Opus payload type the answer took the publisher's sound on, if any.
    pub fn new(
        tap: PublisherTap,
        payload_type: u8,
        receiver: RTCRtpReceiverId,
        opus: Option<u8>,
    ) -> PeerIngest {
        let sound = opus
            .zip(tap.sound().cloned())
            .map(|(pt, outlet)| PublishedSound::new(outlet, pt));
        PeerIngest {
            tap,
            payload_type,
            receiver,
            media_ssrc: None,
            remote: None,
            sound,
            handed: 0,
            dropped: 0,
        }
    }

    /// Note where the publisher's datagrams come from.
    pub fn heard_from(&mut self, from: SocketAddr) {
        self.remote = Some(from);
    }

    /// A decrypted RTP packet of the publisher: its video goes to the source, its sound
    /// to the stream's sound.
    pub fn hand_on(&mut self, packet: &rtc::rtp::Packet) {
        if packet.header.payload_type != self.payload_type {
            if let Some(sound) = self
                .sound
                .as_mut()
                .filter(|s| s.payload_type() == packet.header.payload_type)
            {
                let header = &packet.header;
                sound.take(
                    header.ssrc,
                    header.timestamp,
                    &packet.payload,
                    clock::monotonic_us(),
                );
            }
            return;
        }
        let (Some(from), Ok(bytes)) = (self.remote, packet.marshal()) else {
            return;
        };
        self.media_ssrc = Some(packet.header.ssrc);
        if self.tap.hand_on((Bytes::from(bytes), from)) {
            self.handed += 1;
        } else {
            self.dropped += 1;
        }
    }

    /// Whether the publisher's sound is taken (the answer received it).
    pub fn takes_sound(&self) -> bool {
        self.sound.is_some()
    }

    /// The state of the DTLS transport the publisher's video comes on.
    pub fn dtls_state(&self, pc: &mut RTCPeerConnection) -> Option<RTCDtlsTransportState> {
        pc.rtp_receiver(self.receiver)
            .and_then(|r| r.transport().map(|t| t.state()))
    }

    /// Ask the publisher for a keyframe (RTCP PLI from `our_ssrc`); `false` before its
    /// first packet, when there is no SSRC to name yet.
    pub fn request_keyframe(
        &self,
        pc: &mut RTCPeerConnection,
        now: Instant,
        our_ssrc: u32,
    ) -> bool {
        let Some(media_ssrc) = self.media_ssrc else {
            return false;
        };
        let Some(mut receiver) = pc.rtp_receiver(self.receiver) else {
            return false;
        };
        let pli = PictureLossIndication {
            sender_ssrc: our_ssrc,
            media_ssrc,
        };
        match receiver.write_rtcp(now, vec![Box::new(pli)]) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "PLI to the publisher not written");
                false
            }
        }
    }
}
