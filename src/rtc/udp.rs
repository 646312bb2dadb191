//! Sending many datagrams to many addresses from one socket. On Linux they leave in
//! batches through sendmmsg(2), one system call for up to [`BATCH`] packets, which is
//! what fan-out to hundreds of viewers needs; elsewhere one send per packet.

use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::net::UdpSocket;

/// Datagrams per sendmmsg call (the kernel caps a call at UIO_MAXIOV = 1024).
pub const BATCH: usize = 64;

/// Put every queued datagram on the wire, waiting while the socket buffer is full.
/// A datagram the kernel refuses (unreachable address, too big) is logged and dropped.
pub async fn send_all(socket: &UdpSocket, out: &mut Vec<(SocketAddr, BytesMut)>) {
    let mut next = 0;
    while next < out.len() {
        let end = (next + BATCH).min(out.len());
        match try_send_batch(socket, &out[next..end]) {
            Ok(sent) => next += sent.max(1),
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
}

/// Room for one destination address, IPv4 or IPv6; far smaller than `sockaddr_storage`.
#[cfg(target_os = "linux")]
#[repr(C)]
union SockAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

#[cfg(target_os = "linux")]
fn try_send_batch(socket: &UdpSocket, batch: &[(SocketAddr, BytesMut)]) -> io::Result<usize> {
    use std::mem::MaybeUninit;
    use std::os::fd::AsRawFd;

    // Only the entries used are written: zeroing whole arrays on every call cost more than
    // filling them (a few hundred instructions per datagram).
    let mut addrs = [const { MaybeUninit::<SockAddr>::uninit() }; BATCH];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; BATCH];
    let mut msgs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; BATCH];
    let n = batch.len().min(BATCH);
    for (i, (to, data)) in batch.iter().take(n).enumerate() {
        let (addr, len) = sockaddr(to);
        let addr = addrs[i].write(addr);
        let iov = iovs[i].write(libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        });
        // SAFETY: mmsghdr is plain data; all-zero is a valid value.
        let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
        msg.msg_hdr.msg_name = addr as *mut SockAddr as *mut libc::c_void;
        msg.msg_hdr.msg_namelen = len;
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
        msgs[i].write(msg);
    }
    let fd = socket.as_raw_fd();
    socket.try_io(tokio::io::Interest::WRITABLE, || {
        // SAFETY: msgs[..n] are initialized and point at addrs, iovs and the datagrams,
        // all alive for the call; the kernel only reads them.
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
    })
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
        send_all(&sender, &mut out).await;
        assert!(out.is_empty());
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
}
