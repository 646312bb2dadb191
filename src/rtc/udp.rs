//! Sending many datagrams to many addresses from one socket. On Linux they leave in
//! batches through sendmmsg(2), one system call for up to [`BATCH`] packets, which is
//! what fan-out to hundreds of viewers needs; elsewhere one send per packet.
//!
//! Runs of equal-sized datagrams to one address (the middle fragments of a picture for
//! one viewer) go as a single UDP GSO message (UDP_SEGMENT): the kernel walks its send
//! path once per run instead of once per datagram, which is where most of the fan-out's
//! time went. Where the kernel refuses GSO, it is switched off and sends go one by one.

use std::io;
use std::net::SocketAddr;
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use tokio::net::UdpSocket;

/// Datagrams per sendmmsg call (the kernel caps a call at UIO_MAXIOV = 1024).
pub const BATCH: usize = 64;

/// What [`send_all`] handed to the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub datagrams: u64,
    pub bytes: u64,
}

/// Put every queued datagram on the wire, waiting while the socket buffer is full.
/// A datagram the kernel refuses (unreachable address, too big) is logged and dropped.
pub async fn send_all(socket: &UdpSocket, out: &mut Vec<(SocketAddr, BytesMut)>) -> Sent {
    let mut next = 0;
    let mut total = Sent::default();
    while next < out.len() {
        let end = (next + BATCH).min(out.len());
        match try_send_batch(socket, &out[next..end]) {
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

/// Room for one destination address, IPv4 or IPv6; far smaller than `sockaddr_storage`.
#[cfg(target_os = "linux")]
#[repr(C)]
union SockAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

/// UDP_SEGMENT from linux/udp.h (not in the libc crate for glibc targets).
#[cfg(target_os = "linux")]
const UDP_SEGMENT: libc::c_int = 103;

/// Most datagrams in one GSO message (the kernel's UDP_MAX_SEGMENTS is 64 or more), and
/// the most bytes (a GSO message is still one UDP datagram to the kernel).
#[cfg(target_os = "linux")]
const MAX_SEGMENTS: usize = 64;
#[cfg(target_os = "linux")]
const MAX_GSO_BYTES: usize = 65_000;

/// Cleared for good the first time the kernel rejects a GSO message.
#[cfg(target_os = "linux")]
static GSO_ENABLED: AtomicBool = AtomicBool::new(true);

/// Control message room for one UDP_SEGMENT (a u16), aligned as cmsghdr wants.
#[cfg(target_os = "linux")]
#[repr(C, align(8))]
struct GsoControl([u8; 32]);

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
fn try_send_batch(socket: &UdpSocket, batch: &[(SocketAddr, BytesMut)]) -> io::Result<usize> {
    use std::mem::MaybeUninit;
    use std::os::fd::AsRawFd;

    // Only the entries used are written: zeroing whole arrays on every call cost more than
    // filling them (a few hundred instructions per datagram).
    let mut addrs = [const { MaybeUninit::<SockAddr>::uninit() }; BATCH];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; BATCH];
    let mut controls = [const { MaybeUninit::<GsoControl>::uninit() }; BATCH];
    let mut msgs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; BATCH];
    // Datagrams carried by each message, to count what a partial send consumed.
    let mut carried = [0usize; BATCH];
    let batch = &batch[..batch.len().min(BATCH)];
    let mut used = 0; // datagrams placed (= iovecs used)
    let mut n = 0; // messages
    while used < batch.len() {
        let run = gso_run(&batch[used..]);
        let (to, first) = &batch[used];
        for (i, (_, data)) in batch[used..used + run].iter().enumerate() {
            iovs[used + i].write(libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            });
        }
        let (addr, len) = sockaddr(to);
        let addr = addrs[n].write(addr);
        // SAFETY: mmsghdr is plain data; all-zero is a valid value.
        let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
        msg.msg_hdr.msg_name = addr as *mut SockAddr as *mut libc::c_void;
        msg.msg_hdr.msg_namelen = len;
        msg.msg_hdr.msg_iov = iovs[used].as_mut_ptr();
        msg.msg_hdr.msg_iovlen = run;
        if run > 1 {
            let control = controls[n].write(GsoControl([0; 32]));
            msg.msg_hdr.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
            // SAFETY: CMSG_* only compute sizes and walk the buffer set just above, which
            // is large and aligned enough for one cmsghdr carrying a u16.
            unsafe {
                msg.msg_hdr.msg_controllen = libc::CMSG_SPACE(2) as usize;
                let cmsg = libc::CMSG_FIRSTHDR(&msg.msg_hdr);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, first.len() as u16);
            }
        }
        msgs[n].write(msg);
        carried[n] = run;
        used += run;
        n += 1;
    }
    let fd = socket.as_raw_fd();
    let result = socket.try_io(tokio::io::Interest::WRITABLE, || {
        // SAFETY: msgs[..n] are initialized and point at addrs, iovs, controls and the
        // datagrams, all alive for the call; the kernel only reads them.
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                msgs.as_mut_ptr() as *mut libc::mmsghdr,
                n as libc::c_uint,
                0,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(sent as usize)
        }
    });
    match result {
        Ok(sent) => Ok(carried[..sent.min(n)].iter().sum()),
        Err(e) if carried[0] > 1 && gso_refused(&e) => {
            tracing::info!(error = %e, "UDP GSO refused by the kernel; sending datagrams one by one");
            GSO_ENABLED.store(false, Ordering::Relaxed);
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

/// Errors that mean "no UDP GSO here" rather than a problem with the datagrams.
#[cfg(target_os = "linux")]
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

#[cfg(target_os = "linux")]
fn sockaddr(addr: &SocketAddr) -> (SockAddr, libc::socklen_t) {
    match addr {
        SocketAddr::V4(a) => (
            SockAddr {
                v4: libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                },
            },
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ),
        SocketAddr::V6(a) => (
            SockAddr {
                v6: libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                },
            },
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        ),
    }
}

#[cfg(not(target_os = "linux"))]
fn try_send_batch(socket: &UdpSocket, batch: &[(SocketAddr, BytesMut)]) -> io::Result<usize> {
    let (to, data) = &batch[0];
    socket.try_send_to(data, *to).map(|_| 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_reach_every_address_in_order() {
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("[::1]:0").await;
        let sender6 = UdpSocket::bind("[::1]:0").await;
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
            assert_eq!(
                (&buf[..n], from),
                (&[i, 1, 2][..], sender.local_addr().unwrap())
            );
        }
        // IPv6 too, where the machine has it.
        if let (Ok(b), Ok(sender6)) = (b, sender6) {
            let mut out = vec![(b.local_addr().unwrap(), BytesMut::from(&b"v6"[..]))];
            send_all(&sender6, &mut out).await;
            let (n, _) = b.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"v6");
        }
    }

    #[tokio::test]
    async fn runs_of_mixed_sizes_and_addresses_arrive_as_sent() {
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
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
