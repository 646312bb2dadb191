//! Serving an axum router on a listener with the protections a network-facing server
//! needs: address allow-lists (see [`crate::access`]), checked before anything else so a
//! refused client costs nothing, connection caps (see [`gate`]), a deadline for each request head (which also
//! closes idle keep-alive connections), an idle timeout while no bytes move, and an
//! accept loop that backs off instead of spinning when descriptors run out. With TLS,
//! the handshake runs in the connection's own task, within the header deadline and
//! holding its place in the gate like any connection that has sent no request yet.

pub mod gate;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};

pub use gate::{Caps, Gate, Permit};

use crate::access::PeerFilter;
use crate::ratelog::{RateLimited, PERIOD};
use crate::rejections::{self, Rejection};
use crate::tls::Tls;

static ACCEPT_FAILED: RateLimited = RateLimited::new(PERIOD);
static HANDSHAKE_FAILED: RateLimited = RateLimited::new(PERIOD);
static NOT_TLS: RateLimited = RateLimited::new(PERIOD);

/// Descriptors kept free for everything but connections (media socket, memsink,
/// ffmpeg pipes, files).
const FD_RESERVE: u64 = 64;

/// Connection limits as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// 0 for the total: as many as the open-file limit allows.
    pub caps: Caps,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            caps: Caps {
                total: 0,
                per_ip: 256,
            },
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// How connections are served; shared by every listener of the process.
#[derive(Clone)]
pub struct ConnPolicy {
    pub gate: Arc<Gate>,
    /// From accept to a complete request head, and between requests on a kept-alive
    /// connection.
    pub header_timeout: Duration,
    /// Longest time with no byte read or written before the request is answered
    /// (upgraded WebSockets have their own timeouts).
    pub idle_timeout: Duration,
    /// Addresses allowed to connect to the listener; set per listener.
    pub filter: PeerFilter,
}

impl ConnPolicy {
    /// A policy whose total cap fits the descriptors the process may open.
    pub fn new(limits: ConnLimits) -> ConnPolicy {
        let ConnLimits {
            caps,
            header_timeout,
            idle_timeout,
        } = limits;
        let budget = fd_budget();
        let total = match (caps.total, budget) {
            (0, Some(b)) => b,
            (t, Some(b)) if t > b => {
                tracing::info!(
                    max_connections = t,
                    lowered_to = b,
                    "max_connections lowered to fit the open-file limit"
                );
                b
            }
            (t, _) => t,
        };
        ConnPolicy {
            gate: Gate::new(Caps { total, ..caps }),
            header_timeout,
            idle_timeout,
            filter: PeerFilter::default(),
        }
    }

    /// The same policy (sharing its caps) for a listener with these allow-lists.
    pub fn with_filter(&self, filter: PeerFilter) -> ConnPolicy {
        ConnPolicy {
            filter,
            ..self.clone()
        }
    }
}

/// Raise the soft open-file limit to the hard one (as most servers do) and return how
/// many connections fit below it with a reserve; `None` when unlimited.
fn fd_budget() -> Option<usize> {
    let soft = crate::sys::process::raise_open_file_limit()?;
    Some(soft.saturating_sub(FD_RESERVE.min(soft / 2)).max(1) as usize)
}

/// A listener whose connections can be served.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, Option<SocketAddr>)>> + Send;
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Io, Option<SocketAddr>)> {
        let (stream, addr) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, Some(addr)))
    }
}

impl Accept for UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<(Self::Io, Option<SocketAddr>)> {
        let (stream, _) = UnixListener::accept(self).await?;
        Ok((stream, None))
    }
}

/// Serve `router` on `listener` (over TLS when `tls` is given) until `shutdown`
/// resolves; then stop accepting and let open requests finish.
pub async fn serve<L: Accept>(
    listener: L,
    router: Router,
    policy: ConnPolicy,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break,
        };
        let (io, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::ZERO;
                x
            }
            Err(e) => {
                if is_transient(&e) {
                    continue;
                }
                // Out of descriptors or memory: free one if an idle client holds it,
                // and wait before trying again rather than spinning.
                policy.gate.evict_any();
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                if let Some(n) = ACCEPT_FAILED.hit() {
                    tracing::warn!(error = %e, failures = n, "cannot accept connections");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => continue,
                    _ = &mut shutdown => break,
                }
            }
        };
        if peer.is_some_and(|a| !policy.filter.admits(a.ip())) {
            continue; // closed unread
        }
        let Some(permit) = policy.gate.admit(peer.map(|a| a.ip())) else {
            continue; // dropping `io` closes it
        };
        let timeouts = (policy.header_timeout, policy.idle_timeout);
        // The certificate in force now, even if a reload replaces it mid-handshake.
        let tls = tls.as_ref().map(|t| t.acceptor());
        let conn = serve_connection(
            io,
            peer,
            permit,
            router.clone(),
            timeouts,
            tls,
            stop_rx.clone(),
        );
        tokio::spawn(conn);
    }
    let _ = stop_tx.send(true);
    Ok(())
}

/// Errors about one connection that went away before it was accepted.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn serve_connection<I>(
    io: I,
    peer: Option<SocketAddr>,
    permit: Permit,
    router: Router,
    timeouts: (Duration, Duration),
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let permit = Arc::new(permit);
    let activity = Arc::new(Activity::new());
    let io = Tracked {
        inner: io,
        activity: activity.clone(),
        _permit: permit.clone(),
    };
    let Some(acceptor) = tls else {
        return serve_http(io, peer, permit, activity, router, timeouts, stop).await;
    };
    let handshake = tokio::time::timeout(timeouts.0, acceptor.accept(io));
    let io = tokio::select! {
        r = handshake => match r {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return handshake_failed(peer, Some(&e)),
            Err(_) => return handshake_failed(peer, None),
        },
        _ = permit.evicted() => return,
        _ = stop.wait_for(|s| *s) => return,
    };
    serve_http(io, peer, permit, activity, router, timeouts, stop).await
}

/// A client that connected to a TLS port and did not complete a handshake (`None`: in
/// time): plain HTTP, a scanner, a client that distrusts the certificate, a slow one.
fn handshake_failed(peer: Option<SocketAddr>, error: Option<&io::Error>) {
    rejections::count(Rejection::TlsHandshake);
    let peer = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
    let not_tls = error
        .and_then(|e| e.get_ref())
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            )
        });
    if not_tls {
        // The usual mistake: an http:// or ws:// URL for a TLS port.
        if let Some(n) = NOT_TLS.hit() {
            tracing::warn!(%peer, failures = n,
                "a client sent plain HTTP (or other non-TLS bytes) to a TLS port: use https:// and wss:// URLs");
        }
    } else if let Some(n) = HANDSHAKE_FAILED.hit() {
        match error {
            Some(error) => tracing::debug!(%peer, %error, failures = n, "TLS handshake failed"),
            None => tracing::debug!(%peer, failures = n,
                "TLS handshake not completed within the header timeout"),
        }
    }
}

async fn serve_http<I>(
    io: I,
    peer: Option<SocketAddr>,
    permit: Arc<Permit>,
    activity: Arc<Activity>,
    router: Router,
    (header_timeout, idle): (Duration, Duration),
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A request head arrived: a header timeout after that is an idle keep-alive
    // connection ending, not a refusal.
    let requested = Arc::new(AtomicBool::new(false));
    let service = {
        let permit = permit.clone();
        let requested = requested.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            permit.prove();
            requested.store(true, Ordering::Relaxed);
            // Handlers that count by client address read it as axum's ConnectInfo.
            if let Some(peer) = peer {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
            }
            tower_service::Service::call(&mut router.clone(), req)
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut shutting_down = false;
    loop {
        let idle_left = idle.saturating_sub(activity.since());
        tokio::select! {
            r = conn.as_mut() => {
                if r.is_err_and(|e| e.is_timeout()) && !requested.load(Ordering::Relaxed) {
                    rejections::count(Rejection::HeaderTimeout);
                }
                return;
            }
            _ = permit.evicted() => return,
            _ = tokio::time::sleep(idle_left) => {
                if activity.since() >= idle {
                    tracing::debug!("closing a connection idle for {idle:?}");
                    rejections::count(Rejection::IdleTimeout);
                    return;
                }
            }
            _ = stop.wait_for(|s| *s), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When bytes last moved on a connection.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn mark(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn since(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// The connection's socket, noting activity and holding its place in the gate for as
/// long as it lives (an upgraded WebSocket keeps it).
struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
    _permit: Arc<Permit>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.mark();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.mark();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.mark();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
