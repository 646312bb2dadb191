//! Admission of TCP/unix connections, shared by every listener: a cap in total and per
//! client address. A connection that has not yet sent one complete request head is
//! "unproven"; when a cap is reached, the oldest unproven connection in its scope is
//! closed to make room, so idle or slowloris sockets cannot lock real clients out.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::ratelog::{RateLimited, PERIOD};
use crate::rejections::{self, Rejection};

static REFUSED: RateLimited = RateLimited::new(PERIOD);
static EVICTED: RateLimited = RateLimited::new(PERIOD);

/// Caps; 0 means none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub total: usize,
    pub per_ip: usize,
}

#[derive(Default)]
struct State {
    next_id: u64,
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Unproven connections by id (ids grow, so the first is the oldest).
    unproven: BTreeMap<u64, (Option<IpAddr>, Arc<Eviction>)>,
}

/// Set (under the gate's lock) when a connection is evicted; its place is then
/// already given up.
#[derive(Default)]
struct Eviction {
    done: AtomicBool,
    notify: Notify,
}

pub struct Gate {
    caps: Caps,
    state: Mutex<State>,
}

/// A connection's place; dropping it frees the place.
pub struct Permit {
    gate: Arc<Gate>,
    id: u64,
    ip: Option<IpAddr>,
    eviction: Arc<Eviction>,
}

impl Gate {
    pub fn new(caps: Caps) -> Arc<Gate> {
        Arc::new(Gate {
            caps,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admit a connection from `ip` (`None` for a unix socket), evicting the oldest
    /// unproven one when a cap is reached; `None` when there is no room at all.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Option<Permit> {
        let mut state = self.state();
        if let Some(ip) = ip.filter(|_| self.caps.per_ip > 0) {
            let count = state.per_ip.get(&ip).copied().unwrap_or(0);
            if count >= self.caps.per_ip && !evict_oldest(&mut state, Some(ip)) {
                drop(state);
                rejections::count(Rejection::PerIpCap);
                if let Some(n) = REFUSED.hit() {
                    tracing::warn!(%ip, refused = n, cap = self.caps.per_ip,
                        "connection refused: too many connections from this address");
                }
                return None;
            }
        }
        if self.caps.total > 0 && state.total >= self.caps.total && !evict_oldest(&mut state, None)
        {
            drop(state);
            rejections::count(Rejection::ConnectionCap);
            if let Some(n) = REFUSED.hit() {
                tracing::warn!(
                    refused = n,
                    cap = self.caps.total,
                    "connection refused: too many connections in total"
                );
            }
            return None;
        }
        state.next_id += 1;
        let id = state.next_id;
        state.total += 1;
        if let Some(ip) = ip {
            *state.per_ip.entry(ip).or_default() += 1;
        }
        let eviction = Arc::new(Eviction::default());
        state.unproven.insert(id, (ip, eviction.clone()));
        Some(Permit {
            gate: self.clone(),
            id,
            ip,
            eviction,
        })
    }

    /// Close the oldest unproven connection anywhere, to free a descriptor when the
    /// process has run out of them. False when there is none.
    pub fn evict_any(&self) -> bool {
        evict_oldest(&mut self.state(), None)
    }

    /// Connections admitted and not yet closed.
    pub fn open(&self) -> usize {
        self.state().total
    }
}

/// Evict the oldest unproven connection (of `ip`, when given). Its place is given up
/// at once; the connection's task closes it when notified.
fn evict_oldest(state: &mut State, ip: Option<IpAddr>) -> bool {
    let victim = state
        .unproven
        .iter()
        .find(|(_, (from, _))| ip.is_none() || *from == ip)
        .map(|(id, _)| *id);
    let Some(id) = victim else {
        return false;
    };
    let (from, eviction) = state.unproven.remove(&id).expect("just found");
    release(state, from);
    rejections::count(Rejection::Evicted);
    eviction.done.store(true, Ordering::SeqCst);
    // Stores a wakeup when the connection is not waiting yet.
    eviction.notify.notify_one();
    if let Some(n) = EVICTED.hit() {
        tracing::info!(
            evicted = n,
            "closed connections that sent no request, to make room for new ones"
        );
    }
    true
}

fn release(state: &mut State, ip: Option<IpAddr>) {
    state.total -= 1;
    if let Some(ip) = ip {
        if let Some(n) = state.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                state.per_ip.remove(&ip);
            }
        }
    }
}

impl Permit {
    /// The connection sent a complete request head: it is no longer evictable.
    pub fn prove(&self) {
        self.gate.state().unproven.remove(&self.id);
    }

    /// Resolves when the gate evicted this connection.
    pub async fn evicted(&self) {
        self.eviction.notify.notified().await;
    }

    fn evicted_already(&self) -> bool {
        self.eviction.done.load(Ordering::SeqCst)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.gate.state();
        state.unproven.remove(&self.id);
        if !self.evicted_already() {
            release(&mut state, self.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn per_ip_cap_evicts_that_addresses_oldest_unproven() {
        let gate = Gate::new(Caps {
            total: 100,
            per_ip: 2,
        });
        let a1 = gate.admit(ip(1)).unwrap();
        let a2 = gate.admit(ip(1)).unwrap();
        let b = gate.admit(ip(2)).unwrap();
        a2.prove();
        let a3 = gate.admit(ip(1)).expect("the unproven a1 makes room");
        assert!(a1.evicted_already());
        assert!(!b.evicted_already(), "another address is untouched");
        assert_eq!(gate.open(), 3);
        a3.prove();
        assert!(
            gate.admit(ip(1)).is_none(),
            "only proven ones left: refused"
        );
        drop(a1);
        assert_eq!(gate.open(), 3, "an evicted permit is not released twice");
        drop((a2, a3, b));
        assert_eq!(gate.open(), 0);
    }

    #[test]
    fn total_cap_and_unix_sockets() {
        let gate = Gate::new(Caps {
            total: 2,
            per_ip: 0,
        });
        let u = gate.admit(None).unwrap();
        u.prove();
        let a = gate.admit(ip(1)).unwrap();
        let b = gate.admit(ip(1)).unwrap();
        assert!(a.evicted_already());
        b.prove();
        assert!(gate.admit(ip(3)).is_none());
        assert!(!gate.evict_any());
        drop((u, a, b));
        assert_eq!(gate.open(), 0);
    }
}
