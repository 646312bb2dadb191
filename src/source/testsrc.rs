//! The generated test pattern, encoded with openh264.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::media::Hub;

#[derive(Clone, Debug)]
pub struct TestsrcConfig {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub gop: u32,
}

/// Start the encoder thread. It publishes into `hub` while anyone is subscribed, idles
/// otherwise, honours keyframe requests, and exits when `stop` is set.
pub fn spawn(
    _cfg: TestsrcConfig,
    _hub: Arc<Hub>,
    _stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    todo!("testsrc")
}
