//! Sending many datagrams to many addresses from one socket. On Linux they leave in
//! batches through sendmmsg(2), one system call for up to 64 messages, which is what
//! fan-out to hundreds of viewers needs; elsewhere one send per packet.
//!
//! Runs of equal-sized datagrams to one address (the middle fragments of a picture for
//! one viewer) go as a single UDP GSO message (UDP_SEGMENT): the kernel walks its send
//! path once per run instead of once per datagram, which is where most of the fan-out's
//! time went. Where the kernel refuses GSO, it is switched off and sends go one by one.

use std::io;
use std::net::SocketAddr;
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};

use super::engine_socket::EngineSocket;
use bytes::BytesMut;

#[cfg(target_os = "linux")]
use crate::sys;

/// What [`send_all`] handed to the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub datagrams: u64,
    pub bytes: u64,
}

/// Put every queued datagram on the wire, waiting while the socket buffer is full.
/// A datagram the kernel refuses (unreachable address, too big) is logged and dropped.
pub async fn send_all(socket: &EngineSocket, out: &mut Vec<(SocketAddr, BytesMut)>) -> Sent {
    let mut next = 0;
    let mut total = Sent::default();
    while next < out.len() {
        match try_send_batch(socket, &out[next..]) {
            // 0: GSO was just switched off; the same datagrams go again without it.
            Ok(sent) => {
                total.datagrams += sent as u64;
                total.bytes += out[next..next + sent]
                    .iter()
                    .map(|(_, d)| d.len() as u64)
                    .sum::<u64>();
                next += sent;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    break;
                }
            }
            Err(e) => {
                // The call fails only when its first datagram does: skip that one.
                tracing::debug!(to = %out[next].0, error = %e, "UDP send");
                next += 1;
            }
        }
    }
    out.clear();
    total
}

/// Most datagrams in one GSO message (the kernel's UDP_MAX_SEGMENTS is 64 or more), and
/// the most bytes (a GSO message is still one UDP datagram to the kernel).
#[cfg(target_os = "linux")]
const MAX_SEGMENTS: usize = 64;
#[cfg(target_os = "linux")]
const MAX_GSO_BYTES: usize = 65_000;

/// Cleared for good the first time the kernel rejects a GSO message.
#[cfg(target_os = "linux")]
static GSO_ENABLED: AtomicBool = AtomicBool::new(true);

/// How many datagrams from the start of `batch` can leave as one message: a run to the
/// same address, all of the first one's size except possibly a shorter last one.
#[cfg(target_os = "linux")]
fn gso_run(batch: &[(SocketAddr, BytesMut)]) -> usize {
    let Some((to, first)) = batch.first() else {
        return 0;
    };
    let size = first.len();
    if size == 0 || !GSO_ENABLED.load(Ordering::Relaxed) {
        return 1;
    }
    let limit = MAX_SEGMENTS.min(MAX_GSO_BYTES / size).max(1);
    let mut n = 1;
    while n < batch.len().min(limit) {
        let (addr, data) = &batch[n];
        if addr != to || data.len() > size || data.is_empty() {
            break;
        }
        n += 1;
        if data.len() < size {
            break; // a shorter datagram can only end the run
        }
    }
    n
}

#[cfg(target_os = "linux")]
fn try_send_batch(socket: &EngineSocket, batch: &[(SocketAddr, BytesMut)]) -> io::Result<usize> {
    use std::os::fd::AsFd;

    use sys::udp::{MAX_DATAGRAMS, MAX_MESSAGES};

    // Datagrams carried by each message. A run is never split between two calls: each
    // part would be a message of its own, and messages are what the kernel pays for.
    let mut runs = [0usize; MAX_MESSAGES];
    let (mut used, mut n) = (0, 0);
    while used < batch.len() && n < MAX_MESSAGES {
        let run = gso_run(&batch[used..]);
        if used + run > MAX_DATAGRAMS {
            break;
        }
        runs[n] = run;
        used += run;
        n += 1;
    }
    let (batch, runs) = (&batch[..used], &runs[..n]);
    let result = sys::udp::sendmmsg(socket.as_fd(), batch, runs);
    match result {
        Ok(sent) => Ok(runs[..sent.min(n)].iter().sum()),
        Err(e) if runs[0] > 1 && sys::udp::gso_refused(&e) => {
            tracing::info!(error = %e, "UDP GSO refused by the kernel; sending datagrams one by one");
            GSO_ENABLED.store(false, Ordering::Relaxed);
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn try_send_batch(socket: &EngineSocket, batch: &[(SocketAddr, BytesMut)]) -> io::Result<usize> {
    let (to, data) = &batch[0];
    socket.try_send_to(data, *to).map(|_| 1)
}

#[cfg(test)]
mod tests {
    use tokio::net::UdpSocket;

    use super::*;

    /// An engine's sending socket on `addr`, and that address.
    fn engine_sender(addr: &str) -> std::io::Result<(EngineSocket, SocketAddr)> {
        let socket = std::net::UdpSocket::bind(addr)?;
        let local = socket.local_addr()?;
        Ok((EngineSocket::sending(socket)?, local))
    }

    #[tokio::test]
    async fn batches_reach_every_address_in_order() {
        let (sender, sender_addr) = engine_sender("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("[::1]:0").await;
        let sender6 = engine_sender("[::1]:0");
        let mut out = Vec::new();
        for i in 0..150u8 {
            out.push((a.local_addr().unwrap(), BytesMut::from(&[i, 1, 2][..])));
        }
        let sent = send_all(&sender, &mut out).await;
        assert!(out.is_empty());
        assert_eq!(
            sent,
            Sent {
                datagrams: 150,
                bytes: 450
            }
        );
        let mut buf = [0u8; 16];
        for i in 0..150u8 {
            let (n, from) = a.recv_from(&mut buf).await.unwrap();
            assert_eq!((&buf[..n], from), (&[i, 1, 2][..], sender_addr));
        }
        // IPv6 too, where the machine has it.
        if let (Ok(b), Ok((sender6, _))) = (b, sender6) {
            let mut out = vec![(b.local_addr().unwrap(), BytesMut::from(&b"v6"[..]))];
            send_all(&sender6, &mut out).await;
            let (n, _) = b.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"v6");
        }
    }

    #[tokio::test]
    async fn long_runs_to_many_addresses_arrive_whole_and_in_order() {
        // 3 × 40 datagrams: more than one call's worth of datagrams, runs never split.
        let (sender, _) = engine_sender("127.0.0.1:0").unwrap();
        let mut receivers = Vec::new();
        for _ in 0..3 {
            receivers.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        let mut out = Vec::new();
        for (r, socket) in receivers.iter().enumerate() {
            for i in 0..40u8 {
                let len = if i == 39 { 300 } else { 1000 };
                let to = socket.local_addr().unwrap();
                out.push((to, BytesMut::from(&vec![r as u8 * 100 + i; len][..])));
            }
        }
        let sent = send_all(&sender, &mut out).await;
        assert_eq!(sent.datagrams, 120);
        let mut buf = [0u8; 2048];
        for (r, socket) in receivers.iter().enumerate() {
            for i in 0..40u8 {
                let (n, _) = socket.recv_from(&mut buf).await.unwrap();
                assert_eq!(n, if i == 39 { 300 } else { 1000 }, "{r}/{i}");
                assert!(buf[..n].iter().all(|&x| x == r as u8 * 100 + i), "{r}/{i}");
            }
        }
    }

    #[tokio::test]
    async fn runs_of_mixed_sizes_and_addresses_arrive_as_sent() {
        let (sender, _) = engine_sender("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // Equal runs, a shorter datagram ending one, a longer one starting the next, and
        // another address in between.
        let plan: [(SocketAddr, usize); 9] = [
            (to_a, 1200),
            (to_a, 1200),
            (to_a, 1200),
            (to_a, 500),
            (to_a, 1200),
            (to_a, 1300),
            (to_b, 1200),
            (to_a, 1200),
            (to_a, 1200),
        ];
        let mut out: Vec<_> = plan
            .iter()
            .enumerate()
            .map(|(i, (to, len))| (*to, BytesMut::from(&vec![i as u8; *len][..])))
            .collect();
        send_all(&sender, &mut out).await;
        let mut buf = [0u8; 2048];
        for (i, (to, len)) in plan.iter().enumerate() {
            let socket = if *to == to_a { &a } else { &b };
            let (n, _) = socket.recv_from(&mut buf).await.unwrap();
            assert_eq!(n, *len, "datagram {i}");
            assert!(buf[..n].iter().all(|&x| x == i as u8), "datagram {i}");
        }
    }
}
