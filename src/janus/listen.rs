//! Where a Janus transport listens: a TCP port on the configured host (over TLS when
//! given a certificate), a unix socket (as PiKVM runs Janus behind nginx, `ws_unix`;
//! always plain), or nowhere (`ws = false`). Binding and serving an axum router on
//! either kind of listener live here, apart from the protocol code.

use std::future::Future;
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio::net::{TcpListener, UnixListener, UnixStream};

use crate::serve::{self, ConnPolicy};
use crate::tls::Tls;

/// Where one transport listens.
#[derive(Clone, Debug, PartialEq)]
pub enum Listen {
    /// The transport is turned off.
    Off,
    /// A TCP port on the server's host (0 = any free port).
    Tcp(u16),
    /// A unix socket at this path, given these permissions after it is created.
    Unix { path: PathBuf, mode: u32 },
}

/// A bound listener, ready to serve.
pub enum Bound {
    Tcp(TcpListener, Option<Arc<Tls>>),
    Unix(UnixListener, SocketFile),
}

/// The socket file of a bound unix listener, removed when the listener is done with
/// (however the server stops), so no stale file is left behind.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Bound {
    /// Bind `listen`; `None` when the transport is off. `what` names the transport and
    /// `key` the setting to change, for the error message.
    pub async fn bind(
        host: IpAddr,
        listen: &Listen,
        what: &str,
        key: &str,
    ) -> Result<Option<Self>> {
        match listen {
            Listen::Off => Ok(None),
            Listen::Tcp(port) => {
                let listener = TcpListener::bind((host, *port)).await.with_context(|| {
                    format!("cannot listen on {host}:{port} for the {what}; change {key}")
                })?;
                Ok(Some(Bound::Tcp(listener, None)))
            }
            Listen::Unix { path, mode } => Bound::unix(path, Some(*mode), Existing::ReplaceStale)
                .await
                .with_context(|| format!("cannot listen for the {what}"))
                .map(Some),
        }
    }

    /// Bind a unix socket at `path`, given permissions `mode` (`None`: as the umask
    /// leaves them); `existing` says what becomes of a file already there.
    pub async fn unix(path: &Path, mode: Option<u32>, existing: Existing) -> Result<Self> {
        let listener = bind_unix(path, mode, existing).await?;
        Ok(Bound::Unix(listener, SocketFile(path.to_path_buf())))
    }

    /// Serve TLS with `tls` on a TCP listener; a unix socket stays plain (it is
    /// reached through a local proxy, which does TLS if any).
    pub fn with_tls(self, tls: Option<Arc<Tls>>) -> Self {
        match self {
            Bound::Tcp(l, _) => Bound::Tcp(l, tls),
            unix => unix,
        }
    }

    /// `wss://127.0.0.1:8188/` (from `ws`, `/`) or `unix:/run/kvmd/janus-ws.sock`, for
    /// the log.
    pub fn describe(&self, scheme: &str, path: &str) -> String {
        match self {
            Bound::Tcp(l, tls) => {
                let secure = if tls.is_some() { "s" } else { "" };
                l.local_addr()
                    .map(|a| format!("{scheme}{secure}://{a}{path}"))
                    .unwrap_or_else(|e| format!("? ({e})"))
            }
            Bound::Unix(_, file) => format!("unix:{}", file.0.display()),
        }
    }

    pub fn tcp(&self) -> Option<&TcpListener> {
        match self {
            Bound::Tcp(l, _) => Some(l),
            Bound::Unix(..) => None,
        }
    }

    /// Serve `router` with `policy` until `shutdown` resolves.
    pub async fn serve(
        self,
        router: axum::Router,
        policy: ConnPolicy,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        match self {
            Bound::Tcp(l, tls) => serve::serve(l, router, policy, tls, shutdown).await,
            Bound::Unix(l, _file) => serve::serve(l, router, policy, None, shutdown).await,
        }
    }
}

/// What binding a unix socket does with a file already at its path. A file that is
/// not a socket is never touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Replace a socket nobody listens on (left by a process that is gone); refuse a
    /// live one. Janus's own behaviour.
    ReplaceStale,
    /// Refuse any existing file (µStreamer's `--unix` without `--unix-rm`).
    Refuse,
    /// Remove an existing socket, live or not (µStreamer's `--unix-rm`).
    Remove,
}

/// Bind a unix socket at `path` with permissions `mode`, dealing with a file already
/// there as `existing` says.
async fn bind_unix(path: &Path, mode: Option<u32>, existing: Existing) -> Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot inspect {}: {e}", path.display()),
        Ok(meta) if !meta.file_type().is_socket() => bail!(
            "{} exists and is not a socket; not replacing it (remove it or choose another path)",
            path.display()
        ),
        Ok(_) if existing == Existing::Refuse => bail!(
            "{} already exists; remove it, or give --unix-rm to have it removed",
            path.display()
        ),
        Ok(_) => {
            if existing == Existing::ReplaceStale && UnixStream::connect(path).await.is_ok() {
                bail!(
                    "{} is in use: another process is listening on it",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove the old socket {}", path.display()))?;
            tracing::info!(path = %path.display(), "removed an old socket file");
        }
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot bind {}", path.display()))?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set mode {mode:o} on {}", path.display()))?;
    }
    Ok(listener)
}

/// Octal permissions such as `660` or `0660`.
pub fn parse_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("peregrine-listen-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn unix_socket_gets_its_mode_and_replaces_only_stale_sockets() {
        let dir = temp_dir("unix");
        let path = dir.join("janus-ws.sock");
        let listen = Listen::Unix {
            path: path.clone(),
            mode: 0o660,
        };
        let ip = IpAddr::from([127, 0, 0, 1]);
        let bound = Bound::bind(ip, &listen, "test", "key")
            .await
            .unwrap()
            .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o660);

        // A live socket is not taken over.
        let err = Bound::bind(ip, &listen, "test", "key").await.err().unwrap();
        assert!(format!("{err:#}").contains("in use"), "{err:#}");

        // Done with, the listener takes its file away.
        drop(bound);
        assert!(!path.exists());

        // A file left behind by a listener that died is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let bound = Bound::bind(ip, &listen, "test", "key").await.unwrap();
        assert!(bound.is_some());
        drop(bound);

        // A regular file is never removed.
        std::fs::write(&path, "keep me").unwrap();
        let err = Bound::bind(ip, &listen, "test", "key").await.err().unwrap();
        assert!(format!("{err:#}").contains("not a socket"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn refuse_and_remove_deal_with_any_existing_socket() {
        let dir = temp_dir("existing");
        let path = dir.join("ustreamer.sock");
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = Bound::unix(&path, None, Existing::Refuse)
            .await
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("--unix-rm"), "{err:#}");
        // Removed even while another listener holds it, as µStreamer's --unix-rm does.
        let bound = Bound::unix(&path, Some(0o600), Existing::Remove)
            .await
            .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        drop((bound, live));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn busy_port_names_the_setting() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let ip = IpAddr::from([127, 0, 0, 1]);
        let err = Bound::bind(
            ip,
            &Listen::Tcp(port),
            "Janus WebSocket transport",
            "janus_ws_port",
        )
        .await
        .err()
        .unwrap();
        let text = format!("{err:#}");
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(text.contains("janus_ws_port"), "{text}");
        let off = Bound::bind(ip, &Listen::Off, "x", "y").await.unwrap();
        assert!(off.is_none(), "a transport that is off binds nothing");
    }

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode("660"), Some(0o660));
        assert_eq!(parse_mode("0660"), Some(0o660));
        assert_eq!(parse_mode("999"), None);
        assert_eq!(parse_mode("77777"), None);
    }
}
