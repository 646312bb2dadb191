//! Which remote ICE candidates a peer takes. Every one the ICE agent takes becomes
//! connectivity checks sent to its address, so a viewer could otherwise aim the server's
//! STUN traffic at any host, or bury the engine in candidate pairs: candidates are
//! checked for an address a viewer can really have, and counted against a per-peer
//! budget (libnice allows 25 per component).

use std::net::IpAddr;

use super::sdp;

/// Remote candidates one peer takes in all (trickled and in the answer), and the most
/// a single trickle message hands to the engine.
pub const MAX_REMOTE_CANDIDATES: usize = 25;

/// Why a candidate is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not `foundation component transport priority address port typ ...`, or the
    /// address is a name (mDNS), not an IP address.
    Unparsable,
    /// Not UDP: peers only speak UDP.
    NotUdp,
    /// Multicast, broadcast or unspecified: no viewer is there.
    BadAddress,
    /// Not loopback while the server is bound to loopback: unreachable.
    NotLoopback,
    /// The peer's budget is spent.
    OverBudget,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unparsable => "not an IP candidate",
            Refusal::NotUdp => "not UDP",
            Refusal::BadAddress => "multicast, broadcast or unspecified address",
            Refusal::NotLoopback => "not loopback",
            Refusal::OverBudget => "too many candidates for this viewer",
        }
    }
}

/// Check a candidate's transport, address and port (`a=` and `candidate:` prefixes
/// allowed); the budget is the caller's.
pub fn check(candidate: &str, loopback_only: bool) -> Result<(), Refusal> {
    let value = candidate.trim().trim_start_matches("a=");
    let value = value.strip_prefix("candidate:").unwrap_or(value);
    let fields: Vec<&str> = value.split_whitespace().take(6).collect();
    let [_foundation, _component, transport, _priority, address, port] = fields[..] else {
        return Err(Refusal::Unparsable);
    };
    let ip: IpAddr = address.parse().map_err(|_| Refusal::Unparsable)?;
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(Refusal::Unparsable);
    }
    if !transport.eq_ignore_ascii_case("udp") {
        return Err(Refusal::NotUdp);
    }
    if !usable_address(ip) {
        return Err(Refusal::BadAddress);
    }
    if loopback_only && !ip.to_canonical().is_loopback() {
        return Err(Refusal::NotLoopback);
    }
    Ok(())
}

/// Not multicast, broadcast, unspecified or in 0.0.0.0/8 ("this network"). Link-local
/// addresses stay usable: a camera cabled straight to a laptop talks over them.
fn usable_address(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => !(v4.is_multicast() || v4.is_broadcast() || v4.octets()[0] == 0),
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    }
}

/// The answer with only the `a=candidate` lines that pass [`check`], at most `budget`
/// of them; also returns how many were kept and how many dropped.
pub fn filter_answer(answer: &str, loopback_only: bool, budget: usize) -> (String, usize, usize) {
    let (mut kept, mut dropped) = (0, 0);
    let filtered = sdp::retain_candidates(answer, |c| {
        if kept < budget && check(c, loopback_only).is_ok() {
            kept += 1;
            true
        } else {
            dropped += 1;
            false
        }
    });
    (filtered, kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(address: &str, port: u16) -> String {
        format!("candidate:1 1 udp 2122260223 {address} {port} typ host")
    }

    #[test]
    fn addresses_no_viewer_can_have_are_refused() {
        assert_eq!(check(&host("192.168.1.5", 5000), false), Ok(()));
        assert_eq!(check(&host("169.254.10.1", 5000), false), Ok(()));
        assert_eq!(check(&host("2001:db8::1", 5000), false), Ok(()));
        for bad in [
            "224.0.0.251",
            "239.1.2.3",
            "255.255.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "ff02::1",
            "::ffff:224.0.0.1",
        ] {
            assert_eq!(
                check(&host(bad, 5000), false),
                Err(Refusal::BadAddress),
                "{bad}"
            );
        }
        assert_eq!(check(&host("10.0.0.1", 0), false), Err(Refusal::Unparsable));
        assert_eq!(
            check(&host("abcd.local", 5000), false),
            Err(Refusal::Unparsable)
        );
        assert_eq!(check("candidate:garbage", false), Err(Refusal::Unparsable));
    }

    #[test]
    fn only_udp_and_only_loopback_when_bound_to_loopback() {
        let tcp = "a=candidate:1 1 TCP 1518280447 127.0.0.1 9 typ host tcptype active";
        assert_eq!(check(tcp, false), Err(Refusal::NotUdp));
        assert_eq!(check(&host("127.0.0.1", 5000), true), Ok(()));
        assert_eq!(check(&host("::1", 5000), true), Ok(()));
        assert_eq!(
            check(&host("192.168.1.5", 5000), true),
            Err(Refusal::NotLoopback)
        );
    }

    #[test]
    fn answers_keep_at_most_the_budget() {
        let mut answer = String::from("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n");
        for port in 1..=40 {
            answer.push_str(&format!("a={}\r\n", host("127.0.0.1", port)));
        }
        answer.push_str(&format!("a={}\r\n", host("224.0.0.1", 5)));
        answer.push_str("a=end-of-candidates\r\n");
        let (out, kept, dropped) = filter_answer(&answer, true, 25);
        assert_eq!((kept, dropped), (25, 16));
        assert_eq!(out.matches("a=candidate:").count(), 25);
        assert!(out.contains("127.0.0.1 25 ") && !out.contains("127.0.0.1 26 "));
        assert!(out.ends_with("a=end-of-candidates\r\n"));
    }
}
