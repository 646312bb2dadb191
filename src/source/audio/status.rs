//! What `/state` says about a stream's sound.

use std::sync::{Arc, Mutex};

use super::Opened;
use crate::media::hub::HubInfo;

/// The sound source's own account of itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AudioStatus {
    /// The configured source: `tone` or `alsa:DEVICE`; `whip` for the sound of the
    /// stream's WHIP publisher.
    pub source: String,
    /// `idle` while nobody listens (the device is closed), `live` while frames flow,
    /// `failing` while the device cannot be opened or was lost (retried with backoff).
    /// The sound of a publisher is `live` from its first frame until it leaves.
    pub state: &'static str,
    /// Why it is failing, or was last lost.
    pub last_error: Option<String>,
    /// Failed attempts since it was last live.
    pub failures: u64,
    /// What the open device captures: its rate (Hz) and channels, before the
    /// conversion to 48 kHz stereo. `None` while closed.
    pub rate: Option<u32>,
    pub channels: Option<u32>,
}

/// `/state`'s `audio` of a stream: the status with what its hub has seen.
#[derive(Debug, serde::Serialize)]
pub struct AudioReport {
    #[serde(flatten)]
    pub status: AudioStatus,
    /// Opus frames published since the start.
    pub frames: u64,
    /// Outputs taking the sound now.
    pub listeners: usize,
}

impl AudioReport {
    pub fn new(status: AudioStatus, hub: &HubInfo) -> AudioReport {
        AudioReport {
            status,
            frames: hub.frames,
            listeners: hub.subscribers,
        }
    }
}

/// Shared, cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct AudioStatusHandle(Arc<Mutex<AudioStatus>>);

impl AudioStatusHandle {
    pub fn new(source: &str) -> AudioStatusHandle {
        AudioStatusHandle(Arc::new(Mutex::new(AudioStatus {
            source: source.to_string(),
            state: "idle",
            ..AudioStatus::default()
        })))
    }

    pub fn snapshot(&self) -> AudioStatus {
        self.lock().clone()
    }

    /// The device is open and delivers.
    pub fn set_live(&self, opened: Opened) {
        let mut s = self.lock();
        s.state = "live";
        s.failures = 0;
        s.rate = Some(opened.rate);
        s.channels = Some(opened.channels);
    }

    /// Closed because nobody listens.
    pub fn set_idle(&self) {
        let mut s = self.lock();
        s.state = "idle";
        (s.rate, s.channels) = (None, None);
    }

    /// Opening failed, or the open device was lost, for `why`.
    pub fn set_failing(&self, why: &str) {
        let mut s = self.lock();
        s.state = "failing";
        s.last_error = Some(why.to_string());
        s.failures += 1;
        (s.rate, s.channels) = (None, None);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AudioStatus> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
