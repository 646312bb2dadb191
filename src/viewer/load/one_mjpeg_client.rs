//! One MJPEG client: `GET /stream` as an `<img>` does, with µStreamer's `extra_headers`
//! (as kvmd asks) so each part carries its capture time; counts the whole JPEG
//! pictures that arrive and how late they are.
//!
//! Built to run by the thousand in one process: one task per client, a bounded read
//! buffer, and pictures counted as they stream past, never kept.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::media::clock;
use crate::viewer::http::alongside;
use crate::viewer::multipart::{boundary_of, MultipartReader, Part};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Most bytes read from the socket at once: two reads for a 720p picture, and a
/// thousand clients stay under 64 MiB of buffers.
const READ_BUFFER: usize = 64 * 1024;

/// Counters every client updates while running, for the progress line.
#[derive(Default)]
pub struct MjpegProgress {
    pub started: AtomicUsize,
    /// Clients whose `/stream` answered 200.
    pub connected: AtomicUsize,
    pub failed: AtomicUsize,
    /// Whole JPEG pictures, over all clients.
    pub pictures: AtomicU64,
}

/// What one client saw.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MjpegClientReport {
    pub id: usize,
    pub error: Option<String>,
    /// Request sent → first whole picture.
    pub ttfp_ms: Option<f64>,
    pub pictures: u64,
    /// Bytes of those pictures.
    pub picture_bytes: u64,
    /// Parts that were not a whole JPEG picture.
    pub not_jpeg: u64,
    /// Seconds from the first picture to the end.
    pub receiving_s: f64,
    /// Capture → picture complete here, per picture, ms.
    #[serde(skip)]
    pub delays_ms: Vec<f32>,
}

/// Watch `path` (e.g. `/stream?extra_headers=1`) on `authority` until `stop` turns
/// true; `counts[id]` follows this client's pictures live (the benchmark reads it at
/// the edges of its window).
pub async fn run(
    id: usize,
    authority: String,
    path: String,
    progress: Arc<MjpegProgress>,
    counts: Arc<[AtomicU64]>,
    stop: watch::Receiver<bool>,
) -> MjpegClientReport {
    let mut report = MjpegClientReport {
        id,
        ..Default::default()
    };
    progress.started.fetch_add(1, Ordering::Relaxed);
    let count = counts.get(id);
    let watched = watch_stream(&authority, &path, &progress, count, stop, &mut report);
    if let Err(e) = watched.await {
        report.error = Some(format!("{e:#}"));
        progress.failed.fetch_add(1, Ordering::Relaxed);
    }
    report
}

async fn watch_stream(
    authority: &str,
    path: &str,
    progress: &MjpegProgress,
    count: Option<&AtomicU64>,
    mut stop: watch::Receiver<bool>,
    report: &mut MjpegClientReport,
) -> Result<()> {
    let sent = Instant::now();
    let socket = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority))
        .await
        .map_err(|_| anyhow!("no connection within {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("connect to {authority}"))?;
    // As a browser does; parts are written in pieces.
    socket.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(READ_BUFFER)
        .handshake(TokioIo::new(socket))
        .await
        .with_context(|| format!("HTTP with {authority}"))?;
    let request = Request::get(path)
        .header(HOST, authority)
        .body(Empty::<Bytes>::new())
        .with_context(|| format!("GET {path} is not a request"))?;
    let mut first: Option<Instant> = None;
    let exchange = async {
        let answer = sender
            .send_request(request)
            .await
            .with_context(|| format!("{authority} did not answer with HTTP"))?;
        if answer.status() != 200 {
            bail!("GET {path} answered {}", answer.status());
        }
        let content_type = answer
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let mut reader = MultipartReader::new(&boundary_of(content_type)?);
        progress.connected.fetch_add(1, Ordering::Relaxed);
        let mut body = answer.into_body();
        let watched = loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                _ = stop.wait_for(|s| *s) => break Ok(()),
            };
            let data = match frame {
                None => break Err(anyhow!("the server ended the stream")),
                Some(Err(e)) => break Err(anyhow!("reading the stream: {e}")),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            let read = reader.push(&data, |part| {
                if take_part(&part, report) {
                    let now = Instant::now();
                    if first.is_none() {
                        first = Some(now);
                        report.ttfp_ms = Some(ms(now - sent));
                    }
                    if let Some(count) = count {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    progress.pictures.fetch_add(1, Ordering::Relaxed);
                }
            });
            if let Err(e) = read {
                break Err(anyhow!(e).context("reading the stream"));
            }
            if reader.is_closed() {
                break Err(anyhow!("the server closed the stream"));
            }
        };
        progress.connected.fetch_sub(1, Ordering::Relaxed);
        watched
    };
    let result = alongside(exchange, connection).await;
    if let Some(t) = first {
        report.receiving_s = t.elapsed().as_secs_f64();
    }
    result
}

/// Count one part; true for a whole picture.
fn take_part(part: &Part, report: &mut MjpegClientReport) -> bool {
    if !part.is_jpeg {
        report.not_jpeg += 1;
        return false;
    }
    report.pictures += 1;
    report.picture_bytes += part.head.len as u64;
    // Capture time is CLOCK_MONOTONIC on the server, which is this machine.
    if let Some(captured) = part.head.captured_us {
        let delay_us = clock::monotonic_us().saturating_sub(captured);
        report.delays_ms.push(delay_us as f32 / 1000.0);
    }
    true
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
