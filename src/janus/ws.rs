//! The WebSocket transport: one JSON object per text frame, subprotocol
//! `janus-protocol`, upgrade accepted on any path. A connection owns the sessions it
//! creates or claims, and closing it destroys them, as Janus does.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Router;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::error::{code, JanusError};
use super::gateway::Gateway;
use super::message;
use super::outbox::{self, Outbox, Queued};
use super::session::Owner;
use crate::ratelog::{RateLimited, PERIOD};

static SLOW_CLIENT: RateLimited = RateLimited::new(PERIOD);

/// janus.js asks for `janus-protocol`; the admin name is accepted as a harmless alias
/// (requests here are Janus API requests: the Admin API has listeners of its own).
const SUBPROTOCOLS: [&str; 2] = ["janus-protocol", "janus-admin-protocol"];

/// Bytes read from the socket at a time. Janus requests are a few hundred bytes (an
/// SDP answer a few KiB), and the 128 KiB default is allocated up front for every
/// connection, i.e. every viewer; larger messages still arrive whole (the buffer grows
/// to the frame, up to the message size limit).
pub(super) const READ_BUFFER_BYTES: usize = 1024;

/// Bounds of one WebSocket connection.
#[derive(Clone, Copy, Debug)]
pub struct WsLimits {
    /// Largest message read.
    pub max_message_bytes: usize,
    /// Replies and events waiting to be sent; when full, no more requests are read.
    pub queue_bytes: usize,
    /// Longest one message may take to go out before the client counts as gone.
    pub send_timeout: Duration,
}

#[derive(Clone)]
struct WsState {
    gateway: Arc<Gateway>,
    limits: WsLimits,
}

pub fn router(gateway: Arc<Gateway>, limits: WsLimits) -> Router {
    Router::new()
        .fallback(upgrade)
        .with_state(WsState { gateway, limits })
}

async fn upgrade(State(state): State<WsState>, ws: WebSocketUpgrade) -> Response {
    let max = state.limits.max_message_bytes;
    ws.protocols(SUBPROTOCOLS)
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| serve_socket(state.gateway, socket, state.limits))
}

/// Why the connection ends.
enum End {
    /// The client closed it, or the socket broke.
    Gone,
    /// A frame the socket layer refused.
    Refused(String),
    /// The client stopped reading what it is sent.
    TooSlow,
    ServerClosing,
}

async fn serve_socket(gateway: Arc<Gateway>, socket: WebSocket, limits: WsLimits) {
    let conn = gateway.new_conn_id();
    // Replies and events share one queue so an event pushed while a request is being
    // handled goes out before that request's reply, as on a real Janus.
    let (outbox, mut queue) = outbox::channel(limits.queue_bytes);
    let owner = Owner::Socket {
        conn,
        tx: outbox.clone(),
    };
    let (mut sink, mut stream) = socket.split();
    let mut closing = gateway.closing();
    tracing::debug!(conn, "Janus WebSocket connected");
    let end = tokio::select! {
        end = read_requests(&gateway, &owner, &outbox, &mut stream) => end,
        end = write_queue(&mut sink, &mut queue, limits.send_timeout) => end,
        _ = outbox.overflowed() => End::TooSlow,
        _ = server_closing(&mut closing) => End::ServerClosing,
    };
    // Sessions go first, so nothing is queued for a socket that is closing.
    gateway.connection_closed(conn);
    drop(owner);
    let last_words = async {
        match end {
            End::Gone => {}
            End::TooSlow => {
                if let Some(n) = SLOW_CLIENT.hit() {
                    tracing::info!(
                        conn,
                        closed = n,
                        "closed Janus WebSockets whose client did not read its replies"
                    );
                }
            }
            End::Refused(detail) => refuse(&mut sink, &detail, limits.max_message_bytes).await,
            End::ServerClosing => {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: close_code::AWAY,
                        reason: "server shutting down".into(),
                    })))
                    .await;
            }
        }
    };
    // A client that does not read gets no more time than any other write.
    let _ = tokio::time::timeout(limits.send_timeout, Box::pin(last_words)).await;
    tracing::debug!(conn, "Janus WebSocket closed");
}

/// Read and answer requests until the client goes; waits (and so stops reading) while
/// the outbox is full.
async fn read_requests(
    gateway: &Arc<Gateway>,
    owner: &Owner,
    outbox: &Outbox,
    stream: &mut SplitStream<WebSocket>,
) -> End {
    loop {
        let ok = match stream.next().await {
            None | Some(Ok(Message::Close(_))) => return End::Gone,
            // Boxed: the request's future (the whole gateway path) lives only while it
            // is handled, not in every idle connection's task.
            Some(Ok(Message::Text(text))) => {
                Box::pin(handle_frame(gateway, owner, outbox, text.as_bytes())).await
            }
            Some(Ok(Message::Binary(data))) => {
                Box::pin(handle_frame(gateway, owner, outbox, &data)).await
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => true,
            Some(Err(e)) => return End::Refused(e.to_string()),
        };
        if !ok {
            return End::Gone;
        }
    }
}

/// Send queued messages, each within `timeout`.
async fn write_queue(
    sink: &mut SplitSink<WebSocket, Message>,
    queue: &mut mpsc::UnboundedReceiver<Box<Queued>>,
    timeout: Duration,
) -> End {
    while let Some(queued) = queue.recv().await {
        // The message's room in the outbox is given back once it is on the wire.
        let message = Message::text(queued.text.as_str());
        // Boxed, as a request's handling: an idle connection's task does not carry it.
        match Box::pin(tokio::time::timeout(timeout, sink.send(message))).await {
            Ok(Ok(())) => drop(queued),
            Ok(Err(_)) => return End::Gone,
            Err(_) => return End::TooSlow,
        }
    }
    End::Gone
}

pub(super) async fn server_closing(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // An error means the gateway is gone, which is also a reason to close.
    let _ = rx.wait_for(|closing| *closing).await;
}

/// Answer every request in one frame; false when the connection is gone.
async fn handle_frame(
    gateway: &Arc<Gateway>,
    owner: &Owner,
    outbox: &Outbox,
    bytes: &[u8],
) -> bool {
    for parsed in message::frame_requests(bytes) {
        let reply = match parsed {
            Ok(req) => gateway.handle(req, owner).await,
            Err(rejected) => rejected.to_reply(),
        };
        if !outbox.send(&reply).await {
            return false;
        }
    }
    true
}

/// A frame the socket layer refused (too large, or broken framing): say why in the
/// Janus error format, then close with the matching WebSocket code.
pub(super) async fn refuse(socket: &mut SplitSink<WebSocket, Message>, detail: &str, limit: usize) {
    // A ping or close over 125 bytes is a broken frame, not a message over our limit.
    let too_big = (detail.contains("too long") || detail.contains("too big"))
        && !detail.contains("Control frame");
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
