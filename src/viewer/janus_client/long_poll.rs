//! The Janus HTTP long-poll transport: each request a POST to the level its ids name,
//! events from one long poll after another, as janus.js does.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::mpsc;

use super::{set_failure, Endpoint};
use crate::viewer::http;

/// Run the transport in two tasks: requests from `out` are POSTed and their replies go
/// to `inbox`; once `create` has answered, the session's events are long-polled into
/// `inbox` too. Why it stopped goes to `failure`.
pub(super) fn spawn(
    endpoint: &Endpoint,
    mut out: mpsc::UnboundedReceiver<Value>,
    inbox: mpsc::UnboundedSender<Value>,
    failure: Arc<Mutex<Option<String>>>,
) {
    let (session_tx, mut session_rx) = mpsc::unbounded_channel::<u64>();
    let authority = endpoint.authority.clone();
    let root = endpoint.path.trim_end_matches('/').to_string();
    // Requests: POST to the level the ids say, as janus.js does (ids in the path).
    let replies = inbox.clone();
    let (req_authority, req_root, req_failure) = (authority.clone(), root.clone(), failure.clone());
    tokio::spawn(async move {
        while let Some(mut msg) = out.recv().await {
            let mut path = req_root.clone();
            if let Some(s) = msg.as_object_mut().and_then(|o| o.remove("session_id")) {
                path += &format!("/{s}");
            }
            if let Some(h) = msg.as_object_mut().and_then(|o| o.remove("handle_id")) {
                path += &format!("/{h}");
            }
            let answer = http::request(
                &req_authority,
                "POST",
                &path,
                Some(msg.to_string().as_bytes()),
            )
            .await;
            match answer {
                Ok((200, body)) => match serde_json::from_slice::<Value>(&body) {
                    Ok(v) => {
                        if v["janus"] == "success" && msg["janus"] == "create" {
                            if let Some(id) = v["data"]["id"].as_u64() {
                                let _ = session_tx.send(id);
                            }
                        }
                        let _ = replies.send(v);
                    }
                    Err(_) => {
                        set_failure(
                            &req_failure,
                            format!("POST {path} answered something that is not JSON: not a Janus server"),
                        );
                        break;
                    }
                },
                Ok((status, _)) => {
                    set_failure(
                        &req_failure,
                        format!("POST {path} answered HTTP {status}: not a Janus API endpoint"),
                    );
                    break;
                }
                Err(e) => {
                    set_failure(
                        &req_failure,
                        format!(
                            "cannot reach the Janus API at http://{req_authority}{path}: {e:#}"
                        ),
                    );
                    break;
                }
            }
        }
    });
    // Events: one long poll after another, maxev=10 (array replies), like janus.js.
    tokio::spawn(async move {
        let Some(session) = session_rx.recv().await else {
            return;
        };
        loop {
            let path = format!("{root}/{session}?rid=1&maxev=10");
            match http::request(&authority, "GET", &path, None).await {
                Ok((200, body)) => {
                    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                        set_failure(
                            &failure,
                            "a long poll answered something that is not JSON".into(),
                        );
                        break;
                    };
                    let events = match v {
                        Value::Array(items) => items,
                        one => vec![one],
                    };
                    for ev in events {
                        if ev["janus"] != "keepalive" && inbox.send(ev).is_err() {
                            return;
                        }
                    }
                }
                Ok((status, _)) => {
                    set_failure(&failure, format!("a long poll answered HTTP {status}"));
                    break;
                }
                Err(e) => {
                    set_failure(&failure, format!("long poll: {e:#}"));
                    break;
                }
            }
        }
    });
}
