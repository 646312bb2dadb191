//! sendmmsg(2) with UDP GSO: many UDP messages, to many addresses, in one system call,
//! each message one datagram or a run of equal-sized datagrams the kernel cuts apart
//! (UDP_SEGMENT). Linux only.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Most messages in one call (the kernel takes up to UIO_MAXIOV = 1024).
pub const MAX_MESSAGES: usize = 64;
/// Most datagrams in one call, all messages together.
pub const MAX_DATAGRAMS: usize = 1024;

/// Room for one destination address, IPv4 or IPv6; far smaller than `sockaddr_storage`.
#[repr(C)]
union SockAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

/// UDP_SEGMENT from linux/udp.h (not in the libc crate for glibc targets).
const UDP_SEGMENT: libc::c_int = 103;

/// Control message room for one UDP_SEGMENT (a u16), aligned as cmsghdr wants.
#[repr(C, align(8))]
struct GsoControl([u8; 32]);

/// Send `datagrams` as `runs.len()` messages: message `i` carries the next `runs[i]`
/// datagrams, to the address of the first of them; a run of more than one leaves as one
/// GSO message the kernel cuts at the first datagram's size (so the others must be that
/// size, the last one possibly shorter). Returns how many messages the kernel took: the
/// call fails only when the first one does.
///
/// Panics if there are more than [`MAX_MESSAGES`] runs, a run is empty, or the runs
/// need more datagrams than given or than [`MAX_DATAGRAMS`].
pub fn sendmmsg<D: AsRef<[u8]>>(
    socket: BorrowedFd<'_>,
    datagrams: &[(SocketAddr, D)],
    runs: &[usize],
) -> io::Result<usize> {
    assert!(runs.len() <= MAX_MESSAGES, "too many messages");
    // Only the entries used are written: zeroing whole arrays on every call cost more than
    // filling them (a few hundred instructions per datagram).
    let mut addrs = [const { MaybeUninit::<SockAddr>::uninit() }; MAX_MESSAGES];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_DATAGRAMS];
    let mut controls = [const { MaybeUninit::<GsoControl>::uninit() }; MAX_MESSAGES];
    let mut msgs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_MESSAGES];
    let mut used = 0; // datagrams placed (= iovecs written)
    for (n, &run) in runs.iter().enumerate() {
        assert!(run > 0, "an empty message");
        // Slicing checks that the runs fit in `datagrams`, the assert that they fit in
        // `iovs` (before anything points into it).
        let datagrams = &datagrams[used..used + run];
        assert!(used + run <= MAX_DATAGRAMS, "too many datagrams");
        for (i, (_, data)) in datagrams.iter().enumerate() {
            let data = data.as_ref();
            iovs[used + i].write(libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            });
        }
        let (to, first) = &datagrams[0];
        let (addr, len) = sockaddr(to);
        let addr = addrs[n].write(addr);
        // SAFETY: mmsghdr is plain data (integers and raw pointers): all-zero is a valid
        // value, and the empty message sendmmsg expects for the fields not set below.
        let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
        msg.msg_hdr.msg_name = (addr as *mut SockAddr).cast();
        msg.msg_hdr.msg_namelen = len;
        msg.msg_hdr.msg_iov = iovs[used].as_mut_ptr();
        msg.msg_hdr.msg_iovlen = run;
        if run > 1 {
            let control = controls[n].write(GsoControl([0; 32]));
            msg.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE only computes a size, which fits in the 32 bytes and
            // 8-byte alignment of `control` set just above; CMSG_FIRSTHDR then returns a
            // pointer to its start (not null, since msg_controllen covers one header),
            // and CMSG_DATA a pointer 2 bytes of which fit after that header, written
            // unaligned.
            unsafe {
                msg.msg_hdr.msg_controllen = libc::CMSG_SPACE(2) as usize;
                let cmsg = libc::CMSG_FIRSTHDR(&msg.msg_hdr);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
                let size = first.as_ref().len() as u16;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
            }
        }
        msgs[n].write(msg);
        used += run;
    }
    // SAFETY: msgs[..runs.len()] were written above (runs.len() <= MAX_MESSAGES, checked
    // on entry, and every run's iovecs lie within `iovs`, checked per run) and point into
    // addrs, iovs, controls and the datagrams, all alive and unmoved for the call; the
    // kernel only reads them (and writes msg_len, inside msgs).
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr().cast::<libc::mmsghdr>(),
            runs.len() as libc::c_uint,
            0,
        )
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// Errors that mean "no UDP GSO here" rather than a problem with the datagrams.
pub fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

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
