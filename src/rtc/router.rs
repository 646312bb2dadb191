//! Which peer a datagram on the shared UDP socket is for: by its remote address once
//! that is bound to a peer, before that by the ICE ufrag in a STUN check signed with
//! the peer's password (see [`demux`]). Plain lookups, no I/O.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::steering::Steering;
use super::{demux, peer, PeerId};
use crate::access::IpList;

/// Remote addresses one peer may be reached from (a browser checks from each of its
/// interfaces); more would only be someone spoofing sources with the viewer's password.
pub const MAX_ADDRS_PER_PEER: usize = 16;

/// Why a datagram reaches no peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unrouted {
    /// From an address `--allow-ip` leaves out.
    NotAllowed,
    /// A valid check, but its peer has [`MAX_ADDRS_PER_PEER`] addresses already.
    TooManyAddresses,
    /// From an unknown address and not a check signed for one of our peers.
    NotAuthenticated,
    /// From a known address, but neither STUN, DTLS nor RTP.
    NotWebrtc,
}

impl Unrouted {
    pub fn as_str(self) -> &'static str {
        match self {
            Unrouted::NotAllowed => "address not allowed (--allow-ip)",
            Unrouted::TooManyAddresses => "viewer has too many addresses",
            Unrouted::NotAuthenticated => "not a viewer's authenticated check",
            Unrouted::NotWebrtc => "neither STUN, DTLS nor RTP",
        }
    }
}

/// A peer's ICE credentials and the addresses bound to it.
struct Route {
    ufrag: String,
    /// Our ICE password: the key of the checks that bind an address to this peer.
    pwd: String,
    addrs: Vec<SocketAddr>,
}

#[derive(Default)]
pub struct Router {
    routes: HashMap<PeerId, Route>,
    by_ufrag: HashMap<String, PeerId>,
    by_addr: HashMap<SocketAddr, PeerId>,
    /// With several engine shards: the steering table told of every ufrag and address
    /// this router (shard number `.1`) takes or drops.
    steering: Option<(Arc<Steering>, usize)>,
}

impl Router {
    /// The router of one of several shards: what it routes, it also claims in
    /// `steering` for the shard `shard`.
    pub fn steered(steering: Arc<Steering>, shard: usize) -> Router {
        Router {
            steering: Some((steering, shard)),
            ..Router::default()
        }
    }

    /// Fresh ICE credentials for a new peer: a ufrag no current peer has, and a password.
    pub fn new_credentials(&self) -> (String, String) {
        let mut ufrag = peer::ice_token(16);
        while self.by_ufrag.contains_key(&ufrag) {
            ufrag = peer::ice_token(16);
        }
        (ufrag, peer::ice_token(32))
    }

    pub fn add(&mut self, id: PeerId, ufrag: String, pwd: String) {
        if let Some((steering, shard)) = &self.steering {
            steering.add_ufrag(&ufrag, *shard);
        }
        self.by_ufrag.insert(ufrag.clone(), id);
        self.routes.insert(
            id,
            Route {
                ufrag,
                pwd,
                addrs: Vec::new(),
            },
        );
    }

    /// A peer's new ICE credentials after an ICE restart: checks must name the new
    /// ufrag (the stack forgot the old one). Addresses bound already stay bound: they
    /// were authenticated, and the media goes on over them. `false` (nothing changed)
    /// for an unknown peer or a ufrag another peer has.
    pub fn set_credentials(&mut self, id: PeerId, ufrag: String, pwd: String) -> bool {
        if self.by_ufrag.get(&ufrag).is_some_and(|other| *other != id) {
            return false;
        }
        let Some(route) = self.routes.get_mut(&id) else {
            return false;
        };
        self.by_ufrag.remove(&route.ufrag);
        self.by_ufrag.insert(ufrag.clone(), id);
        if let Some((steering, shard)) = &self.steering {
            steering.remove_ufrag(&route.ufrag, *shard);
            steering.add_ufrag(&ufrag, *shard);
        }
        route.ufrag = ufrag;
        route.pwd = pwd;
        true
    }

    /// Forget a peer, its ufrag and its addresses.
    pub fn remove(&mut self, id: PeerId) {
        let Some(route) = self.routes.remove(&id) else {
            return;
        };
        self.by_ufrag.remove(&route.ufrag);
        for addr in &route.addrs {
            if self.by_addr.get(addr) == Some(&id) {
                self.by_addr.remove(addr);
            }
        }
        if let Some((steering, shard)) = &self.steering {
            steering.remove_ufrag(&route.ufrag, *shard);
            for addr in &route.addrs {
                steering.forget_addr(*addr, *shard);
            }
        }
    }

    /// The peer a datagram from `from` is for. An address is bound to a peer only by a
    /// STUN check carrying its ufrag and a MESSAGE-INTEGRITY made with its password, so
    /// nobody but the viewer (who got both in the offer) can make the engine route,
    /// answer or keep state for an address; everything else from unknown addresses is
    /// refused here.
    pub fn route(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        allow: &IpList,
    ) -> Result<PeerId, Unrouted> {
        let id = match self.by_addr.get(&from) {
            Some(id) => *id,
            // Before the HMAC: a refused address costs a lookup, not a digest.
            None if !allow.allows(from.ip()) => return Err(Unrouted::NotAllowed),
            None => {
                let id = self
                    .authenticated_peer(data)
                    .ok_or(Unrouted::NotAuthenticated)?;
                let route = self.routes.get_mut(&id).ok_or(Unrouted::NotAuthenticated)?;
                if route.addrs.len() >= MAX_ADDRS_PER_PEER {
                    return Err(Unrouted::TooManyAddresses);
                }
                route.addrs.push(from);
                self.by_addr.insert(from, id);
                if let Some((steering, shard)) = &self.steering {
                    steering.bind_addr(from, *shard);
                }
                id
            }
        };
        if !demux::is_webrtc(data) {
            return Err(Unrouted::NotWebrtc);
        }
        Ok(id)
    }

    /// The peer a STUN binding request is for, if it names the peer's ufrag and its
    /// MESSAGE-INTEGRITY checks out with the peer's password.
    fn authenticated_peer(&self, data: &[u8]) -> Option<PeerId> {
        let id = *self.by_ufrag.get(demux::stun_local_ufrag(data)?)?;
        let route = self.routes.get(&id)?;
        demux::stun_request_authentic(data, route.pwd.as_bytes()).then_some(id)
    }

    /// The peer's local ICE password (the current one, after an ICE restart).
    pub fn ice_pwd(&self, id: PeerId) -> Option<&str> {
        self.routes.get(&id).map(|r| r.pwd.as_str())
    }

    /// The peer bound to `addr`, if any.
    #[cfg(test)]
    pub fn peer_at(&self, addr: SocketAddr) -> Option<PeerId> {
        self.by_addr.get(&addr).copied()
    }

    /// Whether nothing is routed any more (no ufrag, no address).
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.by_ufrag.is_empty() && self.by_addr.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router_with_peer(id: PeerId) -> (Router, String, String) {
        let mut router = Router::default();
        let (ufrag, pwd) = router.new_credentials();
        router.add(id, ufrag.clone(), pwd.clone());
        (router, ufrag, pwd)
    }

    #[test]
    fn stun_from_a_new_address_routes_by_ufrag_and_is_forgotten_on_remove() {
        let (mut router, ufrag, pwd) = router_with_peer(7);
        let allow = IpList::default();
        let username = format!("{ufrag}:remote");
        let from = SocketAddr::from(([127, 0, 0, 1], 50000));
        // The ufrag alone, or the wrong password, binds nothing.
        let unsigned = demux::signed_binding_request(&username, None);
        assert_eq!(
            router.route(from, &unsigned, &allow),
            Err(Unrouted::NotAuthenticated)
        );
        let forged = demux::signed_binding_request(&username, Some(b"guessed"));
        assert_eq!(
            router.route(from, &forged, &allow),
            Err(Unrouted::NotAuthenticated)
        );
        assert_eq!(router.peer_at(from), None);
        let signed = demux::signed_binding_request(&username, Some(pwd.as_bytes()));
        assert_eq!(router.route(from, &signed, &allow), Ok(7));
        assert_eq!(router.peer_at(from), Some(7));
        // Once bound, the address routes without a check; garbage from it is refused.
        assert_eq!(router.route(from, &[0x80; 20], &allow), Ok(7));
        assert_eq!(
            router.route(from, &[0xff; 64], &allow),
            Err(Unrouted::NotWebrtc)
        );
        // A viewer's addresses are capped.
        for port in 1..=100 {
            let other = SocketAddr::from(([127, 0, 0, 1], port));
            let _ = router.route(other, &signed, &allow);
        }
        let bound = (1..=100)
            .filter(|port| {
                router
                    .peer_at(SocketAddr::from(([127, 0, 0, 1], *port)))
                    .is_some()
            })
            .count();
        assert_eq!(bound + 1, MAX_ADDRS_PER_PEER);
        router.remove(7);
        assert!(router.is_empty());
    }

    #[test]
    fn checks_from_addresses_not_allowed_are_ignored() {
        let (mut router, ufrag, pwd) = router_with_peer(3);
        let allow = IpList::parse(&["127.0.0.1".to_string()], "allow_ip").unwrap();
        let signed =
            demux::signed_binding_request(&format!("{ufrag}:remote"), Some(pwd.as_bytes()));
        let outsider = SocketAddr::from(([127, 0, 0, 2], 50000));
        assert_eq!(
            router.route(outsider, &signed, &allow),
            Err(Unrouted::NotAllowed),
            "a signed check is not enough"
        );
        assert_eq!(router.peer_at(outsider), None);
        let allowed = SocketAddr::from(([127, 0, 0, 1], 50000));
        assert_eq!(router.route(allowed, &signed, &allow), Ok(3));
    }

    #[test]
    fn after_an_ice_restart_only_the_new_credentials_bind_addresses() {
        let (mut router, old_ufrag, old_pwd) = router_with_peer(5);
        let (other_ufrag, other_pwd) = router.new_credentials();
        router.add(6, other_ufrag.clone(), other_pwd);
        let allow = IpList::default();
        let bound = SocketAddr::from(([127, 0, 0, 1], 40000));
        let old =
            demux::signed_binding_request(&format!("{old_ufrag}:r"), Some(old_pwd.as_bytes()));
        assert_eq!(router.route(bound, &old, &allow), Ok(5));
        assert!(!router.set_credentials(5, other_ufrag, "x".into()), "taken");
        assert!(
            !router.set_credentials(9, "fresh".into(), "x".into()),
            "unknown"
        );
        assert!(router.set_credentials(5, "freshufrag".into(), "freshpwd".into()));
        let elsewhere = SocketAddr::from(([127, 0, 0, 1], 40001));
        assert_eq!(
            router.route(elsewhere, &old, &allow),
            Err(Unrouted::NotAuthenticated)
        );
        let new = demux::signed_binding_request("freshufrag:r", Some(b"freshpwd"));
        assert_eq!(router.route(elsewhere, &new, &allow), Ok(5));
        assert_eq!(
            router.route(bound, &[0x80; 20], &allow),
            Ok(5),
            "still bound"
        );
        router.remove(5);
        router.remove(6);
        assert!(router.is_empty());
    }

    #[test]
    fn new_credentials_never_repeat_a_current_ufrag() {
        let mut router = Router::default();
        let mut seen = std::collections::HashSet::new();
        for id in 0..100 {
            let (ufrag, pwd) = router.new_credentials();
            assert_eq!((ufrag.len(), pwd.len()), (16, 32));
            assert!(seen.insert(ufrag.clone()));
            router.add(id, ufrag, pwd);
        }
    }
}
