//! Sound sources: where a stream's audio comes from. Each implements the one contract,
//! [`AudioSource`] (open, hand over the next 20 ms of PCM with its capture time,
//! close), and runs on its own thread under [`runner`], which opens it only while
//! somebody listens, retries with backoff, encodes every frame once to Opus and
//! publishes it into the stream's audio hub.
//!
//! Sources: the embedded test [`tone`] and ALSA capture ([`alsa`]). The contract is
//! kept small so that pushed sound (WHIP, MPEG-TS uploads) can be added as sources too.

pub mod alsa;
mod pacing;
pub mod resample;
pub mod runner;
pub mod status;
pub mod tc358743;
pub mod tone;

use std::time::{Duration, Instant};

pub use self::status::{AudioReport, AudioStatus, AudioStatusHandle};

/// What a source gives the runner.
pub enum AudioNext<'a> {
    /// One frame: [`crate::media::audio::opus::FRAME_LEN`] interleaved stereo samples at
    /// 48 kHz, and the CLOCK_MONOTONIC time (µs) of its first sample. Consecutive
    /// frames are stamped exactly [`crate::media::audio::FRAME_US`] apart unless sound
    /// was lost between them.
    Frame(&'a [i16], u64),
    /// Nothing before the deadline.
    Waiting,
    /// The source is gone (device unplugged, failed): closed, and opened again after a
    /// backoff.
    Lost(String),
}

/// What an open source captures, for `/state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The device's own rate (Hz), before resampling to 48 kHz.
    pub rate: u32,
    /// The device's channels (1 or 2), before mono is made stereo.
    pub channels: u32,
}

/// A source of sound. It opens, hands over frames and closes; the runner does the rest
/// (see the module documentation). Calls come from the runner's thread only.
pub trait AudioSource: Send {
    /// The thread's name.
    fn thread_name(&self) -> &'static str;

    /// The first and longest pause before opening again.
    fn backoff(&self) -> (Duration, Duration) {
        (Duration::from_millis(250), Duration::from_secs(5))
    }

    /// Start capturing. An error says why not.
    fn open(&mut self) -> Result<Opened, String>;

    /// The next frame, waiting no later than `deadline`. A frame is never handed over
    /// before all of its sound could have been captured (never ahead of real time).
    fn next(&mut self, deadline: Instant) -> AudioNext<'_>;

    /// Stop capturing.
    fn close(&mut self);
}
