//! With several engine shards on one UDP port, one task reads the socket and hands each
//! datagram to the shard holding its peer: STUN checks by the ufrag they name, the rest
//! by the address they come from. Shards tell the table their ufrags when they make
//! peers and the addresses their router binds after a check it authenticated, so an
//! address reaches a shard only the way it reaches a peer. What no shard claims goes to
//! the first one, whose router refuses it (and counts it) as a single engine would.
//!
//! Only what viewers send (STUN, DTLS, RTCP) comes this way; the pictures, the bulk of
//! the traffic, leave from each shard's own handle on the socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::demux;
use crate::sys::udp_recv::{recv_batch, RecvBatch, MAX_SLOTS};
use crate::sys::udp_registration::register;

/// Datagrams waiting for one shard; beyond that they are dropped (the viewer sends its
/// checks and reports again).
pub const SHARD_QUEUE: usize = 1024;

/// A datagram handed to a shard: where it came from and its bytes.
pub type Incoming = (SocketAddr, Bytes);

/// Which shard holds which ufrag and which remote address.
#[derive(Default)]
pub struct Steering {
    ufrags: Mutex<HashMap<String, usize>>,
    addrs: RwLock<HashMap<SocketAddr, usize>>,
}

impl Steering {
    pub fn add_ufrag(&self, ufrag: &str, shard: usize) {
        if let Ok(mut map) = self.ufrags.lock() {
            map.insert(ufrag.to_string(), shard);
        }
    }

    pub fn remove_ufrag(&self, ufrag: &str, shard: usize) {
        if let Ok(mut map) = self.ufrags.lock() {
            if map.get(ufrag) == Some(&shard) {
                map.remove(ufrag);
            }
        }
    }

    /// `addr` is bound to a peer of `shard` (by a check its router authenticated).
    pub fn bind_addr(&self, addr: SocketAddr, shard: usize) {
        if let Ok(mut map) = self.addrs.write() {
            map.insert(addr, shard);
        }
    }

    /// `shard` forgot `addr`; another shard's later binding of it stays.
    pub fn forget_addr(&self, addr: SocketAddr, shard: usize) {
        if let Ok(mut map) = self.addrs.write() {
            if map.get(&addr) == Some(&shard) {
                map.remove(&addr);
            }
        }
    }

    /// Forget everything `shard` claimed: it restarted without its peers, and their
    /// addresses must not keep pulling datagrams to it.
    pub fn forget_shard(&self, shard: usize) {
        if let Ok(mut map) = self.ufrags.lock() {
            map.retain(|_, s| *s != shard);
        }
        if let Ok(mut map) = self.addrs.write() {
            map.retain(|_, s| *s != shard);
        }
    }

    /// The shard a datagram from `from` goes to.
    pub fn shard_for(&self, from: SocketAddr, data: &[u8]) -> usize {
        if let Some(shard) = self.addrs.read().ok().and_then(|m| m.get(&from).copied()) {
            return shard;
        }
        demux::stun_local_ufrag(data)
            .and_then(|ufrag| self.ufrags.lock().ok()?.get(ufrag).copied())
            .unwrap_or(0)
    }
}

/// Batches read in a row before the task yields to the runtime's other tasks.
const BATCHES_PER_TURN: usize = 8;

/// Read `socket` and hand each datagram to its shard's queue, until the shards are gone.
///
/// The socket is registered for reading only. The shards send on the same socket, and
/// every datagram the kernel releases makes it writable again: registered for that too
/// (as `tokio::net::UdpSocket` always is), this task's runtime would wake once per
/// send for nothing. What is waiting is read in batches (`recvmmsg`) until none is left.
pub async fn steer(
    socket: std::net::UdpSocket,
    steering: Arc<Steering>,
    shards: Vec<mpsc::Sender<Incoming>>,
) {
    let Some(first) = shards.first().cloned() else {
        return;
    };
    let socket = match register(socket, tokio::io::Interest::READABLE) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!(error = %e, "WebRTC datagram steering has no socket");
            return;
        }
    };
    let mut batch = RecvBatch::new(MAX_SLOTS);
    loop {
        let mut ready = tokio::select! {
            ready = socket.readable() => match ready {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::error!(error = %e, "WebRTC datagram steering stopped");
                    return;
                }
            },
            // The shards stop together (shutdown, or every handle dropped).
            _ = first.closed() => break,
        };
        let mut drained = false;
        for _ in 0..BATCHES_PER_TURN {
            match ready.try_io(|fd| recv_batch(fd.as_fd(), &mut batch, MAX_SLOTS)) {
                Ok(Ok(_)) => hand_out(&batch, &steering, &shards),
                // ICMP errors (a viewer went away) surface here; not fatal.
                Ok(Err(e)) => tracing::debug!(error = %e, "UDP receive"),
                Err(_would_block) => {
                    drained = true; // and the readiness cleared
                    break;
                }
            }
        }
        drop(ready);
        if !drained {
            tokio::task::yield_now().await; // more waiting: let the other tasks run first
        }
    }
    tracing::debug!("WebRTC datagram steering stopped");
}

/// Each datagram of `batch` to its shard's queue; dropped when that queue is full.
fn hand_out(batch: &RecvBatch, steering: &Steering, shards: &[mpsc::Sender<Incoming>]) {
    for i in 0..batch.len() {
        let (data, from) = batch.get(i);
        let Some(from) = from else {
            continue;
        };
        let shard = steering.shard_for(from, data);
        let Some(queue) = shards.get(shard) else {
            continue;
        };
        if queue
            .try_send((from, Bytes::copy_from_slice(data)))
            .is_err()
        {
            tracing::debug!(shard, %from, "shard busy: datagram dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_go_by_ufrag_and_the_rest_by_bound_address() {
        let steering = Steering::default();
        steering.add_ufrag("abcd", 2);
        let from = SocketAddr::from(([127, 0, 0, 1], 50000));
        let check = demux::signed_binding_request("abcd:remote", Some(b"pwd"));
        assert_eq!(steering.shard_for(from, &check), 2);
        assert_eq!(
            steering.shard_for(from, &[0x16; 40]),
            0,
            "unbound: first shard"
        );
        steering.bind_addr(from, 2);
        assert_eq!(steering.shard_for(from, &[0x16; 40]), 2);
        // A shard forgetting an address another shard has bound since leaves it.
        steering.forget_addr(from, 1);
        assert_eq!(steering.shard_for(from, &[0x16; 40]), 2);
        steering.forget_addr(from, 2);
        steering.remove_ufrag("abcd", 2);
        assert_eq!(steering.shard_for(from, &check), 0);
        // A shard that restarted claims nothing any more.
        steering.add_ufrag("abcd", 1);
        steering.bind_addr(from, 1);
        steering.forget_shard(1);
        assert_eq!(steering.shard_for(from, &check), 0);
    }
}
