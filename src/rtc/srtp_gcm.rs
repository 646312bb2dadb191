//! SRTP with AEAD AES-GCM (RFC 7714) sealed straight into a shared send buffer.
//!
//! The WebRTC crate's SRTP context returns every packet in a buffer of its own: one
//! allocation, a copy of the marshalled packet into it, and a free once it is sent, for
//! every packet of every viewer. Here the header is written and the payload copied once,
//! into the engine thread's send buffer, and encrypted where it lies; the datagrams of a
//! group of viewers share that buffer, which is reused once the kernel has them.
//!
//! Only the AES-GCM profiles, which browsers offer and the stack prefers, are done here;
//! a connection on another profile keeps the crate's context. Like that context, a
//! sealer is trusted with a stream only after it has produced the stack's own bytes for
//! the stream's probe packet (see [`direct_srtp`](super::direct_srtp)).

use std::cell::RefCell;

use bytes::{BufMut, BytesMut};
use rtc::crypto::{AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, RTCCrypto};
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::protection_profile::ProtectionProfile;

/// The tag after the encrypted payload.
const TAG_LEN: usize = 16;
/// Key derivation labels (RFC 3711 §4.3.1): the SRTP encryption key and salt.
const LABEL_ENCRYPTION: u8 = 0x00;
const LABEL_SALT: u8 = 0x02;
const SALT_LEN: usize = 12;

/// The send buffer an engine thread seals into: a group of viewers' datagrams (the
/// engine sends a picture ~256 packets at a time) fits. Its datagrams are split off it
/// and share its memory.
const SEND_BUFFER_BYTES: usize = 512 * 1024;

thread_local! {
    static SEND_BUFFER: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Once the datagrams sealed on this thread have been sent and dropped: the next ones
/// go from the send buffer's start again, so a group never spills into a new buffer.
/// Does nothing while any of them is still held.
pub fn reuse_send_buffer() {
    SEND_BUFFER.with_borrow_mut(|buffer| {
        // Not taken back (a datagram still held): the next seal reserves anew.
        let _taken_back = buffer.is_empty() && buffer.try_reclaim(SEND_BUFFER_BYTES);
    });
}

/// Where one stream's sequence numbers are: the highest sent and its rollover count.
struct Rollover {
    ssrc: u32,
    roc: u32,
    highest: u16,
}

impl Rollover {
    /// The rollover count `seq` goes out with (RFC 3711 §3.3.1): a number ahead of the
    /// highest, even across 65535 → 0, moves the stream on; one behind it (a resend) is
    /// sealed with the count it first had.
    fn roc_for(&mut self, seq: u16) -> u32 {
        let ahead = seq.wrapping_sub(self.highest) < 0x8000;
        if ahead {
            if seq < self.highest {
                self.roc = self.roc.wrapping_add(1);
            }
            self.highest = seq;
            self.roc
        } else if seq > self.highest {
            self.roc.wrapping_sub(1)
        } else {
            self.roc
        }
    }
}

pub struct GcmSealer {
    cipher: Box<dyn AeadCipher>,
    salt: [u8; SALT_LEN],
    streams: Vec<Rollover>,
}

impl GcmSealer {
    /// The sealer for `profile` with these master keys; `None` for a profile other than
    /// AES-GCM or keys the crypto provider refuses.
    pub fn new(
        profile: ProtectionProfile,
        master_key: &[u8],
        master_salt: &[u8],
        crypto: &dyn RTCCrypto,
    ) -> Option<GcmSealer> {
        let (aead, block) = match profile {
            ProtectionProfile::AeadAes128Gcm => {
                (AeadAlgorithm::Aes128Gcm, BlockCipherAlgorithm::Aes128)
            }
            // RFC 7714 §11: AES-256-GCM derives its keys with the AES-256 PRF.
            ProtectionProfile::AeadAes256Gcm => {
                (AeadAlgorithm::Aes256Gcm, BlockCipherAlgorithm::Aes256)
            }
            _ => return None,
        };
        let mut key = vec![0; master_key.len()];
        derive(
            crypto,
            block,
            master_key,
            master_salt,
            LABEL_ENCRYPTION,
            &mut key,
        )?;
        let mut salt = [0; SALT_LEN];
        derive(
            crypto,
            block,
            master_key,
            master_salt,
            LABEL_SALT,
            &mut salt,
        )?;
        let cipher = crypto.new_aead(aead, &key).ok()?;
        key.fill(0);
        (cipher.tag_len() == TAG_LEN).then_some(GcmSealer {
            cipher,
            salt,
            streams: Vec::new(),
        })
    }

    /// `header` and `payload` as one SRTP packet, split off the engine thread's send
    /// buffer. The stream's rollover count starts at 0 with its first packet here.
    /// `None` for a packet with padding, which the engine never makes.
    pub fn seal(&mut self, header: &rtc::rtp::Header, payload: &[u8]) -> Option<BytesMut> {
        if header.padding {
            return None;
        }
        let header_len = header.marshal_size();
        let len = header_len + payload.len() + TAG_LEN;
        let roc = self.rollover(header.ssrc, header.sequence_number);
        let nonce = self.nonce(header.ssrc, roc, header.sequence_number);
        SEND_BUFFER.with_borrow_mut(|buffer| {
            if buffer.capacity() < len {
                buffer.reserve(SEND_BUFFER_BYTES.max(len));
            }
            // The payload is copied in once; only the header and tag are zeroed first.
            buffer.put_bytes(0, header_len);
            let written = header.marshal_to(&mut buffer[..]);
            buffer.extend_from_slice(payload);
            buffer.put_bytes(0, TAG_LEN);
            let sealed = written.ok().filter(|&n| n == header_len).and_then(|_| {
                let (aad, rest) = buffer.split_at_mut(header_len);
                let (body, tag) = rest.split_at_mut(payload.len());
                self.cipher.seal_in_place(&nonce, aad, body, tag).ok()
            });
            match sealed {
                Some(()) => Some(buffer.split()),
                None => {
                    buffer.clear();
                    None
                }
            }
        })
    }

    fn rollover(&mut self, ssrc: u32, seq: u16) -> u32 {
        match self.streams.iter_mut().find(|s| s.ssrc == ssrc) {
            Some(stream) => stream.roc_for(seq),
            None => {
                self.streams.push(Rollover {
                    ssrc,
                    roc: 0,
                    highest: seq,
                });
                0
            }
        }
    }

    /// RFC 7714 §8.1: 00 00 ‖ SSRC ‖ ROC ‖ SEQ, XOR the session salt.
    fn nonce(&self, ssrc: u32, roc: u32, seq: u16) -> [u8; SALT_LEN] {
        let mut iv = [0; SALT_LEN];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..10].copy_from_slice(&roc.to_be_bytes());
        iv[10..12].copy_from_slice(&seq.to_be_bytes());
        for (v, s) in iv.iter_mut().zip(self.salt) {
            *v ^= s;
        }
        iv
    }
}

/// The AES-CM key derivation of RFC 3711 §4.3.3 with a key derivation rate of 0: the
/// master salt XOR the label (at byte 7) is the counter block's prefix, and the output
/// is that counter's keystream under the master key.
fn derive(
    crypto: &dyn RTCCrypto,
    block: BlockCipherAlgorithm,
    master_key: &[u8],
    master_salt: &[u8],
    label: u8,
    out: &mut [u8],
) -> Option<()> {
    let mut input = [0u8; 16];
    input
        .get_mut(..master_salt.len())?
        .copy_from_slice(master_salt);
    input[7] ^= label;
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        input[14..].copy_from_slice(&u16::try_from(i).ok()?.to_be_bytes());
        let mut keystream = input;
        crypto
            .block_encrypt(block, master_key, &mut keystream)
            .ok()?;
        chunk.copy_from_slice(&keystream[..chunk.len()]);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::srtp::context::Context;

    fn provider() -> std::sync::Arc<dyn rtc::crypto::RTCCryptoProvider> {
        rtc::crypto::default_provider().unwrap()
    }

    fn keys(profile: ProtectionProfile) -> (Vec<u8>, Vec<u8>) {
        let key_len = match profile {
            ProtectionProfile::AeadAes256Gcm => 32,
            _ => 16,
        };
        let key = (0..key_len as u8)
            .map(|i| i.wrapping_mul(37) ^ 0x5a)
            .collect();
        let salt = (0..12u8).map(|i| i.wrapping_mul(11) ^ 0xc3).collect();
        (key, salt)
    }

    fn packet(ssrc: u32, seq: u16, payload: &'static [u8]) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                payload_type: 102,
                marker: seq.is_multiple_of(3),
                sequence_number: seq,
                timestamp: 3_000 * u32::from(seq),
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from_static(payload),
        }
    }

    const PAYLOAD: &[u8] = b"\x7c\x85 an H.264 fragment, long enough to span blocks of sixteen";

    #[test]
    fn sealed_packets_equal_the_crates_and_open_with_it_across_the_rollover() {
        let p = provider();
        for profile in [
            ProtectionProfile::AeadAes128Gcm,
            ProtectionProfile::AeadAes256Gcm,
        ] {
            let (key, salt) = keys(profile);
            let mut ours = GcmSealer::new(profile, &key, &salt, p.crypto()).unwrap();
            let mut theirs = Context::new(&key, &salt, profile, None, None, p.crypto()).unwrap();
            let mut receiver = Context::new(&key, &salt, profile, None, None, p.crypto()).unwrap();
            for (ssrc, seq) in [
                (7, 65_533),
                (7, 65_534),
                (9, 10),
                (7, 65_535),
                (7, 0),
                (7, 1),
            ] {
                let pkt = packet(ssrc, seq, PAYLOAD);
                let sealed = ours.seal(&pkt.header, &pkt.payload).unwrap();
                let expected = theirs.encrypt_rtp(&pkt.marshal().unwrap()).unwrap();
                assert_eq!(sealed, expected, "{profile:?} ssrc {ssrc} seq {seq}");
                let opened = receiver.decrypt_rtp(&sealed).unwrap();
                assert_eq!(opened, pkt.marshal().unwrap());
            }
        }
    }

    #[test]
    fn a_resend_from_before_the_wrap_keeps_its_rollover_count() {
        let p = provider();
        let profile = ProtectionProfile::AeadAes128Gcm;
        let (key, salt) = keys(profile);
        let mut ours = GcmSealer::new(profile, &key, &salt, p.crypto()).unwrap();
        let mut first = Vec::new();
        for seq in [65_534, 65_535, 0, 1] {
            let pkt = packet(5, seq, PAYLOAD);
            first.push(ours.seal(&pkt.header, &pkt.payload).unwrap());
        }
        // Sent again after the wrap: the same bytes, so the same keystream position.
        let again = packet(5, 65_535, PAYLOAD);
        assert_eq!(ours.seal(&again.header, &again.payload).unwrap(), first[1]);
        let next = packet(5, 2, PAYLOAD);
        let mut reference = Context::new(&key, &salt, profile, None, None, p.crypto()).unwrap();
        for seq in [65_534, 65_535, 0, 1] {
            reference
                .encrypt_rtp(&packet(5, seq, PAYLOAD).marshal().unwrap())
                .unwrap();
        }
        assert_eq!(
            ours.seal(&next.header, &next.payload).unwrap(),
            reference.encrypt_rtp(&next.marshal().unwrap()).unwrap()
        );
    }

    #[test]
    fn other_profiles_and_bad_keys_get_no_sealer() {
        let p = provider();
        let (key, salt) = keys(ProtectionProfile::AeadAes128Gcm);
        assert!(GcmSealer::new(
            ProtectionProfile::Aes128CmHmacSha1_80,
            &key,
            &salt,
            p.crypto()
        )
        .is_none());
        assert!(GcmSealer::new(
            ProtectionProfile::AeadAes128Gcm,
            &key[..5],
            &salt,
            p.crypto()
        )
        .is_none());
        assert!(
            GcmSealer::new(ProtectionProfile::AeadAes128Gcm, &key, &[0; 20], p.crypto()).is_none()
        );
    }

    #[test]
    fn datagrams_share_the_send_buffer_which_is_taken_back_once_they_are_gone() {
        let p = provider();
        let profile = ProtectionProfile::AeadAes128Gcm;
        let (key, salt) = keys(profile);
        let mut ours = GcmSealer::new(profile, &key, &salt, p.crypto()).unwrap();
        let pkt = packet(1, 1, PAYLOAD);
        let start = |d: &BytesMut| d.as_ptr() as usize;
        let mut group: Vec<BytesMut> = (0..100)
            .map(|_| ours.seal(&pkt.header, &pkt.payload).unwrap())
            .collect();
        // One buffer holds the group, back to back.
        assert!(group
            .windows(2)
            .all(|w| start(&w[1]) == start(&w[0]) + w[0].len()));
        let first = start(&group[0]);
        // While any datagram is held, the buffer is not taken back.
        let held = group.pop();
        drop(group);
        reuse_send_buffer();
        assert_ne!(start(&ours.seal(&pkt.header, &pkt.payload).unwrap()), first);
        drop(held);
        reuse_send_buffer();
        assert_eq!(start(&ours.seal(&pkt.header, &pkt.payload).unwrap()), first);
        // Sent and dropped one by one, more than the buffer holds, it is reused from its
        // start and never left for a new one.
        let len = pkt.header.marshal_size() + pkt.payload.len() + TAG_LEN;
        for _ in 0..2 * SEND_BUFFER_BYTES / len {
            let at = start(&ours.seal(&pkt.header, &pkt.payload).unwrap());
            assert!((first..first + SEND_BUFFER_BYTES).contains(&at));
        }
    }
}
