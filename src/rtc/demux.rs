//! Routing datagrams of one shared UDP socket to peers: by remote address once known,
//! before that by the local ICE ufrag in the STUN USERNAME attribute.

const STUN_MAGIC_COOKIE: u32 = 0x2112_A442;
const ATTR_USERNAME: u16 = 0x0006;
const STUN_HEADER_LEN: usize = 20;

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
    let declared = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let end = (STUN_HEADER_LEN + declared).min(datagram.len());
    let mut pos = STUN_HEADER_LEN;
    while pos + 4 <= end {
        let kind = u16::from_be_bytes([datagram[pos], datagram[pos + 1]]);
        let len = usize::from(u16::from_be_bytes([datagram[pos + 2], datagram[pos + 3]]));
        let value = datagram.get(pos + 4..pos + 4 + len)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        pos += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
