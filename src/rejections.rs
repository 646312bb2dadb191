//! Refusals counted by reason (`/metrics` reports them as
//! `peregrine_rejections_total{reason}`). They happen in
//! many places (the connection gate, the Origin guard, the Janus gateway, the WebRTC
//! engine, the upload relay), so the counters are process-wide statics: a refusal site
//! calls [`count`] and needs nothing passed to it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a connection or request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// A new connection closed at once: `--max-connections` reached, nobody to evict.
    ConnectionCap,
    /// A new connection closed at once: `--max-connections-per-ip` reached for its address.
    PerIpCap,
    /// A connection that had sent no request closed to make room for a new one under a
    /// connection cap.
    Evicted,
    /// A connection closed because it sent no complete request head within
    /// `--header-timeout` of connecting.
    HeaderTimeout,
    /// A connection closed with a request in progress and no byte moving for
    /// `--idle-timeout`.
    IdleTimeout,
    /// A request from a web page of another origin refused with 403.
    Origin,
    /// Janus `create` refused with 472: `--max-sessions` reached.
    SessionCap,
    /// Janus `create` or `claim` refused with 472: `--max-sessions-per-connection`.
    SessionCapPerConnection,
    /// Janus `attach` refused with 461: `--max-handles-per-session`.
    HandleCap,
    /// `watch` refused with 429: `--max-viewers` peers exist.
    ViewerCap,
    /// A Janus request refused with 403/405 (wrong or missing secret or token).
    JanusAuth,
    /// An MPEG-TS upload with a wrong secret (403).
    UploadSecret,
    /// An MPEG-TS upload from an address blocked after wrong secrets (429).
    UploadBlocked,
    /// A connection to a TLS port that completed no handshake.
    TlsHandshake,
    /// A request to the main port without the right `--user`/`--passwd` (401), or from
    /// an address blocked after wrong ones (429).
    BasicAuth,
    /// A connection or media check from an address outside an allow-list.
    AllowIp,
}

impl Rejection {
    pub const ALL: [Rejection; 16] = [
        Rejection::ConnectionCap,
        Rejection::PerIpCap,
        Rejection::Evicted,
        Rejection::HeaderTimeout,
        Rejection::IdleTimeout,
        Rejection::Origin,
        Rejection::SessionCap,
        Rejection::SessionCapPerConnection,
        Rejection::HandleCap,
        Rejection::ViewerCap,
        Rejection::JanusAuth,
        Rejection::UploadSecret,
        Rejection::UploadBlocked,
        Rejection::TlsHandshake,
        Rejection::BasicAuth,
        Rejection::AllowIp,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::ConnectionCap => "connection_cap",
            Rejection::PerIpCap => "per_ip_cap",
            Rejection::Evicted => "evicted",
            Rejection::HeaderTimeout => "header_timeout",
            Rejection::IdleTimeout => "idle_timeout",
            Rejection::Origin => "origin",
            Rejection::SessionCap => "session_cap",
            Rejection::SessionCapPerConnection => "session_cap_per_connection",
            Rejection::HandleCap => "handle_cap",
            Rejection::ViewerCap => "viewer_cap",
            Rejection::JanusAuth => "janus_auth",
            Rejection::UploadSecret => "upload_secret",
            Rejection::UploadBlocked => "upload_blocked",
            Rejection::TlsHandshake => "tls_handshake",
            Rejection::BasicAuth => "basic_auth",
            Rejection::AllowIp => "allow_ip",
        }
    }
}

static COUNTS: [AtomicU64; Rejection::ALL.len()] =
    [const { AtomicU64::new(0) }; Rejection::ALL.len()];

/// Count one refusal.
pub fn count(reason: Rejection) {
    COUNTS[reason as usize].fetch_add(1, Ordering::Relaxed);
}

/// Refusals so far, every reason listed (zeros included, so each series exists from
/// the start).
pub fn totals() -> impl Iterator<Item = (Rejection, u64)> {
    Rejection::ALL
        .into_iter()
        .map(|r| (r, COUNTS[r as usize].load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_slot_and_label() {
        for (i, r) in Rejection::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i, "{r:?} is out of order in ALL");
        }
        let mut labels: Vec<_> = Rejection::ALL.iter().map(|r| r.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Rejection::ALL.len());
        let before = totals()
            .find(|(r, _)| *r == Rejection::HandleCap)
            .unwrap()
            .1;
        count(Rejection::HandleCap);
        let after = totals()
            .find(|(r, _)| *r == Rejection::HandleCap)
            .unwrap()
            .1;
        assert!(after > before);
    }
}
