//! An engine shard's handle on the shared UDP socket. Sends go out through a descriptor
//! no runtime watches: registered for writability, as `tokio::net::UdpSocket` always is,
//! every shard's runtime would be woken each time the kernel releases a datagram any
//! shard sent, hundreds of thousands of times a second. Writability is waited for only
//! when the kernel's buffer is full, through a registration made for that wait. Only a
//! shard that reads the socket itself (the only one) registers it, for reading.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::sys::udp_registration::register;

pub struct EngineSocket {
    /// Non-blocking, unregistered: what the sends go through.
    socket: UdpSocket,
    /// The same socket registered for reading, when this shard reads it.
    reader: Option<AsyncFd<UdpSocket>>,
}

impl EngineSocket {
    /// A shard that reads `socket` itself, as well as sending on it. On a runtime.
    pub fn reading(socket: UdpSocket) -> io::Result<EngineSocket> {
        socket.set_nonblocking(true)?;
        let reader = register(socket.try_clone()?, Interest::READABLE)?;
        Ok(EngineSocket {
            socket,
            reader: Some(reader),
        })
    }

    /// A shard that only sends: its datagrams are read and steered to it elsewhere.
    pub fn sending(socket: UdpSocket) -> io::Result<EngineSocket> {
        socket.set_nonblocking(true)?;
        Ok(EngineSocket {
            socket,
            reader: None,
        })
    }

    /// The next datagram; never, for a shard that only sends.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match &self.reader {
            Some(reader) => {
                reader
                    .async_io(Interest::READABLE, |s| s.recv_from(buf))
                    .await
            }
            None => std::future::pending().await,
        }
    }

    /// Wait until the kernel takes datagrams again (after a send that would block).
    pub async fn writable(&self) -> io::Result<()> {
        // Registered for this wait only; dropped, it is deregistered. A socket with room
        // already is reported writable at once.
        let waiter = register(self.socket.try_clone()?, Interest::WRITABLE)?;
        waiter.writable().await?.retain_ready();
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
impl EngineSocket {
    pub fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.socket.send_to(data, to)
    }
}

impl AsFd for EngineSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    #[tokio::test]
    async fn a_reading_shard_gets_datagrams_and_a_sending_one_sees_room() {
        let std_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = std_socket.local_addr().unwrap();
        let reading = EngineSocket::reading(std_socket.try_clone().unwrap()).unwrap();
        let sending = EngineSocket::sending(std_socket).unwrap();
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        peer.send_to(b"check", addr).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = reading.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"check"[..], peer.local_addr().unwrap())
        );
        // An empty buffer is room: the wait ends at once.
        sending.writable().await.unwrap();
        // A sending shard never reads the socket, even with a datagram waiting there.
        peer.send_to(b"again", addr).await.unwrap();
        reading
            .reader
            .as_ref()
            .unwrap()
            .readable()
            .await
            .unwrap()
            .retain_ready();
        let mut read = std::pin::pin!(sending.recv_from(&mut buf));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            read.as_mut().poll(&mut cx).is_pending(),
            "a sending shard read"
        );
    }
}
