//! What a WebSocket connection has yet to send, bounded in bytes. Replies wait for room
//! (so a client that does not read stops being read from); events, pushed from code
//! that cannot wait, mark the connection as too slow when there is no room, and the
//! transport then closes it.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

/// One serialized message with its share of the byte budget.
pub struct Queued {
    pub text: String,
    _room: OwnedSemaphorePermit,
}

#[derive(Clone)]
pub struct Outbox {
    /// Boxed: the channel's first block has room for 32 messages, in every
    /// connection, and a pointer is a fifth of a message's size.
    tx: mpsc::UnboundedSender<Box<Queued>>,
    room: Arc<Semaphore>,
    max_bytes: usize,
    overflowed: Arc<Notify>,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("free_bytes", &self.room.available_permits())
            .finish()
    }
}

/// An outbox holding at most `max_bytes` (a larger message takes the whole budget),
/// and the queue the writer drains.
pub fn channel(max_bytes: usize) -> (Outbox, mpsc::UnboundedReceiver<Box<Queued>>) {
    let max_bytes = max_bytes.clamp(1, Semaphore::MAX_PERMITS);
    let (tx, rx) = mpsc::unbounded_channel();
    let outbox = Outbox {
        tx,
        room: Arc::new(Semaphore::new(max_bytes)),
        max_bytes,
        overflowed: Arc::new(Notify::new()),
    };
    (outbox, rx)
}

impl Outbox {
    fn cost(&self, text: &str) -> u32 {
        // At least one unit, so a queue of empty strings is bounded as well.
        text.len().clamp(1, self.max_bytes) as u32
    }

    /// Queue a reply, waiting for room. False when the connection is gone.
    pub async fn send(&self, value: &Value) -> bool {
        let text = value.to_string();
        let Ok(room) = self.room.clone().acquire_many_owned(self.cost(&text)).await else {
            return false;
        };
        self.tx.send(Box::new(Queued { text, _room: room })).is_ok()
    }

    /// Queue an event without waiting; with no room the connection is marked too slow.
    pub fn push(&self, value: &Value) {
        let text = value.to_string();
        match self.room.clone().try_acquire_many_owned(self.cost(&text)) {
            Ok(room) => {
                let _ = self.tx.send(Box::new(Queued { text, _room: room }));
            }
            Err(_) => self.overflowed.notify_one(),
        }
    }

    /// Resolves once an event found no room.
    pub async fn overflowed(&self) {
        self.overflowed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[tokio::test]
    async fn replies_wait_for_room_and_events_overflow() {
        let (outbox, mut rx) = channel(64);
        let big = json!({"x": "a".repeat(40)});
        assert!(outbox.send(&big).await);
        let waiting = tokio::time::timeout(Duration::from_millis(50), outbox.send(&big)).await;
        assert!(waiting.is_err(), "no room: the reply waits");
        outbox.push(&big);
        tokio::time::timeout(Duration::from_secs(1), outbox.overflowed())
            .await
            .expect("an event with no room marks the connection");
        let first = rx.recv().await.unwrap();
        drop(first);
        assert!(outbox.send(&big).await, "sending frees the room");
        let huge = json!({"x": "b".repeat(1000)});
        drop(rx.recv().await.unwrap());
        assert!(
            outbox.send(&huge).await,
            "a message above the budget takes all of it"
        );
    }
}
