//! The TLS certificates peregrine serves, read at start and again on SIGHUP.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::janus_install::SecureTransport;
use crate::config::Config;
use crate::janus::{JanusConfig, SecureListen};
use crate::tls::{CertFiles, Tls};

/// Read every certificate peregrine serves (`--tls-cert`, and the Janus config's `wss`
/// and `https` ones) into `janus`; returns them all, to be read again on SIGHUP.
pub fn load_certificates(cfg: &Config, janus: &mut JanusConfig) -> Result<Vec<Arc<Tls>>> {
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
pub fn reload_on_sighup(certificates: Vec<Arc<Tls>>) {
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
