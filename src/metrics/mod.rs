//! `GET /metrics`: the server's figures in the Prometheus text format (0.0.4), on the
//! main HTTP port beside `/state` and behind the same guards. Most figures are read at
//! scrape time from the counters the parts keep anyway (see [`collector`]); the hot
//! paths only ever add to atomics, once per batch, message or report.

pub mod collector;
mod egress;
mod process;
pub mod rejections;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

pub use collector::Inputs;

/// The `Content-Type` of the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Everything `/metrics` reports about the server made of `inputs`.
pub fn registry(inputs: Inputs) -> Registry {
    let mut registry = Registry::default();
    inputs.engine.histograms().register(&mut registry);
    registry.register_collector(Box::new(egress::EgressCollector {
        forwards: inputs.forwards.clone(),
    }));
    registry.register_collector(Box::new(collector::ServerCollector::new(inputs)));
    registry.register_collector(Box::new(rejections::RejectionCollector));
    registry.register_collector(Box::new(process::ProcessCollector));
    registry
}

/// The text a scrape gets.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::with_capacity(8 << 10);
    prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

/// `GET /metrics`.
pub fn routes(registry: Registry) -> Router {
    Router::new()
        .route("/metrics", get(serve))
        .with_state(Arc::new(registry))
}

async fn serve(State(registry): State<Arc<Registry>>) -> Response {
    match render(&registry) {
        Ok(text) => (
            [
                (header::CONTENT_TYPE, CONTENT_TYPE),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
