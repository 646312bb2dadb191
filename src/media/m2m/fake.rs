//! A memory-to-memory encoder in software, for tests: it behaves like the stateful
//! V4L2 encoder at the ioctl boundary (controls, padded input layout, a fixed number of
//! input buffers, output stamped with the input's timestamp, keyframe control) and
//! encodes with openh264, so its output is real H.264.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use v4l::v4l_sys as k;

use super::{DeviceOpener, Encoded, InputLayout, M2mDevice};
use crate::media::encoder::H264Encoder;
use crate::media::video::VideoSettings;

/// Input buffers the fake has.
pub const INPUT_BUFFERS: usize = 2;

/// What goes wrong, from which queued picture on (counted from 0 across opens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Opening fails.
    Open,
    /// Queueing picture N and later fails (an ioctl error).
    QueueFrom(usize),
    /// Pictures from N on are taken but never encoded (the device hangs).
    StallFrom(usize),
    /// From picture N on the device keeps its input buffers.
    HoldInputsFrom(usize),
    /// Before each picture's output, a stale buffer stamped 0 (the Pi's first output).
    StaleFirst,
    /// Setting any control fails.
    Controls,
}

/// What the test can see of every fake the opener made.
#[derive(Debug, Default)]
pub struct FakeLog {
    pub opens: usize,
    pub controls: Vec<(u32, i32)>,
    pub forced_keys: usize,
    pub started: Option<(u32, u32, u32)>,
    pub queued: usize,
    /// The fault now in force (tests may change it between pictures).
    pub fault: Option<Fault>,
}

pub type Log = Arc<Mutex<FakeLog>>;

/// An opener of fakes sharing `log`.
pub fn opener(log: &Log) -> DeviceOpener {
    let log = log.clone();
    Box::new(move || {
        let mut l = log.lock().unwrap();
        l.opens += 1;
        if l.fault == Some(Fault::Open) {
            anyhow::bail!("no such device (fake)");
        }
        Ok(Box::new(FakeM2m {
            log: log.clone(),
            encoder: None,
            layout: InputLayout::packed(0, 0),
            size: (0, 0),
            bitrate_bps: 1_000_000,
            gop: 60,
            key_requested: false,
            held: 0,
            output: VecDeque::new(),
        }) as Box<dyn M2mDevice>)
    })
}

pub fn log_with(fault: Fault) -> Log {
    Arc::new(Mutex::new(FakeLog {
        fault: Some(fault),
        ..FakeLog::default()
    }))
}

struct FakeM2m {
    log: Log,
    encoder: Option<H264Encoder>,
    layout: InputLayout,
    size: (u32, u32),
    bitrate_bps: i32,
    gop: i32,
    key_requested: bool,
    /// Input buffers the device keeps.
    held: usize,
    output: VecDeque<Encoded>,
}

impl FakeM2m {
    fn fault(&self) -> Fault {
        self.log.lock().unwrap().fault.unwrap_or(Fault::None)
    }
}

impl M2mDevice for FakeM2m {
    fn set_control(&mut self, id: u32, value: i32) -> io::Result<()> {
        if self.fault() == Fault::Controls {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut log = self.log.lock().unwrap();
        log.controls.push((id, value));
        match id {
            k::V4L2_CID_MPEG_VIDEO_BITRATE => self.bitrate_bps = value,
            k::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD => self.gop = value,
            k::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME => {
                log.forced_keys += 1;
                self.key_requested = true;
            }
            _ => {}
        }
        Ok(())
    }

    fn start(&mut self, width: u32, height: u32, fps: u32) -> io::Result<InputLayout> {
        let settings = VideoSettings {
            width,
            height,
            fps,
            bitrate_kbps: (self.bitrate_bps / 1000).max(1) as u32,
            gop: self.gop.max(1) as u32,
        };
        self.encoder = Some(H264Encoder::new(&settings).map_err(io::Error::other)?);
        // Padded like hardware: rows to 32 bytes, planes to 16 rows.
        self.layout = InputLayout {
            bytes_per_line: width.next_multiple_of(32),
            rows: height.next_multiple_of(16),
        };
        self.size = (width, height);
        self.log.lock().unwrap().started = Some((width, height, fps));
        Ok(self.layout)
    }

    fn queue_input(
        &mut self,
        timestamp_us: u64,
        fill: &mut dyn FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<()> {
        let n = {
            let mut log = self.log.lock().unwrap();
            log.queued += 1;
            log.queued - 1
        };
        let fault = self.fault();
        if matches!(fault, Fault::QueueFrom(from) if n >= from) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if self.held >= INPUT_BUFFERS {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut buffer = vec![0u8; self.layout.size()];
        let used = fill(&mut buffer)?;
        assert_eq!(used, self.layout.size(), "a whole picture is queued");
        if matches!(fault, Fault::HoldInputsFrom(from) if n >= from) {
            self.held += 1;
        }
        if matches!(fault, Fault::StallFrom(from) if n >= from) {
            return Ok(());
        }
        let (w, h) = (self.size.0 as usize, self.size.1 as usize);
        let frame = self
            .layout
            .read(&buffer, w, h)
            .ok_or_else(|| io::Error::other("short picture"))?;
        let encoder = self
            .encoder
            .as_mut()
            .ok_or_else(|| io::Error::other("not started"))?;
        if std::mem::take(&mut self.key_requested) {
            encoder.force_keyframe();
        }
        let picture = encoder
            .encode(&frame, timestamp_us)
            .map_err(io::Error::other)?;
        if fault == Fault::StaleFirst {
            self.output.push_back(Encoded {
                data: vec![0, 0, 0, 1, 0x09, 0xf0],
                key: false,
                timestamp_us: 0,
            });
        }
        if let Some(picture) = picture {
            self.output.push_back(Encoded {
                data: picture.data.to_vec(),
                key: picture.key,
                timestamp_us,
            });
        }
        Ok(())
    }

    fn dequeue_output(&mut self, _timeout: Duration) -> io::Result<Option<Encoded>> {
        // Nothing queued means a hung device: the wait would time out.
        Ok(self.output.pop_front())
    }
}
