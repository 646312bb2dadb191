//! [`M2mDevice`] on a real V4L2 memory-to-memory node, over the safe calls of
//! [`crate::sys::v4l2_m2m`]. Not yet run on hardware: written from the V4L2 stateful
//! encoder documentation and what µStreamer does with the Raspberry Pi's encoder.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use v4l::v4l_sys as k;
use v4l::FourCC;

use super::{Encoded, InputLayout, M2mDevice, BITSTREAM_BUFFER_BYTES};
use crate::sys::v4l2_m2m::{M2mFd, MappedBuffer, PlaneFormat, Queue};

/// Input buffers: one being encoded, one being filled.
const PICTURE_BUFFERS: u32 = 2;
/// Output buffers: one being read back, one being written.
const BITSTREAM_BUFFERS: u32 = 2;
/// How long queueing waits for the device to give an input buffer back.
const INPUT_WAIT: Duration = Duration::from_millis(200);

fn fourcc(code: &[u8; 4]) -> u32 {
    FourCC::new(code).into()
}

/// An open, checked encoder node and, once started, its mapped buffers.
pub struct V4l2M2m {
    fd: M2mFd,
    pictures: Vec<MappedBuffer>,
    /// Input buffers this side holds (not queued to the device).
    free_pictures: Vec<u32>,
    bitstream: Vec<MappedBuffer>,
    streaming: bool,
}

impl V4l2M2m {
    /// Open `path` and check it is a memory-to-memory device taking I420 and giving
    /// H.264; the error says which it is not.
    pub fn open(path: &Path) -> anyhow::Result<V4l2M2m> {
        let fd = M2mFd::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => anyhow::anyhow!("{} does not exist", path.display()),
            _ => anyhow::anyhow!("cannot open {}: {e}", path.display()),
        })?;
        let (driver, caps) = fd
            .capabilities()
            .map_err(|e| anyhow::anyhow!("{} is not a V4L2 device ({e})", path.display()))?;
        if caps & k::V4L2_CAP_VIDEO_M2M_MPLANE == 0 {
            bail!(
                "{} (driver {driver}) is not a V4L2 memory-to-memory encoder with the \
                 multiplanar API (on a Raspberry Pi the H.264 encoder is /dev/video11)",
                path.display()
            );
        }
        let outputs = fd.formats(Queue::Bitstream)?;
        if !outputs.contains(&fourcc(b"H264")) {
            bail!(
                "{} (driver {driver}) does not encode H.264 (it offers {})",
                path.display(),
                names(&outputs)
            );
        }
        let inputs = fd.formats(Queue::Pictures)?;
        if !inputs.contains(&fourcc(b"YU12")) {
            bail!(
                "{} (driver {driver}) does not take I420 pictures (it takes {})",
                path.display(),
                names(&inputs)
            );
        }
        Ok(V4l2M2m {
            fd,
            pictures: Vec::new(),
            free_pictures: Vec::new(),
            bitstream: Vec::new(),
            streaming: false,
        })
    }

    /// Take back every input buffer the device has finished with.
    fn reclaim_pictures(&mut self) -> io::Result<()> {
        while let Some(done) = self.fd.dequeue(Queue::Pictures)? {
            if (done.index as usize) < self.pictures.len()
                && !self.free_pictures.contains(&done.index)
            {
                self.free_pictures.push(done.index);
            }
        }
        Ok(())
    }
}

fn names(codes: &[u32]) -> String {
    let names: Vec<String> = codes.iter().map(|&c| FourCC::from(c).to_string()).collect();
    match names.is_empty() {
        true => "nothing".into(),
        false => names.join(", "),
    }
}

impl M2mDevice for V4l2M2m {
    fn set_control(&mut self, id: u32, value: i32) -> io::Result<()> {
        self.fd.set_control(id, value)
    }

    fn start(&mut self, width: u32, height: u32, fps: u32) -> io::Result<InputLayout> {
        // The coded format first: the stateful encoder API lets it change the raw one.
        let output = self.fd.set_format(
            Queue::Bitstream,
            PlaneFormat {
                width,
                height,
                fourcc: fourcc(b"H264"),
                colorspace: k::v4l2_colorspace_V4L2_COLORSPACE_DEFAULT,
                bytes_per_line: 0,
                size_image: BITSTREAM_BUFFER_BYTES,
            },
        )?;
        if output.fourcc != fourcc(b"H264") {
            return Err(io::Error::other("the device refused H.264 output"));
        }
        let input = self.fd.set_format(
            Queue::Pictures,
            PlaneFormat {
                width,
                height,
                fourcc: fourcc(b"YU12"),
                // Cameras' YUV and peregrine's conversions are BT.601.
                colorspace: k::v4l2_colorspace_V4L2_COLORSPACE_SMPTE170M,
                bytes_per_line: 0,
                size_image: 0,
            },
        )?;
        if input.fourcc != fourcc(b"YU12") {
            return Err(io::Error::other("the device refused I420 input"));
        }
        self.fd.set_frame_rate(fps)?;

        let count = self.fd.request_buffers(Queue::Pictures, PICTURE_BUFFERS)?;
        for index in 0..count {
            self.pictures
                .push(self.fd.map_buffer(Queue::Pictures, index)?);
            self.free_pictures.push(index);
        }
        let count = self
            .fd
            .request_buffers(Queue::Bitstream, BITSTREAM_BUFFERS)?;
        for index in 0..count {
            self.bitstream
                .push(self.fd.map_buffer(Queue::Bitstream, index)?);
            self.fd.queue(Queue::Bitstream, index, 0, 0)?;
        }
        if self.pictures.is_empty() || self.bitstream.is_empty() {
            return Err(io::Error::other("the device gave no buffers"));
        }
        self.fd.stream(Queue::Pictures, true)?;
        self.fd.stream(Queue::Bitstream, true)?;
        self.streaming = true;
        let bytes_per_line = match input.bytes_per_line {
            0 => width,
            n => n,
        };
        Ok(InputLayout {
            bytes_per_line,
            rows: input.height.max(height),
        })
    }

    fn queue_input(
        &mut self,
        timestamp_us: u64,
        fill: &mut dyn FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.reclaim_pictures()?;
        if self.free_pictures.is_empty() && self.fd.poll(true, INPUT_WAIT)? {
            self.reclaim_pictures()?;
        }
        let Some(index) = self.free_pictures.pop() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let used = match self.pictures.get_mut(index as usize) {
            Some(buffer) => fill(buffer.bytes_mut()),
            None => Err(io::Error::other("input buffer index out of range")),
        };
        let used = match used {
            Ok(used) => used,
            Err(e) => {
                self.free_pictures.push(index);
                return Err(e);
            }
        };
        let used = u32::try_from(used).map_err(io::Error::other)?;
        self.fd.queue(Queue::Pictures, index, used, timestamp_us)
    }

    fn dequeue_output(&mut self, timeout: Duration) -> io::Result<Option<Encoded>> {
        let deadline = Instant::now() + timeout;
        let done = loop {
            if let Some(done) = self.fd.dequeue(Queue::Bitstream)? {
                break done;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.fd.poll(false, left)?;
        };
        let Some(buffer) = self.bitstream.get(done.index as usize) else {
            return Err(io::Error::other(format!(
                "the device returned bitstream buffer {} of {}",
                done.index,
                self.bitstream.len()
            )));
        };
        let used = (done.bytes_used as usize).min(buffer.len());
        let data = buffer.bytes()[..used].to_vec();
        self.fd.queue(Queue::Bitstream, done.index, 0, 0)?;
        Ok(Some(Encoded {
            data,
            key: done.flags & k::V4L2_BUF_FLAG_KEYFRAME != 0,
            timestamp_us: done.timestamp_us,
        }))
    }
}

impl Drop for V4l2M2m {
    fn drop(&mut self) {
        if self.streaming {
            for queue in [Queue::Bitstream, Queue::Pictures] {
                if let Err(e) = self.fd.stream(queue, false) {
                    tracing::debug!("stopping the encoder's {queue:?} queue: {e}");
                }
            }
        }
        // The mappings go before the descriptor closes (fields drop in order after
        // this, but be explicit).
        self.pictures.clear();
        self.bitstream.clear();
    }
}
