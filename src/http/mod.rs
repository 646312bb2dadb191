//! The main HTTP port: the bundled viewer page and `/state`; µStreamer's MJPEG output
//! ([`mjpeg`]).

pub mod mjpeg;

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

/// Produces the `/state` document on demand.
pub type StateFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The bundled client, embedded at build time so the binary needs no files beside it.
const PAGES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../client/index.html"),
    ),
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_str!("../../client/index.html"),
    ),
    (
        "/peregrine.js",
        "text/javascript; charset=utf-8",
        include_str!("../../client/peregrine.js"),
    ),
    (
        "/codestrip.js",
        "text/javascript; charset=utf-8",
        include_str!("../../client/codestrip.js"),
    ),
    (
        "/jmuxer.html",
        "text/html; charset=utf-8",
        include_str!("../../client/jmuxer.html"),
    ),
    (
        "/jsmpeg.html",
        "text/html; charset=utf-8",
        include_str!("../../client/jsmpeg.html"),
    ),
    (
        "/direct.html",
        "text/html; charset=utf-8",
        include_str!("../../client/direct.html"),
    ),
    (
        "/vendor/jmuxer.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../client/vendor/jmuxer.min.js"),
    ),
    (
        "/vendor/jsmpeg-player.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../client/vendor/jsmpeg-player.min.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../../client/style.css"),
    ),
    (
        "/favicon.svg",
        "image/svg+xml",
        include_str!("../../client/favicon.svg"),
    ),
    // Asked for by browsers on their own, e.g. when /state is opened in a tab.
    (
        "/favicon.ico",
        "image/svg+xml",
        include_str!("../../client/favicon.svg"),
    ),
];

pub fn router(state: StateFn) -> Router {
    let mut router = Router::new().route("/state", get(serve_state));
    for &(path, mime, body) in PAGES {
        router = router.route(
            path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, mime),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    body,
                )
            }),
        );
    }
    router.with_state(state)
}

/// Readable by allowed pages of other origins: the origin guard turns the `*` into the
/// page's own origin, or removes it.
async fn serve_state(State(state): State<StateFn>) -> Response {
    ([(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], Json(state())).into_response()
}
