//! The WebSocket transport: one JSON object per text frame, subprotocol
//! `janus-protocol`, upgrade accepted on any path. A connection owns the sessions it
//! creates or claims, and closing it destroys them, as Janus does.

use std::sync::Arc;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Router;
use serde_json::Value;
use tokio::sync::mpsc;

use super::error::{code, JanusError};
use super::gateway::Gateway;
use super::message;
use super::session::Owner;

/// janus.js asks for `janus-protocol`; the admin name is accepted as a harmless alias.
const SUBPROTOCOLS: [&str; 2] = ["janus-protocol", "janus-admin-protocol"];

/// Bytes read from the socket at a time. Janus requests are a few hundred bytes, and
/// the 128 KiB default is allocated up front for every connection, i.e. every viewer;
/// larger messages still arrive whole (up to the message size limit).
const READ_BUFFER_BYTES: usize = 4096;

#[derive(Clone)]
struct WsState {
    gateway: Arc<Gateway>,
    max_message_bytes: usize,
}

pub fn router(gateway: Arc<Gateway>, max_message_bytes: usize) -> Router {
    Router::new().fallback(upgrade).with_state(WsState {
        gateway,
        max_message_bytes,
    })
}

async fn upgrade(State(state): State<WsState>, ws: WebSocketUpgrade) -> Response {
    ws.protocols(SUBPROTOCOLS)
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(state.max_message_bytes)
        .max_frame_size(state.max_message_bytes)
        .on_upgrade(move |socket| serve_socket(state.gateway, socket, state.max_message_bytes))
}

async fn serve_socket(gateway: Arc<Gateway>, mut socket: WebSocket, limit: usize) {
    let conn = gateway.new_conn_id();
    // Replies and events share one queue so an event pushed while a request is being
    // handled goes out before that request's reply, as on a real Janus.
    let (tx, mut outgoing) = mpsc::unbounded_channel::<Value>();
    let owner = Owner::Socket {
        conn,
        tx: tx.clone(),
    };
    let mut closing = gateway.closing();
    tracing::debug!(conn, "Janus WebSocket connected");
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                None | Some(Ok(Message::Close(_))) => break,
                Some(Ok(Message::Text(text))) => {
                    handle_frame(&gateway, &owner, &tx, text.as_bytes()).await;
                }
                Some(Ok(Message::Binary(data))) => {
                    handle_frame(&gateway, &owner, &tx, &data).await;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(e)) => {
                    refuse(&mut socket, &e.to_string(), limit).await;
                    break;
                }
            },
            Some(event) = outgoing.recv() => {
                if socket.send(Message::text(event.to_string())).await.is_err() {
                    break;
                }
            }
            _ = server_closing(&mut closing) => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: close_code::AWAY,
                        reason: "server shutting down".into(),
                    })))
                    .await;
                break;
            }
        }
    }
    gateway.connection_closed(conn);
    tracing::debug!(conn, "Janus WebSocket closed");
}

async fn server_closing(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // An error means the gateway is gone, which is also a reason to close.
    let _ = rx.wait_for(|closing| *closing).await;
}

async fn handle_frame(
    gateway: &Arc<Gateway>,
    owner: &Owner,
    tx: &mpsc::UnboundedSender<Value>,
    bytes: &[u8],
) {
    for parsed in message::parse_frame(bytes) {
        let reply = match parsed {
            Ok(req) => gateway.handle(req, owner).await,
            Err(rejected) => rejected.to_reply(),
        };
        let _ = tx.send(reply);
    }
}

/// A frame the socket layer refused (too large, or broken framing): say why in the
/// Janus error format, then close with the matching WebSocket code.
async fn refuse(socket: &mut WebSocket, detail: &str, limit: usize) {
    let too_big = detail.contains("too long") || detail.contains("too big");
    tracing::info!(
        error = detail,
        "closing Janus WebSocket after a transport error"
    );
    let (close, reason) = if too_big {
        (
            close_code::SIZE,
            format!("Message too large (limit {limit} bytes)"),
        )
    } else {
        (close_code::PROTOCOL, format!("WebSocket error: {detail}"))
    };
    let error = JanusError::new(code::TRANSPORT_SPECIFIC, reason.clone());
    let _ = socket
        .send(Message::text(
            message::error_reply(None, 0, &error).to_string(),
        ))
        .await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: close,
            reason: truncate(&reason, 120).into(),
        })))
        .await;
}

/// Close frame reasons are limited to 123 bytes.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
