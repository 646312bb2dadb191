//! Which local addresses to offer as ICE host candidates, and the addresses of a named
//! interface.

use std::net::IpAddr;

/// Host candidate addresses for a server bound to `bind`.
///
/// A specific address is offered as it is (a loopback bind gives loopback candidates,
/// which is what keeps tests on 127.0.0.1). An unspecified bind (0.0.0.0) offers every
/// up IPv4 interface, loopback only when `include_loopback` is set.
pub fn candidate_ips(bind: IpAddr, include_loopback: bool) -> Vec<IpAddr> {
    if !bind.is_unspecified() {
        return vec![bind];
    }
    let mut ips: Vec<IpAddr> = interface_ipv4s()
        .into_iter()
        .filter(|ip| include_loopback || !ip.is_loopback())
        .collect();
    if ips.is_empty() {
        tracing::warn!("no usable network interface found; offering 127.0.0.1 only");
        ips.push(IpAddr::from([127, 0, 0, 1]));
    }
    ips
}

/// IPv4 addresses of interfaces that are up.
fn interface_ipv4s() -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (_, ip) in named_interface_ipv4s() {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// The first IPv4 address of the interface called `name` (compared as Janus does,
/// ignoring case), if it is up and has one.
pub fn interface_ipv4(name: &str) -> Option<IpAddr> {
    named_interface_ipv4s()
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, ip)| ip)
}

/// Every IPv4 address of every interface that is up, with the interface's name, in
/// the order the kernel lists them.
fn named_interface_ipv4s() -> Vec<(String, IpAddr)> {
    crate::sys::ifaddrs::up_ipv4_addresses()
        .into_iter()
        .map(|(name, ip)| (name, IpAddr::V4(ip)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_bind_is_offered_as_is() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(candidate_ips(lo, false), vec![lo]);
    }

    #[test]
    fn unspecified_bind_lists_interfaces() {
        let ips = candidate_ips(IpAddr::from([0, 0, 0, 0]), true);
        assert!(ips.contains(&IpAddr::from([127, 0, 0, 1])), "{ips:?}");
        let ips = candidate_ips(IpAddr::from([0, 0, 0, 0]), false);
        assert!(ips.iter().all(|ip| !ip.is_unspecified()));
    }

    #[test]
    fn interfaces_are_found_by_name() {
        let lo = Some(IpAddr::from([127, 0, 0, 1]));
        assert_eq!(interface_ipv4("lo"), lo);
        assert_eq!(interface_ipv4("LO"), lo, "names compare as in Janus");
        assert_eq!(interface_ipv4("no-such-if0"), None);
    }
}
