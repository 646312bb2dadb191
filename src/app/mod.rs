//! Wires the pipeline together: the streams (source → hub, see [`streams`]), the
//! WebRTC engine, the Janus transports that make peers, the relays and MJPEG output,
//! and the main HTTP port (and `--unix`); then runs until Ctrl+C or SIGTERM, reading the
//! TLS certificates again on SIGHUP ([`certificates`]).

mod certificates;
mod streams;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::certificates::{load_certificates, reload_on_sighup};
use self::streams::{start_streams, Started};
use crate::access::PeerFilter;
use crate::config::{usage_error, Config};
use crate::egress::{whip, Forwards};
use crate::http;
use crate::http::state::{EncoderState, Resolution};
use crate::janus::listen::{Bound, Existing};
use crate::janus::JanusServer;
use crate::media::Streams;
use crate::net::candidate_ips;
use crate::relay::{Relay, RelayConfig};
use crate::rtc::{RtcConfig, RtcEngine};

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
    let Started {
        running,
        facts,
        threads,
        jpeg_taps,
    } = start_streams(&cfg, &stop_source)?;
    let streams = Streams::new(running.iter().map(|s| s.stream.clone()).collect());
    let mut forwards = Forwards::default();
    for stream_cfg in cfg.stream_configs() {
        if let Ok(stream) = streams.get(Some(&stream_cfg.name)) {
            forwards.start(
                stream,
                &stream_cfg.rtp_forward,
                cfg.rtp_packet_size,
                &shutdown,
            );
        }
    }

    let engine = RtcEngine::start(RtcConfig {
        bind: cfg.media_ip(),
        udp_ports: cfg.udp_ports,
        candidate_ips: candidate_ips(cfg.media_ip(), cfg.ice_loopback),
        nat_1_1_ip: cfg.nat_1_1_ip,
        rtp_packet_size: cfg.rtp_packet_size,
        max_viewers: cfg.max_viewers,
        allow_ip: cfg.allow_ip.clone(),
        srtp_aead_only: cfg.srtp_aead_only,
        shards: cfg.rtc_threads,
    })
    .await
    .context("cannot start the WebRTC engine")?;
    tracing::info!(udp = %engine.local_addr(), "WebRTC media");
    tokio::spawn(crate::rtc::memory_return::give_back_after_departures(
        engine.clone(),
        shutdown.clone(),
    ));
    let mut whip_tasks = Vec::new();
    // Made for the first forward: it reads the trusted CAs.
    let mut whip_client: Option<whip::HttpClient> = None;
    for stream_cfg in cfg.stream_configs() {
        let Ok(stream) = streams.get(Some(&stream_cfg.name)) else {
            continue;
        };
        for target in stream_cfg.whip_forward {
            if cfg.media_ip().is_loopback() && !whip::is_local(&target.url) {
                tracing::warn!(
                    url = %target.url,
                    "--whip-forward: WebRTC media is on loopback only ({}), which the \
                     endpoint cannot reach; set --media-host to an address it can",
                    cfg.media_ip()
                );
            }
            let client = match &whip_client {
                Some(client) => client.clone(),
                None => whip::HttpClient::new(cfg.whip_ca.as_deref()).context("--whip-ca")?,
            };
            whip_client = Some(client.clone());
            let (stats, task) = whip::spawn(
                engine.clone(),
                stream.clone(),
                target,
                client,
                shutdown.clone(),
            );
            forwards.whip.push(stats);
            whip_tasks.push(task);
        }
    }
    let forwards = Arc::new(forwards);

    // WHEP checks the same secret and tokens (the stored ones shared with the Admin API).
    let whep_auth = janus_cfg.auth.clone();
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
    let mjpeg = http::mjpeg::Mjpeg::new(streams.clone(), jpeg_taps, cfg.drop_same_frames);
    let janus_status = janus.status();
    let main_routes = janus.main_port_routes();

    let whep = crate::whep::Whep::new(
        streams.clone(),
        engine.clone(),
        crate::whep::WhepConfig {
            ice_servers: cfg.ice_servers.clone(),
            auth: whep_auth,
        },
    );
    let metrics = crate::metrics::registry(crate::metrics::Inputs {
        streams: running.clone(),
        engine: engine.clone(),
        relay: relay.clone(),
        janus: janus_status.clone(),
        forwards: forwards.clone(),
        whep: whep.clone(),
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
        forwards,
        whep: whep.clone(),
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
        .merge(whep.routes())
        .merge(relay.routes())
        .merge(mjpeg.routes());
    // Basic auth outermost: nothing, not even an Origin refusal, without the password.
    let main_router = crate::access::basic::guard(
        crate::origin::guard(
            mjpeg.with_root_actions(relay.with_root_websocket(main_router)),
            cfg.origin_policy(),
        ),
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
    // Servers we publish to are told the session ends (WHIP DELETE) while the engine
    // still runs; a server that does not answer is not waited for long.
    let whip_done = futures_util::future::join_all(whip_tasks);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), whip_done).await;
    engine.shutdown().await;
    stop_source.store(true, Ordering::Relaxed);
    for stream in streams.iter() {
        stream.hub().wake_source();
        if let Some(audio) = stream.audio() {
            audio.wake_source();
        }
    }
    for thread in threads.into_iter().flatten() {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    result
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
