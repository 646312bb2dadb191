//! The Admin API over HTTP, as Janus's admin web server: requests are POSTed to the
//! base path (`/admin`), or below it to `B/S` and `B/S/H` for a session or handle;
//! `GET B/info` and `GET B/ping` need no body. There is no long poll: every request is
//! answered at once. As on the Janus transport, every API outcome is HTTP 200 with a
//! JSON body, with CORS headers.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;

use super::AdminApi;
use crate::janus::error::{code, JanusError};
use crate::janus::http::{
    add_cors, json_response, parse_id, read_request, segments, status, synthetic_request,
};
use crate::janus::message;

/// Transport settings.
#[derive(Clone, Debug)]
pub struct AdminHttpSettings {
    /// Base path, e.g. `/admin` (no trailing slash).
    pub base_path: String,
    pub max_body_bytes: usize,
}

#[derive(Clone)]
struct AdminHttpState {
    admin: Arc<AdminApi>,
    settings: Arc<AdminHttpSettings>,
}

pub fn router(admin: Arc<AdminApi>, settings: AdminHttpSettings) -> Router {
    Router::new().fallback(entry).with_state(AdminHttpState {
        admin,
        settings: Arc::new(settings),
    })
}

async fn entry(
    State(state): State<AdminHttpState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut response = route(&state, &method, &uri, body).await;
    add_cors(response.headers_mut(), &headers);
    response
}

async fn route(state: &AdminHttpState, method: &Method, uri: &Uri, body: Body) -> Response {
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
    let ids = match parts.as_slice() {
        ["info" | "ping"] if !is_get => return status(StatusCode::BAD_REQUEST),
        [verb @ ("info" | "ping")] => {
            return json_response(&state.admin.handle(&synthetic_request(verb)));
        }
        [] => (None, None),
        [s] => match parse_id(s) {
            Some(s) => (Some(s), None),
            None => return status(StatusCode::NOT_FOUND),
        },
        [s, h] => match (parse_id(s), parse_id(h)) {
            (Some(s), Some(h)) => (Some(s), Some(h)),
            _ => return status(StatusCode::NOT_FOUND),
        },
        _ => return status(StatusCode::NOT_FOUND),
    };
    if is_get {
        // Nothing to wait for here: a GET has no request to answer, as in Janus.
        let error = JanusError::new(code::INVALID_JSON, "Request payload missing");
        return json_response(&message::error_reply(None, 0, &error));
    }
    match read_request(body, state.settings.max_body_bytes, ids.0, ids.1).await {
        Ok(req) => json_response(&state.admin.handle(&req)),
        Err(response) => response,
    }
}
