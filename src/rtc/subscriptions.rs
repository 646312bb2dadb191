//! The engine's subscriptions to the hubs of the streams being watched: one per stream
//! with at least one peer, dropped with its last peer, so an unwatched source idles;
//! and one per stream's sound while a connected peer listens to it.
//!
//! All of them are waited on at once through a [`SelectAll`]. It is built on
//! `FuturesUnordered`, which polls only the subscriptions whose waker fired: a wake-up
//! costs the streams that have a picture, not every stream the engine serves.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::stream::{self, AbortHandle, Abortable, BoxStream, SelectAll};
use futures_util::StreamExt;

use crate::media::{Hub, Picture, StartAt};

/// Names a stream inside the engine: the address of its hub, which the engine keeps
/// alive (and so unique) for as long as the key is in use.
pub type StreamKey = usize;

pub fn stream_key(hub: &Arc<Hub>) -> StreamKey {
    Arc::as_ptr(hub) as StreamKey
}

type Pictures = Abortable<BoxStream<'static, (StreamKey, Arc<Picture>)>>;

#[derive(Default)]
pub struct Subscriptions {
    all: SelectAll<Pictures>,
    handles: HashMap<StreamKey, AbortHandle>,
}

impl Subscriptions {
    /// Subscribe to `hub`, starting with its cached GOP (so the engine has it for the
    /// first viewers). The hub counts the subscriber from now on.
    pub fn subscribe(&mut self, hub: &Arc<Hub>) {
        self.subscribe_from(hub, StartAt::Gop);
    }

    /// Subscribe to `hub` from `start` (a stream's sound: from its next frame, as every
    /// audio frame is a keyframe and an old one is of no use).
    pub fn subscribe_from(&mut self, hub: &Arc<Hub>, start: StartAt) {
        let key = stream_key(hub);
        let subscriber = hub.subscribe(start);
        let pictures = stream::unfold(subscriber, move |mut subscriber| async move {
            let au = subscriber.recv().await?;
            Some(((key, au), subscriber))
        })
        .boxed();
        let (handle, registration) = AbortHandle::new_pair();
        if let Some(old) = self.handles.insert(key, handle) {
            old.abort();
        }
        self.all.push(Abortable::new(pictures, registration));
    }

    /// End the subscription to the stream `key`. Aborting wakes the engine's task; its
    /// next wait drops the subscriber, which tells the hub that nobody watches.
    pub fn unsubscribe(&mut self, key: StreamKey) {
        if let Some(handle) = self.handles.remove(&key) {
            handle.abort();
        }
    }

    /// The next picture of any subscribed stream. Never ready while there is none, and
    /// `None` only when the last one has just ended.
    pub async fn next(&mut self) -> Option<(StreamKey, Arc<Picture>)> {
        if self.all.is_empty() {
            return std::future::pending().await;
        }
        self.all.next().await
    }
}
