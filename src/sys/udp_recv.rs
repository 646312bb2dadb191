//! recvmmsg(2): the datagrams waiting on a UDP socket, several in one system call, into
//! buffers reused from call to call. Linux only.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Room for one datagram: larger than any packet a WebRTC peer sends on a 1500-byte MTU.
pub const SLOT: usize = 2048;
/// Most datagrams one call takes.
pub const MAX_SLOTS: usize = 32;

/// Reusable room for up to `slots` datagrams and their senders.
pub struct RecvBatch {
    storage: Box<[u8]>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
    from: Vec<Option<SocketAddr>>,
    count: usize,
}

impl RecvBatch {
    pub fn new(slots: usize) -> RecvBatch {
        let slots = slots.clamp(1, MAX_SLOTS);
        RecvBatch {
            storage: vec![0u8; slots * SLOT].into_boxed_slice(),
            // SAFETY: all-zero is a valid sockaddr_storage.
            addrs: vec![unsafe { std::mem::zeroed() }; slots],
            lens: vec![0; slots],
            from: vec![None; slots],
            count: 0,
        }
    }

    /// Datagrams the last [`recv_batch`] got.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Datagram `i` of the last call and who sent it (`None`: not an IP address).
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let start = i * SLOT;
        (
            &self.storage[start..start + self.lens[i].min(SLOT)],
            self.from[i],
        )
    }
}

/// Receive what is waiting on `socket` without blocking, up to `max` datagrams and the
/// batch's room; the count (0 never: nothing waiting is `WouldBlock`). Longer datagrams
/// are cut at [`SLOT`].
pub fn recv_batch(socket: BorrowedFd<'_>, batch: &mut RecvBatch, max: usize) -> io::Result<usize> {
    let slots = batch.lens.len().min(MAX_SLOTS).min(max.max(1));
    // SAFETY: all-zero is a valid value of these plain C structures.
    let mut iovs: [libc::iovec; MAX_SLOTS] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut headers: [libc::mmsghdr; MAX_SLOTS] = unsafe { std::mem::zeroed() };
    let chunks = batch.storage.chunks_exact_mut(SLOT);
    for (((chunk, iov), msg), addr) in chunks
        .zip(iovs.iter_mut())
        .zip(headers.iter_mut())
        .zip(batch.addrs.iter_mut())
        .take(slots)
    {
        iov.iov_base = chunk.as_mut_ptr().cast();
        iov.iov_len = SLOT;
        msg.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
        msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `slots` headers each point at one iovec over its own SLOT bytes
    // of `storage` and at its own address room, all alive and unaliased for the call.
    let got = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            slots as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    batch.count = 0;
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = (got as usize).min(slots);
    for (i, msg) in headers.iter().take(got).enumerate() {
        batch.lens[i] = msg.msg_len as usize;
        batch.from[i] = socket_addr(&batch.addrs[i]);
    }
    batch.count = got;
    Ok(got)
}

fn socket_addr(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in when the family says so;
            // sockaddr_storage is large and aligned enough for it.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn waiting_datagrams_come_in_one_call_with_their_sender() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = RecvBatch::new(4);
        let empty = recv_batch(rx.as_fd(), &mut batch, 4).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        for n in 1..=3u8 {
            tx.send_to(&vec![n; usize::from(n) * 100], rx.local_addr().unwrap())
                .unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 3 {
            match recv_batch(rx.as_fd(), &mut batch, 4) {
                Ok(n) => got.extend((0..n).map(|i| {
                    let (data, from) = batch.get(i);
                    (data.to_vec(), from)
                })),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        for (i, (data, from)) in got.iter().enumerate() {
            assert_eq!(data.len(), (i + 1) * 100);
            assert!(data.iter().all(|b| usize::from(*b) == i + 1));
            assert_eq!(*from, Some(tx.local_addr().unwrap()));
        }
    }
}
