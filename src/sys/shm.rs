//! POSIX shared-memory objects by name, read and written through their descriptor, with
//! `flock` on that descriptor.
//!
//! The lock is `flock(2)` on the descriptor `shm_open` returned, because that is the
//! lock every other memsink process takes; the `shared_memory` crate hides its
//! descriptor and so cannot take it, and `File::try_lock` only promises "currently
//! flock". A lock is taken on a duplicate of the descriptor, which shares the open file
//! description the lock belongs to, so it can be a guard that unlocks when dropped.

use std::fs::{File, Metadata, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::Mode;

/// An open shared-memory object.
#[derive(Debug)]
pub struct SharedMemory {
    file: File,
}

/// The exclusive `flock` on an object, released on drop (or by [`ShmLock::unlock`]).
#[derive(Debug)]
pub struct ShmLock(Flock<File>);

impl SharedMemory {
    /// Create `name` (`/name`), failing with `AlreadyExists` if it exists. The object
    /// gets exactly `mode`: it is created under the umask (never more open than asked)
    /// and then set, which leaves the process-wide umask alone.
    pub fn create_new(name: &str, mode: u32) -> io::Result<SharedMemory> {
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL;
        let fd = shm_open(name, flags, Mode::from_bits_truncate(mode))?;
        let shm = SharedMemory {
            file: File::from(fd),
        };
        shm.set_mode(mode)?;
        Ok(shm)
    }

    /// Open an existing object, for reading and writing or for reading only.
    pub fn open(name: &str, writable: bool) -> io::Result<SharedMemory> {
        let flags = if writable {
            OFlag::O_RDWR
        } else {
            OFlag::O_RDONLY
        };
        let fd = shm_open(name, flags, Mode::empty())?;
        Ok(SharedMemory {
            file: File::from(fd),
        })
    }

    /// Remove the name; open descriptors stay valid.
    pub fn unlink(name: &str) -> io::Result<()> {
        Ok(shm_unlink(name)?)
    }

    /// Size, owner, mode and inode, as of now.
    pub fn metadata(&self) -> io::Result<Metadata> {
        self.file.metadata()
    }

    pub fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    /// Set the permission bits exactly (umask not applied).
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        self.file.set_permissions(Permissions::from_mode(mode))
    }

    /// Bytes read at `offset`: fewer than asked (0 at the end) when the object is short.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    /// Bytes written at `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.file.write_at(buf, offset)
    }

    /// One non-blocking attempt at the exclusive lock: None while someone else holds it.
    pub fn try_lock(&self) -> io::Result<Option<ShmLock>> {
        match Flock::lock(self.file.try_clone()?, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(ShmLock(lock))),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(errno.into()),
        }
    }
}

impl ShmLock {
    /// Release the lock now, reporting a failure. Dropping the guard releases it too
    /// (and panics if that fails, which `LOCK_UN` on a descriptor we hold does not).
    pub fn unlock(self) -> io::Result<()> {
        match self.0.unlock() {
            Ok(_) => Ok(()),
            Err((_, errno)) => Err(errno.into()),
        }
    }
}
