//! The browsers' microphones, played on the host: the Opus packets the WebRTC engine
//! hands over (`watch {mic: true}`) go through a jitter buffer and a decoder per
//! browser, are mixed, and played on an ALSA device with about 50 ms of latency, as
//! the ustreamer plugin plays them on its `aplay.device`.

pub mod device;
pub mod jitter;
pub mod keeper;
pub mod mixer;
pub mod playback;
pub mod stats;

pub use playback::spawn;
pub use stats::{MicReport, MicStats};
