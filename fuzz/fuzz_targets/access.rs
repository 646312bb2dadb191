//! What a client sends to get in, and what an administrator writes to let it: the
//! `Authorization` header judged by Basic auth, and address allow-lists in both forms
//! (`--allow-ip`, Janus's `acl`) matched against an address.
#![no_main]

use std::net::IpAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use peregrine::access::basic::{parse_authorization, BasicAuth, Credentials, Decision, Presented};
use peregrine::access::IpList;

fuzz_target!(|data: &[u8]| {
    // An address from the first 16 bytes, the rest as text.
    let (addr, rest) = data.split_at(data.len().min(16));
    let mut octets = [0u8; 16];
    octets[..addr.len()].copy_from_slice(addr);
    let ip = if addr.first().is_some_and(|b| b & 1 == 0) {
        IpAddr::from([octets[1], octets[2], octets[3], octets[4]])
    } else {
        IpAddr::from(octets)
    };

    if let Presented::Credentials(pair) = parse_authorization(Some(rest)) {
        assert!(pair.contains(&b':'));
    }
    let auth = BasicAuth::new(&Credentials {
        user: "admin".into(),
        passwd: "fuzz".into(),
    });
    if auth.decide(false, Some(rest), ip, Instant::now()) == Decision::Pass {
        assert_eq!(
            parse_authorization(Some(rest)),
            Presented::Credentials(b"admin:fuzz".to_vec()),
            "only the right credentials get in"
        );
    }

    let text = String::from_utf8_lossy(rest);
    let values: Vec<String> = text.split(',').map(str::to_string).collect();
    if let Ok(list) = IpList::parse(&values, "allow_ip") {
        let _ = list.allows(ip);
        let _ = list.describe();
    }
    let janus = IpList::from_janus_acl(&text);
    let _ = janus.allows(ip);
    let _ = janus.whole_address_prefixes();
});
