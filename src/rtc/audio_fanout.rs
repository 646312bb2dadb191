//! Which viewer gets which stream's sound. Simpler than the pictures' fan-out: every
//! Opus frame stands alone, so there is no GOP to keep and no keyframe to wait for; a
//! viewer hears from the first frame after it connects. A stream's sound is listened
//! to (its hub subscribed) only while at least one connected viewer wants it, so the
//! capture device is open only then. A pure step: no I/O, no clock.

use std::collections::HashMap;
use std::sync::Arc;

use super::subscriptions::{stream_key, StreamKey};
use super::PeerId;
use crate::media::Hub;

/// A stream's sound with at least one viewer that asked for it.
struct Sound {
    hub: Arc<Hub>,
    /// Its connected listeners, who get its frames.
    receivers: Vec<PeerId>,
    /// Listeners, connected or not.
    listeners: usize,
}

struct Listener {
    sound: StreamKey,
    /// Position in its sound's `receivers` while connected.
    slot: Option<usize>,
}

#[derive(Default)]
pub struct AudioFanout {
    sounds: HashMap<StreamKey, Sound>,
    listeners: HashMap<PeerId, Listener>,
}

impl AudioFanout {
    /// The viewer `id` will hear `hub` once connected.
    pub fn add_listener(&mut self, id: PeerId, hub: &Arc<Hub>) {
        let key = stream_key(hub);
        let sound = self.sounds.entry(key).or_insert_with(|| Sound {
            hub: hub.clone(),
            receivers: Vec::new(),
            listeners: 0,
        });
        sound.listeners += 1;
        self.listeners.insert(
            id,
            Listener {
                sound: key,
                slot: None,
            },
        );
    }

    /// The listener `id` has connected: it gets its sound's frames from now on. Returns
    /// the hub to subscribe to when it is the sound's first receiver.
    pub fn connected(&mut self, id: PeerId) -> Option<Arc<Hub>> {
        let listener = self.listeners.get_mut(&id)?;
        let sound = self.sounds.get_mut(&listener.sound)?;
        if listener.slot.is_some() {
            return None;
        }
        listener.slot = Some(sound.receivers.len());
        sound.receivers.push(id);
        (sound.receivers.len() == 1).then(|| sound.hub.clone())
    }

    /// The listener `id` lost its connection (or is going). Returns its sound when it
    /// was the last receiver: the caller ends the subscription.
    pub fn disconnected(&mut self, id: PeerId) -> Option<StreamKey> {
        let listener = self.listeners.get_mut(&id)?;
        let slot = listener.slot.take()?;
        let key = listener.sound;
        let sound = self.sounds.get_mut(&key)?;
        sound.receivers.swap_remove(slot);
        if let Some(moved) = sound.receivers.get(slot) {
            if let Some(l) = self.listeners.get_mut(moved) {
                l.slot = Some(slot);
            }
        }
        sound.receivers.is_empty().then_some(key)
    }

    /// Forget the listener `id`. Returns its sound when the subscription must end.
    pub fn remove_listener(&mut self, id: PeerId) -> Option<StreamKey> {
        let last_receiver = self.disconnected(id);
        let listener = self.listeners.remove(&id)?;
        if let Some(sound) = self.sounds.get_mut(&listener.sound) {
            sound.listeners -= 1;
            if sound.listeners == 0 {
                self.sounds.remove(&listener.sound);
            }
        }
        last_receiver
    }

    /// Whether `key` is a sound (rather than a stream's pictures).
    pub fn is_sound(&self, key: StreamKey) -> bool {
        self.sounds.contains_key(&key)
    }

    /// The connected listeners of the sound `key`.
    pub fn receivers(&self, key: StreamKey) -> &[PeerId] {
        self.sounds
            .get(&key)
            .map_or(&[][..], |s| s.receivers.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sound_is_listened_to_from_its_first_connected_listener_to_its_last() {
        let (a, b) = (Hub::new(4), Hub::new(4));
        let mut fanout = AudioFanout::default();
        fanout.add_listener(1, &a);
        fanout.add_listener(2, &a);
        fanout.add_listener(3, &b);
        assert!(fanout.is_sound(stream_key(&a)));
        assert!(
            fanout.receivers(stream_key(&a)).is_empty(),
            "none connected"
        );

        let first = fanout.connected(1).expect("first receiver subscribes");
        assert!(Arc::ptr_eq(&first, &a));
        assert!(fanout.connected(1).is_none(), "connected twice: once");
        assert!(fanout.connected(2).is_none(), "already subscribed");
        assert!(fanout.connected(3).is_some(), "another sound");
        assert_eq!(fanout.receivers(stream_key(&a)), &[1, 2]);
        assert_eq!(fanout.receivers(stream_key(&b)), &[3]);

        assert_eq!(fanout.disconnected(1), None, "2 still listens");
        assert_eq!(fanout.receivers(stream_key(&a)), &[2]);
        assert_eq!(fanout.remove_listener(2), Some(stream_key(&a)), "the last");
        assert!(fanout.is_sound(stream_key(&a)), "1 may connect again");
        assert!(fanout.connected(1).is_some(), "subscribes again");
        assert_eq!(fanout.remove_listener(1), Some(stream_key(&a)));
        assert!(!fanout.is_sound(stream_key(&a)));
        assert_eq!(fanout.remove_listener(1), None, "gone already");
        assert_eq!(fanout.remove_listener(3), Some(stream_key(&b)));
        assert!(fanout.listeners.is_empty() && fanout.sounds.is_empty());
    }
}
