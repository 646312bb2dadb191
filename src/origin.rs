//! Which web pages may use the server from a browser.
//!
//! A browser tells where a page comes from in the `Origin` header of its WebSocket
//! upgrades and cross-origin requests. Without a check, any page a user on the network
//! visits could open the Janus API or the relays through that user's browser. Allowed:
//! requests without `Origin` (curl, kvmd, native clients: not a browser acting for a
//! page), pages from the host name the request was addressed to (on any port and
//! scheme, so a page on port 80 reaches :8188), pages on a loopback name when the
//! request was addressed to a loopback name too, and the configured `--allow-origin`
//! list. `*` in that list allows every page, which is unsafe beyond a trusted network.

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ratelog::{RateLimited, PERIOD};
use crate::rejections::{self, Rejection};

static REFUSED: RateLimited = RateLimited::new(PERIOD);

/// The configured allow-list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    /// `*` was listed: every page is allowed.
    any: bool,
    /// Normalised `scheme://host[:port]`.
    listed: Vec<String>,
}

/// What to do with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No `Origin` header: not a page in a browser.
    NoOrigin,
    /// A page allowed to use the server; its origin, as sent.
    Allowed(String),
    /// A page from elsewhere.
    Refused(String),
}

impl OriginPolicy {
    /// From `--allow-origin` values: `*` or origins such as `https://kvm.example:8443`.
    pub fn new(list: &[String]) -> Result<OriginPolicy, String> {
        let mut policy = OriginPolicy::default();
        for entry in list {
            let entry = entry.trim();
            if entry == "*" {
                policy.any = true;
                continue;
            }
            let Some(origin) = Origin::parse(entry) else {
                return Err(format!(
                    "allow_origin {entry:?} must be `*` or an origin such as \
                     https://kvm.example or http://192.168.1.5:8080 (scheme and host, \
                     optional port, no path)"
                ));
            };
            policy.listed.push(origin.normalised());
        }
        Ok(policy)
    }

    /// Whether `*` was listed.
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Judge a request from its `Origin` and the host names it was addressed to (its
    /// `Host`, and a reverse proxy's `X-Forwarded-Host`).
    pub fn judge(&self, origin: Option<&str>, hosts: &[&str]) -> Verdict {
        let Some(raw) = origin else {
            return Verdict::NoOrigin;
        };
        let allowed = self.any
            || Origin::parse(raw).is_some_and(|o| {
                self.listed.contains(&o.normalised())
                    || hosts.iter().filter_map(|h| host_name(h)).any(|host| {
                        host == o.host || (is_loopback_name(&host) && is_loopback_name(&o.host))
                    })
            });
        if allowed {
            Verdict::Allowed(raw.to_string())
        } else {
            Verdict::Refused(raw.to_string())
        }
    }

    /// Judge the request these headers belong to.
    pub fn judge_headers(&self, headers: &HeaderMap) -> Verdict {
        let origin = headers
            .get(header::ORIGIN)
            .map(|v| v.to_str().unwrap_or("(not text)"));
        let mut hosts = Vec::new();
        for name in [header::HOST.as_str(), "x-forwarded-host"] {
            for value in headers.get_all(name) {
                if let Ok(text) = value.to_str() {
                    hosts.extend(text.split(',').map(str::trim));
                }
            }
        }
        self.judge(origin, &hosts)
    }
}

/// A parsed origin: `scheme://host[:port]`.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
        {
            return None;
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return None;
        }
        let (host, port) = split_host_port(rest)?;
        Some(Origin { scheme, host, port })
    }

    fn normalised(&self) -> String {
        match self.port {
            Some(port) => format!("{}://{}:{port}", self.scheme, self.host),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, host name lowercased.
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", v6.to_ascii_lowercase()), port)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (text.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty()
        || host.contains(':') && !host.starts_with('[')
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c))
    {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    Some((host, port))
}

/// The host name of a `Host` header value.
fn host_name(value: &str) -> Option<String> {
    split_host_port(value.trim()).map(|(host, _)| host)
}

/// `localhost`, `*.localhost`, 127.0.0.0/8 and ::1: names only this machine reaches.
fn is_loopback_name(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host.ends_with(".localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Upgrades and requests that change something are refused outright for a page that
/// is not allowed; reads are answered without CORS headers, so the page cannot see them.
fn acts(request: &Request) -> bool {
    let method = request.method();
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    upgrade || !(method == Method::GET || method == Method::HEAD)
}

/// Wrap `router` so every request is judged by `policy` before it is served.
pub fn guard(router: axum::Router, policy: OriginPolicy) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let policy = policy.clone();
            async move { check(&policy, req, next).await }
        },
    ))
}

async fn check(policy: &OriginPolicy, request: Request, next: Next) -> Response {
    let verdict = policy.judge_headers(request.headers());
    if let Verdict::Refused(origin) = &verdict {
        if acts(&request) {
            rejections::count(Rejection::Origin);
            if let Some(count) = REFUSED.hit() {
                tracing::warn!(
                    origin = %origin,
                    path = %request.uri().path(),
                    refused = count,
                    "refused a request from a page of another origin (see --allow-origin)"
                );
            }
            return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
        }
    }
    let mut response = next.run(request).await;
    apply_cors(response.headers_mut(), &verdict);
    response
}

/// Responses that offer CORS (their handler set `Access-Control-Allow-Origin`) name the
/// allowed page itself, never `*`, and nothing when the page is not allowed.
fn apply_cors(headers: &mut HeaderMap, verdict: &Verdict) {
    if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        return;
    }
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    match verdict {
        Verdict::Allowed(origin) => match HeaderValue::from_str(origin) {
            Ok(value) => {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            }
            Err(_) => strip_cors(headers),
        },
        Verdict::NoOrigin | Verdict::Refused(_) => strip_cors(headers),
    }
}

fn strip_cors(headers: &mut HeaderMap) {
    for name in [
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        header::ACCESS_CONTROL_MAX_AGE,
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &[&str]) -> OriginPolicy {
        OriginPolicy::new(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn allowed(p: &OriginPolicy, origin: &str, hosts: &[&str]) -> bool {
        matches!(p.judge(Some(origin), hosts), Verdict::Allowed(_))
    }

    #[test]
    fn no_origin_is_not_a_page() {
        assert_eq!(policy(&[]).judge(None, &["kvm:8188"]), Verdict::NoOrigin);
    }

    #[test]
    fn same_host_name_on_any_port_and_scheme() {
        let p = policy(&[]);
        assert!(allowed(&p, "http://kvm.lan", &["kvm.lan:8188"]));
        assert!(allowed(&p, "https://KVM.lan:8443", &["kvm.lan"]));
        assert!(allowed(
            &p,
            "http://192.168.1.5:8080",
            &["192.168.1.5:8188"]
        ));
        assert!(allowed(&p, "http://[fd00::5]:80", &["[FD00::5]:8188"]));
        assert!(!allowed(&p, "http://evil.example", &["kvm.lan:8188"]));
        assert!(!allowed(&p, "http://kvm.lan.evil.example", &["kvm.lan"]));
        assert!(!allowed(&p, "null", &["kvm.lan"]));
        assert!(!allowed(&p, "http://kvm.lan", &[]));
    }

    #[test]
    fn a_proxy_forwarded_host_counts() {
        let p = policy(&[]);
        assert!(allowed(
            &p,
            "https://pikvm.local",
            &["janus-ws", "pikvm.local"]
        ));
    }

    #[test]
    fn loopback_names_match_each_other() {
        let p = policy(&[]);
        assert!(allowed(&p, "http://127.0.0.1:3000", &["localhost:8188"]));
        assert!(allowed(&p, "http://localhost", &["[::1]:8188"]));
        assert!(!allowed(&p, "http://evil.example", &["127.0.0.1:8188"]));
        assert!(!allowed(&p, "http://127.0.0.1", &["192.168.1.5:8188"]));
    }

    #[test]
    fn listed_origins_match_exactly() {
        let p = policy(&["https://dash.example", "http://other.example:8000/"]);
        assert!(allowed(&p, "https://dash.example", &["kvm.lan"]));
        assert!(allowed(&p, "http://other.example:8000", &["kvm.lan"]));
        assert!(!allowed(&p, "http://dash.example", &["kvm.lan"]));
        assert!(!allowed(&p, "http://other.example", &["kvm.lan"]));
        assert!(!p.allows_any());
    }

    #[test]
    fn star_allows_every_page() {
        let p = policy(&["*"]);
        assert!(p.allows_any());
        assert!(allowed(&p, "http://evil.example", &["kvm.lan"]));
        assert!(allowed(&p, "null", &["kvm.lan"]));
    }

    #[test]
    fn bad_entries_are_refused_with_the_key() {
        for bad in [
            "evil.example",
            "http://x/path",
            "http://",
            "http://a:b",
            "ftp//x",
        ] {
            let err = OriginPolicy::new(&[bad.to_string()]).unwrap_err();
            assert!(err.contains("allow_origin"), "{err}");
        }
    }

    #[test]
    fn headers_give_host_and_forwarded_host() {
        let p = policy(&[]);
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("janus-ws"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://pikvm.local"),
        );
        assert!(matches!(p.judge_headers(&h), Verdict::Refused(_)));
        h.insert("x-forwarded-host", HeaderValue::from_static("pikvm.local"));
        assert!(matches!(p.judge_headers(&h), Verdict::Allowed(_)));
    }

    #[test]
    fn cors_names_the_page_or_nothing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        let mut allowed = h.clone();
        apply_cors(&mut allowed, &Verdict::Allowed("http://kvm.lan".into()));
        assert_eq!(
            allowed[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://kvm.lan"
        );
        assert_eq!(allowed[header::VARY], "Origin");
        let mut refused = h.clone();
        apply_cors(&mut refused, &Verdict::Refused("http://evil".into()));
        assert!(!refused.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(!refused.contains_key(header::ACCESS_CONTROL_MAX_AGE));
        let mut plain = HeaderMap::new();
        apply_cors(&mut plain, &Verdict::Allowed("http://kvm.lan".into()));
        assert!(plain.is_empty(), "no CORS where the handler offers none");
    }
}
