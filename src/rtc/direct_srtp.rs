//! An established viewer's RTP encrypted and addressed here, not by the stack.
//!
//! Every packet handed to the stack is moved by value through six protocol handlers and
//! the interceptor chain before it is encrypted: more than half of the server's time per
//! packet. Once a viewer is connected none of that does anything for its media: the
//! packet needs its SRTP and the selected candidate pair's address, nothing else.
//!
//! So this keeps an SRTP context of its own, made from the keying material the
//! connection's [`KeyingTap`](super::keying_tap::KeyingTap) saw, and takes a stream
//! (an SSRC) over from the stack only after proving itself on it: the stream's first
//! packet after the handshake still goes through the stack, and the context must turn
//! it into exactly the bytes the stack sent. That settles the protection profile and
//! our DTLS role (tried in turn), and starts the stream's rollover counter where the
//! stack's is. From then on the stream's packets are encrypted here, and only here: the
//! stack's context never sees them again, so its counter would be stale.
//!
//! The destination is where the stack last sent anything but STUN (STUN answers go to
//! whichever pair was checked): the probe, the sender reports, DTLS.

use std::cell::RefCell;
use std::net::SocketAddr;

use bytes::BytesMut;
use rtc::crypto::{RTCCrypto, SecretVec};
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::config::Config;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

use super::srtp_gcm::GcmSealer;

/// The profiles the stack can negotiate (its DTLS `use_srtp` list).
const PROFILES: [ProtectionProfile; 4] = [
    ProtectionProfile::AeadAes128Gcm,
    ProtectionProfile::AeadAes256Gcm,
    ProtectionProfile::Aes128CmHmacSha1_80,
    ProtectionProfile::Aes128CmHmacSha1_32,
];

/// Packets that may go by with nothing to compare (no keys, nothing sent) before the
/// stack is left to do it all: each such packet costs a drain of the stack's queues.
const MAX_ATTEMPTS: u32 = 64;

/// What became of a stream's probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The stream is ours from its next packet.
    TakenOver,
    /// Our encryption differed: the stream stays with the stack for good.
    Refused,
    /// Nothing to compare yet (no keys, or the stack sent nothing): ask again.
    NotYet,
}

#[derive(Default)]
pub struct DirectSrtp {
    sealer: Option<Sealer>,
    /// No context could be made that matches the stack's output, or none was to be
    /// had in [`MAX_ATTEMPTS`].
    unusable: bool,
    attempts: u32,
    /// Streams taken over, and streams refused.
    ours: Vec<u32>,
    refused: Vec<u32>,
    destination: Option<SocketAddr>,
}

/// What encrypts the streams taken over, made from the keys the probe proved.
enum Sealer {
    /// AES-GCM, sealed into the shared send buffer (see [`srtp_gcm`](super::srtp_gcm)),
    /// once it, too, has made the stack's bytes.
    Gcm(GcmSealer),
    /// The crate's context: any other profile.
    Crate(Context),
}

impl Sealer {
    fn seal(&mut self, packet: &rtc::rtp::Packet) -> Option<BytesMut> {
        match self {
            Sealer::Gcm(gcm) => gcm.seal(&packet.header, &packet.payload),
            Sealer::Crate(context) => with_marshalled(packet, |plain| {
                context.encrypt_rtp_with_header(plain, &packet.header).ok()
            })
            .flatten(),
        }
    }

    /// Whether `packet` comes out as `theirs`.
    fn makes(&mut self, packet: &rtc::rtp::Packet, theirs: &[u8]) -> bool {
        self.seal(packet).is_some_and(|ours| ours[..] == theirs[..])
    }
}

thread_local! {
    /// A packet marshalled before it is encrypted: one buffer per engine thread, not
    /// one per viewer.
    static PLAIN: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `f` of `packet` marshalled; `None` if it cannot be.
fn with_marshalled<T>(packet: &rtc::rtp::Packet, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
    PLAIN.with_borrow_mut(|plain| {
        plain.resize(packet.marshal_size(), 0);
        let n = packet.marshal_to(plain).ok()?;
        Some(f(&plain[..n]))
    })
}

impl DirectSrtp {
    /// Whether `ssrc`'s packets are encrypted here.
    pub fn owns(&self, ssrc: u32) -> bool {
        self.ours.contains(&ssrc)
    }

    /// Whether `ssrc`'s next packet through the stack should be a probe.
    pub fn wants_probe(&self, ssrc: u32) -> bool {
        !self.unusable && !self.owns(ssrc) && !self.refused.contains(&ssrc)
    }

    /// Note where the stack sent `datagram`.
    pub fn saw(&mut self, to: SocketAddr, datagram: &[u8]) {
        if datagram.first().is_some_and(|b| *b >= 4) {
            self.destination = Some(to);
        }
    }

    /// Compare our encryption of `packet` with what the stack sent among `sent`, making
    /// the context first if there is none (from `keying`, when the handshake is done).
    pub fn probe(
        &mut self,
        packet: &rtc::rtp::Packet,
        sent: &[(SocketAddr, BytesMut)],
        keying: impl FnOnce() -> Option<SecretVec>,
        crypto: &dyn RTCCrypto,
    ) -> Probe {
        let ssrc = packet.header.ssrc;
        let Some((to, theirs)) = sent
            .iter()
            .rev()
            .find(|(_, d)| is_rtp_of(d, ssrc, packet.header.sequence_number))
        else {
            self.attempts += 1;
            self.unusable = self.attempts >= MAX_ATTEMPTS;
            return Probe::NotYet;
        };
        let outcome = match &mut self.sealer {
            Some(sealer) => sealer.makes(packet, theirs),
            None => {
                let Some(keying) = keying() else {
                    self.attempts += 1;
                    self.unusable = self.attempts >= MAX_ATTEMPTS;
                    return Probe::NotYet;
                };
                let Some((context, gcm)) = with_marshalled(packet, |plain| {
                    matching_context(&keying, plain, packet, theirs, crypto)
                })
                .flatten() else {
                    self.unusable = true;
                    self.refused.push(ssrc);
                    return Probe::Refused;
                };
                // The GCM sealer must make the stack's bytes too, or the crate's
                // context does the work.
                let gcm = gcm
                    .map(Sealer::Gcm)
                    .and_then(|mut gcm| gcm.makes(packet, theirs).then_some(gcm));
                self.sealer = Some(gcm.unwrap_or(Sealer::Crate(context)));
                true
            }
        };
        if outcome {
            self.ours.push(ssrc);
            self.destination = Some(*to);
            Probe::TakenOver
        } else {
            self.refused.push(ssrc);
            Probe::Refused
        }
    }

    /// `packet`, of a stream taken over, encrypted and addressed; `None` while no
    /// destination is known or if encryption fails.
    pub fn seal(&mut self, packet: &rtc::rtp::Packet) -> Option<(SocketAddr, BytesMut)> {
        let to = self.destination?;
        Some((to, self.sealer.as_mut()?.seal(packet)?))
    }
}

/// Whether `datagram` is (S)RTP of `ssrc` with sequence number `seq`, by its clear
/// header.
fn is_rtp_of(datagram: &[u8], ssrc: u32, seq: u16) -> bool {
    datagram.len() >= 12
        && datagram[0] >> 6 == 2
        // RTCP's packet types 192-223 sit where RTP has marker and payload type.
        && !(192..=223).contains(&datagram[1])
        && datagram[2..4] == seq.to_be_bytes()
        && datagram[8..12] == ssrc.to_be_bytes()
}

/// The context, of any profile and either DTLS role, that encrypts `plain` (the
/// marshalled `packet`) to `theirs`, and for an AES-GCM profile a sealer with its keys.
fn matching_context(
    keying: &SecretVec,
    plain: &[u8],
    packet: &rtc::rtp::Packet,
    theirs: &[u8],
    crypto: &dyn RTCCrypto,
) -> Option<(Context, Option<GcmSealer>)> {
    for profile in PROFILES {
        let mut config = Config {
            profile,
            ..Default::default()
        };
        let len = config.keying_material_len();
        let Some(material) = keying.as_ref().get(..len) else {
            continue;
        };
        for is_client in [false, true] {
            if config
                .set_session_keys_from_keying_material(material, is_client)
                .is_err()
            {
                continue;
            }
            let Ok(mut context) = Context::new(
                &config.keys.local_master_key,
                &config.keys.local_master_salt,
                profile,
                None,
                None,
                crypto,
            ) else {
                continue;
            };
            let ours = context.encrypt_rtp_with_header(plain, &packet.header);
            if ours.is_ok_and(|ours| ours[..] == theirs[..]) {
                let gcm = GcmSealer::new(
                    profile,
                    &config.keys.local_master_key,
                    &config.keys.local_master_salt,
                    crypto,
                );
                return Some((context, gcm));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn packet(ssrc: u32, seq: u16) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                payload_type: 96,
                sequence_number: seq,
                timestamp: 90_000,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from_static(&[0x65, 1, 2, 3, 4, 5, 6, 7]),
        }
    }

    fn crypto() -> std::sync::Arc<dyn rtc::crypto::RTCCryptoProvider> {
        rtc::crypto::default_provider().unwrap()
    }

    /// The stack's side: a context as it makes one, as DTLS server.
    fn stack_context(keying: &[u8], profile: ProtectionProfile) -> Context {
        let mut config = Config {
            profile,
            ..Default::default()
        };
        let len = config.keying_material_len();
        config
            .set_session_keys_from_keying_material(&keying[..len], false)
            .unwrap();
        Context::new(
            &config.keys.local_master_key,
            &config.keys.local_master_salt,
            profile,
            None,
            None,
            crypto().crypto(),
        )
        .unwrap()
    }

    fn keying() -> Vec<u8> {
        (0..96u8)
            .map(|i| i.wrapping_mul(31).wrapping_add(7))
            .collect()
    }

    fn sent_by(context: &mut Context, p: &rtc::rtp::Packet) -> Vec<(SocketAddr, BytesMut)> {
        let sealed = context.encrypt_rtp(&p.marshal().unwrap()).unwrap();
        vec![("127.0.0.1:5000".parse().unwrap(), sealed)]
    }

    #[test]
    fn a_stream_is_taken_over_once_its_probe_matches_and_then_continues_the_stacks_bytes() {
        for profile in PROFILES {
            let mut stack = stack_context(&keying(), profile);
            let mut direct = DirectSrtp::default();
            let provider = crypto();
            let first = packet(0xabc, 65_534);
            let sent = sent_by(&mut stack, &first);
            let keys = SecretVec::new(keying());
            let outcome = direct.probe(&first, &sent, || Some(keys), provider.crypto());
            assert_eq!(outcome, Probe::TakenOver, "{profile:?}");
            assert!(direct.owns(0xabc));
            // AES-GCM streams are sealed into the shared send buffer, the others by
            // the crate's context.
            let gcm = matches!(
                profile,
                ProtectionProfile::AeadAes128Gcm | ProtectionProfile::AeadAes256Gcm
            );
            assert_eq!(
                matches!(direct.sealer, Some(Sealer::Gcm(_))),
                gcm,
                "{profile:?}"
            );
            // Across the sequence number's wrap: the rollover counter carries on.
            for seq in [65_535, 0, 1] {
                let p = packet(0xabc, seq);
                let (to, ours) = direct.seal(&p).unwrap();
                assert_eq!(to, sent[0].0);
                let theirs = stack.encrypt_rtp(&p.marshal().unwrap()).unwrap();
                assert_eq!(ours, theirs, "{profile:?} seq {seq}");
            }
        }
    }

    #[test]
    fn wrong_keys_leave_every_stream_with_the_stack() {
        let mut stack = stack_context(&keying(), ProtectionProfile::AeadAes128Gcm);
        let provider = crypto();
        let mut direct = DirectSrtp::default();
        let first = packet(1, 10);
        let sent = sent_by(&mut stack, &first);
        let wrong = SecretVec::new(vec![9; 96]);
        let outcome = direct.probe(&first, &sent, || Some(wrong), provider.crypto());
        assert_eq!(outcome, Probe::Refused);
        assert!(!direct.owns(1));
        assert!(!direct.wants_probe(1));
        assert!(
            !direct.wants_probe(2),
            "no context: nothing is probed again"
        );
        assert!(direct.seal(&packet(1, 11)).is_none());
    }

    #[test]
    fn no_keys_or_nothing_sent_is_asked_again() {
        let mut stack = stack_context(&keying(), ProtectionProfile::AeadAes128Gcm);
        let provider = crypto();
        let mut direct = DirectSrtp::default();
        let first = packet(1, 10);
        assert_eq!(
            direct.probe(
                &first,
                &[],
                || Some(SecretVec::new(keying())),
                provider.crypto()
            ),
            Probe::NotYet
        );
        let sent = sent_by(&mut stack, &first);
        assert_eq!(
            direct.probe(&first, &sent, || None, provider.crypto()),
            Probe::NotYet
        );
        assert!(direct.wants_probe(1));
    }

    #[test]
    fn a_second_stream_is_probed_with_the_same_context() {
        let mut stack = stack_context(&keying(), ProtectionProfile::AeadAes128Gcm);
        let provider = crypto();
        let mut direct = DirectSrtp::default();
        let video = packet(1, 10);
        let sent = sent_by(&mut stack, &video);
        let keys = SecretVec::new(keying());
        direct.probe(&video, &sent, || Some(keys), provider.crypto());
        let audio = packet(2, 500);
        let sent = sent_by(&mut stack, &audio);
        assert_eq!(
            direct.probe(&audio, &sent, || None, provider.crypto()),
            Probe::TakenOver
        );
        let next = packet(2, 501);
        assert_eq!(
            direct.seal(&next).unwrap().1,
            stack.encrypt_rtp(&next.marshal().unwrap()).unwrap()
        );
    }

    #[test]
    fn the_destination_follows_the_stacks_writes_but_not_stun() {
        let mut direct = DirectSrtp::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        direct.saw(a, &[0x80, 200, 0, 1]);
        assert_eq!(direct.destination, Some(a));
        direct.saw(b, &[0x01, 0x01, 0, 0]);
        assert_eq!(
            direct.destination,
            Some(a),
            "a STUN answer goes to any pair"
        );
        direct.saw(b, &[23, 0xfe, 0xfd]);
        assert_eq!(direct.destination, Some(b));
    }
}
