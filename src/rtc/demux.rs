//! Routing datagrams of one shared UDP socket to peers: by remote address once known,
//! before that by the local ICE ufrag in the STUN USERNAME attribute, checked with the
//! MESSAGE-INTEGRITY attribute (RFC 8445 §7.3, RFC 5389 §15.4).

use hmac::{Hmac, Mac};
use sha1::Sha1;

const STUN_MAGIC_COOKIE: u32 = 0x2112_A442;
const ATTR_USERNAME: u16 = 0x0006;
pub(super) const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
pub(super) const STUN_HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
/// The length of a MESSAGE-INTEGRITY value: an HMAC-SHA1.
pub(super) const INTEGRITY_LEN: usize = 20;

/// Whether the first byte says STUN, DTLS or RTP/RTCP (RFC 7983 §7): anything else on
/// the media port is not for a peer.
pub fn is_webrtc(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(0..=3 | 20..=63 | 128..=191))
}

/// Whether a STUN binding request carries a MESSAGE-INTEGRITY made with the short-term
/// key `pwd`: an HMAC-SHA1 over the message up to that attribute, with the header's
/// length counting up to its end.
pub fn stun_request_authentic(datagram: &[u8], pwd: &[u8]) -> bool {
    if !is_stun(datagram) || u16::from_be_bytes([datagram[0], datagram[1]]) != BINDING_REQUEST {
        return false;
    }
    let Some(at) = attributes(datagram)
        .find_map(|(kind, pos, _)| (kind == ATTR_MESSAGE_INTEGRITY).then_some(pos))
    else {
        return false;
    };
    let Some(mac) = datagram.get(at + 4..at + 4 + INTEGRITY_LEN) else {
        return false;
    };
    let Ok(mut hmac) = Hmac::<Sha1>::new_from_slice(pwd) else {
        return false;
    };
    let length = (at + 4 + INTEGRITY_LEN - STUN_HEADER_LEN) as u16;
    hmac.update(&datagram[..2]);
    hmac.update(&length.to_be_bytes());
    hmac.update(&datagram[4..at]);
    hmac.verify_slice(mac).is_ok()
}

/// The attributes of a STUN message as (type, offset of the attribute, value), as far
/// as they are whole.
pub(super) fn attributes(datagram: &[u8]) -> impl Iterator<Item = (u16, usize, &[u8])> {
    let declared = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let end = (STUN_HEADER_LEN + declared).min(datagram.len());
    let mut pos = STUN_HEADER_LEN;
    std::iter::from_fn(move || {
        if pos + 4 > end {
            return None;
        }
        let kind = u16::from_be_bytes([datagram[pos], datagram[pos + 1]]);
        let len = usize::from(u16::from_be_bytes([datagram[pos + 2], datagram[pos + 3]]));
        let value = datagram.get(pos + 4..pos + 4 + len)?;
        let at = pos;
        pos += 4 + len.div_ceil(4) * 4;
        Some((kind, at, value))
    })
}

/// Whether a datagram looks like STUN (RFC 7983 demultiplexing plus the magic cookie).
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= STUN_HEADER_LEN
        && datagram[0] < 4
        && u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]])
            == STUN_MAGIC_COOKIE
}

/// The recipient's ufrag from a STUN binding request: USERNAME is `recipient:sender`.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    if !is_stun(datagram) {
        return None;
    }
    let (_, _, value) = attributes(datagram).find(|(kind, _, _)| *kind == ATTR_USERNAME)?;
    std::str::from_utf8(value).ok()?.split(':').next()
}

/// A binding request from `username`, signed with `pwd` when given (for tests).
#[cfg(test)]
pub fn signed_binding_request(username: &str, pwd: Option<&[u8]>) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0, 0];
    m.extend_from_slice(&STUN_MAGIC_COOKIE.to_be_bytes());
    m.extend_from_slice(&[9; 12]);
    m.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]); // PRIORITY
    m.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
    m.extend_from_slice(&(username.len() as u16).to_be_bytes());
    m.extend_from_slice(username.as_bytes());
    m.resize(m.len().div_ceil(4) * 4, 0);
    let body = (m.len() - STUN_HEADER_LEN) as u16;
    m[2..4].copy_from_slice(&body.to_be_bytes());
    if let Some(pwd) = pwd {
        let with_integrity = body + 4 + INTEGRITY_LEN as u16;
        m[2..4].copy_from_slice(&with_integrity.to_be_bytes());
        let mut hmac = Hmac::<Sha1>::new_from_slice(pwd).unwrap();
        hmac.update(&m);
        let mac = hmac.finalize().into_bytes();
        m.extend_from_slice(&ATTR_MESSAGE_INTEGRITY.to_be_bytes());
        m.extend_from_slice(&(INTEGRITY_LEN as u16).to_be_bytes());
        m.extend_from_slice(&mac);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrity_is_checked_with_the_password() {
        let m = signed_binding_request("serverufrag:clientufrag", Some(b"secret"));
        assert_eq!(stun_local_ufrag(&m), Some("serverufrag"));
        assert!(stun_request_authentic(&m, b"secret"));
        assert!(!stun_request_authentic(&m, b"guess"));
        let unsigned = signed_binding_request("serverufrag:clientufrag", None);
        assert!(!stun_request_authentic(&unsigned, b"secret"));
        let mut tampered = m.clone();
        tampered[10] ^= 1;
        assert!(!stun_request_authentic(&tampered, b"secret"));
        // A FINGERPRINT after the integrity attribute is allowed and not covered.
        let mut fingerprinted = m.clone();
        fingerprinted.extend_from_slice(&[0x80, 0x28, 0, 4, 1, 2, 3, 4]);
        let len = u16::from_be_bytes([m[2], m[3]]) + 8;
        fingerprinted[2..4].copy_from_slice(&len.to_be_bytes());
        assert!(stun_request_authentic(&fingerprinted, b"secret"));
        assert!(!stun_request_authentic(&m[..m.len() - 4], b"secret"));
    }

    #[test]
    fn only_rfc_7983_ranges_are_webrtc() {
        assert!(is_webrtc(&[0, 1]) && is_webrtc(&[22]) && is_webrtc(&[0x80]));
        assert!(!is_webrtc(&[]) && !is_webrtc(&[4]) && !is_webrtc(&[64]) && !is_webrtc(&[0xff]));
    }

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let mut attrs = vec![0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]; // PRIORITY first
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&STUN_MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn finds_local_ufrag() {
        let m = binding_request(b"serverufrag:clientufrag");
        assert!(is_stun(&m));
        assert_eq!(stun_local_ufrag(&m), Some("serverufrag"));
    }

    #[test]
    fn garbage_is_not_routed() {
        assert_eq!(stun_local_ufrag(&[0u8; 5]), None);
        assert_eq!(stun_local_ufrag(&[0x80; 100]), None);
        let mut m = binding_request(b"abc:def");
        m.truncate(30); // attribute cut short
        assert_eq!(stun_local_ufrag(&m), None);
        let mut m = binding_request(b"abc:def");
        m[2] = 0xff; // declared length longer than the datagram
        assert_eq!(stun_local_ufrag(&m), Some("abc"));
    }
}
