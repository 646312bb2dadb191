//! Who may connect, beyond the Origin check ([`crate::origin`]) and the Janus API's own
//! secret and tokens ([`crate::janus::auth`]):
//!
//! * [`ip_list`]: address allow-lists (`--allow-ip`, and per Janus transport, as Janus's
//!   `acl` / `ws_acl`), applied when a connection is accepted and to the first STUN
//!   check from a new address on the media port.
//! * [`basic`]: HTTP Basic authentication of the main port (`--user` / `--passwd`).

pub mod basic;
pub mod ip_list;
pub mod secret_guard;

use std::net::IpAddr;
use std::sync::Arc;

pub use basic::Credentials;
pub use ip_list::IpList;

use crate::ratelog::{RateLimited, PERIOD};

static REFUSED: RateLimited = RateLimited::new(PERIOD);

/// The allow-lists one listener applies: a client must pass every one. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct PeerFilter {
    /// Names the listener in the log.
    what: &'static str,
    lists: Arc<[IpList]>,
}

impl PeerFilter {
    /// `lists` that are empty restrict nothing and are left out.
    pub fn new(what: &'static str, lists: impl IntoIterator<Item = IpList>) -> PeerFilter {
        PeerFilter {
            what,
            lists: lists.into_iter().filter(|l| !l.is_empty()).collect(),
        }
    }

    /// Whether a client at `ip` may connect; a refusal is logged (rate-limited).
    pub fn admits(&self, ip: IpAddr) -> bool {
        if self.lists.iter().all(|l| l.allows(ip)) {
            return true;
        }
        crate::rejections::count(crate::rejections::Rejection::AllowIp);
        if let Some(count) = REFUSED.hit() {
            tracing::warn!(
                %ip,
                listener = self.what,
                refused = count,
                "connection refused: address not in the allow-list (--allow-ip)"
            );
        }
        false
    }

    /// Whether any list applies.
    pub fn restricts(&self) -> bool {
        !self.lists.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(values: &[&str]) -> IpList {
        let values: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        IpList::parse(&values, "allow_ip").unwrap()
    }

    #[test]
    fn a_client_must_pass_every_list() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let open = PeerFilter::new("test", [IpList::default(), IpList::default()]);
        assert!(!open.restricts() && open.admits(ip("203.0.113.1")));
        let both = PeerFilter::new("test", [list(&["10.0.0.0/8"]), list(&["10.1."])]);
        assert!(both.restricts());
        assert!(both.admits(ip("10.1.2.3")));
        assert!(!both.admits(ip("10.2.0.1")), "passes the first list only");
        assert!(!both.admits(ip("192.0.2.1")));
    }
}
