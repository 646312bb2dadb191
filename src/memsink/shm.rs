//! One POSIX shared-memory object, accessed with `pread`/`pwrite` on its descriptor, with
//! the `flock` protocol on that descriptor.
//!
//! The memsink lock is `flock` on the very descriptor `shm_open` returned, so this module
//! talks to libc directly: the `shared_memory` crate hides its descriptor and so cannot
//! take the lock other memsink processes take.
//!
//! The object is never mapped: any local process that may open it can also shrink it
//! (`ftruncate`, `truncate -s 0`), and touching a mapping past the new end raises SIGBUS,
//! which would kill the whole server. `pread` past the end just comes back short, which
//! is reported as an error the caller recovers from. Copying a frame of a few MB through
//! the page cache costs about what copying it out of a mapping does.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How the object is opened.
#[derive(Clone, Copy, Debug)]
pub enum OpenMode {
    /// Server: create it exclusively with exactly this mode (umask ignored), or reuse an
    /// existing one only if it is ours (see [`check_reusable`]); then size it to `size`.
    Create { mode: u32 },
    /// Client: open an existing object; fail if it is smaller than `size`.
    Existing,
}

/// A shared-memory object. All access copies through the descriptor because other
/// processes change (or shrink) the object at any time.
pub struct ShmObject {
    fd: OwnedFd,
    len: usize,
    name: String,
}

fn c_name(name: &str) -> io::Result<CString> {
    let with_slash = if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/{name}")
    };
    CString::new(with_slash).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn shm_open(cname: &CString, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: umask and shm_open have no memory-safety preconditions; the umask is
    // restored at once so a created object gets exactly the mode asked for.
    let fd = unsafe {
        let old = libc::umask(0);
        let fd = libc::shm_open(cname.as_ptr(), flags, mode as libc::mode_t);
        libc::umask(old);
        fd
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by shm_open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Why an existing object may not be reused by a writer: it must be a regular file owned
/// by our effective user and not writable by others. Anyone else who could pre-create
/// the name would otherwise read, or forge, the frames every reader trusts.
pub fn check_reusable(st: &libc::stat, euid: u32) -> Result<(), String> {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err("it is not a regular file".into());
    }
    if st.st_uid != euid {
        return Err(format!(
            "it belongs to uid {}, not to this process's uid {euid}",
            st.st_uid
        ));
    }
    if st.st_mode & 0o002 != 0 {
        return Err(format!(
            "it is writable by every user (mode {:o})",
            st.st_mode & 0o7777
        ));
    }
    Ok(())
}

impl ShmObject {
    /// Open (or create) `name`, `size` bytes long.
    pub fn open(name: &str, size: usize, how: OpenMode) -> io::Result<ShmObject> {
        let cname = c_name(name)?;
        let fd = match how {
            OpenMode::Create { mode } => Self::create_or_reuse(name, &cname, mode)?,
            OpenMode::Existing => shm_open(&cname, libc::O_RDWR, 0)?,
        };
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
        Ok(ShmObject {
            fd,
            len: size,
            name: name.to_string(),
        })
    }

    fn create_or_reuse(name: &str, cname: &CString, mode: u32) -> io::Result<OwnedFd> {
        match shm_open(cname, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, mode) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            other => return other,
        }
        // Left over from an earlier run (µStreamer's writers keep it unless told to
        // remove it): reuse it only if it is ours. The checks are made on the descriptor
        // itself, so swapping the name afterwards changes nothing.
        let fd = shm_open(cname, libc::O_RDWR, 0)?;
        let st = fstat(&fd)?;
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        if let Err(why) = check_reusable(&st, euid) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "/dev/shm/{} already exists and {why}; refusing to use it, since its \
                     owner could read or change the frames. Remove it (rm /dev/shm/{}) \
                     and find out who made it",
                    name.trim_start_matches('/'),
                    name.trim_start_matches('/')
                ),
            ));
        }
        // Our own stale object: give it the mode asked for now.
        // SAFETY: plain syscall on our descriptor.
        if unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    /// Remove the name; open descriptors stay valid. A missing name is not an error.
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

    /// The size the object should have.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The object's size now (another process may have changed it).
    pub fn actual_size(&self) -> io::Result<u64> {
        file_size(&self.fd)
    }

    /// Give the object back its full size if something shrank it: Ok(Some(old size))
    /// when it had to be restored. The lost bytes read as zeros (no magic), so readers
    /// see "no frame" until the next put.
    pub fn restore_size(&self) -> io::Result<Option<u64>> {
        let actual = self.actual_size()?;
        if actual >= self.len as u64 {
            return Ok(None);
        }
        // SAFETY: plain syscall on our descriptor.
        if unsafe { libc::ftruncate(self.fd.as_raw_fd(), self.len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some(actual))
    }

    /// Inode of our descriptor, to notice that the name now points to a new object.
    pub fn inode(&self) -> io::Result<u64> {
        Ok(fstat(&self.fd)?.st_ino)
    }

    /// Inode currently behind `name` (None when the name does not exist).
    pub fn inode_of_name(name: &str) -> io::Result<Option<u64>> {
        let cname = c_name(name)?;
        let fd = match shm_open(&cname, libc::O_RDONLY, 0) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
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

    /// Copy bytes out of the object. A short object (shrunk by another process) is an
    /// `UnexpectedEof` error.
    pub fn read(&self, off: usize, out: &mut [u8]) -> io::Result<()> {
        self.check(off, out.len());
        let mut done = 0;
        while done < out.len() {
            let rest = &mut out[done..];
            // SAFETY: pread writes at most rest.len() bytes into rest.
            let n = unsafe {
                libc::pread(
                    self.fd.as_raw_fd(),
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                    (off + done) as libc::off_t,
                )
            };
            match n {
                0 => return Err(truncated(self.actual_size().ok(), self.len)),
                n if n < 0 => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                n => done += n as usize,
            }
        }
        Ok(())
    }

    /// Copy bytes into the object.
    pub fn write(&self, off: usize, bytes: &[u8]) -> io::Result<()> {
        self.check(off, bytes.len());
        let mut done = 0;
        while done < bytes.len() {
            let rest = &bytes[done..];
            // SAFETY: pwrite reads at most rest.len() bytes from rest.
            let n = unsafe {
                libc::pwrite(
                    self.fd.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    (off + done) as libc::off_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            } else {
                done += n as usize;
            }
        }
        Ok(())
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

fn truncated(actual: Option<u64>, expected: usize) -> io::Error {
    let actual = actual.map_or_else(|| "fewer".to_string(), |n| n.to_string());
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the object was truncated by another process: {actual} bytes of {expected}"),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_with(mode: u32, uid: u32) -> libc::stat {
        // SAFETY: an all-zero stat is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_mode = mode;
        st.st_uid = uid;
        st
    }

    #[test]
    fn only_our_own_private_objects_are_reused() {
        assert!(check_reusable(&stat_with(libc::S_IFREG | 0o660, 1000), 1000).is_ok());
        assert!(check_reusable(&stat_with(libc::S_IFREG | 0o600, 0), 0).is_ok());
        let other = check_reusable(&stat_with(libc::S_IFREG | 0o660, 1001), 1000);
        assert!(other.unwrap_err().contains("uid 1001"));
        let world = check_reusable(&stat_with(libc::S_IFREG | 0o666, 1000), 1000);
        assert!(world.unwrap_err().contains("666"));
        let dir = check_reusable(&stat_with(libc::S_IFDIR | 0o700, 1000), 1000);
        assert!(dir.unwrap_err().contains("regular"));
    }

    #[test]
    fn a_truncated_object_reads_as_an_error_not_a_crash() {
        let name = format!("peregrine-shm-trunc-{}", std::process::id());
        let w = ShmObject::open(&name, 4096, OpenMode::Create { mode: 0o600 }).unwrap();
        w.write(4000, b"tail").unwrap();
        let r = ShmObject::open(&name, 4096, OpenMode::Existing).unwrap();
        let mut buf = [0u8; 4];
        r.read(4000, &mut buf).unwrap();
        assert_eq!(&buf, b"tail");
        std::fs::File::options()
            .write(true)
            .open(format!("/dev/shm/{name}"))
            .unwrap()
            .set_len(0)
            .unwrap();
        let err = r.read(4000, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("truncated"), "{err}");
        assert_eq!(w.restore_size().unwrap(), Some(0));
        r.read(4000, &mut buf).unwrap();
        assert_eq!(buf, [0; 4]);
        ShmObject::unlink(&name).unwrap();
    }
}
