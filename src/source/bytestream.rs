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

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::annexb::AnnexBSplitter;
use super::lifecycle::{Backoff, Output, StatusHandle};
use crate::media::Hub;
use crate::media::Picture;
use crate::ratelog::RateLimited;

/// A pause this long after input means the picture in progress is complete: encoders
/// write each picture at once, so waiting for the next picture's start code would add
/// a whole frame of delay.
const IDLE_FLUSH: Duration = Duration::from_millis(15);
/// No picture for this long on an open connection counts as a lost source.
const STALL: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_CHUNK: usize = 64 << 10;
/// Refused encoder connections are logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

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
    /// Pace of file playback.
    pub fps: u32,
    /// Size of the NO SIGNAL picture before the stream has shown its own.
    pub width: u32,
    pub height: u32,
    /// `tcp-listen://`: peers allowed to push (empty: any).
    pub allow: Vec<std::net::IpAddr>,
}

/// Start the source thread. Problems that configuration can fix (a port in use, a file
/// that is not H.264) are reported here; everything later is retried.
pub fn spawn(
    input: Input,
    cfg: ByteStreamConfig,
    hub: Arc<Hub>,
    status: StatusHandle,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let listener = match &input {
        Input::Listen(addr) => {
            let l = TcpListener::bind(addr)
                .with_context(|| format!("source tcp-listen://{addr}: cannot listen"))?;
            l.set_nonblocking(true)?;
            // With port 0 the system picks one; /state tells which.
            let bound = l.local_addr().unwrap_or(*addr);
            status.set_kind(format!("tcp-listen://{bound}"));
            tracing::info!(addr = %bound, "waiting for an H.264 byte stream");
            Some(l)
        }
        Input::File(path) => {
            check_file(path)?;
            None
        }
        _ => None,
    };
    let out = Output::new(hub, status, (cfg.width, cfg.height));
    std::thread::Builder::new()
        .name("bytestream".into())
        .spawn(move || {
            let mut out = out;
            out.not_yet();
            match (input, listener) {
                (Input::Listen(_), Some(l)) => {
                    let mut gate = Gate::new(cfg.allow.clone());
                    run_listen(&l, &mut gate, &mut out, &stop)
                }
                (Input::Connect(addr), _) => run_connect(&addr, &mut out, &stop),
                (Input::Stdin, _) => run_stdin(&mut out, &stop),
                (Input::File(path), _) => run_file(&path, &cfg, &mut out, &stop),
                (Input::Listen(_), None) => {}
            }
            tracing::info!("byte-stream source stopped");
        })
        .context("starting the byte-stream thread")
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

/// How one connection's stream ended.
enum Ended {
    Stopped,
    /// The input ended or failed; the text says why.
    Lost(String),
    /// A newer connection took over (listen mode).
    Replaced(TcpStream),
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

/// Split and publish one input until it ends. With `listen`, new connections are
/// polled for. The first one to arrive waits, unread, for up to [`STALL`]: if this input
/// goes silent meanwhile (an encoder that restarted, leaving a dead or half-open
/// connection behind), it takes over; if this input keeps sending, it is refused. Any
/// other connection meanwhile is refused at once, so only the current encoder's video
/// ever reaches the viewers.
fn pump(
    rx: &Receiver<Chunk>,
    out: &mut Output,
    stop: &AtomicBool,
    mut listen: Option<(&TcpListener, &mut Gate)>,
) -> Ended {
    let mut splitter = AnnexBSplitter::new();
    let mut pictures: Vec<Picture> = Vec::new();
    let mut unflushed = false;
    let mut last_picture = Instant::now();
    let mut last_data = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ended::Stopped;
        }
        if let Some((l, gate)) = listen.as_mut() {
            if let Ok((stream, peer)) = l.accept() {
                if !gate.allowed(&peer) {
                    gate.refuse(stream, peer, "address not in source_allow");
                } else if gate.waiting.is_some() {
                    gate.refuse(stream, peer, "another encoder is pushing");
                } else {
                    gate.waiting = Some((stream, peer, Instant::now()));
                }
            }
            if let Some((_, _, since)) = &gate.waiting {
                if last_data.elapsed() > STALL {
                    let (stream, peer, _) = gate.waiting.take().expect("checked above");
                    tracing::info!(
                        %peer,
                        "a new encoder connection replaces the silent current one"
                    );
                    return Ended::Replaced(stream);
                }
                if since.elapsed() > STALL {
                    let (stream, peer, _) = gate.waiting.take().expect("checked above");
                    gate.refuse(stream, peer, "another encoder is pushing");
                }
            }
        }
        match rx.recv_timeout(IDLE_FLUSH) {
            Ok(Chunk::Data(data)) => {
                last_data = Instant::now();
                if let Err(e) = splitter.push(&data, &mut pictures) {
                    return Ended::Lost(e.to_string());
                }
                unflushed = true;
            }
            Ok(Chunk::End(why)) => {
                splitter.flush(&mut pictures);
                pictures.drain(..).for_each(|p| out.publish(p));
                return Ended::Lost(why);
            }
            Err(RecvTimeoutError::Disconnected) => return Ended::Lost("reader stopped".into()),
            Err(RecvTimeoutError::Timeout) => {
                if unflushed {
                    splitter.flush(&mut pictures);
                    unflushed = false;
                }
            }
        }
        if !pictures.is_empty() {
            last_picture = Instant::now();
            pictures.drain(..).for_each(|p| out.publish(p));
        } else if out.is_live() && last_picture.elapsed() > STALL {
            out.lost("no pictures for 2 s");
            // Pictures that come later reference ones the viewers never got.
            splitter.wait_for_idr();
        }
        if !out.is_live() {
            out.idle();
        }
    }
}

fn session_over(out: &mut Output, ended: &Ended, backoff: &mut Backoff) {
    if let Ended::Lost(why) = ended {
        if out.is_live() {
            backoff.reset();
        }
        out.lost(why);
    }
}

fn run_listen(listener: &TcpListener, gate: &mut Gate, out: &mut Output, stop: &AtomicBool) {
    let mut next: Option<TcpStream> = None;
    let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
    while !stop.load(Ordering::Relaxed) {
        // A connection that waited while the previous encoder pushed goes first.
        let waited = gate.waiting.take().map(|(s, peer, _)| {
            tracing::info!(%peer, "encoder connected");
            s
        });
        let stream = match next.take().or(waited) {
            Some(s) => s,
            None => match listener.accept() {
                Ok((s, peer)) if !gate.allowed(&peer) => {
                    gate.refuse(s, peer, "address not in source_allow");
                    continue;
                }
                Ok((s, peer)) => {
                    tracing::info!(%peer, "encoder connected");
                    s
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    out.wait(Duration::from_millis(10), stop);
                    continue;
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    out.wait(Duration::from_millis(100), stop);
                    continue;
                }
            },
        };
        let ended = read_stream(stream, out, stop, Some((listener, &mut *gate)));
        session_over(out, &ended, &mut backoff);
        if let Ended::Replaced(s) = ended {
            next = Some(s);
        }
    }
}

/// Pump one TCP connection; the reader thread ends with it.
fn read_stream(
    stream: TcpStream,
    out: &mut Output,
    stop: &AtomicBool,
    listen: Option<(&TcpListener, &mut Gate)>,
) -> Ended {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let rx = match stream
        .try_clone()
        .map_err(anyhow::Error::from)
        .and_then(spawn_reader)
    {
        Ok(rx) => rx,
        Err(e) => return Ended::Lost(format!("{e:#}")),
    };
    let ended = pump(&rx, out, stop, listen);
    let _ = stream.shutdown(Shutdown::Both);
    ended
}

fn run_connect(addr: &str, out: &mut Output, stop: &AtomicBool) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    while !stop.load(Ordering::Relaxed) {
        match connect(addr) {
            Ok(stream) => {
                tracing::info!(addr, "connected to the H.264 byte stream");
                let ended = read_stream(stream, out, stop, None);
                session_over(out, &ended, &mut backoff);
            }
            Err(e) => {
                out.lost(&format!("cannot connect to {addr}: {e:#}"));
            }
        }
        let delay = backoff.next_delay();
        if !out.wait(delay, stop) {
            break;
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

fn run_stdin(out: &mut Output, stop: &AtomicBool) {
    // Standard input cannot be reopened: once it ends, NO SIGNAL stays until shutdown.
    let ended = match spawn_reader(std::io::stdin()) {
        Ok(rx) => pump(&rx, out, stop, None),
        Err(e) => Ended::Lost(format!("{e:#}")),
    };
    if let Ended::Lost(why) = ended {
        out.lost(&format!("standard input: {why}"));
    }
    while out.wait(Duration::from_millis(100), stop) {}
}

fn run_file(path: &Path, cfg: &ByteStreamConfig, out: &mut Output, stop: &AtomicBool) {
    let period = Duration::from_nanos(1_000_000_000 / u64::from(cfg.fps.max(1)));
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    let mut next = Instant::now();
    'open: while !stop.load(Ordering::Relaxed) {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                out.lost(&format!("cannot open {}: {e}", path.display()));
                out.wait(backoff.next_delay(), stop);
                continue;
            }
        };
        let mut splitter = AnnexBSplitter::new();
        let mut pictures = std::collections::VecDeque::new();
        let mut batch = Vec::new();
        let mut buf = vec![0; READ_CHUNK];
        let mut published = 0u64;
        loop {
            while pictures.is_empty() {
                let n = match file.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        out.lost(&format!("reading {}: {e}", path.display()));
                        continue 'open;
                    }
                };
                if n == 0 {
                    splitter.flush(&mut batch);
                    pictures.extend(batch.drain(..));
                    if pictures.is_empty() {
                        if published == 0 {
                            out.lost(&format!("no pictures in {}", path.display()));
                            out.wait(backoff.next_delay(), stop);
                        }
                        // Loop from the start; the new pass begins with its first IDR.
                        continue 'open;
                    }
                    break;
                }
                if let Err(e) = splitter.push(&buf[..n], &mut batch) {
                    out.lost(&format!("{}: {e}", path.display()));
                    out.wait(backoff.next_delay(), stop);
                    continue 'open;
                }
                pictures.extend(batch.drain(..));
            }
            let Some(picture) = pictures.pop_front() else {
                continue;
            };
            // Sleep in short steps so stop is noticed.
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                if now >= next {
                    break;
                }
                std::thread::sleep((next - now).min(Duration::from_millis(10)));
            }
            out.publish(picture);
            published += 1;
            backoff.reset();
            next += period;
            let now = Instant::now();
            if now > next + period {
                next = now;
            }
        }
    }
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
