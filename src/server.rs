//! Wires the pipeline together: source → hub → WebRTC engine, the Janus transports that
//! make peers, and the main HTTP port; then runs until Ctrl+C or SIGTERM, reading the
//! TLS certificates again on SIGHUP.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::access::PeerFilter;
use crate::config::janus_install::SecureTransport;
use crate::config::{usage_error, Config, SourceSpec, StreamConfig};
use crate::http;
use crate::http::state::{EncoderState, Resolution, StreamFacts};
use crate::janus::listen::{Bound, Existing};
use crate::janus::{JanusConfig, JanusServer, SecureListen};
use crate::media::hub::DEFAULT_QUEUE_FRAMES;
use crate::media::jpeg_tap::{JpegTap, TapConfig};
use crate::media::{Hub, Stream, Streams};
use crate::memsink::output as memsink_output;
use crate::memsink::writer::SinkConfig;
use crate::metrics::collector::StreamInput;
use crate::net::candidate_ips;
use crate::relay::{Relay, RelayConfig};
use crate::rtc::{RtcConfig, RtcEngine};
use crate::source::bytestream::{ByteStreamConfig, ByteStreamSource, Input};
use crate::source::camera::replay::{self, ReplayOpener};
use crate::source::camera::v4l2::{V4l2Opener, V4l2Settings};
use crate::source::camera::{CameraConfig, CameraSource};
use crate::source::lifecycle::StatusHandle;
use crate::source::memsink::{MemsinkSource, MemsinkSourceConfig};
use crate::source::runner::{self, RunnerConfig, Source};
use crate::source::testsrc::{PatternSource, TestsrcConfig};
use crate::tls::{CertFiles, Tls};

/// Run peregrine until a shutdown signal arrives.
pub async fn run(cfg: Config) -> Result<()> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    });
    run_until(cfg, shutdown_rx).await
}

/// Run peregrine until `shutdown` turns true.
pub async fn run_until(cfg: Config, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let started = Instant::now();
    for note in &cfg.notes {
        tracing::warn!("{note}");
    }
    if let Some(warning) = crate::exposure::warning(&cfg) {
        tracing::warn!("{warning}");
    }
    // Before anything starts: a certificate that cannot be used is a usage error.
    let mut janus_cfg = cfg.janus_config();
    let certificates = load_certificates(&cfg, &mut janus_cfg).map_err(usage_error)?;
    reload_on_sighup(certificates);
    let main_tls = janus_cfg.tls.clone();
    for warning in crate::exposure::start_warnings(&cfg) {
        tracing::warn!("{warning}");
    }
    // As µStreamer's --unix: the same routes, for local clients such as kvmd.
    let unix = match &cfg.unix {
        Some(path) => {
            let existing = if cfg.unix_rm {
                Existing::Remove
            } else {
                Existing::Refuse
            };
            let bound = Bound::unix(path, cfg.unix_mode, existing)
                .await
                .context("cannot listen on --unix")
                .map_err(usage_error)?;
            tracing::info!("HTTP also on {}", bound.describe("http", "/"));
            Some(bound)
        }
        None => None,
    };

    let stop_source = Arc::new(AtomicBool::new(false));
    let mut running = Vec::new();
    let mut facts = Vec::new();
    let mut threads = Vec::new();
    let mut jpeg_taps = Vec::new();
    for stream_cfg in cfg.stream_configs() {
        let hub = Hub::new(DEFAULT_QUEUE_FRAMES);
        let status = StatusHandle::new(&stream_cfg.source, "no_signal");
        // Made before the source: a JPEG camera hands its pictures to it directly.
        let jpeg_tap = JpegTap::new(
            stream_cfg.name.clone(),
            hub.clone(),
            TapConfig {
                quality: cfg.jpeg_quality,
                max_fps: stream_cfg.video.fps,
            },
        );
        threads.push(
            start_source(
                &stream_cfg,
                hub.clone(),
                status.clone(),
                stop_source.clone(),
                &jpeg_tap,
            )
            .with_context(|| format!("stream {:?}", stream_cfg.name))?,
        );
        let sink_readers = stream_cfg
            .h264_sink
            .as_ref()
            .map(|_| Arc::new(AtomicBool::new(false)));
        threads.push(start_sink(
            &cfg,
            &stream_cfg,
            hub.clone(),
            stop_source.clone(),
            sink_readers.clone().unwrap_or_default(),
        )?);
        let kind = stream_cfg.spec.kind();
        let stream = Stream::new(stream_cfg.name, hub, stream_cfg.video.fps);
        jpeg_taps.push((stream.clone(), jpeg_tap));
        let input = StreamInput {
            stream,
            status,
            kind,
        };
        facts.push(StreamFacts {
            input: input.clone(),
            configured: Resolution {
                width: stream_cfg.video.width,
                height: stream_cfg.video.height,
            },
            bitrate_kbps: stream_cfg.video.bitrate_kbps,
            gop: stream_cfg.video.gop,
            h264_sink: sink_readers,
        });
        running.push(input);
    }
    let streams = Streams::new(running.iter().map(|s| s.stream.clone()).collect());

    let engine = RtcEngine::start(RtcConfig {
        bind: cfg.media_ip(),
        udp_ports: cfg.udp_ports,
        candidate_ips: candidate_ips(cfg.media_ip(), cfg.ice_loopback),
        nat_1_1_ip: cfg.nat_1_1_ip,
        rtp_packet_size: cfg.rtp_packet_size,
        max_viewers: cfg.max_viewers,
        allow_ip: cfg.allow_ip.clone(),
    })
    .await
    .context("cannot start the WebRTC engine")?;
    tracing::info!(udp = %engine.local_addr(), "WebRTC media");

    // The error names the one listener that could not be bound.
    let janus = JanusServer::bind(streams.clone(), engine.clone(), janus_cfg).await?;
    let relay = Relay::new(
        streams.clone(),
        RelayConfig {
            jsmpeg_secret: cfg.jsmpeg_secret.clone(),
            jsmpeg_header: cfg.jsmpeg_header,
            ffmpeg: cfg.jsmpeg_ffmpeg.clone(),
            transcode_kbps: cfg.jsmpeg_bitrate_kbps,
        },
    );
    let mjpeg = http::mjpeg::Mjpeg::new(streams.clone(), jpeg_taps);
    let janus_status = janus.status();
    let main_routes = janus.main_port_routes();

    let metrics = crate::metrics::registry(crate::metrics::Inputs {
        streams: running.clone(),
        engine: engine.clone(),
        relay: relay.clone(),
        janus: janus_status.clone(),
    });
    let state = Arc::new(http::StateReporter {
        started,
        instance_id: cfg.instance_id.clone(),
        fake_resolution: cfg
            .fake_resolution
            .map(|(width, height)| Resolution { width, height }),
        encoder: EncoderState {
            quality: u32::from(cfg.jpeg_quality),
            ..EncoderState::default()
        },
        streams: facts,
        engine: engine.clone(),
        relay: relay.clone(),
        janus: janus_status.clone(),
        mjpeg: mjpeg.clone(),
    });
    let addr = SocketAddr::new(cfg.host, cfg.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for HTTP; change --port"))?;
    let scheme = if main_tls.is_some() { "https" } else { "http" };
    let bound = listener.local_addr().unwrap_or(addr);
    match &cfg.basic_auth {
        Some(c) => {
            tracing::info!(user = %c.user, "viewer page at {scheme}://{bound}/ (HTTP Basic auth)")
        }
        None => tracing::info!("viewer page at {scheme}://{bound}/"),
    }

    let until_shutdown = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let main_router = http::router(state, cfg.static_dir.clone())
        .merge(crate::metrics::routes(metrics))
        .merge(main_routes)
        .merge(relay.routes())
        .merge(mjpeg.routes());
    // Basic auth outermost: nothing, not even an Origin refusal, without the password.
    let main_router = crate::access::basic::guard(
        crate::origin::guard(relay.with_root_websocket(main_router), cfg.origin_policy()),
        cfg.basic_auth.as_ref(),
    );
    let main_filter = PeerFilter::new("main HTTP port", [cfg.allow_ip.clone()]);
    let unix_server = {
        let (router, policy) = (main_router.clone(), janus.conn_policy());
        let closed = until_shutdown(shutdown.clone());
        async move {
            match unix {
                Some(bound) => bound.serve(router, policy, closed).await,
                None => {
                    closed.await;
                    Ok(())
                }
            }
        }
    };
    let http_server = crate::serve::serve(
        listener,
        main_router,
        janus.conn_policy().with_filter(main_filter),
        main_tls,
        until_shutdown(shutdown.clone()),
    );
    let janus_server = janus.serve(until_shutdown(shutdown.clone()));

    let result = tokio::select! {
        r = http_server => r.context("HTTP server"),
        r = unix_server => r.context("HTTP server on --unix"),
        r = janus_server => r.context("Janus transports"),
        _ = shutdown.wait_for(|s| *s) => Ok(()),
    };
    engine.shutdown().await;
    stop_source.store(true, Ordering::Relaxed);
    for stream in streams.iter() {
        stream.hub().wake_source();
    }
    for thread in threads.into_iter().flatten() {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    result
}

/// Read every certificate peregrine serves (`--tls-cert`, and the Janus config's `wss`
/// and `https` ones) into `janus`; returns them all, to be read again on SIGHUP.
fn load_certificates(cfg: &Config, janus: &mut JanusConfig) -> Result<Vec<Arc<Tls>>> {
    let mut all = Vec::new();
    janus.tls = match &cfg.tls {
        Some(files) => Some(load_once(&mut all, files.clone())?),
        None => None,
    };
    let mut secure = |s: &SecureTransport, host: IpAddr| -> Result<SecureListen> {
        let files = CertFiles {
            cert: s.cert.clone(),
            key: s.key.clone(),
        };
        Ok(SecureListen {
            host: s.ip.unwrap_or(host),
            port: s.port,
            tls: load_once(&mut all, files).context("janus_config")?,
        })
    };
    let ws_host = cfg.janus_ws_host.unwrap_or(cfg.host);
    janus.wss = cfg
        .janus_wss
        .as_ref()
        .map(|s| secure(s, ws_host))
        .transpose()?;
    let http_host = cfg.janus_http_host.unwrap_or(cfg.host);
    janus.https = cfg
        .janus_https
        .as_ref()
        .map(|s| secure(s, http_host))
        .transpose()?;
    Ok(all)
}

/// The certificate read from `files`, read now unless it is among `all` already.
fn load_once(all: &mut Vec<Arc<Tls>>, files: CertFiles) -> Result<Arc<Tls>> {
    if let Some(tls) = all.iter().find(|t| *t.files() == files) {
        return Ok(tls.clone());
    }
    let tls = Tls::load(files)?;
    all.push(tls.clone());
    Ok(tls)
}

/// Read the certificates again at each SIGHUP; one that cannot be used keeps the one
/// in force. Set up before the first listener binds, so a SIGHUP never finds the
/// process without its handler (which would end it).
fn reload_on_sighup(certificates: Vec<Arc<Tls>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(hup) => hup,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch for SIGHUP: TLS certificates will not be reloaded");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if certificates.is_empty() {
                tracing::info!("SIGHUP: no TLS certificate to read again");
            }
            for tls in &certificates {
                let cert = tls.files().cert.display();
                match tls.reload() {
                    Ok(()) => tracing::info!(
                        %cert,
                        "SIGHUP: TLS certificate read again; new connections use it"
                    ),
                    Err(e) => tracing::error!(
                        "SIGHUP: {e:#}; new connections keep the certificate loaded before"
                    ),
                }
            }
        }
    });
}

/// Start a stream's source: made from its spec, run by the runner.
fn start_source(
    cfg: &StreamConfig,
    hub: Arc<Hub>,
    status: StatusHandle,
    stop: Arc<AtomicBool>,
    jpeg_tap: &Arc<JpegTap>,
) -> Result<Option<std::thread::JoinHandle<()>>> {
    let (source, mut runner) = make_source(cfg, jpeg_tap)?;
    // Only sources of raw pictures use the encoder; a missing device stops the start.
    if matches!(
        cfg.spec,
        SourceSpec::Testsrc | SourceSpec::V4l2 { .. } | SourceSpec::Recording(_)
    ) {
        cfg.h264_encoder.check().map_err(usage_error)?;
    }
    runner.encoders = cfg.h264_encoder.factory();
    Ok(Some(runner::spawn(source, runner, hub, status, stop)?))
}

/// The source `cfg.spec` names, and how the runner makes pictures for it. What the
/// configuration can fix (a file that cannot be used, a port in use) fails here.
fn make_source(
    cfg: &StreamConfig,
    jpeg_tap: &Arc<JpegTap>,
) -> Result<(Box<dyn Source>, RunnerConfig)> {
    let camera = CameraConfig::new(cfg.video);
    let byte_stream = ByteStreamConfig {
        video: cfg.video,
        allow: cfg.source_allow.clone(),
    };
    let made: (Box<dyn Source>, RunnerConfig) = match &cfg.spec {
        SourceSpec::Testsrc => {
            if cfg.source_chosen {
                tracing::info!("no --source given and no camera: using the test pattern");
            }
            let pattern = TestsrcConfig {
                video: cfg.video,
                warmup: std::time::Duration::from_millis(cfg.testsrc_warmup_ms),
            };
            (Box::new(PatternSource::new(&pattern)?), camera.runner())
        }
        SourceSpec::V4l2 { device, format } => {
            if cfg.source_chosen && device.exists() {
                tracing::info!(device = %device.display(), "no --source given: using the camera");
            } else if cfg.source_chosen {
                tracing::warn!(
                    device = %device.display(),
                    "no --source given and the device named is not there: waiting for it"
                );
            }
            let opener = V4l2Opener::new(V4l2Settings {
                path: device.clone(),
                format: *format,
                video: cfg.video,
            });
            let source =
                CameraSource::new(&camera, Box::new(opener)).with_jpeg_tap(jpeg_tap.clone());
            (Box::new(source), camera.runner())
        }
        SourceSpec::Recording(path) => {
            // A named file that cannot be used is a usage error, like a bad flag.
            let recording = replay::recording_from_file(path, cfg.video.width, cfg.video.height)
                .map_err(usage_error)?;
            tracing::info!(
                file = %path.display(),
                format = %recording.negotiated.format,
                pictures = recording.frames.len(),
                "replaying a camera recording through the camera pipeline"
            );
            let (opener, _) = ReplayOpener::new(recording, cfg.video.fps, &[]);
            let source =
                CameraSource::new(&camera, Box::new(opener)).with_jpeg_tap(jpeg_tap.clone());
            (Box::new(source), camera.runner())
        }
        SourceSpec::Memsink { name } => {
            let source = MemsinkSource::new(MemsinkSourceConfig::new(name))?;
            (Box::new(source), MemsinkSource::runner())
        }
        SourceSpec::Tcp(addr) => {
            let source = ByteStreamSource::new(Input::Connect(addr.clone()), &byte_stream)?;
            (Box::new(source), byte_stream.runner())
        }
        SourceSpec::TcpListen(addr) => {
            let source = ByteStreamSource::new(Input::Listen(*addr), &byte_stream)?;
            (Box::new(source), byte_stream.runner())
        }
        SourceSpec::Stdin => {
            let source = ByteStreamSource::new(Input::Stdin, &byte_stream)?;
            (Box::new(source), byte_stream.runner())
        }
        SourceSpec::H264File(path) => {
            let source = ByteStreamSource::new(Input::File(path.clone()), &byte_stream)
                .map_err(usage_error)?;
            (Box::new(source), byte_stream.runner())
        }
    };
    Ok(made)
}

/// A stream's H.264 memsink output (`--h264-sink`), when configured.
fn start_sink(
    cfg: &Config,
    stream: &StreamConfig,
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
    readers: Arc<AtomicBool>,
) -> Result<Option<std::thread::JoinHandle<()>>> {
    let Some(name) = &stream.h264_sink else {
        return Ok(None);
    };
    let sink = SinkConfig {
        name: name.clone(),
        mode: cfg.h264_sink_mode,
        remove_on_exit: cfg.h264_sink_rm,
        client_ttl: std::time::Duration::from_secs(cfg.h264_sink_client_ttl_s),
        timeout: std::time::Duration::from_secs(cfg.h264_sink_timeout_s),
    };
    Ok(Some(memsink_output::spawn_reporting(
        sink,
        stream.video.gop,
        hub,
        stop,
        readers,
    )?))
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
