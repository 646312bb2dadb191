//! The client side: open an existing sink and take new frames from it, following the
//! client rules of µStreamer's readers (lock, check, stamp `last_client_ts`, skip an
//! unchanged id, copy, merge the keyframe request).

use std::io;
use std::time::Duration;

use thiserror::Error;

use super::layout::{data_size_for_name, Abi, FrameMeta, Layout, NameError, MAGIC, VERSION};
use super::monotonic_s;
use super::shm::{OpenMode, ShmObject};

#[derive(Debug, Error)]
pub enum ReadError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("memsink {name:?} does not exist (yet)")]
    Missing { name: String },
    #[error("memsink {name:?}: {source}")]
    Io { name: String, source: io::Error },
    #[error(
        "memsink {name:?}: protocol version mismatch: sink={found}, required={required} \
         (the writer is a different µStreamer release)"
    )]
    Version {
        name: String,
        found: u32,
        required: u32,
    },
    #[error(
        "memsink {name:?}: corrupt header: used={used} is larger than the {limit}-byte data area"
    )]
    Corrupt {
        name: String,
        used: u64,
        limit: usize,
    },
    #[error("memsink: unsupported CPU architecture")]
    UnsupportedAbi,
}

/// A frame taken from the sink.
#[derive(Clone, Debug)]
pub struct SinkFrame {
    pub id: u64,
    pub meta: FrameMeta,
    pub data: Vec<u8>,
}

/// Result of one pass.
#[derive(Debug)]
pub enum Get {
    Frame(SinkFrame),
    /// Nothing new: the lock was busy, the object holds no frame yet (magic not set), or
    /// the frame is the one returned last time.
    NoData,
}

pub struct SinkReader {
    name: String,
    shm: ShmObject,
    layout: Layout,
    data_size: usize,
    timeout: Duration,
    last_id: u64,
    /// The magic seen on the last pass was wrong (the object is not initialised or garbage).
    pub bad_magic: bool,
}

impl SinkReader {
    /// Open an existing sink; `timeout` bounds each wait for the lock.
    pub fn open(name: &str, timeout: Duration) -> Result<SinkReader, ReadError> {
        let layout = Abi::host().ok_or(ReadError::UnsupportedAbi)?.layout();
        let data_size = data_size_for_name(name)?;
        let shm = ShmObject::open(name, layout.header_size + data_size, OpenMode::Existing)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ENOENT) {
                    ReadError::Missing { name: name.into() }
                } else {
                    ReadError::Io {
                        name: name.into(),
                        source: e,
                    }
                }
            })?;
        Ok(SinkReader {
            name: name.to_string(),
            shm,
            layout,
            data_size,
            timeout,
            last_id: 0,
            bad_magic: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `name` now refers to a different object than the one mapped (the writer
    /// removed and recreated it), or to none.
    pub fn replaced(&self) -> bool {
        match (self.shm.inode(), ShmObject::inode_of_name(&self.name)) {
            (Ok(ours), Ok(Some(now))) => ours != now,
            _ => true,
        }
    }

    fn io(&self, source: io::Error) -> ReadError {
        ReadError::Io {
            name: self.name.clone(),
            source,
        }
    }

    /// One pass. `want_key` asks the writer for a keyframe (sticky until it puts one).
    pub fn get(&mut self, want_key: bool) -> Result<Get, ReadError> {
        let Some(lock) = self.shm.lock_timed(self.timeout).map_err(|e| self.io(e))? else {
            return Ok(Get::NoData);
        };
        let result = self.locked_get(want_key);
        let unlocked = lock.unlock();
        let got = result?;
        unlocked.map_err(|e| self.io(e))?;
        Ok(got)
    }

    fn locked_get(&mut self, want_key: bool) -> Result<Get, ReadError> {
        let l = self.layout;
        let mut raw = vec![0u8; l.header_size];
        self.shm.read(0, &mut raw).map_err(|e| self.io(e))?;
        let header = l.decode(&raw);
        self.bad_magic = header.magic != MAGIC;
        if self.bad_magic {
            return Ok(Get::NoData);
        }
        if header.version != VERSION {
            return Err(ReadError::Version {
                name: self.name.clone(),
                found: header.version,
                required: VERSION,
            });
        }
        self.shm
            .write(l.last_client_ts, &l.encode_ld(monotonic_s()))
            .map_err(|e| self.io(e))?;
        let got = if header.id == self.last_id {
            Get::NoData
        } else if header.used > self.data_size as u64 {
            return Err(ReadError::Corrupt {
                name: self.name.clone(),
                used: header.used,
                limit: self.data_size,
            });
        } else {
            let mut data = vec![0u8; header.used as usize];
            self.shm
                .read(l.header_size, &mut data)
                .map_err(|e| self.io(e))?;
            self.last_id = header.id;
            Get::Frame(SinkFrame {
                id: header.id,
                meta: header.meta,
                data,
            })
        };
        // Our request replaces the block, but a pending key request stays set: only the
        // writer's put of a keyframe clears it. A keyframe taken now answers our own
        // request: asking again would make the writer send a second one right after.
        let answered = matches!(&got, Get::Frame(f) if f.meta.key);
        let mut wants = [0u8; super::layout::WANTS_LEN];
        wants[l.wants_key - l.wants] = u8::from((want_key && !answered) || header.wants_key);
        self.shm.write(l.wants, &wants).map_err(|e| self.io(e))?;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memsink::layout::FORMAT_H264;
    use crate::memsink::writer::{PutOutcome, SinkConfig, SinkWriter};

    fn unique(tag: &str) -> String {
        format!("peregrine-test-{tag}-{}::h264", std::process::id())
    }

    fn meta(key: bool) -> FrameMeta {
        FrameMeta {
            width: 320,
            height: 240,
            format: FORMAT_H264,
            key,
            online: true,
            gop: 30,
            grab_begin_ts: 1000.5,
            ..FrameMeta::default()
        }
    }

    #[test]
    fn writer_to_reader_round_trip_and_key_requests() {
        let name = unique("rt");
        let mut cfg = SinkConfig::new(&name);
        cfg.remove_on_exit = true;
        let mut w = SinkWriter::open(cfg).unwrap();
        assert!(w.check(None), "uninitialised object must ask for a frame");
        let mut r = SinkReader::open(&name, Duration::from_secs(1)).unwrap();
        assert!(matches!(r.get(false).unwrap(), Get::NoData));
        assert!(r.bad_magic);

        assert_eq!(
            w.put(&meta(true), b"\0\0\0\x01\x67abc").unwrap(),
            PutOutcome::Written { wants_key: false }
        );
        let Get::Frame(f) = r.get(true).unwrap() else {
            panic!("expected a frame")
        };
        assert_eq!(f.data, b"\0\0\0\x01\x67abc");
        assert_eq!(f.meta, meta(true));
        // The keyframe taken answers the request made with it: no second one is asked.
        assert_eq!(
            w.put(&meta(false), b"p0").unwrap(),
            PutOutcome::Written { wants_key: false }
        );
        assert!(matches!(r.get(false).unwrap(), Get::Frame(_)));
        // Same id again: nothing new, but the reader stamped last_client_ts (and asks).
        assert!(matches!(r.get(true).unwrap(), Get::NoData));
        assert!(w.check(None));
        assert!(w.has_clients());
        // The request is sticky through a non-key put and cleared by a key put.
        assert_eq!(
            w.put(&meta(false), b"p").unwrap(),
            PutOutcome::Written { wants_key: true }
        );
        assert!(matches!(r.get(false).unwrap(), Get::Frame(_)));
        assert_eq!(
            w.put(&meta(true), b"i").unwrap(),
            PutOutcome::Written { wants_key: false }
        );
        assert_eq!(
            w.put(&meta(false), &vec![0u8; 3 << 20]).unwrap(),
            PutOutcome::TooBig
        );
    }

    #[test]
    fn version_mismatch_and_corrupt_used_are_errors() {
        let name = unique("bad");
        let mut cfg = SinkConfig::new(&name);
        cfg.remove_on_exit = true;
        let mut w = SinkWriter::open(cfg).unwrap();
        w.put(&meta(true), b"x").unwrap();
        let l = Abi::host().unwrap().layout();
        let raw = ShmObject::open(&name, l.header_size, OpenMode::Existing).unwrap();
        raw.write(l.version, &9u32.to_le_bytes()).unwrap();
        let mut r = SinkReader::open(&name, Duration::from_secs(1)).unwrap();
        let err = r.get(false).unwrap_err().to_string();
        assert!(err.contains("sink=9, required=10"), "{err}");
        raw.write(l.version, &10u32.to_le_bytes()).unwrap();
        raw.write(l.used, &u64::MAX.to_le_bytes()).unwrap();
        let err = r.get(false).unwrap_err().to_string();
        assert!(err.contains("corrupt header"), "{err}");
    }

    #[test]
    fn missing_and_short_objects_are_rejected() {
        let name = unique("missing");
        assert!(matches!(
            SinkReader::open(&name, Duration::from_secs(1)),
            Err(ReadError::Missing { .. })
        ));
        // A zero-size object, as a crashed writer might leave before its ftruncate.
        std::fs::File::create(format!("/dev/shm/{name}")).unwrap();
        let err = SinkReader::open(&name, Duration::from_secs(1))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("smaller"), "{err}");
        ShmObject::unlink(&name).unwrap();
    }
}
