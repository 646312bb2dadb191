//! The Janus WebSocket transport: one socket (`janus-protocol` subprotocol), requests
//! out and every reply and event in, as text frames of JSON.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::{set_failure, Endpoint};

/// Open the WebSocket (failing here if the server is not a Janus WebSocket) and run it
/// in a task: `out` is sent, what arrives goes to `inbox`, why it stopped to `failure`.
pub(super) async fn spawn(
    endpoint: &Endpoint,
    mut out: mpsc::UnboundedReceiver<Value>,
    inbox: mpsc::UnboundedSender<Value>,
    failure: Arc<Mutex<Option<String>>>,
) -> Result<()> {
    let url = endpoint.url();
    let mut req = url.as_str().into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "janus-protocol".parse()?);
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .with_context(|| format!("cannot open a Janus WebSocket at {url}"))?;
    if resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.as_bytes())
        != Some(b"janus-protocol")
    {
        bail!("{url} did not select the janus-protocol subprotocol: not a Janus WebSocket");
    }
    let (mut sink, mut stream) = ws.split();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                msg = out.recv() => match msg {
                    Some(v) => {
                        if let Err(e) = sink.send(Message::Text(v.to_string().into())).await {
                            set_failure(&failure, format!("WebSocket send: {e}"));
                            break;
                        }
                    }
                    None => { let _ = sink.close().await; break; }
                },
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<Value>(&t) {
                        Ok(v) => { let _ = inbox.send(v); }
                        Err(_) => {
                            set_failure(&failure, "the server sent a text frame that is not JSON".into());
                            break;
                        }
                    },
                    Some(Ok(_)) => {}
                    Some(Err(e)) => { set_failure(&failure, format!("WebSocket: {e}")); break; }
                    None => { set_failure(&failure, "the server closed the WebSocket".into()); break; }
                },
            }
        }
    });
    Ok(())
}
