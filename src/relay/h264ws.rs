//! `/h264`: raw H.264 over WebSocket for jmuxer-style players. Each client gets its own
//! hub subscription, starts at a keyframe with SPS/PPS (the cached GOP), and receives one
//! Annex-B access unit per binary message.
//!
//! A client that cannot keep up never holds anyone else back: its access units wait in a
//! small queue of its own, and when that overflows the client skips to the next keyframe
//! (without asking the source for one, so a slow client cannot degrade everyone's stream).

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use tokio::sync::mpsc;

use super::Counters;
use crate::media::hub::{Hub, StartAt};
use crate::media::stream::Output;
use crate::media::{Picture, Stream};

/// Access units a client may have waiting; more than one GOP replay fits, so a new
/// client's cached GOP is never cut short.
pub const CLIENT_QUEUE_FRAMES: usize = 120;

/// Serve one `/h264` client until it goes away.
pub async fn serve(stream: Arc<Stream>, counters: Arc<Counters>, mut socket: WebSocket) {
    let _client = counters.h264_client();
    let _viewing = stream.viewer(Output::H264Ws);
    let hub = stream.hub().clone();
    let (tx, mut rx) = mpsc::channel::<Arc<Picture>>(CLIENT_QUEUE_FRAMES);
    let task = counters.task();
    let pump = tokio::spawn({
        let counters = counters.clone();
        async move {
            let _task = task;
            pump(hub, tx, &counters).await
        }
    });
    loop {
        tokio::select! {
            au = rx.recv() => {
                let Some(au) = au else { break };
                if socket.send(Message::Binary(au.data.clone())).await.is_err() {
                    break;
                }
                counters.h264_sent(au.data.len());
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    drop(rx);
    let _ = pump.await;
}

/// Move access units from the hub into the client's queue, dropping to the next keyframe
/// when the queue is full. Ends when the client's side of the queue is dropped.
async fn pump(hub: Arc<Hub>, tx: mpsc::Sender<Arc<Picture>>, counters: &Counters) {
    let mut sub = hub.subscribe(StartAt::Gop);
    let mut wait_key = false;
    loop {
        let au = tokio::select! {
            au = sub.recv() => match au {
                Some(au) => au,
                None => return,
            },
            _ = tx.closed() => return,
        };
        if wait_key && !au.key {
            continue;
        }
        wait_key = false;
        match tx.try_send(au) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                counters.h264_dropped_to_key();
                tracing::debug!("h264 client cannot keep up; skipping to the next keyframe");
                wait_key = true;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
