//! The server side: create the object and put frames into it, following µStreamer's
//! rules so its readers (the Janus plugin, ustreamer-dump, kvmd) work unchanged.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use super::layout::{data_size_for_name, Abi, FrameMeta, Layout, MAGIC, VERSION, WANTS_LEN};
use super::shm::{OpenMode, ShmObject};
use super::{frame_id, monotonic_s};

/// The put waits this long for a reader to release the lock (fixed in µStreamer).
const PUT_LOCK_TIMEOUT: Duration = Duration::from_secs(1);
/// Repeated truncations by another process are logged at most this often.
const TRUNCATION_LOG_EVERY: Duration = Duration::from_secs(10);

/// A sink's options (`--h264-sink*`, `--jpeg-sink*`).
#[derive(Clone, Debug)]
pub struct SinkConfig {
    pub name: String,
    /// Permissions at creation (`--h264-sink-mode`, octal on the command line).
    pub mode: u32,
    /// Unlink the object when the writer is dropped.
    pub remove_on_exit: bool,
    /// A reader counts as present this long after its last touch.
    pub client_ttl: Duration,
    /// Kept for parity with µStreamer, which stores it but never uses it for puts.
    pub timeout: Duration,
}

impl SinkConfig {
    pub fn new(name: &str) -> SinkConfig {
        SinkConfig {
            name: name.to_string(),
            mode: 0o660,
            remove_on_exit: false,
            client_ttl: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
        }
    }
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written. `wants_key`: a reader asks for a keyframe (make the next one an IDR).
    Written { wants_key: bool },
    /// Larger than the data area: not written.
    TooBig,
    /// A reader held the lock for the whole timeout: not written.
    Busy,
}

pub struct SinkWriter {
    cfg: SinkConfig,
    shm: ShmObject,
    layout: Layout,
    data_size: usize,
    seen_client_ts: f64,
    has_clients: bool,
    last_id: u64,
    /// Truncations by other processes since the last log line about them.
    truncations: u64,
    truncation_logged: Option<std::time::Instant>,
}

impl SinkWriter {
    /// Create (or reuse) the object and size it.
    pub fn open(cfg: SinkConfig) -> Result<SinkWriter> {
        let abi = Abi::host().ok_or_else(|| anyhow!("memsink: unsupported CPU architecture"))?;
        let layout = abi.layout();
        let data_size = data_size_for_name(&cfg.name)?;
        let shm = ShmObject::open(
            &cfg.name,
            layout.header_size + data_size,
            OpenMode::Create { mode: cfg.mode },
        )
        .with_context(|| format!("cannot create memsink {:?}", cfg.name))?;
        tracing::info!(sink = %cfg.name, mode = format!("{:o}", cfg.mode), "memsink created");
        Ok(SinkWriter {
            cfg,
            shm,
            layout,
            data_size,
            seen_client_ts: 0.0,
            has_clients: false,
            last_id: 0,
            truncations: 0,
            truncation_logged: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Whether any reader touched the object within the client TTL (as of the last
    /// check or put).
    pub fn has_clients(&self) -> bool {
        self.has_clients
    }

    fn read_header(&self) -> std::io::Result<super::layout::Header> {
        let mut b = vec![0u8; self.layout.header_size];
        self.shm.read(0, &mut b)?;
        Ok(self.layout.decode(&b))
    }

    fn client_ts_alive(&self, client_ts: f64) -> bool {
        client_ts + self.cfg.client_ttl.as_secs_f64() > monotonic_s()
    }

    /// Should a frame be produced and put now? True when the object is not initialised,
    /// a reader is present, or (with `frame`) the frame differs from the stored meta.
    pub fn check(&mut self, frame: Option<(&FrameMeta, usize)>) -> bool {
        // A header that cannot be read (another process shrank the object) needs a put
        // too: the put gives the object its size back.
        let Ok(header) = self.read_header() else {
            return true;
        };
        if header.magic != MAGIC || header.version != VERSION {
            return true;
        }
        if header.last_client_ts != self.seen_client_ts {
            self.seen_client_ts = header.last_client_ts;
            self.has_clients = true;
            return true;
        }
        match self.shm.try_lock() {
            Ok(Some(lock)) => {
                self.has_clients = match self.read_header() {
                    Ok(header) => self.client_ts_alive(header.last_client_ts),
                    Err(_) => true,
                };
                if let Err(e) = lock.unlock() {
                    tracing::warn!(sink = %self.cfg.name, "memsink unlock: {e}");
                }
            }
            Ok(None) => {
                // A reader is inside its get right now.
                self.has_clients = true;
                return true;
            }
            Err(e) => {
                tracing::warn!(sink = %self.cfg.name, "memsink lock: {e}");
                return false;
            }
        }
        if self.has_clients {
            return true;
        }
        match frame {
            Some((meta, used)) => {
                let Ok(h) = self.read_header() else {
                    return true;
                };
                let m = &h.meta;
                h.used != used as u64
                    || (
                        m.width, m.height, m.format, m.stride, m.online, m.key, m.gop,
                    ) != (
                        meta.width,
                        meta.height,
                        meta.format,
                        meta.stride,
                        meta.online,
                        meta.key,
                        meta.gop,
                    )
            }
            None => false,
        }
    }

    fn new_id(&mut self) -> u64 {
        let mut id = frame_id(crate::media::clock::monotonic_us());
        // Readers compare with the id they saw last (starting at 0): never repeat either.
        while id == 0 || id == self.last_id {
            id = id.wrapping_add(1);
        }
        self.last_id = id;
        id
    }

    /// Put one frame: payload, meta, then magic and version, all under the lock.
    pub fn put(&mut self, meta: &FrameMeta, payload: &[u8]) -> Result<PutOutcome> {
        if payload.len() > self.data_size {
            tracing::warn!(
                sink = %self.cfg.name,
                bytes = payload.len(),
                limit = self.data_size,
                "memsink frame is too big; skipped"
            );
            return Ok(PutOutcome::TooBig);
        }
        let Some(lock) = self
            .shm
            .lock_timed(PUT_LOCK_TIMEOUT)
            .with_context(|| format!("memsink {:?}: lock", self.cfg.name))?
        else {
            tracing::debug!(sink = %self.cfg.name, "memsink busy; frame skipped");
            return Ok(PutOutcome::Busy);
        };
        let written = self.locked_put(meta, payload);
        lock.unlock()
            .with_context(|| format!("memsink {:?}: unlock", self.cfg.name))?;
        let wants_key = written.with_context(|| format!("memsink {:?}", self.cfg.name))?;
        Ok(PutOutcome::Written { wants_key })
    }
}

impl SinkWriter {
    /// The body of a put, with the lock held.
    fn locked_put(&mut self, meta: &FrameMeta, payload: &[u8]) -> std::io::Result<bool> {
        if let Some(was) = self.shm.restore_size()? {
            self.note_truncated(was);
        }
        let l = self.layout;
        let id = self.new_id();
        self.shm.write(l.id, &id.to_le_bytes())?;
        let mut wants = [0u8; WANTS_LEN];
        self.shm.read(l.wants, &mut wants)?;
        let mut wants_key = wants[l.wants_key - l.wants] != 0;
        if wants_key && meta.key {
            self.shm.write(l.wants_key, &[0])?;
            wants_key = false;
        }
        self.shm.write(l.header_size, payload)?;
        self.shm
            .write(l.used, &l.encode_used(payload.len() as u64))?;
        for (off, bytes) in l.encode_meta(meta) {
            self.shm.write(off, &bytes)?;
        }
        self.shm.write(l.magic, &MAGIC.to_le_bytes())?;
        self.shm.write(l.version, &VERSION.to_le_bytes())?;
        let header = self.read_header()?;
        self.has_clients = self.client_ts_alive(header.last_client_ts);
        Ok(wants_key)
    }

    /// Another process shrank the object (its size is restored now): say so, at most
    /// once per [`TRUNCATION_LOG_EVERY`], with how often it happened.
    fn note_truncated(&mut self, was: u64) {
        self.truncations += 1;
        let due = self
            .truncation_logged
            .is_none_or(|at| at.elapsed() >= TRUNCATION_LOG_EVERY);
        if due {
            tracing::warn!(
                sink = %self.cfg.name,
                size = was,
                times = self.truncations,
                "memsink was truncated by another process; restored its size"
            );
            self.truncation_logged = Some(std::time::Instant::now());
            self.truncations = 0;
        }
    }
}

impl Drop for SinkWriter {
    fn drop(&mut self) {
        if self.cfg.remove_on_exit {
            match ShmObject::unlink(&self.cfg.name) {
                Ok(()) => tracing::info!(sink = %self.cfg.name, "memsink removed"),
                Err(e) => tracing::warn!(sink = %self.cfg.name, "cannot remove memsink: {e}"),
            }
        }
    }
}
