//! Guessing the upload secret: each address gets [`MAX_FAILURES`] wrong secrets per
//! [`WINDOW`]; after that it is answered 429 for [`BLOCK`] without its secret being
//! looked at, right or wrong. Other addresses are not affected. The table is bounded:
//! when it is full of recent addresses, new ones share one entry.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong secrets allowed per address and window.
pub const MAX_FAILURES: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long an address that used up its tries is refused.
pub const BLOCK: Duration = Duration::from_secs(60);
/// Addresses remembered at most.
const MAX_ADDRESSES: usize = 4096;

#[derive(Clone, Copy)]
struct Tries {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

#[derive(Default)]
pub struct SecretGuard {
    table: Mutex<HashMap<IpAddr, Tries>>,
}

/// What a failure did to its address.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    Counted,
    /// This failure used up the address's tries: it is blocked from now on.
    Blocked,
}

impl SecretGuard {
    pub fn new() -> SecretGuard {
        SecretGuard::default()
    }

    /// How long `ip` is still refused, if it is.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let until = table.get(&key(ip))?.blocked_until?;
        until.checked_duration_since(now).filter(|d| !d.is_zero())
    }

    /// A wrong secret from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Failure {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut ip = key(ip);
        if !table.contains_key(&ip) && table.len() >= MAX_ADDRESSES {
            table.retain(|_, t| !expired(t, now));
            if table.len() >= MAX_ADDRESSES {
                ip = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
            }
        }
        let tries = table.entry(ip).or_insert(Tries {
            window_start: now,
            failures: 0,
            blocked_until: None,
        });
        if expired(tries, now) {
            *tries = Tries {
                window_start: now,
                failures: 0,
                blocked_until: None,
            };
        }
        tries.failures += 1;
        if tries.failures >= MAX_FAILURES && tries.blocked_until.is_none() {
            tries.blocked_until = Some(now + BLOCK);
            return Failure::Blocked;
        }
        Failure::Counted
    }
}

/// IPv4 clients reaching an IPv6 socket count as their IPv4 address.
fn key(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The entry says nothing any more: its window and its block are over.
fn expired(t: &Tries, now: Instant) -> bool {
    let window_over = now.saturating_duration_since(t.window_start) >= WINDOW;
    let block_over = t.blocked_until.is_none_or(|until| now >= until);
    window_over && block_over
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_tries_and_released_later() {
        let guard = SecretGuard::new();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 1..MAX_FAILURES {
            assert_eq!(guard.failed(a, t0), Failure::Counted, "try {i}");
            assert_eq!(guard.blocked(a, t0), None);
        }
        assert_eq!(guard.failed(a, t0), Failure::Blocked);
        assert_eq!(guard.blocked(a, t0), Some(BLOCK));
        assert_eq!(guard.blocked(b, t0), None, "others are not affected");
        let later = t0 + BLOCK;
        assert_eq!(guard.blocked(a, later), None);
        assert_eq!(guard.failed(a, later), Failure::Counted, "a fresh window");
        // IPv4-mapped IPv6 is the same client.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(key(mapped), a);
    }

    #[test]
    fn the_table_stays_bounded() {
        let guard = SecretGuard::new();
        let t0 = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            guard.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(guard.table.lock().unwrap().len() <= MAX_ADDRESSES + 1);
    }
}
