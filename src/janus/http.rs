//! The HTTP long-poll transport (Janus's REST interface):
//!
//! | `POST B`          | create, claim, info, ping                  |
//! | `POST B/S`        | session requests (attach, destroy, ...)    |
//! | `POST B/S/H`      | handle requests (message, trickle, ...)    |
//! | `GET B/S?maxev=N` | long poll for the session's events         |
//! | `GET B/info`, `GET B/ping` | server info, pong                 |
//!
//! Every API outcome is HTTP 200 with a JSON body, since janus.js treats any other
//! status as a broken transport; CORS headers go on every response.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;

use super::error::{code, JanusError};
use super::gateway::Gateway;
use super::message::{self, Request};
use super::session::Owner;
use crate::rejections::{self, Rejection};

/// Transport settings.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Base path, e.g. `/janus` (no trailing slash).
    pub base_path: String,
    /// How long a long poll is held when no event comes (Janus: 30 s).
    pub poll_hold: Duration,
    pub max_body_bytes: usize,
}

#[derive(Clone)]
struct HttpState {
    gateway: Arc<Gateway>,
    settings: Arc<HttpSettings>,
}

pub fn router(gateway: Arc<Gateway>, settings: HttpSettings) -> Router {
    Router::new().fallback(entry).with_state(HttpState {
        gateway,
        settings: Arc::new(settings),
    })
}

async fn entry(
    State(state): State<HttpState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut response = route(&state, &method, &uri, body).await;
    add_cors(response.headers_mut(), &headers);
    response
}

/// As Janus: preflight cached for a day, and the requested method and headers echoed
/// back. The `*` marks the response as open to CORS; the origin guard
/// ([`crate::origin::guard`]) replaces it with the page's own origin when that page is
/// allowed, and removes these headers otherwise.
pub(super) fn add_cors(out: &mut HeaderMap, request: &HeaderMap) {
    out.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    if let Some(m) = request.get(header::ACCESS_CONTROL_REQUEST_METHOD) {
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m.clone());
    }
    if let Some(h) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone());
    }
}

pub(super) fn json_response(value: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

pub(super) fn status(code: StatusCode) -> Response {
    code.into_response()
}

/// Path segments below the base path, or `None` when outside it.
pub fn segments<'a>(base: &str, path: &'a str) -> Option<Vec<&'a str>> {
    let rest = path.strip_prefix(base)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    Some(rest.split('/').filter(|s| !s.is_empty()).collect())
}

pub fn parse_id(segment: &str) -> Option<u64> {
    segment.parse::<u64>().ok().filter(|id| *id != 0)
}

async fn route(state: &HttpState, method: &Method, uri: &Uri, body: Body) -> Response {
    if method == Method::OPTIONS {
        return status(StatusCode::OK);
    }
    let Some(parts) = segments(&state.settings.base_path, uri.path()) else {
        return status(StatusCode::NOT_FOUND);
    };
    let is_get = method == Method::GET;
    if !is_get && method != Method::POST {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    match parts.as_slice() {
        [] if is_get => status(StatusCode::BAD_REQUEST),
        [] => post(state, body, None, None).await,
        ["info" | "ping"] if !is_get => status(StatusCode::BAD_REQUEST),
        [verb @ ("info" | "ping")] => {
            let req = synthetic_request(verb);
            json_response(&state.gateway.handle(req, &Owner::LongPoll).await)
        }
        [s] => match parse_id(s) {
            None => status(StatusCode::NOT_FOUND),
            Some(_) if is_get && !long_poll_allowed(state, uri) => {
                rejections::count(Rejection::JanusAuth);
                status(StatusCode::FORBIDDEN)
            }
            Some(s) if is_get => long_poll(state, s, uri.query()).await,
            Some(s) => post(state, body, Some(s), None).await,
        },
        [s, h] => match (parse_id(s), parse_id(h)) {
            (Some(s), Some(_)) if is_get => {
                let location = format!("{}/{s}", state.settings.base_path);
                (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
            }
            (Some(s), Some(h)) => post(state, body, Some(s), Some(h)).await,
            _ => status(StatusCode::NOT_FOUND),
        },
        _ => status(StatusCode::NOT_FOUND),
    }
}

/// `GET B/info` and `GET B/ping` carry no body; Janus makes up a transaction.
pub(super) fn synthetic_request(verb: &str) -> Request {
    let transaction: String = {
        use rand::distr::{Alphanumeric, SampleString};
        Alphanumeric.sample_string(&mut rand::rng(), 12)
    };
    Request::synthetic(verb, transaction)
}

async fn post(
    state: &HttpState,
    body: Body,
    path_session: Option<u64>,
    path_handle: Option<u64>,
) -> Response {
    match read_request(
        body,
        state.settings.max_body_bytes,
        path_session,
        path_handle,
    )
    .await
    {
        Ok(req) => json_response(&state.gateway.handle(req, &Owner::LongPoll).await),
        Err(response) => response,
    }
}

/// The request in a POST body, with the ids of its path; or the response that refuses
/// it (a body over `max_bytes`, JSON that is not a request, conflicting ids).
pub(super) async fn read_request(
    body: Body,
    max_bytes: usize,
    path_session: Option<u64>,
    path_handle: Option<u64>,
) -> Result<Request, Response> {
    // sendBeacon posts `destroy` as text/plain, so the content type is not checked.
    let bytes: Bytes = match axum::body::to_bytes(body, max_bytes).await {
        Ok(b) => b,
        Err(_) => {
            let error = JanusError::new(
                code::TRANSPORT_SPECIFIC,
                format!("Request body too large (limit {max_bytes} bytes)"),
            );
            let body = message::error_reply(None, 0, &error).to_string();
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response());
        }
    };
    let mut req = message::parse_request(&bytes).map_err(|r| json_response(&r.to_reply()))?;
    if let Err(e) = apply_path_ids(&mut req, path_session, path_handle) {
        let reply = message::error_reply(Some(&req.transaction), req.session_id, &e);
        return Err(json_response(&reply));
    }
    Ok(req)
}

/// Ids from the URL go into the request; a different id in the body is a conflict.
fn apply_path_ids(
    req: &mut Request,
    path_session: Option<u64>,
    path_handle: Option<u64>,
) -> Result<(), JanusError> {
    if let Some(s) = path_session {
        if req.session_id != 0 && req.session_id != s {
            return Err(JanusError::conflicting_id("session"));
        }
        req.session_id = s;
    }
    if let Some(h) = path_handle {
        if req.handle_id != 0 && req.handle_id != h {
            return Err(JanusError::conflicting_id("handle"));
        }
        req.handle_id = h;
    }
    Ok(())
}

/// `maxev` from the query: at least 1, default 1 (Janus's default).
pub fn max_events(query: Option<&str>) -> usize {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "maxev")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, 1000)
}

/// The long poll bypasses the core, so it checks `apisecret` and `token` (query
/// parameters) itself; like Janus it answers a bare 403 when they are wrong.
fn long_poll_allowed(state: &HttpState, uri: &Uri) -> bool {
    let auth = &state.gateway.settings.auth;
    if !auth.is_enabled() {
        return true;
    }
    let query: Query<HashMap<String, String>> =
        Query::try_from_uri(uri).unwrap_or_else(|_| Query(HashMap::new()));
    auth.check_query(&query.0)
}

async fn long_poll(state: &HttpState, session_id: u64, query: Option<&str>) -> Response {
    // While the poll is held the session cannot expire (even with a session timeout
    // shorter than the hold), and its end counts as activity.
    let Some((queue, hold)) = state.gateway.hold_poll(session_id) else {
        return status(StatusCode::NOT_FOUND);
    };
    let max = max_events(query);
    let mut events = queue.wait(max, state.settings.poll_hold).await;
    drop(hold);
    if events.is_empty() {
        if queue.is_closed() {
            return status(StatusCode::NOT_FOUND);
        }
        events.push(message::keepalive());
    }
    if max == 1 {
        json_response(&events.swap_remove(0))
    } else {
        json_response(&Value::Array(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_below_base() {
        assert_eq!(segments("/janus", "/janus"), Some(vec![]));
        assert_eq!(segments("/janus", "/janus/"), Some(vec![]));
        assert_eq!(segments("/janus", "/janus/12/34"), Some(vec!["12", "34"]));
        assert_eq!(segments("/janus", "/janusx/12"), None);
        assert_eq!(segments("/janus", "/other"), None);
    }

    #[test]
    fn maxev_parsing() {
        assert_eq!(max_events(None), 1);
        assert_eq!(max_events(Some("rid=123&maxev=10")), 10);
        assert_eq!(max_events(Some("maxev=0")), 1);
        assert_eq!(max_events(Some("maxev=abc")), 1);
    }

    #[test]
    fn path_ids_conflict() {
        let mut req =
            message::parse_request(br#"{"janus":"attach","transaction":"t","session_id":5}"#)
                .unwrap();
        assert_eq!(
            apply_path_ids(&mut req, Some(6), None).unwrap_err(),
            JanusError::conflicting_id("session")
        );
        apply_path_ids(&mut req, Some(5), None).unwrap();
        let mut req = message::parse_request(br#"{"janus":"message","transaction":"t"}"#).unwrap();
        apply_path_ids(&mut req, Some(5), Some(9)).unwrap();
        assert_eq!((req.session_id, req.handle_id), (5, 9));
    }
}
