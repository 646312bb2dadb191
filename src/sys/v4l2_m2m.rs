//! The ioctls of a V4L2 memory-to-memory (stateful) encoder, multiplanar API, behind
//! safe methods: the `v4l` crate (which the camera uses) covers single-planar capture
//! only, so these few calls are made here with its `ioctl` and its kernel structures.
//!
//! V4L2 names the queues from the application's side: raw pictures go to the device on
//! the OUTPUT queue ([`Queue::Pictures`]), the encoded stream comes back on the CAPTURE
//! queue ([`Queue::Bitstream`]). Buffers are memory-mapped (`V4L2_MEMORY_MMAP`), one
//! plane each.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::raw::c_void;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;
use std::time::Duration;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use v4l::v4l2::{self, vidioc};
use v4l::v4l_sys as k;

/// One of the device's two queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// Raw pictures into the encoder (V4L2's OUTPUT_MPLANE).
    Pictures,
    /// Encoded data out of the encoder (V4L2's CAPTURE_MPLANE).
    Bitstream,
}

impl Queue {
    fn buf_type(self) -> u32 {
        match self {
            Queue::Pictures => k::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE,
            Queue::Bitstream => k::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE,
        }
    }
}

/// A one-plane format, as asked and as the driver answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaneFormat {
    pub width: u32,
    pub height: u32,
    pub fourcc: u32,
    pub colorspace: u32,
    /// Bytes from one row to the next (0 for compressed formats).
    pub bytes_per_line: u32,
    /// Bytes one buffer holds.
    pub size_image: u32,
}

/// A buffer the device handed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dequeued {
    pub index: u32,
    pub bytes_used: u32,
    pub flags: u32,
    /// The timestamp given when it was queued, copied by the encoder to its output.
    pub timestamp_us: u64,
}

/// An open V4L2 device node, for the memory-to-memory calls.
#[derive(Debug)]
pub struct M2mFd {
    file: File,
}

/// Calls `request` with `arg`.
///
/// # Safety
///
/// `request` must be an ioctl whose argument is a `T` (the `vidioc` constants encode
/// their argument's size; the caller pairs each with its own structure), and every
/// pointer inside `arg` must be valid for the call.
unsafe fn ioctl<T>(fd: &File, request: vidioc::_IOC_TYPE, arg: &mut T) -> io::Result<()> {
    // SAFETY: the descriptor is open for as long as `fd` is borrowed; `arg` is a live,
    // exclusive `T`, which is what `request` reads and writes (the caller's contract).
    unsafe { v4l2::ioctl(fd.as_raw_fd(), request, arg as *mut T as *mut c_void) }
}

/// An all-zero kernel structure, as the V4L2 API asks callers to start from.
fn zeroed<T: ZeroIsValid>() -> T {
    // SAFETY: `ZeroIsValid` is implemented only for the plain C structures below, made
    // of integers, arrays of integers, unions of those and raw pointers, for which all
    // zero bytes are a valid value (null for the pointers).
    unsafe { std::mem::zeroed() }
}

/// Kernel structures whose all-zero value is valid.
trait ZeroIsValid {}
impl ZeroIsValid for k::v4l2_capability {}
impl ZeroIsValid for k::v4l2_fmtdesc {}
impl ZeroIsValid for k::v4l2_control {}
impl ZeroIsValid for k::v4l2_format {}
impl ZeroIsValid for k::v4l2_streamparm {}
impl ZeroIsValid for k::v4l2_requestbuffers {}
impl ZeroIsValid for k::v4l2_buffer {}
impl ZeroIsValid for k::v4l2_plane {}

impl M2mFd {
    /// Open `path` read-write and non-blocking (waits are [`M2mFd::poll`]'s).
    pub fn open(path: &Path) -> io::Result<M2mFd> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        Ok(M2mFd { file })
    }

    /// The driver's name and the capabilities of this node (`device_caps` when the
    /// driver gives them, else those of the whole device).
    pub fn capabilities(&self) -> io::Result<(String, u32)> {
        let mut caps: k::v4l2_capability = zeroed();
        // SAFETY: VIDIOC_QUERYCAP fills a v4l2_capability.
        unsafe { ioctl(&self.file, vidioc::VIDIOC_QUERYCAP, &mut caps)? };
        let end = caps.driver.iter().position(|&b| b == 0).unwrap_or(16);
        let driver = String::from_utf8_lossy(&caps.driver[..end]).into_owned();
        let bits = if caps.capabilities & k::V4L2_CAP_DEVICE_CAPS != 0 {
            caps.device_caps
        } else {
            caps.capabilities
        };
        Ok((driver, bits))
    }

    /// The formats a queue offers (fourcc codes).
    pub fn formats(&self, queue: Queue) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        // A driver lists a handful; the bound only guards against one that never ends.
        for index in 0..64 {
            let mut desc: k::v4l2_fmtdesc = zeroed();
            desc.index = index;
            desc.type_ = queue.buf_type();
            // SAFETY: VIDIOC_ENUM_FMT reads and fills a v4l2_fmtdesc.
            match unsafe { ioctl(&self.file, vidioc::VIDIOC_ENUM_FMT, &mut desc) } {
                Ok(()) => out.push(desc.pixelformat),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// VIDIOC_S_CTRL.
    pub fn set_control(&self, id: u32, value: i32) -> io::Result<()> {
        let mut control = k::v4l2_control { id, value };
        // SAFETY: VIDIOC_S_CTRL reads and writes a v4l2_control.
        unsafe { ioctl(&self.file, vidioc::VIDIOC_S_CTRL, &mut control) }
    }

    /// VIDIOC_S_FMT with one plane; returns what the driver made of it.
    pub fn set_format(&self, queue: Queue, asked: PlaneFormat) -> io::Result<PlaneFormat> {
        let mut format: k::v4l2_format = zeroed();
        format.type_ = queue.buf_type();
        // SAFETY: the union is all integers, so writing through `pix_mp` is sound; it is
        // the member the multiplanar buffer types use.
        let pix = unsafe { &mut format.fmt.pix_mp };
        pix.width = asked.width;
        pix.height = asked.height;
        pix.pixelformat = asked.fourcc;
        pix.field = k::v4l2_field_V4L2_FIELD_NONE;
        pix.colorspace = asked.colorspace;
        pix.num_planes = 1;
        pix.plane_fmt[0].bytesperline = asked.bytes_per_line;
        pix.plane_fmt[0].sizeimage = asked.size_image;
        // SAFETY: VIDIOC_S_FMT reads and fills a v4l2_format.
        unsafe { ioctl(&self.file, vidioc::VIDIOC_S_FMT, &mut format)? };
        // SAFETY: as above; the driver answered in the same member.
        let pix = unsafe { &format.fmt.pix_mp };
        Ok(PlaneFormat {
            width: pix.width,
            height: pix.height,
            fourcc: pix.pixelformat,
            colorspace: pix.colorspace,
            bytes_per_line: pix.plane_fmt[0].bytesperline,
            size_image: pix.plane_fmt[0].sizeimage,
        })
    }

    /// The picture rate the encoder plans its bitrate for (VIDIOC_S_PARM on the
    /// pictures' queue).
    pub fn set_frame_rate(&self, fps: u32) -> io::Result<()> {
        let mut parm: k::v4l2_streamparm = zeroed();
        parm.type_ = Queue::Pictures.buf_type();
        // SAFETY: all-integer union; `output` is the member for an OUTPUT queue.
        let output = unsafe { &mut parm.parm.output };
        output.timeperframe.numerator = 1;
        output.timeperframe.denominator = fps.max(1);
        // SAFETY: VIDIOC_S_PARM reads and fills a v4l2_streamparm.
        unsafe { ioctl(&self.file, vidioc::VIDIOC_S_PARM, &mut parm) }
    }

    /// VIDIOC_REQBUFS for memory-mapped buffers; returns how many the driver gave.
    pub fn request_buffers(&self, queue: Queue, count: u32) -> io::Result<u32> {
        let mut req: k::v4l2_requestbuffers = zeroed();
        req.count = count;
        req.type_ = queue.buf_type();
        req.memory = k::v4l2_memory_V4L2_MEMORY_MMAP;
        // SAFETY: VIDIOC_REQBUFS reads and fills a v4l2_requestbuffers.
        unsafe { ioctl(&self.file, vidioc::VIDIOC_REQBUFS, &mut req)? };
        Ok(req.count)
    }

    /// Look up buffer `index` of `queue` (VIDIOC_QUERYBUF) and map its plane.
    pub fn map_buffer(&self, queue: Queue, index: u32) -> io::Result<MappedBuffer> {
        let mut plane: k::v4l2_plane = zeroed();
        let mut buf = self.buffer(queue, index, &mut plane);
        // SAFETY: VIDIOC_QUERYBUF fills a v4l2_buffer; `m.planes` points at `plane`,
        // one element (`length` = 1), alive for the call.
        unsafe { ioctl(&self.file, vidioc::VIDIOC_QUERYBUF, &mut buf)? };
        let len = plane.length as usize;
        let Some(length) = std::num::NonZeroUsize::new(len) else {
            return Err(io::Error::other(format!("buffer {index} has no memory")));
        };
        // SAFETY: reading the union member the driver filled for MMAP buffers.
        let offset = unsafe { plane.m.mem_offset };
        // Infallible where off_t is 64 bits; checked for 32-bit targets.
        #[allow(clippy::unnecessary_fallible_conversions)]
        let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: a fresh shared mapping (no address hint, so nothing existing is
        // replaced) of the device's buffer at the offset the driver gave for it, with
        // its length; it is unmapped only by MappedBuffer's drop.
        let ptr = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                self.file.as_fd(),
                offset,
            )
        }?;
        Ok(MappedBuffer {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Hand buffer `index` to the device (VIDIOC_QBUF) with `bytes_used` of data (0 for
    /// an empty bitstream buffer) stamped `timestamp_us`.
    pub fn queue(
        &self,
        queue: Queue,
        index: u32,
        bytes_used: u32,
        timestamp_us: u64,
    ) -> io::Result<()> {
        let mut plane: k::v4l2_plane = zeroed();
        plane.bytesused = bytes_used;
        let mut buf = self.buffer(queue, index, &mut plane);
        buf.field = k::v4l2_field_V4L2_FIELD_NONE;
        buf.timestamp.tv_sec = (timestamp_us / 1_000_000) as _;
        buf.timestamp.tv_usec = (timestamp_us % 1_000_000) as _;
        // SAFETY: VIDIOC_QBUF reads (and updates) a v4l2_buffer; `m.planes` points at
        // `plane`, alive for the call.
        unsafe { ioctl(&self.file, vidioc::VIDIOC_QBUF, &mut buf) }
    }

    /// Take back a buffer the device is done with (VIDIOC_DQBUF); `None` when none is.
    pub fn dequeue(&self, queue: Queue) -> io::Result<Option<Dequeued>> {
        let mut plane: k::v4l2_plane = zeroed();
        let mut buf = self.buffer(queue, 0, &mut plane);
        // SAFETY: VIDIOC_DQBUF fills a v4l2_buffer and the `length` planes `m.planes`
        // points at (one, `plane`, alive for the call).
        match unsafe { ioctl(&self.file, vidioc::VIDIOC_DQBUF, &mut buf) } {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
        let timestamp_us = u64::try_from(buf.timestamp.tv_sec).unwrap_or(0) * 1_000_000
            + u64::try_from(buf.timestamp.tv_usec).unwrap_or(0);
        Ok(Some(Dequeued {
            index: buf.index,
            bytes_used: plane.bytesused,
            flags: buf.flags,
            timestamp_us,
        }))
    }

    /// VIDIOC_STREAMON / VIDIOC_STREAMOFF.
    pub fn stream(&self, queue: Queue, on: bool) -> io::Result<()> {
        let mut buf_type = queue.buf_type() as libc::c_int;
        let request = if on {
            vidioc::VIDIOC_STREAMON
        } else {
            vidioc::VIDIOC_STREAMOFF
        };
        // SAFETY: VIDIOC_STREAMON/OFF read an int, the buffer type.
        unsafe { ioctl(&self.file, request, &mut buf_type) }
    }

    /// Wait up to `timeout` for an encoded buffer to be ready (`POLLIN`) or, with
    /// `for_pictures`, for a picture buffer to come back (`POLLOUT`). True when ready.
    pub fn poll(&self, for_pictures: bool, timeout: Duration) -> io::Result<bool> {
        let events = if for_pictures {
            libc::POLLOUT
        } else {
            libc::POLLIN
        };
        let mut fds = [libc::pollfd {
            fd: self.file.as_raw_fd(),
            events,
            revents: 0,
        }];
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a live array of one pollfd, and its length is passed.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        match rc {
            -1 => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => Ok(false),
                    _ => Err(e),
                }
            }
            0 => Ok(false),
            _ if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 => Err(
                io::Error::other("the encoder device reports an error (POLLERR/POLLHUP)"),
            ),
            _ => Ok(fds[0].revents & events != 0),
        }
    }

    /// A buffer description for `queue`'s buffer `index` with its one plane `plane`.
    fn buffer(&self, queue: Queue, index: u32, plane: &mut k::v4l2_plane) -> k::v4l2_buffer {
        let mut buf: k::v4l2_buffer = zeroed();
        buf.index = index;
        buf.type_ = queue.buf_type();
        buf.memory = k::v4l2_memory_V4L2_MEMORY_MMAP;
        buf.length = 1;
        buf.m.planes = plane;
        buf
    }
}

/// One device buffer mapped into memory, unmapped on drop.
#[derive(Debug)]
pub struct MappedBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping belongs to this value alone (nothing else holds the pointer), so
// moving it to another thread moves its only user.
unsafe impl Send for MappedBuffer {}

impl MappedBuffer {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer's bytes. Read or write them only while the device does not own the
    /// buffer (after dequeuing it, before queuing it again).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` bytes for as long as `self` lives;
        // the shared borrow of `self` keeps this value from writing meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// As [`MappedBuffer::bytes`], for writing.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; the exclusive borrow makes this the only slice.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for MappedBuffer {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map_buffer`, unmapped
        // only here, and no slice of it outlives `self`.
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len) } {
            tracing::warn!("unmapping an encoder buffer: {e}");
        }
    }
}
