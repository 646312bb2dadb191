//! The main HTTP port: the bundled viewer page and `/state`; µStreamer's MJPEG output
//! ([`mjpeg`]).

pub mod mjpeg;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub mod files;
pub mod state;

pub use state::StateReporter;

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
        "/sound.js",
        "text/javascript; charset=utf-8",
        include_str!("../../client/sound.js"),
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

/// `/state`, and the bundled pages or, with `static_dir` (`--static`), that folder's
/// files in their place.
pub fn router(state: Arc<StateReporter>, static_dir: Option<PathBuf>) -> Router {
    let mut router = Router::new().route("/state", get(serve_state));
    if let Some(root) = static_dir {
        let root = Arc::new(root);
        return router
            .fallback(move |method: Method, uri: Uri| {
                let root = root.clone();
                async move { files::serve(&root, &method, &uri).await }
            })
            .with_state(state);
    }
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

/// `?stream=NAME` on `/state`; absent: the default stream.
#[derive(Debug, Default, serde::Deserialize)]
struct StreamQuery {
    stream: Option<String>,
}

/// Readable by allowed pages of other origins: the origin guard turns the `*` into the
/// page's own origin, or removes it.
async fn serve_state(State(state): State<Arc<StateReporter>>, uri: Uri) -> Response {
    let query = match axum::extract::Query::<StreamQuery>::try_from_uri(&uri) {
        Ok(query) => query.0,
        Err(e) => return (StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    match state.document(query.stream.as_deref()) {
        Ok(document) => {
            ([(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], Json(document)).into_response()
        }
        Err(unknown) => (StatusCode::NOT_FOUND, format!("{unknown}\n")).into_response(),
    }
}
