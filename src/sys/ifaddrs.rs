//! The addresses of the machine's network interfaces.

use std::net::Ipv4Addr;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;

/// Every IPv4 address of every interface that is up, with the interface's name, in the
/// order the kernel lists them. Empty when the list cannot be read.
pub fn up_ipv4_addresses() -> Vec<(String, Ipv4Addr)> {
    let Ok(interfaces) = getifaddrs() else {
        return Vec::new();
    };
    interfaces
        .filter(|ifa| ifa.flags.contains(InterfaceFlags::IFF_UP))
        .filter_map(|ifa| {
            let ip = ifa.address.as_ref()?.as_sockaddr_in()?.ip();
            Some((ifa.interface_name, ip))
        })
        .collect()
}
