//! One HTTP/1.1 request on a connection of its own, on hyper's client: what the Janus
//! REST transport and a look at `/state` need. Dropping the request closes the
//! connection, as a browser aborting a fetch would.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context as TaskContext, Poll};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Largest answer read; a Janus reply is a few kilobytes.
const MAX_ANSWER: usize = 4 << 20;

/// `method path` to `authority` (`host:port`) with `body` as JSON; returns the answer's
/// status and body.
pub async fn request(
    authority: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>)> {
    let stream = TcpStream::connect(authority)
        .await
        .with_context(|| format!("connect to {authority}"))?;
    let stream = AnswerFirst {
        stream,
        write_failed: false,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP with {authority}"))?;
    let body = Bytes::copy_from_slice(body.unwrap_or_default());
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, authority)
        .header(CONNECTION, "close")
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, body.len())
        .body(Full::new(body))
        .with_context(|| format!("{method} {path} is not a request"))?;
    let exchange = async {
        let answer = sender
            .send_request(request)
            .await
            .with_context(|| format!("{authority} did not answer with HTTP"))?;
        let status = answer.status().as_u16();
        let body = Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the answer of {authority}: {e}"))?
            .to_bytes();
        Ok((status, body.to_vec()))
    };
    alongside(exchange, connection).await
}

/// Run `exchange` while driving its `connection`, until the exchange is done. The
/// connection ends on its own after the answer (or on a failure, which the exchange
/// then reports), so its own result is not needed.
pub(crate) async fn alongside<T>(
    exchange: impl Future<Output = Result<T>>,
    connection: impl Future<Output = hyper::Result<()>>,
) -> Result<T> {
    tokio::pin!(exchange, connection);
    let mut connection_ended = false;
    loop {
        tokio::select! {
            result = &mut exchange => return result,
            _ = &mut connection, if !connection_ended => connection_ended = true,
        }
    }
}

/// A connection on which a failed write does not hide the answer. A server may answer
/// (413) and close before an oversized body is written whole; what counts is the
/// answer, so once the server stops taking the request the rest of it is dropped and
/// reading goes on, as browsers do.
struct AnswerFirst {
    stream: TcpStream,
    write_failed: bool,
}

/// The peer no longer takes what is written (it closed, or reset the connection).
fn peer_stopped_reading(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

impl AsyncRead for AnswerFirst {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AnswerFirst {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write_failed {
            return Poll::Ready(Ok(buf.len()));
        }
        match ready!(Pin::new(&mut self.stream).poll_write(cx, buf)) {
            Err(e) if peer_stopped_reading(&e) => {
                self.write_failed = true;
                Poll::Ready(Ok(buf.len()))
            }
            written => Poll::Ready(written),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let all = bufs.iter().map(|b| b.len()).sum();
        if self.write_failed {
            return Poll::Ready(Ok(all));
        }
        match ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)) {
            Err(e) if peer_stopped_reading(&e) => {
                self.write_failed = true;
                Poll::Ready(Ok(all))
            }
            written => Poll::Ready(written),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        if self.write_failed {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        if self.write_failed {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that reads the request head, writes `answer` and closes, whatever is
    /// still on its way.
    async fn answer_once(answer: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                head.extend_from_slice(&buf[..n]);
            }
            socket.write_all(answer).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn after_a_reset_writes_are_dropped_and_the_answer_is_still_read() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        server.write_all(b"413").await.unwrap();
        // Closing with a zero linger resets the connection, as closing with unread
        // request bytes does.
        server.set_zero_linger().unwrap();
        drop(server);
        let mut conn = AnswerFirst {
            stream: client,
            write_failed: false,
        };
        // Writing goes on without error once the reset has arrived...
        let written = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !conn.write_failed {
                assert_eq!(conn.write(b"body").await.unwrap(), 4);
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(written.is_ok(), "the reset never showed");
        assert_eq!(conn.write(b"body").await.unwrap(), 4);
        // ...and what the server said before it is still read.
        let mut answer = [0u8; 3];
        conn.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"413");
        conn.flush().await.unwrap();
    }

    #[tokio::test]
    async fn chunked_answers_are_joined() {
        let addr = answer_once(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .await;
        let (status, body) = request(&addr, "GET", "/state", None).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"abcde"[..]));
    }

    #[tokio::test]
    async fn an_early_answer_to_an_oversized_body_is_read() {
        let addr = answer_once(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        let big = vec![b'a'; 16 << 20];
        let (status, _) = request(&addr, "POST", "/janus", Some(&big)).await.unwrap();
        assert_eq!(status, 413);
    }
}
