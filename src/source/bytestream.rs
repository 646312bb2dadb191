//! H.264 byte-stream inputs: what `libcamera-vid --inline --listen -o tcp://...`,
//! `ffmpeg -f h264 ...` or any encoder writing raw Annex-B produces.
//!
//! * `tcp://HOST:PORT` — connect and read; reconnect with backoff when it ends.
//! * `tcp-listen://HOST:PORT` — accept a pushing encoder. The connected encoder keeps the
//!   stream until it leaves or stays silent for [`STALL`]; other connections meanwhile are
//!   closed unread, so nobody else who can reach the port can put their video in front
//!   of the viewers. An allow-list of peer addresses can narrow who may push at all.
//! * `-` — standard input.
//! * a file — paced at the configured frame rate, looping.
//!
//! Live inputs are read on a reader thread per connection and split into pictures on the
//! source thread. While no video arrives viewers see NO SIGNAL and stay connected.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::annexb::AnnexBSplitter;
use super::runner::{Closing, Demand, Next, RunnerConfig, Source, STALL};
use crate::media::VideoSettings;
use crate::media::{clock, Picture};
use crate::ratelog::RateLimited;

/// A pause this long after input means the picture in progress is complete: encoders
/// write each picture at once, so waiting for the next picture's start code would add
/// a whole frame of delay.
const IDLE_FLUSH: Duration = Duration::from_millis(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_CHUNK: usize = 64 << 10;
/// Refused encoder connections are logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
/// Between two looks for a pushing encoder while none is connected.
const ACCEPT_POLL: Duration = Duration::from_millis(10);
/// Pause after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Where the byte stream comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Connect(String),
    Listen(SocketAddr),
    Stdin,
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct ByteStreamConfig {
    /// The rate paces file playback; the size is the NO SIGNAL picture's before the
    /// stream has shown its own.
    pub video: VideoSettings,
    /// `tcp-listen://`: peers allowed to push (empty: any).
    pub allow: Vec<std::net::IpAddr>,
}

impl ByteStreamConfig {
    /// The encoder makes pictures; the runner only makes NO SIGNAL.
    pub fn runner(&self) -> RunnerConfig {
        RunnerConfig::new(self.video.size(), self.video)
    }
}

/// An H.264 byte stream as a source.
pub struct ByteStreamSource {
    input: Input,
    /// `tcp-listen://`: bound when the source is made, so a port in use is a start-up
    /// error; and who may push.
    listen: Option<(TcpListener, Gate)>,
    /// The address the listener really got (port 0 picks one), for `/state`.
    listen_kind: Option<String>,
    /// A connection that replaces the current one at the next opening.
    next_conn: Option<TcpStream>,
    stdin_taken: bool,
    /// The connection (or pipe) being read.
    reading: Option<Reading>,
    /// The file being played.
    file: Option<FilePlayback>,
    period: Duration,
}

impl ByteStreamSource {
    /// Problems that configuration can fix (a port in use, a file that is not H.264)
    /// are reported here; everything later is retried.
    pub fn new(input: Input, cfg: &ByteStreamConfig) -> Result<ByteStreamSource> {
        let mut listen_kind = None;
        let listen = match &input {
            Input::Listen(addr) => {
                let l = TcpListener::bind(addr)
                    .with_context(|| format!("source tcp-listen://{addr}: cannot listen"))?;
                l.set_nonblocking(true)?;
                // With port 0 the system picks one; /state tells which.
                let bound = l.local_addr().unwrap_or(*addr);
                listen_kind = Some(format!("tcp-listen://{bound}"));
                tracing::info!(addr = %bound, "waiting for an H.264 byte stream");
                Some((l, Gate::new(cfg.allow.clone())))
            }
            Input::File(path) => {
                check_file(path)?;
                None
            }
            _ => None,
        };
        Ok(ByteStreamSource {
            input,
            listen,
            listen_kind,
            next_conn: None,
            stdin_taken: false,
            reading: None,
            file: None,
            period: Duration::from_nanos(1_000_000_000 / u64::from(cfg.video.fps.max(1))),
        })
    }

    /// The current connection, accepting a pushing encoder if none is connected.
    fn accept(&mut self, deadline: Instant) -> Option<Next<'static>> {
        let (listener, gate) = self.listen.as_mut()?;
        loop {
            match listener.accept() {
                Ok((s, peer)) if !gate.allowed(&peer) => {
                    gate.refuse(s, peer, "address not in source_allow");
                }
                Ok((s, peer)) => {
                    tracing::info!(%peer, "encoder connected");
                    return match Reading::start(s) {
                        Ok(r) => {
                            self.reading = Some(r);
                            None
                        }
                        Err(why) => Some(Next::Lost(why)),
                    };
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() + ACCEPT_POLL >= deadline {
                        return Some(Next::Waiting);
                    }
                    // A non-blocking listener has no way to wake us: look again shortly.
                    std::thread::sleep(ACCEPT_POLL);
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    // Out of descriptors, say: do not spin on it.
                    std::thread::sleep(
                        ACCEPT_RETRY.min(deadline.saturating_duration_since(Instant::now())),
                    );
                    return Some(Next::Waiting);
                }
            }
        }
    }

    /// Listen mode, while an encoder pushes: new connections are looked for. The first
    /// one to arrive waits, unread, for up to [`STALL`]: if the current input goes
    /// silent meanwhile (an encoder that restarted, leaving a dead or half-open
    /// connection behind), it takes over; if the current one keeps sending, it is
    /// refused. Any other connection meanwhile is refused at once, so only the current
    /// encoder's video ever reaches the viewers.
    fn guard_the_door(&mut self) -> Option<Next<'static>> {
        let (listener, gate) = self.listen.as_mut()?;
        let last_data = self.reading.as_ref()?.last_data;
        if let Ok((stream, peer)) = listener.accept() {
            if !gate.allowed(&peer) {
                gate.refuse(stream, peer, "address not in source_allow");
            } else if gate.waiting.is_some() {
                gate.refuse(stream, peer, "another encoder is pushing");
            } else {
                gate.waiting = Some((stream, peer, Instant::now()));
            }
        }
        let (_, _, since) = gate.waiting.as_ref()?;
        if last_data.elapsed() > STALL {
            let (stream, peer, _) = gate.waiting.take()?;
            tracing::info!(
                %peer,
                "a new encoder connection replaces the silent current one"
            );
            self.next_conn = Some(stream);
            return Some(Next::Reopen);
        }
        if since.elapsed() > STALL {
            let (stream, peer, _) = gate.waiting.take()?;
            gate.refuse(stream, peer, "another encoder is pushing");
        }
        None
    }
}

impl Source for ByteStreamSource {
    fn thread_name(&self) -> &'static str {
        "bytestream"
    }

    fn backoff(&self) -> (Duration, Duration) {
        match self.input {
            // The next encoder may connect at once.
            Input::Listen(_) => (Duration::ZERO, Duration::ZERO),
            Input::File(_) => (Duration::from_millis(500), Duration::from_secs(5)),
            _ => (Duration::from_millis(250), Duration::from_secs(5)),
        }
    }

    fn open(&mut self, demand: &Demand) -> Result<(), String> {
        match &self.input {
            Input::Listen(_) => {
                if let Some(kind) = self.listen_kind.take() {
                    demand.describe(kind);
                }
                // A connection that waited while the previous encoder pushed goes first.
                let waited = self.listen.as_mut().and_then(|(_, gate)| {
                    gate.waiting.take().map(|(s, peer, _)| {
                        tracing::info!(%peer, "encoder connected");
                        s
                    })
                });
                if let Some(stream) = self.next_conn.take().or(waited) {
                    self.reading = Some(Reading::start(stream)?);
                }
            }
            Input::Connect(addr) => {
                let stream =
                    connect(addr).map_err(|e| format!("cannot connect to {addr}: {e:#}"))?;
                tracing::info!(addr, "connected to the H.264 byte stream");
                self.reading = Some(Reading::start(stream)?);
            }
            Input::Stdin => {
                // Standard input cannot be reopened.
                if !self.stdin_taken {
                    self.stdin_taken = true;
                    let rx = spawn_reader(std::io::stdin())
                        .map_err(|e| format!("standard input: {e:#}"))?;
                    self.reading = Some(Reading::new(rx, None));
                }
            }
            Input::File(path) => {
                let file =
                    File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                self.file = Some(FilePlayback::new(file, path.clone(), Instant::now()));
            }
        }
        Ok(())
    }

    fn next(&mut self, _: &Demand, deadline: Instant) -> Next<'_> {
        if let Some(file) = self.file.as_mut() {
            return file.next(self.period, deadline);
        }
        if self.reading.is_none() {
            if let Some(next) = self.accept(deadline) {
                return next;
            }
        }
        if let Some(next) = self.guard_the_door() {
            return next;
        }
        let stdin = self.input == Input::Stdin;
        let Some(reading) = self.reading.as_mut() else {
            return Next::Waiting;
        };
        match reading.next(deadline) {
            Next::Lost(why) if stdin => Next::Ended(format!("standard input: {why}")),
            next => next,
        }
    }

    fn close(&mut self, _: Closing) {
        self.reading = None;
        self.file = None;
    }
}

/// One connection or pipe, read on its own thread and split here.
struct Reading {
    rx: Receiver<Chunk>,
    /// Shut down when the reading ends, which ends the reader thread.
    stream: Option<TcpStream>,
    splitter: AnnexBSplitter,
    batch: Vec<Picture>,
    pictures: VecDeque<Picture>,
    unflushed: bool,
    last_data: Instant,
    /// The input ended, for this reason, after the pictures still queued.
    ended: Option<String>,
}

impl Reading {
    fn new(rx: Receiver<Chunk>, stream: Option<TcpStream>) -> Reading {
        Reading {
            rx,
            stream,
            splitter: AnnexBSplitter::new(),
            batch: Vec::new(),
            pictures: VecDeque::new(),
            unflushed: false,
            last_data: Instant::now(),
            ended: None,
        }
    }

    /// Read a TCP connection.
    fn start(stream: TcpStream) -> Result<Reading, String> {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_nodelay(true);
        let rx = stream
            .try_clone()
            .map_err(anyhow::Error::from)
            .and_then(spawn_reader)
            .map_err(|e| format!("{e:#}"))?;
        Ok(Reading::new(rx, Some(stream)))
    }

    fn next(&mut self, deadline: Instant) -> Next<'static> {
        loop {
            if let Some(picture) = self.pictures.pop_front() {
                return Next::Picture(picture);
            }
            if let Some(why) = self.ended.take() {
                return Next::Lost(why);
            }
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(IDLE_FLUSH);
            match self.rx.recv_timeout(wait) {
                Ok(Chunk::Data(data)) => {
                    self.last_data = Instant::now();
                    if let Err(e) = self.splitter.push(&data, &mut self.batch) {
                        return Next::Lost(e.to_string());
                    }
                    self.unflushed = true;
                }
                Ok(Chunk::End(why)) => {
                    self.splitter.flush(&mut self.batch);
                    self.ended = Some(why);
                }
                Err(RecvTimeoutError::Disconnected) => return Next::Lost("reader stopped".into()),
                Err(RecvTimeoutError::Timeout) => {
                    if self.unflushed {
                        self.splitter.flush(&mut self.batch);
                        self.unflushed = false;
                    }
                }
            }
            let now_us = clock::monotonic_us();
            for mut picture in self.batch.drain(..) {
                picture.capture_us = now_us;
                self.pictures.push_back(picture);
            }
            if self.pictures.is_empty() && self.ended.is_none() && Instant::now() >= deadline {
                return Next::Waiting;
            }
        }
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        if let Some(stream) = &self.stream {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// A file played at the stream's rate, from the start again at its end.
struct FilePlayback {
    file: File,
    path: PathBuf,
    splitter: AnnexBSplitter,
    batch: Vec<Picture>,
    pictures: VecDeque<Picture>,
    buf: Vec<u8>,
    /// Pictures given in this pass.
    published: u64,
    /// When the next picture is due.
    due: Instant,
}

impl FilePlayback {
    fn new(file: File, path: PathBuf, due: Instant) -> FilePlayback {
        FilePlayback {
            file,
            path,
            splitter: AnnexBSplitter::new(),
            batch: Vec::new(),
            pictures: VecDeque::new(),
            buf: vec![0; READ_CHUNK],
            published: 0,
            due,
        }
    }

    fn next(&mut self, period: Duration, deadline: Instant) -> Next<'static> {
        while self.pictures.is_empty() {
            let n = match self.file.read(&mut self.buf) {
                Ok(n) => n,
                Err(e) => return Next::Lost(format!("reading {}: {e}", self.path.display())),
            };
            if n == 0 {
                self.splitter.flush(&mut self.batch);
                self.pictures.extend(self.batch.drain(..));
                if self.pictures.is_empty() {
                    if self.published == 0 {
                        return Next::Lost(format!("no pictures in {}", self.path.display()));
                    }
                    // Loop from the start; the new pass begins with its first IDR.
                    if let Err(e) = self.rewind() {
                        return Next::Lost(e);
                    }
                }
                continue;
            }
            if let Err(e) = self.splitter.push(&self.buf[..n], &mut self.batch) {
                return Next::Lost(format!("{}: {e}", self.path.display()));
            }
            self.pictures.extend(self.batch.drain(..));
        }
        let now = Instant::now();
        if now < self.due {
            if deadline < self.due {
                std::thread::sleep(deadline.saturating_duration_since(now));
                return Next::Waiting;
            }
            std::thread::sleep(self.due - now);
        }
        let Some(mut picture) = self.pictures.pop_front() else {
            return Next::Waiting;
        };
        picture.capture_us = clock::monotonic_us();
        self.published += 1;
        self.due += period;
        let now = Instant::now();
        if now > self.due + period {
            self.due = now;
        }
        Next::Picture(picture)
    }

    /// Start the file over.
    fn rewind(&mut self) -> Result<(), String> {
        use std::io::Seek;
        self.file
            .rewind()
            .map_err(|e| format!("reading {}: {e}", self.path.display()))?;
        self.splitter = AnnexBSplitter::new();
        self.published = 0;
        Ok(())
    }
}

/// A file must give a picture from its first few MiB.
fn check_file(path: &Path) -> Result<()> {
    let mut file =
        File::open(path).with_context(|| format!("source {}: cannot open", path.display()))?;
    let mut splitter = AnnexBSplitter::new();
    let mut pictures = Vec::new();
    let mut buf = vec![0; READ_CHUNK];
    while pictures.is_empty() {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("source {}: cannot read", path.display()))?;
        if n == 0 {
            splitter.flush(&mut pictures);
            if pictures.is_empty() {
                bail!(
                    "source {}: no H.264 picture in the file (an IDR with SPS and PPS is needed)",
                    path.display()
                );
            }
            break;
        }
        splitter
            .push(&buf[..n], &mut pictures)
            .with_context(|| format!("source {}", path.display()))?;
    }
    Ok(())
}

enum Chunk {
    Data(Vec<u8>),
    End(String),
}

/// Read `reader` on its own thread, handing chunks over a bounded queue (a slow consumer
/// slows the sender down through TCP, instead of growing memory).
fn spawn_reader(mut reader: impl Read + Send + 'static) -> Result<Receiver<Chunk>> {
    let (tx, rx) = mpsc::sync_channel(64);
    std::thread::Builder::new()
        .name("bytestream-read".into())
        .spawn(move || loop {
            let mut buf = vec![0; READ_CHUNK];
            match reader.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.send(Chunk::End("end of stream".into()));
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(Chunk::Data(buf)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Chunk::End(format!("read error: {e}")));
                    return;
                }
            }
        })
        .context("starting a reader thread")?;
    Ok(rx)
}

/// Who may push to a `tcp-listen://` source, and the log of those refused.
struct Gate {
    allow: Vec<std::net::IpAddr>,
    refusals: RateLimited,
    /// A connection that arrived while the current encoder was pushing, unread, and
    /// when it arrived. It goes next if the current one ends or falls silent.
    waiting: Option<(TcpStream, SocketAddr, Instant)>,
}

impl Gate {
    fn new(allow: Vec<std::net::IpAddr>) -> Gate {
        Gate {
            allow: allow.into_iter().map(|ip| ip.to_canonical()).collect(),
            refusals: RateLimited::new(REFUSAL_LOG_EVERY),
            waiting: None,
        }
    }

    fn allowed(&self, peer: &SocketAddr) -> bool {
        self.allow.is_empty() || self.allow.contains(&peer.ip().to_canonical())
    }

    /// Close `stream` at once and say so (rate-limited: anyone who reaches the port
    /// can cause this as often as they like).
    fn refuse(&mut self, stream: TcpStream, peer: SocketAddr, why: &str) {
        let _ = stream.shutdown(Shutdown::Both);
        drop(stream);
        if let Some(count) = self.refusals.hit() {
            tracing::warn!(%peer, refused = count, "encoder connection refused: {why}");
        }
    }
}

fn connect(addr: &str) -> Result<TcpStream> {
    let mut last = None;
    for sa in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sa, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no address for {addr}"), Into::into))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_h264_is_refused_at_start() {
        let dir = std::env::temp_dir().join(format!("peregrine-bs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ts = dir.join("x.ts");
        std::fs::write(
            &ts,
            include_bytes!("../../tests/fixtures/testsrc_160x120.ts"),
        )
        .unwrap();
        let err = check_file(&ts).unwrap_err();
        assert!(format!("{err:#}").contains("MPEG-TS"), "{err:#}");
        let good = dir.join("x.h264");
        std::fs::write(
            &good,
            include_bytes!("../../tests/fixtures/aud_2slices_160x120.h264"),
        )
        .unwrap();
        check_file(&good).unwrap();
    }
}
