//! A browser's checks before its pair is nominated (`rtc::nomination`): anyone can send
//! datagrams to the media port, and a signed check is kept and may be rewritten, so any
//! sequence of them, in either ICE role, must leave a signed check without
//! USE-CANDIDATE, hand back only a check that came, and never panic.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use peregrine::rtc::demux::stun_request_authentic;
use peregrine::rtc::nomination::{signed, EarlyNomination, Feed, Role};

const PWD: &str = "fuzzpasswordfuzzpasswordfuzzpass";

fuzz_target!(|data: &[u8]| {
    let Some((role, mut rest)) = data.split_first() else {
        return;
    };
    let role = match role & 1 {
        0 => Role::Controlling,
        _ => Role::Controlled,
    };
    let addrs: [SocketAddr; 2] = [
        "127.0.0.1:50000".parse().unwrap(),
        "127.0.0.1:50001".parse().unwrap(),
    ];
    let mut nomination = EarlyNomination::new(role);
    let mut sent: Vec<Vec<u8>> = Vec::new();
    // Datagrams of up to 255 bytes, each after a flag byte and a length byte. Flag bit 0:
    // the body is a STUN header's type and the attributes of a message this target
    // signs with the peer's password (random bytes would never pass the HMAC); bit 1:
    // from the second address.
    while let [flags, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        let from = addrs[usize::from(flags & 2 != 0)];
        let datagram = match (flags & 1 != 0, body) {
            (true, [t0, t1, attributes @ ..]) => {
                let mut m = vec![*t0 & 0x3f, *t1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
                m.extend_from_slice(&[*flags; 12]);
                m.extend_from_slice(&attributes[..attributes.len() / 4 * 4]);
                signed(m, PWD.as_bytes()).expect("a whole header")
            }
            _ => body.to_vec(),
        };
        match nomination.inbound(from, &datagram, PWD) {
            Feed::AsIs => {}
            Feed::Instead(check) => {
                assert_eq!(role, Role::Controlled);
                assert!(stun_request_authentic(&check, PWD.as_bytes()));
                assert!(check.len() <= datagram.len() + 32);
            }
            Feed::AndThen(check) => assert!(sent.contains(&check), "only a check that came"),
        }
        sent.push(datagram);
    }
});
