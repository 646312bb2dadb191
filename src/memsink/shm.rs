//! One memsink's POSIX shared-memory object: who may reuse it, its expected size, and
//! the `flock` protocol, on top of [`crate::sys::shm`] (which says why `flock` on the
//! `shm_open` descriptor and not the `shared_memory` crate).
//!
//! The object is never mapped: any local process that may open it can also shrink it
//! (`ftruncate`, `truncate -s 0`), and touching a mapping past the new end raises SIGBUS,
//! which would kill the whole server. `pread` past the end just comes back short, which
//! is reported as an error the caller recovers from. Copying a frame of a few MB through
//! the page cache costs about what copying it out of a mapping does.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use crate::sys::process::effective_uid;
use crate::sys::shm::SharedMemory;
pub use crate::sys::shm::ShmLock;

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
    shm: SharedMemory,
    len: usize,
    name: String,
}

fn shm_name(name: &str) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/{name}")
    }
}

/// Why an existing object may not be reused by a writer: it must be a regular file owned
/// by our effective user and not writable by others. Anyone else who could pre-create
/// the name would otherwise read, or forge, the frames every reader trusts. `mode` is
/// `st_mode` (type and permission bits), `uid` the owner.
pub fn check_reusable(mode: u32, uid: u32, euid: u32) -> Result<(), String> {
    if mode & libc::S_IFMT != libc::S_IFREG {
        return Err("it is not a regular file".into());
    }
    if uid != euid {
        return Err(format!(
            "it belongs to uid {uid}, not to this process's uid {euid}"
        ));
    }
    if mode & 0o002 != 0 {
        return Err(format!(
            "it is writable by every user (mode {:o})",
            mode & 0o7777
        ));
    }
    Ok(())
}

impl ShmObject {
    /// Open (or create) `name`, `size` bytes long.
    pub fn open(name: &str, size: usize, how: OpenMode) -> io::Result<ShmObject> {
        let shm = match how {
            OpenMode::Create { mode } => {
                let shm = Self::create_or_reuse(name, mode)?;
                shm.set_len(size as u64)?;
                shm
            }
            OpenMode::Existing => {
                let shm = SharedMemory::open(&shm_name(name), true)?;
                let actual = shm.metadata()?.len();
                if actual < size as u64 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the object is {actual} bytes, smaller than the {size} bytes a \
                             version-10 sink of this name has"
                        ),
                    ));
                }
                shm
            }
        };
        Ok(ShmObject {
            shm,
            len: size,
            name: name.to_string(),
        })
    }

    fn create_or_reuse(name: &str, mode: u32) -> io::Result<SharedMemory> {
        let path = shm_name(name);
        match SharedMemory::create_new(&path, mode) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            other => return other,
        }
        // Left over from an earlier run (µStreamer's writers keep it unless told to
        // remove it): reuse it only if it is ours. The checks are made on the descriptor
        // itself, so swapping the name afterwards changes nothing.
        let shm = SharedMemory::open(&path, true)?;
        let meta = shm.metadata()?;
        if let Err(why) = check_reusable(meta.mode(), meta.uid(), effective_uid()) {
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
        shm.set_mode(mode)?;
        Ok(shm)
    }

    /// Remove the name; open descriptors stay valid. A missing name is not an error.
    pub fn unlink(name: &str) -> io::Result<()> {
        match SharedMemory::unlink(&shm_name(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
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
        Ok(self.shm.metadata()?.len())
    }

    /// Give the object back its full size if something shrank it: Ok(Some(old size))
    /// when it had to be restored. The lost bytes read as zeros (no magic), so readers
    /// see "no frame" until the next put.
    pub fn restore_size(&self) -> io::Result<Option<u64>> {
        let actual = self.actual_size()?;
        if actual >= self.len as u64 {
            return Ok(None);
        }
        self.shm.set_len(self.len as u64)?;
        Ok(Some(actual))
    }

    /// Inode of our descriptor, to notice that the name now points to a new object.
    pub fn inode(&self) -> io::Result<u64> {
        Ok(self.shm.metadata()?.ino())
    }

    /// Inode currently behind `name` (None when the name does not exist).
    pub fn inode_of_name(name: &str) -> io::Result<Option<u64>> {
        match SharedMemory::open(&shm_name(name), false) {
            Ok(shm) => Ok(Some(shm.metadata()?.ino())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
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
            match self.shm.read_at(&mut out[done..], (off + done) as u64) {
                Ok(0) => return Err(truncated(self.actual_size().ok(), self.len)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Copy bytes into the object.
    pub fn write(&self, off: usize, bytes: &[u8]) -> io::Result<()> {
        self.check(off, bytes.len());
        let mut done = 0;
        while done < bytes.len() {
            match self.shm.write_at(&bytes[done..], (off + done) as u64) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One non-blocking attempt at the exclusive lock: None when someone else holds it.
    pub fn try_lock(&self) -> io::Result<Option<ShmLock>> {
        self.shm.try_lock()
    }

    /// Try the lock every millisecond until `timeout` passes: None on timeout.
    pub fn lock_timed(&self, timeout: Duration) -> io::Result<Option<ShmLock>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(lock) = self.try_lock()? {
                return Ok(Some(lock));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(1));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_private_objects_are_reused() {
        assert!(check_reusable(libc::S_IFREG | 0o660, 1000, 1000).is_ok());
        assert!(check_reusable(libc::S_IFREG | 0o600, 0, 0).is_ok());
        let other = check_reusable(libc::S_IFREG | 0o660, 1001, 1000);
        assert!(other.unwrap_err().contains("uid 1001"));
        let world = check_reusable(libc::S_IFREG | 0o666, 1000, 1000);
        assert!(world.unwrap_err().contains("666"));
        let dir = check_reusable(libc::S_IFDIR | 0o700, 1000, 1000);
        assert!(dir.unwrap_err().contains("regular"));
    }

    #[test]
    fn a_created_object_has_exactly_the_mode_asked_for() {
        use std::os::unix::fs::PermissionsExt;
        let name = format!("peregrine-shm-mode-{}", std::process::id());
        // Group-writable: a umask of 022 or 002 would take bits away.
        let shm = ShmObject::open(&name, 64, OpenMode::Create { mode: 0o660 }).unwrap();
        let meta = std::fs::metadata(format!("/dev/shm/{name}")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
        assert_eq!(shm.actual_size().unwrap(), 64);
        ShmObject::unlink(&name).unwrap();
        ShmObject::unlink(&name).unwrap(); // a missing name is not an error
    }

    #[test]
    fn the_lock_keeps_out_other_openers_until_released_or_dropped() {
        let name = format!("peregrine-shm-lock-{}", std::process::id());
        let writer = ShmObject::open(&name, 64, OpenMode::Create { mode: 0o600 }).unwrap();
        let reader = ShmObject::open(&name, 64, OpenMode::Existing).unwrap();
        let held = writer.try_lock().unwrap().expect("free at first");
        assert!(reader.try_lock().unwrap().is_none(), "held by the writer");
        let timed = reader.lock_timed(Duration::from_millis(5)).unwrap();
        assert!(timed.is_none(), "still held by the writer");
        held.unlock().unwrap();
        let held = reader.try_lock().unwrap().expect("released by unlock");
        assert!(writer.try_lock().unwrap().is_none(), "held by the reader");
        drop(held);
        assert!(writer.try_lock().unwrap().is_some(), "released by drop");
        ShmObject::unlink(&name).unwrap();
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
