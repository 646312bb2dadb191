//! A UDP socket registered with tokio's reactor for only the readiness its task waits
//! for. `tokio::net::UdpSocket` always registers for reading and writing; a socket that
//! sends hundreds of thousands of datagrams a second becomes writable again each time
//! the kernel releases one, and each of those edges wakes a runtime registered for it.

use std::io;
use std::net::UdpSocket;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// `socket`, non-blocking, registered with the current runtime for `interest` only.
/// Must be called on a runtime.
pub fn register(socket: UdpSocket, interest: Interest) -> io::Result<AsyncFd<UdpSocket>> {
    socket.set_nonblocking(true)?;
    // SAFETY: a `std::net::UdpSocket` owns its descriptor and returns the same one from
    // `as_raw_fd` until it is dropped, which happens only with the `AsyncFd`.
    unsafe { AsyncFd::register_with_interest(socket, interest) }.map_err(|e| e.into_parts().1)
}
