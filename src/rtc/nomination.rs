//! A pair nominated as soon as both sides' first checks have succeeded, not one check
//! interval or one browser retransmission later.
//!
//! The WebRTC stack's agent (`rtc-ice` 0.21) waits in both roles:
//! - **Controlled** (the browser offered: WHEP, WHIP): it neither answers a check that
//!   carries USE-CANDIDATE on a pair it has not checked itself yet, nor nominates such a
//!   pair once its own check succeeds, though RFC 8445 §7.3.1.4 and §7.3.1.5 ask for
//!   both. Chromium nominates with its very first check, which therefore went
//!   unanswered: every start waited for Chromium's next check, about 50 ms later.
//! - **Controlling** (we offered: the Janus API): it nominates when a check of the
//!   browser's arrives on a pair that has succeeded, or at its next check interval
//!   (50 ms here). The browser checks first, so its check always found the pair not yet
//!   succeeded.
//!
//! So the peer keeps the browser's latest check until the browser answers the stack's
//! own check, and then hands it to the stack again: the pair has succeeded by then, and
//! the stack nominates it at once (it also answers the check a second time, which the
//! browser ignores). As the controlled side, the check is first handed over without
//! USE-CANDIDATE (signed again with our ICE password), which the stack answers and
//! checks back at once.
//!
//! Until it was proposed and taken upstream, this is the smallest change that gets the
//! stack there from the outside.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::demux::{self, ATTR_MESSAGE_INTEGRITY, INTEGRITY_LEN, STUN_HEADER_LEN as HEADER_LEN};

const ATTR_USE_CANDIDATE: u16 = 0x0025;
const ATTR_FINGERPRINT: u16 = 0x8028;
const BINDING_SUCCESS: u16 = 0x0101;
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// What to hand the stack for one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Feed {
    /// The datagram as it came.
    AsIs,
    /// This instead: the browser's nominating check without its nomination.
    Instead(Vec<u8>),
    /// The datagram, then this: the browser's check kept until now.
    AndThen(Vec<u8>),
}

/// Which ICE role the stack plays for the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Controlling,
    Controlled,
}

/// One peer's browser check, kept until the stack's own check has succeeded.
#[derive(Debug)]
pub struct EarlyNomination {
    role: Role,
    held: Option<(SocketAddr, Vec<u8>)>,
    /// Handed over once: from then on the stack's own rules apply (until an ICE restart
    /// makes a new one of these).
    done: bool,
}

impl EarlyNomination {
    pub fn new(role: Role) -> EarlyNomination {
        EarlyNomination {
            role,
            held: None,
            done: false,
        }
    }

    /// What to hand the stack for `data` from `from`, for a peer whose local ICE
    /// password is `pwd`.
    pub fn inbound(&mut self, from: SocketAddr, data: &[u8], pwd: &str) -> Feed {
        if self.done || !demux::is_stun(data) {
            return Feed::AsIs;
        }
        if is_binding_success(data) {
            return match self.held.take_if(|(at, _)| *at == from) {
                Some((_, check)) => {
                    self.done = true;
                    Feed::AndThen(check)
                }
                None => Feed::AsIs,
            };
        }
        if !demux::stun_request_authentic(data, pwd.as_bytes()) {
            return Feed::AsIs;
        }
        let nominates = demux::attributes(data).any(|(kind, _, _)| kind == ATTR_USE_CANDIDATE);
        let feed = match (self.role, nominates) {
            (Role::Controlled, true) => match without_nomination(data, pwd.as_bytes()) {
                Some(check) => Feed::Instead(check),
                None => return Feed::AsIs,
            },
            _ => Feed::AsIs,
        };
        self.held = Some((from, data.to_vec()));
        feed
    }
}

fn is_binding_success(data: &[u8]) -> bool {
    u16::from_be_bytes([data[0], data[1]]) == BINDING_SUCCESS
}

/// `request` without USE-CANDIDATE, with MESSAGE-INTEGRITY (keyed with `pwd`) and
/// FINGERPRINT made again; the transaction id and every other attribute are kept.
fn without_nomination(request: &[u8], pwd: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(request.len());
    out.extend_from_slice(request.get(..HEADER_LEN)?);
    for (kind, at, value) in demux::attributes(request) {
        match kind {
            ATTR_USE_CANDIDATE => continue,
            // Nothing after these counts (RFC 5389 §15.4, §15.5).
            ATTR_MESSAGE_INTEGRITY | ATTR_FINGERPRINT => break,
            _ => out.extend_from_slice(request.get(at..at + 4 + value.len().div_ceil(4) * 4)?),
        }
    }
    signed(out, pwd)
}

/// `message` (a header and attributes) with MESSAGE-INTEGRITY keyed with `pwd` and
/// FINGERPRINT after them (`None` only for a message shorter than its header).
pub fn signed(mut out: Vec<u8>, pwd: &[u8]) -> Option<Vec<u8>> {
    if out.len() < HEADER_LEN {
        return None;
    }
    set_length(&mut out, 4 + INTEGRITY_LEN);
    let mut hmac = Hmac::<Sha1>::new_from_slice(pwd).ok()?;
    hmac.update(&out);
    let mac = hmac.finalize().into_bytes();
    out.extend_from_slice(&ATTR_MESSAGE_INTEGRITY.to_be_bytes());
    out.extend_from_slice(&(INTEGRITY_LEN as u16).to_be_bytes());
    out.extend_from_slice(&mac);
    set_length(&mut out, 8);
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&out) ^ FINGERPRINT_XOR;
    out.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    Some(out)
}

/// Set the header's length to the attributes so far plus `more` bytes to come.
fn set_length(message: &mut [u8], more: usize) {
    let length = (message.len() - HEADER_LEN + more) as u16;
    message[2..4].copy_from_slice(&length.to_be_bytes());
}

/// A STUN message of `kind` with `attributes` (type, value), signed with `pwd` and
/// fingerprinted, for tests that play the browser.
#[cfg(test)]
pub(super) fn stun_message(
    kind: u16,
    transaction: [u8; 12],
    attributes: &[(u16, &[u8])],
    pwd: &str,
) -> Vec<u8> {
    let mut m = kind.to_be_bytes().to_vec();
    m.extend_from_slice(&[0, 0, 0x21, 0x12, 0xa4, 0x42]);
    m.extend_from_slice(&transaction);
    for (kind, value) in attributes {
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&(value.len() as u16).to_be_bytes());
        m.extend_from_slice(value);
        m.resize(m.len().div_ceil(4) * 4, 0);
    }
    signed(m, pwd.as_bytes()).expect("an HMAC takes any key")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PWD: &str = "localpasswordlocalpassword";

    /// A binding request as Chromium sends it, nominating when `nominate`.
    fn check(nominate: bool, pwd: &str) -> Vec<u8> {
        let mut attrs: Vec<(u16, &[u8])> = vec![
            (0x0006, b"localufrag:remote"), // USERNAME, padded
            (0xc057, &[0, 1, 0, 10]),       // GOOG-NETWORK-INFO
            (0x802a, &[7; 8]),              // ICE-CONTROLLING
        ];
        if nominate {
            attrs.push((ATTR_USE_CANDIDATE, &[]));
        }
        attrs.push((0x0024, &[0x6e, 0x7f, 0x1e, 0xff])); // PRIORITY
        stun_message(0x0001, [5; 12], &attrs, pwd)
    }

    fn attribute_kinds(m: &[u8]) -> Vec<u16> {
        demux::attributes(m).map(|(kind, _, _)| kind).collect()
    }

    fn fingerprint_holds(m: &[u8]) -> bool {
        let at = m.len() - 8;
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&m[..at]) ^ FINGERPRINT_XOR;
        m[at..at + 4] == [0x80, 0x28, 0, 4] && m[at + 4..] == crc.to_be_bytes()
    }

    #[test]
    fn the_rewritten_check_is_the_same_check_without_the_nomination() {
        // USE-CANDIDATE between other attributes, as Chromium places it.
        let nominating = check(true, PWD);
        assert!(attribute_kinds(&nominating).contains(&ATTR_USE_CANDIDATE));
        let rewritten = without_nomination(&nominating, PWD.as_bytes()).unwrap();
        assert_eq!(rewritten, check(false, PWD));
        assert_eq!(&rewritten[4..20], &nominating[4..20], "same transaction");
        assert_eq!(
            attribute_kinds(&rewritten),
            [
                0x0006,
                0xc057,
                0x802a,
                0x0024,
                ATTR_MESSAGE_INTEGRITY,
                ATTR_FINGERPRINT
            ]
        );
        assert!(demux::stun_request_authentic(&rewritten, PWD.as_bytes()));
        assert!(fingerprint_holds(&rewritten));
        assert_eq!(
            usize::from(u16::from_be_bytes([rewritten[2], rewritten[3]])),
            rewritten.len() - HEADER_LEN
        );
    }

    fn success() -> Vec<u8> {
        let mut m = vec![0x01, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&[9; 12]);
        m
    }

    #[test]
    fn as_controlled_the_nomination_waits_for_the_browsers_answer_to_our_check() {
        let browser: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:50001".parse().unwrap();
        let mut n = EarlyNomination::new(Role::Controlled);
        // Checks not signed with our password, and anything but STUN, pass.
        assert_eq!(n.inbound(browser, &check(true, "guessed"), PWD), Feed::AsIs);
        assert_eq!(n.inbound(browser, &[0x16, 0xfe, 0xfd], PWD), Feed::AsIs);
        assert_eq!(
            n.inbound(browser, &success(), PWD),
            Feed::AsIs,
            "nothing kept"
        );
        let nominating = check(true, PWD);
        assert_eq!(
            n.inbound(browser, &nominating, PWD),
            Feed::Instead(check(false, PWD))
        );
        // An answer from elsewhere is not the browser's.
        assert_eq!(n.inbound(other, &success(), PWD), Feed::AsIs);
        assert_eq!(
            n.inbound(browser, &success(), PWD),
            Feed::AndThen(nominating.clone())
        );
        // Once handed over, the stack's own rules apply.
        assert_eq!(n.inbound(browser, &nominating, PWD), Feed::AsIs);
        assert_eq!(n.inbound(browser, &success(), PWD), Feed::AsIs);
    }

    #[test]
    fn as_controlling_the_browsers_check_comes_again_after_our_check_succeeds() {
        let browser: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let mut n = EarlyNomination::new(Role::Controlling);
        let plain = check(false, PWD);
        assert_eq!(n.inbound(browser, &plain, PWD), Feed::AsIs);
        // The latest check is the one handed over again.
        let later = check(true, PWD);
        assert_eq!(
            n.inbound(browser, &later, PWD),
            Feed::AsIs,
            "never rewritten"
        );
        assert_eq!(n.inbound(browser, &success(), PWD), Feed::AndThen(later));
        assert_eq!(n.inbound(browser, &plain, PWD), Feed::AsIs);
        assert_eq!(n.inbound(browser, &success(), PWD), Feed::AsIs);
    }

    #[test]
    fn a_cut_check_passes_as_it_is_unless_it_is_still_signed() {
        let from: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let full = check(true, PWD);
        let mut rewritten = 0;
        for len in 0..full.len() {
            let cut = &full[..len];
            match EarlyNomination::new(Role::Controlled).inbound(from, cut, PWD) {
                Feed::AsIs => assert!(
                    !demux::stun_request_authentic(cut, PWD.as_bytes()),
                    "cut at {len}"
                ),
                // Only the FINGERPRINT cut off (or part of it) leaves a signed check.
                Feed::Instead(check) => {
                    assert!(len >= full.len() - 8, "cut at {len}");
                    assert!(!attribute_kinds(&check).contains(&ATTR_USE_CANDIDATE));
                    assert!(demux::stun_request_authentic(&check, PWD.as_bytes()));
                    rewritten += 1;
                }
                Feed::AndThen(_) => panic!("nothing was held"),
            }
        }
        assert_eq!(rewritten, 8);
    }
}
