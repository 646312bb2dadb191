//! Where the mix is played: an ALSA playback device, opened for S16_LE stereo at
//! 48 kHz with 20 ms periods. It is opened non-blocking, so a device another program
//! holds cannot stall the playback thread, and a write never waits: the thread's own
//! clock paces the sound, and the device's queue is kept short (a frame that would
//! queue more than [`MAX_QUEUED`] is skipped) so the latency stays near 50 ms even
//! when the two clocks drift apart.

use std::cell::RefCell;
use std::ffi::CString;
use std::rc::Rc;

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};

use crate::media::audio::opus::FRAME_LEN;
use crate::media::audio::{CHANNELS, FRAME_SAMPLES, SAMPLE_RATE};

/// Periods (20 ms each) the device's buffer is asked to hold.
const BUFFER_PERIODS: i64 = 4;
/// Frames (per channel) queued in the device beyond which a new frame is skipped:
/// two periods, so at most 60 ms are ever queued after a write.
pub const MAX_QUEUED: i64 = 2 * FRAME_SAMPLES as i64;

/// What became of a frame given to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrote {
    Played,
    /// The device had run dry (an underrun) and was restarted, then played it.
    AfterUnderrun,
    /// The device already held enough: skipped to keep the latency down.
    Skipped,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeviceError(pub String);

/// A sink of 20 ms frames of interleaved S16 stereo at 48 kHz.
pub trait PlaybackDevice {
    fn write(&mut self, frame: &[i16]) -> Result<Wrote, DeviceError>;
}

/// An ALSA playback PCM, configured for the mix.
pub struct AlsaPlayback {
    pcm: PCM,
    buffer_frames: i64,
}

/// alsa-lib's own error messages on this thread (it would print them to stderr),
/// to be told with ours.
pub struct AlsaMessages(Option<Rc<RefCell<alsa::Output>>>);

impl AlsaMessages {
    /// Collect alsa-lib's messages of the calling thread from now on.
    pub fn capture() -> AlsaMessages {
        AlsaMessages(alsa::Output::local_error_handler().ok())
    }

    /// What alsa-lib said since the last call, on one line.
    pub fn take(&mut self) -> String {
        let Some(output) = &self.0 else {
            return String::new();
        };
        let text = output.borrow().to_string();
        // A new buffer empties the old one.
        if !text.is_empty() {
            self.0 = alsa::Output::local_error_handler().ok();
        }
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

impl AlsaPlayback {
    /// Open `name` (e.g. `plughw:UAC2Gadget,0`) and set it up; one period of silence
    /// is queued, so the first frame starts it with a period in hand.
    pub fn open(name: &str) -> Result<AlsaPlayback, DeviceError> {
        let error = |what: &str, e: alsa::Error| DeviceError(format!("{what}: {e}"));
        let cname =
            CString::new(name).map_err(|_| DeviceError("the device name has a NUL".into()))?;
        let pcm = PCM::open(&cname, Direction::Playback, true).map_err(|e| error("open", e))?;
        {
            let hw = HwParams::any(&pcm).map_err(|e| error("hw params", e))?;
            hw.set_access(Access::RWInterleaved)
                .map_err(|e| error("interleaved access", e))?;
            hw.set_format(Format::S16LE)
                .map_err(|e| error("format S16_LE (try the plughw: device)", e))?;
            hw.set_channels(CHANNELS as u32)
                .map_err(|e| error("2 channels (try the plughw: device)", e))?;
            hw.set_rate(SAMPLE_RATE, ValueOr::Nearest)
                .map_err(|e| error("rate 48000 Hz (try the plughw: device)", e))?;
            hw.set_period_size_near(FRAME_SAMPLES as i64, ValueOr::Nearest)
                .map_err(|e| error("period size", e))?;
            hw.set_buffer_size_near(FRAME_SAMPLES as i64 * BUFFER_PERIODS)
                .map_err(|e| error("buffer size", e))?;
            pcm.hw_params(&hw).map_err(|e| error("hw params", e))?;
        }
        let buffer_frames = pcm
            .hw_params_current()
            .and_then(|hw| hw.get_buffer_size())
            .map_err(|e| error("buffer size", e))?;
        {
            // Start once two periods are queued: the silence and the first frame.
            let sw = pcm.sw_params_current().map_err(|e| error("sw params", e))?;
            sw.set_start_threshold((2 * FRAME_SAMPLES as i64).min(buffer_frames))
                .map_err(|e| error("start threshold", e))?;
            pcm.sw_params(&sw).map_err(|e| error("sw params", e))?;
        }
        let mut device = AlsaPlayback { pcm, buffer_frames };
        device.prefill()?;
        Ok(device)
    }

    /// Queue a period of silence: the cushion the device plays from.
    fn prefill(&mut self) -> Result<(), DeviceError> {
        self.writei(&[0; FRAME_LEN])
            .map(|_| ())
            .map_err(|e| DeviceError(format!("write: {e}")))
    }

    fn writei(&self, frame: &[i16]) -> Result<usize, alsa::Error> {
        self.pcm.io_i16()?.writei(frame)
    }

    /// Restart after an underrun (or a suspend), with the cushion again.
    fn recover(&mut self, e: alsa::Error) -> Result<(), DeviceError> {
        self.pcm
            .try_recover(e, true)
            .map_err(|e| DeviceError(format!("recover: {e}")))?;
        self.prefill()
    }

    /// Frames queued in the device now.
    fn queued(&self) -> Result<i64, alsa::Error> {
        Ok(self.buffer_frames - self.pcm.avail()?)
    }
}

impl PlaybackDevice for AlsaPlayback {
    fn write(&mut self, frame: &[i16]) -> Result<Wrote, DeviceError> {
        let mut wrote = Wrote::Played;
        match self.queued() {
            Ok(queued) if queued > MAX_QUEUED => return Ok(Wrote::Skipped),
            Ok(_) => {}
            // Most often an underrun (EPIPE); anything else fails in the recovery.
            Err(e) => {
                self.recover(e)?;
                wrote = Wrote::AfterUnderrun;
            }
        }
        match self.writei(frame) {
            Ok(_) => Ok(wrote),
            Err(e) if e.errno() == libc::EAGAIN => Ok(Wrote::Skipped),
            Err(e) => {
                self.recover(e)?;
                self.writei(frame)
                    .map_err(|e| DeviceError(format!("write: {e}")))?;
                Ok(Wrote::AfterUnderrun)
            }
        }
    }
}
