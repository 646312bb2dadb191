//! Address allow-lists: which client addresses may connect at all.
//!
//! Two kinds of entry. A network (`10.0.0.0/8`, `fe80::/10`, or one address such as
//! `192.168.1.20`, which is that host alone) matches by address bits. A text prefix
//! (`192.168.0.`, `fe80:`) matches when the address, written out, starts with it: that
//! is how Janus's `acl` and `ws_acl` settings work, so a Janus configuration means the
//! same here. IPv4 clients reaching an IPv6 socket count as their IPv4 address, and
//! also match prefixes written for their mapped form (`::ffff:10.`), as in Janus.

use std::fmt::Write as _;
use std::net::IpAddr;

/// One allow-list; empty allows everyone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpList {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// `len` leading bits of `addr`.
    Net { addr: IpAddr, len: u8 },
    /// The start of the written address, lowercase.
    Prefix(String),
}

/// Longest entry accepted: no address is longer than this written out.
const MAX_ENTRY: usize = 64;

impl IpList {
    /// From `--allow-ip` values: networks (`10.0.0.0/8`), single addresses, and text
    /// prefixes ending in `.` or `:` (`192.168.0.`, `fe80:`), as Janus's `acl` writes
    /// them. `key` names the setting in errors.
    pub fn parse(values: &[String], key: &str) -> Result<IpList, String> {
        let mut entries = Vec::new();
        for value in values {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            entries.push(parse_entry(value).ok_or_else(|| {
                format!(
                    "{key} {value:?} is not an address, a network or an address prefix; \
                     write e.g. 192.168.1.20, 10.0.0.0/8, fe80::/10 or 192.168.0. (text \
                     prefixes end with . or :)"
                )
            })?);
        }
        if !values.is_empty() && entries.is_empty() {
            return Err(format!(
                "{key} is empty: it would refuse every address; leave it out to allow all"
            ));
        }
        Ok(IpList { entries })
    }

    /// From a Janus `acl` / `ws_acl` value: comma-separated text prefixes, each matched
    /// against the written address as Janus does (`127.0.0.1` also admits
    /// `127.0.0.10`). Empty entries are skipped, as in Janus.
    pub fn from_janus_acl(value: &str) -> IpList {
        let entries = value
            .split(',')
            .filter(|e| !e.is_empty())
            .map(|e| Entry::Prefix(e.to_ascii_lowercase()))
            .collect();
        IpList { entries }
    }

    /// No entries: every address is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `ip` may connect.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        let ip = ip.to_canonical();
        let mut text: Option<AddrText> = None;
        self.entries.iter().any(|entry| match entry {
            Entry::Net { addr, len } => in_network(ip, *addr, *len),
            Entry::Prefix(prefix) => text
                .get_or_insert_with(|| AddrText::new(ip))
                .starts_with(prefix),
        })
    }

    /// The entries as given, for logs and messages: `10.0.0.0/8, 192.168.0.`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            match entry {
                Entry::Net { addr, len } if *len == full_len(*addr) => {
                    let _ = write!(out, "{addr}");
                }
                Entry::Net { addr, len } => {
                    let _ = write!(out, "{addr}/{len}");
                }
                Entry::Prefix(p) => out.push_str(p),
            }
        }
        out
    }

    /// Text prefixes that are whole addresses (`192.168.1.1`): Janus, and so this list,
    /// matches them as prefixes, which admits more hosts than the one named.
    pub fn whole_address_prefixes(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter_map(|e| match e {
                Entry::Prefix(p) if p.parse::<IpAddr>().is_ok() => Some(p.as_str()),
                _ => None,
            })
            .collect()
    }
}

fn parse_entry(value: &str) -> Option<Entry> {
    if value.len() > MAX_ENTRY {
        return None;
    }
    if let Some((addr, len)) = value.split_once('/') {
        let addr: IpAddr = addr.parse().ok()?;
        let len: u8 = len.parse().ok()?;
        if len > full_len(addr) {
            return None;
        }
        return Some(network(addr, len));
    }
    if let Ok(addr) = value.parse::<IpAddr>() {
        return Some(network(addr, full_len(addr)));
    }
    let lower = value.to_ascii_lowercase();
    let address_chars = lower
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':');
    (address_chars && (lower.ends_with('.') || lower.ends_with(':')))
        .then_some(Entry::Prefix(lower))
}

/// A network entry, with an IPv4-mapped IPv6 network stored as the IPv4 one it is.
fn network(addr: IpAddr, len: u8) -> Entry {
    match addr {
        IpAddr::V6(v6) if len >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => Entry::Net {
                addr: IpAddr::V4(v4),
                len: len - 96,
            },
            None => Entry::Net { addr, len },
        },
        _ => Entry::Net { addr, len },
    }
}

fn full_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// An address written out on the stack, as `inet_ntop` writes it; an IPv4 address also
/// as its IPv4-mapped IPv6 form, which is how a dual-stack socket shows it.
struct AddrText {
    buf: [u8; 64],
    len: usize,
    /// Where the plain form starts: after `::ffff:` for IPv4.
    plain: usize,
}

impl AddrText {
    fn new(ip: IpAddr) -> AddrText {
        let mut text = AddrText {
            buf: [0; 64],
            len: 0,
            plain: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                let _ = write!(text, "::ffff:{v4}");
                text.plain = "::ffff:".len();
            }
            IpAddr::V6(v6) => {
                let _ = write!(text, "{v6}");
            }
        }
        text
    }

    fn starts_with(&self, prefix: &str) -> bool {
        let whole = &self.buf[..self.len];
        whole[self.plain..].starts_with(prefix.as_bytes())
            || (self.plain > 0 && whole.starts_with(prefix.as_bytes()))
    }
}

impl std::fmt::Write for AddrText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let room = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(text: &str) -> IpAddr {
        IpAddr::V4(text.parse().unwrap())
    }

    fn v6(text: &str) -> IpAddr {
        IpAddr::V6(text.parse().unwrap())
    }

    fn list(values: &[&str]) -> IpList {
        let values: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        IpList::parse(&values, "allow_ip").unwrap()
    }

    #[test]
    fn empty_allows_everyone() {
        let l = IpList::default();
        assert!(l.is_empty());
        assert!(l.allows(v4("203.0.113.9")) && l.allows(v6("2001:db8::1")));
    }

    #[test]
    fn networks_match_by_bits() {
        let l = list(&["10.0.0.0/8", "fe80::/10", "192.168.1.20"]);
        assert!(l.allows(v4("10.200.3.4")));
        assert!(!l.allows(v4("11.0.0.1")));
        assert!(l.allows(v6("fe80::1")) && l.allows(v6("febf::1")));
        assert!(!l.allows(v6("fec0::1")));
        assert!(l.allows(v4("192.168.1.20")));
        assert!(
            !l.allows(v4("192.168.1.200")),
            "a whole address is that host alone"
        );
        assert!(l.allows(v6("::ffff:10.1.2.3")), "IPv4-mapped is IPv4");
        assert!(!l.allows(v6("::1")));
        let all = list(&["0.0.0.0/0"]);
        assert!(all.allows(v4("1.2.3.4")) && !all.allows(v6("::1")));
        let mapped = list(&["::ffff:10.0.0.0/104"]);
        assert!(mapped.allows(v4("10.9.9.9")) && !mapped.allows(v4("11.0.0.1")));
        assert_eq!(mapped.describe(), "10.0.0.0/8");
    }

    #[test]
    fn text_prefixes_match_as_in_janus() {
        let l = list(&["127.", "192.168.0.", "FE80:"]);
        assert!(l.allows(v4("127.0.0.2")));
        assert!(l.allows(v4("192.168.0.77")));
        assert!(!l.allows(v4("192.168.1.1")));
        assert!(l.allows(v6("fe80::abcd")));
        assert!(!l.allows(v4("10.0.0.1")));
        // Janus adds `::ffff:` forms for IPv4 entries; a mapped prefix matches IPv4 too.
        let mapped = IpList::from_janus_acl("::ffff:10.");
        assert!(mapped.allows(v4("10.0.0.1")));
        assert!(mapped.allows(v6("::ffff:10.0.0.1")));
        assert!(!mapped.allows(v4("100.0.0.1")));
    }

    #[test]
    fn janus_acl_is_prefixes_of_the_text_even_for_whole_addresses() {
        let l = IpList::from_janus_acl("127.,192.168.1.1,,");
        assert!(l.allows(v4("127.0.0.1")));
        assert!(l.allows(v4("192.168.1.1")));
        assert!(l.allows(v4("192.168.1.17")), "Janus matches text prefixes");
        assert!(!l.allows(v4("192.168.2.1")));
        assert_eq!(l.whole_address_prefixes(), ["192.168.1.1"]);
        assert_eq!(l.describe(), "127., 192.168.1.1");
        // A space is kept, as Janus keeps it: that entry matches nothing.
        let spaced = IpList::from_janus_acl("127., 10.");
        assert!(!spaced.allows(v4("10.0.0.1")));
        assert!(IpList::from_janus_acl("").is_empty());
    }

    #[test]
    fn bad_entries_name_the_key() {
        for bad in [
            "10",
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/x",
            "1.2.3.4/",
            "*",
            &"1.".repeat(40),
        ] {
            let err = IpList::parse(&[bad.to_string()], "janus_ws_allow_ip").unwrap_err();
            assert!(err.contains("janus_ws_allow_ip"), "{bad}: {err}");
        }
        let err = IpList::parse(&[" ".to_string()], "allow_ip").unwrap_err();
        assert!(err.contains("empty"), "{err}");
    }
}
