//! `--whip-forward URL`: publish a stream to a WHIP endpoint (RFC 9725), as a browser
//! publishes a camera: POST an SDP offer (`application/sdp`, Bearer token), read the
//! `201 Created` answer and its `Location`, and DELETE that resource when done. The offer
//! is made by the WebRTC engine like a viewer's and carries every candidate, so no
//! trickle (PATCH) is ever needed. When the session ends (ICE or DTLS gone, the server
//! hung up) or a POST fails, it starts over with backoff.
//!
//! The peer is a server, not a viewer: its keyframe requests are coalesced with those of
//! every other server fed by this peregrine ([`crate::rtc::RtcEngine::create_egress_offer`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hyper::{Method, StatusCode, Uri};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

pub use super::http_client::HttpClient;
use crate::media::Stream;
use crate::rtc::{PeerEvent, PeerOptions, RtcEngine};

const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// A session that lasted this long was a success: the next retry starts from the
/// shortest wait again.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// A WHIP endpoint and its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhipTarget {
    pub url: Uri,
    pub token: Option<String>,
}

/// Parse a WHIP endpoint URL: `http://` or `https://HOST[:PORT]/PATH`.
pub fn parse_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("{s:?} is not an http:// or https:// URL"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{s:?} names no host"));
    }
    Ok(uri)
}

/// Whether `url` names this machine's loopback (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_local(url: &Uri) -> bool {
    let host = url.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The session's URL from a `Location` header, which may be absolute, a path, or
/// relative to the endpoint (RFC 3986 §5.2, the cases WHIP servers use).
pub fn resolve_location(endpoint: &Uri, location: &str) -> Result<Uri> {
    if let Ok(uri) = location.parse::<Uri>() {
        if uri.scheme().is_some() {
            return Ok(uri);
        }
    }
    let scheme = endpoint.scheme_str().unwrap_or("http");
    let authority = endpoint.authority().context("endpoint without host")?;
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let base = endpoint.path();
        let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{location}")
    };
    format!("{scheme}://{authority}{}", remove_dot_segments(&path))
        .parse()
        .map_err(|e| anyhow!("Location {location:?} is not a URL: {e}"))
}

/// `a/b/../c/./d` → `a/c/d` (RFC 3986 §5.2.4), query left alone.
fn remove_dot_segments(path: &str) -> String {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut joined = out.join("/");
    if !joined.starts_with('/') {
        joined.insert(0, '/');
    }
    match query {
        Some(q) => format!("{joined}?{q}"),
        None => joined,
    }
}

/// One WHIP forward's counters, for `/state`.
#[derive(Debug)]
pub struct WhipStats {
    pub stream: String,
    pub url: String,
    /// Sessions the endpoint accepted.
    pub sessions: AtomicU64,
    /// Sessions that connected (ICE and DTLS up).
    pub connected: AtomicU64,
    /// POSTs refused or failed, and sessions lost.
    pub failures: AtomicU64,
    state: Mutex<WhipState>,
}

#[derive(Clone, Debug, Default, Serialize)]
struct WhipState {
    state: &'static str,
    resource: Option<String>,
    last_error: Option<String>,
}

/// One WHIP forward in `/state`.
#[derive(Clone, Debug, Serialize)]
pub struct WhipReport {
    pub stream: String,
    pub url: String,
    /// `connecting`, `negotiating`, `connected` or `retrying`.
    pub state: &'static str,
    /// The session's URL (the `Location` of the last POST).
    pub resource: Option<String>,
    pub last_error: Option<String>,
    pub sessions: u64,
    pub connected: u64,
    pub failures: u64,
}

impl WhipStats {
    fn set(&self, f: impl FnOnce(&mut WhipState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn report(&self) -> WhipReport {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        WhipReport {
            stream: self.stream.clone(),
            url: self.url.clone(),
            state: s.state,
            resource: s.resource,
            last_error: s.last_error,
            sessions: self.sessions.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

/// Start publishing `stream` to `target` with `client` (which knows the CAs trusted
/// for `https://`) until `shutdown` turns true; the returned task ends after the
/// session was deleted.
pub fn spawn(
    engine: RtcEngine,
    stream: Arc<Stream>,
    target: WhipTarget,
    client: HttpClient,
    shutdown: watch::Receiver<bool>,
) -> (Arc<WhipStats>, tokio::task::JoinHandle<()>) {
    let stats = Arc::new(WhipStats {
        stream: stream.name().to_string(),
        url: target.url.to_string(),
        sessions: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        state: Mutex::new(WhipState {
            state: "connecting",
            ..WhipState::default()
        }),
    });
    let whip = Whip {
        engine,
        stream,
        target,
        client,
    };
    let task = tokio::spawn(run(whip, stats.clone(), shutdown));
    (stats, task)
}

/// How a session ended.
enum Ended {
    Shutdown,
    Lost(String),
}

/// One forward: what is published, where, and how it is reached.
struct Whip {
    engine: RtcEngine,
    stream: Arc<Stream>,
    target: WhipTarget,
    client: HttpClient,
}

async fn run(whip: Whip, stats: Arc<WhipStats>, mut shutdown: watch::Receiver<bool>) {
    let Whip { stream, target, .. } = &whip;
    let mut retry = RETRY_FIRST;
    loop {
        let began = Instant::now();
        stats.set(|s| s.state = "connecting");
        let why = match publish(&whip, &stats, &mut shutdown).await {
            Ok(Ended::Shutdown) => return,
            Ok(Ended::Lost(reason)) => reason,
            Err(e) => format!("{e:#}"),
        };
        stats.failures.fetch_add(1, Ordering::Relaxed);
        if began.elapsed() >= HEALTHY_SESSION {
            retry = RETRY_FIRST;
        }
        tracing::warn!(
            stream = stream.name(),
            url = %target.url,
            "WHIP forward: {why}; trying again in {}s",
            retry.as_secs()
        );
        stats.set(|s| {
            s.state = "retrying";
            s.resource = None;
            s.last_error = Some(why);
        });
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

fn auth_headers(target: &WhipTarget) -> Vec<(&'static str, String)> {
    target
        .token
        .iter()
        .map(|t| ("authorization", format!("Bearer {t}")))
        .collect()
}

/// One session: offer, answer, then wait until it ends or the server shuts down.
async fn publish(
    whip: &Whip,
    stats: &WhipStats,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Ended> {
    let Whip {
        engine,
        stream,
        target,
        client,
    } = whip;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut opts = PeerOptions::new(stream.hub().clone());
    opts.audio = stream.audio().cloned();
    let (id, offer) = engine
        .create_egress_offer(opts, events_tx)
        .await
        .context("cannot make an offer")?;
    let headers = auth_headers(target);
    let posted = tokio::select! {
        r = client.request(Method::POST, &target.url, &headers, Some(("application/sdp", offer))) => r,
        _ = shutdown.wait_for(|s| *s) => {
            engine.close_peer(id, "shutdown");
            return Ok(Ended::Shutdown);
        }
    };
    let reply = match posted {
        Ok(r) => r,
        Err(e) => {
            engine.close_peer(id, "WHIP POST failed");
            return Err(e);
        }
    };
    if reply.status != StatusCode::CREATED {
        engine.close_peer(id, "WHIP POST refused");
        let detail = String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)]).into_owned();
        bail!("the endpoint answered {} {}", reply.status, detail.trim());
    }
    let resource = reply
        .headers
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(|l| resolve_location(&target.url, l))
        .transpose()?;
    stats.sessions.fetch_add(1, Ordering::Relaxed);
    stats.set(|s| {
        s.state = "negotiating";
        s.resource = resource.as_ref().map(|r| r.to_string());
    });
    let answer = String::from_utf8_lossy(&reply.body).into_owned();
    if let Err(e) = engine.apply_answer(id, &answer).await {
        engine.close_peer(id, "WHIP answer refused");
        delete(client, resource.as_ref(), target).await;
        bail!("the answer was refused: {e}");
    }
    let ended = loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(PeerEvent::Connected) => {
                    stats.connected.fetch_add(1, Ordering::Relaxed);
                    stats.set(|s| {
                        s.state = "connected";
                        s.last_error = None;
                    });
                    tracing::info!(stream = stream.name(), url = %target.url, "WHIP forward connected");
                }
                Some(PeerEvent::Closed { reason }) => break Ended::Lost(format!("session ended: {reason}")),
                Some(_) => {}
                None => break Ended::Lost("session ended".into()),
            },
            _ = shutdown.wait_for(|s| *s) => {
                engine.close_peer(id, "shutdown");
                break Ended::Shutdown;
            }
        }
    };
    delete(client, resource.as_ref(), target).await;
    Ok(ended)
}

/// End the session on the server; a failure only costs the server a session that times
/// out on its own.
async fn delete(client: &HttpClient, resource: Option<&Uri>, target: &WhipTarget) {
    let Some(resource) = resource else { return };
    match client
        .request(Method::DELETE, resource, &auth_headers(target), None)
        .await
    {
        Ok(r) if r.status.is_success() => {}
        Ok(r) => tracing::debug!(%resource, status = %r.status, "WHIP DELETE refused"),
        Err(e) => tracing::debug!(%resource, "WHIP DELETE failed: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_endpoint() {
        let endpoint: Uri = "http://sfu.lan:7080/whip/endpoint/cam".parse().unwrap();
        let cases = [
            (
                "/whip/resource/abc",
                "http://sfu.lan:7080/whip/resource/abc",
            ),
            (
                "resource/abc",
                "http://sfu.lan:7080/whip/endpoint/resource/abc",
            ),
            (
                "../resource/abc?x=1",
                "http://sfu.lan:7080/whip/resource/abc?x=1",
            ),
            ("./a/../../../b", "http://sfu.lan:7080/b"),
            ("http://other:1/x", "http://other:1/x"),
        ];
        for (location, expected) in cases {
            assert_eq!(
                resolve_location(&endpoint, location).unwrap().to_string(),
                expected
            );
        }
    }

    #[test]
    fn loopback_endpoints_are_told_apart() {
        let local = |u: &str| is_local(&u.parse().unwrap());
        assert!(local("http://127.0.0.1:7080/whip"));
        assert!(local("http://localhost/whip"));
        assert!(local("http://[::1]:7080/whip"));
        assert!(!local("http://10.0.0.2:7080/whip"));
        assert!(!local("http://sfu.lan/whip"));
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_taken() {
        assert!(parse_url("http://10.0.0.2:7080/whip/endpoint/cam").is_ok());
        assert!(parse_url("https://sfu.example/whip/v1").is_ok());
        assert!(parse_url("ftp://x/whip")
            .unwrap_err()
            .contains("not an http:// or https:// URL"));
        for bad in ["", "10.0.0.2:7080/whip", "ftp://x/y", "http:///x"] {
            assert!(parse_url(bad).is_err(), "{bad:?} accepted");
        }
    }
}
