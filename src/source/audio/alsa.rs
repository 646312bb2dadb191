//! ALSA capture: the host's sound (e.g. the HDMI audio of a capture board) from a
//! named ALSA device, as signed 16-bit interleaved PCM at the device's rate, made into
//! 48 kHz stereo frames stamped by a sample count.
//!
//! * Frames are handed over no sooner than the clock allows: a device that answers at
//!   once (ALSA's `null` plugin under a `file` plugin, in tests) still plays in real time.
//! * An overrun (the runner was late reading) loses some sound: the device is
//!   recovered and the timestamps jump over the gap. A device that disappears is lost,
//!   and the runner opens it again with backoff.
//! * With a TC358743 named, the device is opened at the HDMI audio rate the chip
//!   reports, and lost when that rate changes or the audio goes away.

use std::ffi::CString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};

use super::pacing::{wait_until, FrameClock};
use super::resample::ToStereo48k;
use super::{tc358743, AudioNext, AudioSource, Opened};
use crate::media::audio::opus::FRAME_LEN;
use crate::media::clock;
use crate::ratelog::RateLimited;

/// How often the TC358743's audio rate is looked at again while capturing.
const HDMI_CHECK_EVERY: Duration = Duration::from_secs(1);
/// The device's period and buffer: short periods for low delay, a buffer that rides out
/// a busy moment of the machine.
const PERIOD_US: u32 = 10_000;
const BUFFER_US: u32 = 200_000;
/// Overruns are logged at most this often.
const OVERRUN_LOG_EVERY: Duration = Duration::from_secs(10);

/// What to capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlsaConfig {
    /// The ALSA device name, e.g. `hw:tc358743,0` or `default`.
    pub device: String,
    /// The capture rate (Hz) when no TC358743 tells it.
    pub rate: u32,
    /// 1 (duplicated to both sides) or 2.
    pub channels: u32,
    /// The TC358743's V4L2 device, to read the HDMI audio rate from.
    pub tc358743: Option<PathBuf>,
}

/// ALSA capture as a sound source.
pub struct AlsaSource {
    cfg: AlsaConfig,
    capture: Option<Capture>,
    overruns: RateLimited,
}

/// An open device and what its sound becomes.
struct Capture {
    pcm: PCM,
    rate: u32,
    channels: u32,
    convert: ToStereo48k,
    clock: FrameClock,
    /// One read from the device.
    read: Vec<i16>,
    /// 48 kHz stereo not yet handed over.
    pending: Vec<i16>,
    /// The frame handed over.
    frame: Vec<i16>,
    /// The TC358743 and when to look at its rate again.
    hdmi: Option<(PathBuf, Instant)>,
}

impl AlsaSource {
    pub fn new(cfg: AlsaConfig) -> AlsaSource {
        AlsaSource {
            cfg,
            capture: None,
            overruns: RateLimited::new(OVERRUN_LOG_EVERY),
        }
    }
}

impl AudioSource for AlsaSource {
    fn thread_name(&self) -> &'static str {
        "audio-alsa"
    }

    fn open(&mut self) -> Result<Opened, String> {
        let rate = match &self.cfg.tc358743 {
            Some(chip) => tc358743::audio_rate(chip)?,
            None => self.cfg.rate,
        };
        let device = &self.cfg.device;
        let pcm = open_pcm(device, rate, self.cfg.channels)
            .map_err(|e| format!("ALSA device {device:?}: {e}"))?;
        let actual = pcm
            .hw_params_current()
            .and_then(|p| p.get_rate())
            .map_err(|e| format!("ALSA device {device:?}: {e}"))?;
        if actual != rate {
            tracing::info!(
                asked = rate,
                rate = actual,
                "ALSA device {device:?} captures at another rate; converting it to 48 kHz"
            );
        }
        if let Err(e) = pcm.start() {
            return Err(format!("ALSA device {device:?} does not start: {e}"));
        }
        let channels = self.cfg.channels;
        self.capture = Some(Capture {
            pcm,
            rate: actual,
            channels,
            convert: ToStereo48k::new(actual, channels),
            clock: FrameClock::new(clock::monotonic_us()),
            read: vec![0; 960 * channels as usize],
            pending: Vec::with_capacity(FRAME_LEN * 3),
            frame: vec![0; FRAME_LEN],
            hdmi: self
                .cfg
                .tc358743
                .clone()
                .map(|chip| (chip, Instant::now() + HDMI_CHECK_EVERY)),
        });
        Ok(Opened {
            rate: actual,
            channels,
        })
    }

    fn next(&mut self, deadline: Instant) -> AudioNext<'_> {
        let Some(c) = self.capture.as_mut() else {
            return AudioNext::Lost("not open".into());
        };
        let device = &self.cfg.device;
        loop {
            if c.pending.len() >= FRAME_LEN {
                if !wait_until(c.clock.due_us(), deadline) {
                    return AudioNext::Waiting;
                }
                c.clock.catch_up(clock::monotonic_us());
                let capture_us = c.clock.capture_us();
                c.clock.advance();
                c.frame.copy_from_slice(&c.pending[..FRAME_LEN]);
                c.pending.drain(..FRAME_LEN);
                return AudioNext::Frame(&c.frame, capture_us);
            }
            if let Some(lost) = c.hdmi_changed() {
                return AudioNext::Lost(lost);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return AudioNext::Waiting;
            }
            let read = c
                .pcm
                .wait(Some(left.as_millis().clamp(1, 1000) as u32))
                .and_then(|ready| match ready {
                    true => c.pcm.io_i16()?.readi(&mut c.read),
                    false => Ok(0),
                });
            match read {
                Ok(frames) => {
                    let samples = frames * c.channels as usize;
                    c.convert.push(&c.read[..samples], &mut c.pending);
                    if frames == 0 && Instant::now() >= deadline {
                        return AudioNext::Waiting;
                    }
                }
                Err(e) if e.errno() == libc::EAGAIN => {}
                Err(e) => match c.pcm.try_recover(e, true) {
                    Ok(()) => {
                        // Sound was lost: what is pending does not join what follows.
                        if let Some(count) = self.overruns.hit() {
                            tracing::warn!(
                                overruns = count,
                                "ALSA {device:?}: {e}; some sound was lost"
                            );
                        }
                        c.pending.clear();
                        c.convert = ToStereo48k::new(c.rate, c.channels);
                        c.clock.restart(clock::monotonic_us());
                        let _ = c.pcm.start();
                    }
                    Err(_) => return AudioNext::Lost(format!("ALSA device {device:?}: {e}")),
                },
            }
        }
    }

    fn close(&mut self) {
        if let Some(c) = self.capture.take() {
            let _ = c.pcm.drop();
        }
    }
}

impl Capture {
    /// When it is time to look at the TC358743 again: why capturing must start over
    /// (the HDMI audio went away or changed its rate), if it must.
    fn hdmi_changed(&mut self) -> Option<String> {
        let (chip, at) = self.hdmi.as_mut()?;
        if Instant::now() < *at {
            return None;
        }
        *at = Instant::now() + HDMI_CHECK_EVERY;
        match tc358743::audio_rate(chip) {
            Ok(rate) if rate == self.rate => None,
            Ok(rate) => Some(format!(
                "the HDMI audio rate changed from {} to {rate} Hz",
                self.rate
            )),
            Err(e) => Some(e),
        }
    }
}

/// Open `device` for capture of S16_LE interleaved `channels` at about `rate`.
fn open_pcm(device: &str, rate: u32, channels: u32) -> Result<PCM, String> {
    let name = CString::new(device).map_err(|_| "the name contains a NUL byte".to_string())?;
    // Non-blocking: a busy device fails at once instead of hanging the runner, and a
    // read waits no longer than the runner allows.
    let pcm = PCM::open(&name, Direction::Capture, true).map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENODEV => "no such capture device (`arecord -L` lists them)".into(),
        libc::EBUSY => "busy: another program is capturing from it".into(),
        _ => e.to_string(),
    })?;
    {
        let hw = HwParams::any(&pcm).map_err(|e| e.to_string())?;
        hw.set_access(Access::RWInterleaved)
            .map_err(|e| format!("no interleaved access: {e}"))?;
        hw.set_format(Format::s16())
            .map_err(|e| format!("cannot capture S16_LE: {e}"))?;
        hw.set_channels(channels)
            .map_err(|e| format!("cannot capture {channels} channel(s): {e}"))?;
        hw.set_rate_near(rate, ValueOr::Nearest)
            .map_err(|e| format!("cannot capture at {rate} Hz: {e}"))?;
        hw.set_period_time_near(PERIOD_US, ValueOr::Nearest)
            .map_err(|e| e.to_string())?;
        hw.set_buffer_time_near(BUFFER_US, ValueOr::Nearest)
            .map_err(|e| e.to_string())?;
        pcm.hw_params(&hw).map_err(|e| e.to_string())?;
    }
    Ok(pcm)
}
