//! One POSIX shared-memory object, mapped whole, with the `flock` protocol on its
//! descriptor.
//!
//! The memsink lock is `flock` on the very descriptor `shm_open` returned, so this module
//! talks to libc directly: the `shared_memory` crate hides its descriptor and so cannot
//! take the lock other memsink processes take.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How the object is opened.
#[derive(Clone, Copy, Debug)]
pub enum OpenMode {
    /// Server: create if missing with exactly this mode (umask ignored), then truncate
    /// to `size`.
    Create { mode: u32 },
    /// Client: open an existing object; fail if it is smaller than `size`.
    Existing,
}

/// A mapped shared-memory object. All access goes through raw pointer copies because
/// other processes change the memory at any time.
pub struct ShmObject {
    fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
    name: String,
}

// SAFETY: the mapping is plain shared memory owned by this value; every access copies
// through raw pointers with bounds checks, so moving it between threads is sound.
unsafe impl Send for ShmObject {}

fn c_name(name: &str) -> io::Result<CString> {
    let with_slash = if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/{name}")
    };
    CString::new(with_slash).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl ShmObject {
    /// Open (or create) `name` and map `size` bytes of it.
    pub fn open(name: &str, size: usize, how: OpenMode) -> io::Result<ShmObject> {
        let cname = c_name(name)?;
        let fd = match how {
            OpenMode::Create { mode } => {
                // SAFETY: umask and shm_open have no memory-safety preconditions; the
                // umask is restored at once so the mode is exactly what was asked for.
                unsafe {
                    let old = libc::umask(0);
                    let fd = libc::shm_open(
                        cname.as_ptr(),
                        libc::O_RDWR | libc::O_CREAT,
                        mode as libc::mode_t,
                    );
                    libc::umask(old);
                    fd
                }
            }
            // SAFETY: shm_open reads the NUL-terminated name only.
            OpenMode::Existing => unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDWR, 0) },
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by shm_open and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        match how {
            OpenMode::Create { .. } => {
                // SAFETY: plain syscall on our descriptor.
                if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            OpenMode::Existing => {
                let actual = file_size(&fd)?;
                if actual < size as u64 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the object is {actual} bytes, smaller than the {size} bytes a \
                             version-10 sink of this name has"
                        ),
                    ));
                }
            }
        }
        // SAFETY: mapping a descriptor we own; the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(ShmObject {
            fd,
            ptr: ptr.cast(),
            len: size,
            name: name.to_string(),
        })
    }

    /// Remove the name; existing mappings stay valid. A missing name is not an error.
    pub fn unlink(name: &str) -> io::Result<()> {
        let cname = c_name(name)?;
        // SAFETY: shm_unlink reads the NUL-terminated name only.
        if unsafe { libc::shm_unlink(cname.as_ptr()) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e);
            }
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Inode of our descriptor, to notice that the name now points to a new object.
    pub fn inode(&self) -> io::Result<u64> {
        Ok(fstat(&self.fd)?.st_ino)
    }

    /// Inode currently behind `name` (None when the name does not exist).
    pub fn inode_of_name(name: &str) -> io::Result<Option<u64>> {
        let cname = c_name(name)?;
        // SAFETY: as in open; the descriptor is closed right after.
        let fd = unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDONLY, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENOENT) {
                Ok(None)
            } else {
                Err(e)
            };
        }
        // SAFETY: fd was just returned by shm_open.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Some(fstat(&fd)?.st_ino))
    }

    fn check(&self, off: usize, n: usize) {
        // Offsets come from our own layout tables, never from the shared memory.
        assert!(
            off.checked_add(n).is_some_and(|end| end <= self.len),
            "shm access {off}+{n} outside {}",
            self.len
        );
    }

    /// Copy bytes out of the mapping.
    pub fn read(&self, off: usize, out: &mut [u8]) {
        self.check(off, out.len());
        // SAFETY: bounds checked above; the mapping lives as long as self.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), out.as_mut_ptr(), out.len()) }
    }

    /// Copy bytes into the mapping.
    pub fn write(&self, off: usize, bytes: &[u8]) {
        self.check(off, bytes.len());
        // SAFETY: bounds checked above; the mapping is writable and lives as long as self.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off), bytes.len()) }
    }

    /// One non-blocking attempt at the exclusive lock: Ok(false) when someone else holds it.
    pub fn try_lock(&self) -> io::Result<bool> {
        // SAFETY: plain syscall on our descriptor.
        if unsafe { libc::flock(self.fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(false)
        } else {
            Err(e)
        }
    }

    /// Try the lock every millisecond until `timeout` passes: Ok(false) on timeout.
    pub fn lock_timed(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.try_lock()? {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn unlock(&self) -> io::Result<()> {
        // SAFETY: plain syscall on our descriptor.
        if unsafe { libc::flock(self.fd.as_raw_fd(), libc::LOCK_UN) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for ShmObject {
    fn drop(&mut self) {
        // SAFETY: ptr/len are the mapping made in open and nothing refers to it any more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: plain syscall writing into st.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn file_size(fd: &OwnedFd) -> io::Result<u64> {
    Ok(fstat(fd)?.st_size as u64)
}
