//! The Admin API over WebSocket (Janus's `admin_ws`): one JSON request per text frame
//! (or several one after the other), subprotocol `janus-admin-protocol`, upgrade
//! accepted on any path. Requests are answered in order; nothing else is ever sent, so
//! a connection owns no sessions and holds no queue.

use std::sync::Arc;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Router;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};

use super::{AdminApi, SUBPROTOCOL};
use crate::janus::message;
use crate::janus::ws::{refuse, server_closing, WsLimits, READ_BUFFER_BYTES};

#[derive(Clone)]
struct AdminWsState {
    admin: Arc<AdminApi>,
    limits: WsLimits,
}

pub fn router(admin: Arc<AdminApi>, limits: WsLimits) -> Router {
    Router::new()
        .fallback(upgrade)
        .with_state(AdminWsState { admin, limits })
}

async fn upgrade(State(state): State<AdminWsState>, ws: WebSocketUpgrade) -> Response {
    let max = state.limits.max_message_bytes;
    ws.protocols([SUBPROTOCOL])
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| serve_socket(state.admin, socket, state.limits))
}

async fn serve_socket(admin: Arc<AdminApi>, socket: WebSocket, limits: WsLimits) {
    let (mut sink, mut stream) = socket.split();
    let mut closing = admin.gateway().closing();
    tracing::debug!("Admin API WebSocket connected");
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = server_closing(&mut closing) => {
                let close = Message::Close(Some(CloseFrame {
                    code: close_code::AWAY,
                    reason: "server shutting down".into(),
                }));
                let _ = tokio::time::timeout(limits.send_timeout, sink.send(close)).await;
                break;
            }
        };
        let answered = match next {
            None | Some(Ok(Message::Close(_))) => false,
            Some(Ok(Message::Text(text))) => {
                answer(&admin, &mut sink, text.as_bytes(), limits).await
            }
            Some(Ok(Message::Binary(data))) => answer(&admin, &mut sink, &data, limits).await,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => true,
            Some(Err(e)) => {
                let detail = e.to_string();
                let refusal = refuse(&mut sink, &detail, limits.max_message_bytes);
                let _ = tokio::time::timeout(limits.send_timeout, refusal).await;
                false
            }
        };
        if !answered {
            break;
        }
    }
    tracing::debug!("Admin API WebSocket closed");
}

/// Answer every request in one frame; false when the client is gone or does not take
/// a reply within the send timeout.
async fn answer(
    admin: &AdminApi,
    sink: &mut SplitSink<WebSocket, Message>,
    bytes: &[u8],
    limits: WsLimits,
) -> bool {
    for parsed in message::frame_requests(bytes) {
        let reply = match parsed {
            Ok(req) => admin.handle(&req),
            Err(rejected) => rejected.to_reply(),
        };
        let sent = tokio::time::timeout(
            limits.send_timeout,
            sink.send(Message::text(reply.to_string())),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return false;
        }
    }
    true
}
