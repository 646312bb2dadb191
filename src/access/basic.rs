//! HTTP Basic authentication of the main port (µStreamer's `--user` / `--passwd`).
//!
//! Every request must carry `Authorization: Basic base64(user:passwd)`, else it gets
//! 401 with a `WWW-Authenticate` challenge, so a browser asks once and then sends the
//! credentials with every request of the page, WebSocket upgrades included. CORS
//! preflights (`OPTIONS`) pass, as in µStreamer: browsers never put credentials on
//! them. Credentials are compared as keyed digests in constant time; an address that
//! sends [`secret_guard::MAX_FAILURES`] wrong ones within a minute is answered 429 for
//! a minute, right or wrong.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::access::secret_guard::{self, Failure, SecretGuard};
use crate::ratelog::{RateLimited, PERIOD};

static WRONG: RateLimited = RateLimited::new(PERIOD);
static BLOCKED: RateLimited = RateLimited::new(PERIOD);

/// The challenge; `charset` tells browsers to send non-ASCII as UTF-8 (RFC 7617).
pub const CHALLENGE: &str = "Basic realm=\"peregrine\", charset=\"UTF-8\"";

/// Longest `Authorization` value looked at; longer ones are wrong without decoding.
const MAX_HEADER: usize = 4096;

/// A user name and password, as configured. The password is left out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub passwd: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("passwd", &"(hidden)")
            .finish()
    }
}

/// Checks requests against one set of credentials.
pub struct BasicAuth {
    /// Per-process random key for the digests.
    key: [u8; 32],
    /// Digest of `user:passwd`.
    expected: Vec<u8>,
    guard: SecretGuard,
}

/// What a request's `Authorization` header amounts to.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    /// No credentials: a browser's first request, before it asks the user.
    Nothing,
    /// `user:passwd` as sent (decoded from base64).
    Credentials(Vec<u8>),
    /// Something that is not Basic credentials.
    Malformed,
}

/// Read an `Authorization` header value: scheme `Basic` in any case, then the base64 of
/// `user:passwd`.
pub fn parse_authorization(value: Option<&[u8]>) -> Presented {
    let Some(value) = value else {
        return Presented::Nothing;
    };
    if value.len() > MAX_HEADER {
        return Presented::Malformed;
    }
    let value = value.trim_ascii();
    let Some((scheme, token)) = value.split_at_checked(5) else {
        return Presented::Malformed;
    };
    if !scheme.eq_ignore_ascii_case(b"basic") || token.first() != Some(&b' ') {
        return Presented::Malformed;
    }
    match base64_decode(token.trim_ascii()) {
        Some(decoded) if decoded.contains(&b':') => Presented::Credentials(decoded),
        _ => Presented::Malformed,
    }
}

/// Standard base64 (RFC 4648 §4), padding optional; `None` for anything else.
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let text = match text {
        [rest @ .., b'=', b'='] | [rest @ .., b'='] => rest,
        _ => text,
    };
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The answer to a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Pass,
    /// 401 with the challenge; `wrong` when credentials were sent and did not match.
    Challenge {
        wrong: bool,
    },
    /// 429: too many wrong credentials from this address lately; seconds left.
    Throttled(u64),
}

impl BasicAuth {
    pub fn new(credentials: &Credentials) -> BasicAuth {
        let key: [u8; 32] = rand::random();
        let joined = format!("{}:{}", credentials.user, credentials.passwd);
        BasicAuth {
            key,
            expected: digest(&key, joined.as_bytes()),
            guard: SecretGuard::new(),
        }
    }

    fn matches(&self, presented: &[u8]) -> bool {
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.key).expect("any key length");
        mac.update(presented);
        mac.verify_slice(&self.expected).is_ok()
    }

    /// Judge a request from `peer` whose `Authorization` value is `authorization`;
    /// `preflight` for an `OPTIONS` request.
    pub fn decide(
        &self,
        preflight: bool,
        authorization: Option<&[u8]>,
        peer: IpAddr,
        now: Instant,
    ) -> Decision {
        if preflight {
            return Decision::Pass;
        }
        if let Some(left) = self.guard.blocked(peer, now) {
            return Decision::Throttled(left.as_secs().max(1));
        }
        let presented = parse_authorization(authorization);
        if let Presented::Credentials(pair) = &presented {
            if self.matches(pair) {
                return Decision::Pass;
            }
        }
        if presented == Presented::Nothing {
            return Decision::Challenge { wrong: false };
        }
        if self.guard.failed(peer, now) == Failure::Blocked {
            if let Some(count) = BLOCKED.hit() {
                tracing::warn!(
                    %peer,
                    addresses = count,
                    "HTTP login: {} wrong passwords within {} s; refusing the address for {} s",
                    secret_guard::MAX_FAILURES,
                    secret_guard::WINDOW.as_secs(),
                    secret_guard::BLOCK.as_secs()
                );
            }
        }
        if let Some(count) = WRONG.hit() {
            tracing::warn!(%peer, refused = count, "HTTP login refused: wrong user or password");
        }
        Decision::Challenge { wrong: true }
    }
}

fn digest(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Wrap `router` so every request needs the credentials; unchanged without any.
pub fn guard(router: axum::Router, credentials: Option<&Credentials>) -> axum::Router {
    let Some(credentials) = credentials else {
        return router;
    };
    let auth = Arc::new(BasicAuth::new(credentials));
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let auth = auth.clone();
            async move { check(&auth, req, next).await }
        },
    ))
}

async fn check(auth: &BasicAuth, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |c| c.0.ip());
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let preflight = request.method() == Method::OPTIONS;
    let decision = auth.decide(preflight, authorization, peer, Instant::now());
    // A first request without credentials is a browser about to ask: not a refusal.
    if matches!(
        decision,
        Decision::Challenge { wrong: true } | Decision::Throttled(_)
    ) {
        crate::rejections::count(crate::rejections::Rejection::BasicAuth);
    }
    match decision {
        Decision::Pass => next.run(request).await,
        Decision::Challenge { .. } => (
            StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, CHALLENGE),
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            ],
            "401 Unauthorized: this server needs a user name and password\n",
        )
            .into_response(),
        Decision::Throttled(seconds) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, seconds.to_string())],
            "429 Too Many Requests: too many wrong passwords from this address; try again later\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, passwd: &str) -> Credentials {
        Credentials {
            user: user.into(),
            passwd: passwd.into(),
        }
    }

    /// Standard base64 with padding, written apart from the decoder under test.
    fn encode(bytes: &[u8]) -> String {
        const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// `Basic base64(text)`.
    fn header(text: &str) -> Vec<u8> {
        format!("Basic {}", encode(text.as_bytes())).into_bytes()
    }

    #[test]
    fn authorization_values_parse() {
        assert_eq!(parse_authorization(None), Presented::Nothing);
        let ok = Presented::Credentials(b"admin:pa:ss".to_vec());
        assert_eq!(parse_authorization(Some(&header("admin:pa:ss"))), ok);
        assert_eq!(parse_authorization(Some(b"bAsIc   YWRtaW46cGE6c3M=  ")), ok);
        assert_eq!(
            parse_authorization(Some(b"Basic YWRtaW46cGE6c3M")),
            ok,
            "no padding"
        );
        assert_eq!(
            parse_authorization(Some(b"Basic Og==")),
            Presented::Credentials(b":".to_vec())
        );
        for bad in [
            &b"Bearer abc"[..],
            b"Basic",
            b"Basic ",
            b"BasicYWRtaW46cGE6c3M=",
            b"Basic YWRtaW4=", // no colon
            b"Basic ????",
            b"Basic YWRtaW46c=GE6c3M=",
            b"Basic A",
            b"",
        ] {
            assert_eq!(
                parse_authorization(Some(bad)),
                Presented::Malformed,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b'A'; MAX_HEADER + 1];
        assert_eq!(parse_authorization(Some(&long)), Presented::Malformed);
    }

    #[test]
    fn base64_decodes_every_length() {
        for text in ["", "a", "ab", "abc", "abcd", "user:pässwörd"] {
            let encoded = encode(text.as_bytes());
            assert_eq!(base64_decode(encoded.as_bytes()).unwrap(), text.as_bytes());
        }
    }

    #[test]
    fn right_credentials_pass_wrong_ones_are_counted_then_throttled() {
        let auth = BasicAuth::new(&creds("admin", "s3cret"));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        let right = header("admin:s3cret");
        assert_eq!(auth.decide(false, Some(&right), a, t0), Decision::Pass);
        assert_eq!(
            auth.decide(false, None, a, t0),
            Decision::Challenge { wrong: false }
        );
        assert_eq!(
            auth.decide(true, None, a, t0),
            Decision::Pass,
            "preflights carry no credentials"
        );
        for wrong in [
            "admin:s3creT",
            "admin:s3cret ",
            "Admin:s3cret",
            "admin:",
            ":s3cret",
        ] {
            assert_eq!(
                auth.decide(false, Some(&header(wrong)), a, t0),
                Decision::Challenge { wrong: true },
                "{wrong}"
            );
        }
        // Missing credentials are not guesses; wrong ones up to the limit are.
        for _ in 0..10 {
            auth.decide(false, None, a, t0);
        }
        assert_eq!(auth.decide(false, Some(&right), a, t0), Decision::Pass);
        for _ in 5..secret_guard::MAX_FAILURES {
            auth.decide(false, Some(b"Basic x"), a, t0);
        }
        assert!(matches!(
            auth.decide(false, Some(&right), a, t0),
            Decision::Throttled(s) if s == secret_guard::BLOCK.as_secs()
        ));
        assert_eq!(
            auth.decide(false, Some(&right), b, t0),
            Decision::Pass,
            "another address is not affected"
        );
        let later = t0 + secret_guard::BLOCK;
        assert_eq!(auth.decide(false, Some(&right), a, later), Decision::Pass);
    }

    #[test]
    fn an_empty_password_is_a_password() {
        let auth = BasicAuth::new(&creds("viewer", ""));
        let ip: IpAddr = "192.0.2.3".parse().unwrap();
        let now = Instant::now();
        assert_eq!(
            auth.decide(false, Some(&header("viewer:")), ip, now),
            Decision::Pass
        );
        assert_eq!(
            auth.decide(false, Some(&header("viewer:x")), ip, now),
            Decision::Challenge { wrong: true }
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let text = format!("{:?}", creds("admin", "hunter2"));
        assert!(
            text.contains("admin") && !text.contains("hunter2"),
            "{text}"
        );
    }
}
