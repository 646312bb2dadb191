//! The Janus API (sessions, handles, transactions) over WebSocket and HTTP long-poll,
//! with the `janus.plugin.ustreamer` plugin's semantics, so janus.js pages (kvmd's
//! among them) work unchanged.
//!
//! * [`message`]: requests and replies as pure data (parsing is fuzzable).
//! * [`gateway`]: the core both transports share; [`session`] its registry.
//! * [`plugin`]: the ustreamer plugin's requests and events.
//! * [`ws`], [`http`]: the two transports.
//! * [`admin`]: the Admin API (stored tokens, sessions) on listeners of its own.

pub mod admin;
pub mod auth;
pub mod backend;
pub mod error;
pub mod gateway;
pub mod http;
pub mod listen;
pub mod message;
pub mod outbox;
pub mod plugin_api;
pub mod session;
pub mod ustreamer;
pub mod ws;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

pub use backend::PeerBackend;
pub use error::JanusError;
pub use gateway::JanusCounts;
pub use listen::Listen;

use crate::access::{IpList, PeerFilter};
use crate::media::Streams;
use crate::origin::{self, OriginPolicy};
use crate::rtc::RtcEngine;
use crate::serve::{ConnLimits, ConnPolicy};
use crate::tls::Tls;

/// Janus transport and core settings.
#[derive(Clone, Debug)]
pub struct JanusConfig {
    pub host: IpAddr,
    /// The transports' own addresses, instead of `host`.
    pub ws_host: Option<IpAddr>,
    pub http_host: Option<IpAddr>,
    /// Where the WebSocket transport listens.
    pub ws: Listen,
    /// Where the HTTP long-poll transport listens.
    pub http: Listen,
    /// Base path of the HTTP transport, e.g. `/janus`.
    pub http_path: String,
    /// Idle time before a session expires; zero disables expiry.
    pub session_timeout: Duration,
    /// STUN/TURN URLs; the first is given to pages in `features.ice.url`.
    pub ice_servers: Vec<String>,
    /// How long an HTTP long poll waits for events before answering `keepalive`.
    pub long_poll_hold: Duration,
    /// Largest request accepted on either transport.
    pub max_message_bytes: usize,
    /// Sessions and handles clients may create.
    pub caps: gateway::SessionCaps,
    /// Bytes a WebSocket may have waiting to be sent before requests stop being read.
    pub ws_queue_bytes: usize,
    /// Longest a WebSocket message may take to send before the client counts as gone.
    pub ws_send_timeout: Duration,
    /// Connection caps and timeouts of both listeners (and, shared, the main port's).
    pub conn: ConnLimits,
    /// API secret and tokens (Janus's `api_secret`, `token_auth`).
    pub auth: auth::Auth,
    /// Web pages allowed to use the transports from a browser.
    pub origins: OriginPolicy,
    /// The Admin API's listeners and secret.
    pub admin: AdminConfig,
    /// TLS on both transports' TCP listeners (`--tls-cert`).
    pub tls: Option<Arc<Tls>>,
    /// TLS servers on ports of their own, beside the plain ones (Janus's `wss` and
    /// `https`).
    pub wss: Option<SecureListen>,
    pub https: Option<SecureListen>,
    /// Addresses allowed to connect to either transport (`--allow-ip`).
    pub allow_ip: IpList,
    /// Addresses allowed to connect to one transport, as Janus's `ws_acl` / `acl`; a
    /// client must pass `allow_ip` too.
    pub ws_allow_ip: IpList,
    pub http_allow_ip: IpList,
}

/// A transport's TLS server on a port of its own.
#[derive(Clone, Debug)]
pub struct SecureListen {
    pub host: IpAddr,
    pub port: u16,
    pub tls: Arc<Tls>,
}

/// Where the Admin API listens (nowhere by default) and what it asks for.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// `admin_secret` must equal this (Janus's `admin_secret`).
    pub secret: Option<String>,
    /// The HTTP listener (Janus's `admin_http`, `admin_port`).
    pub http: Listen,
    /// Its address, instead of `host` (Janus's `admin_ip`).
    pub http_host: Option<IpAddr>,
    /// Base path of the HTTP listener, e.g. `/admin`.
    pub http_path: String,
    /// The WebSocket listener (Janus's `admin_ws`, `admin_ws_port`).
    pub ws: Listen,
    /// Its address, instead of `host` (Janus's `admin_ws_ip`).
    pub ws_host: Option<IpAddr>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            secret: None,
            http: Listen::Off,
            http_host: None,
            http_path: "/admin".into(),
            ws: Listen::Off,
            ws_host: None,
        }
    }
}

impl Default for JanusConfig {
    fn default() -> Self {
        JanusConfig {
            host: IpAddr::from([127, 0, 0, 1]),
            ws_host: None,
            http_host: None,
            ws: Listen::Tcp(8188),
            http: Listen::Tcp(8088),
            http_path: "/janus".into(),
            session_timeout: Duration::from_secs(60),
            ice_servers: Vec::new(),
            long_poll_hold: Duration::from_secs(30),
            max_message_bytes: 1 << 20,
            caps: gateway::SessionCaps {
                sessions: 1000,
                sessions_per_connection: 10,
                handles_per_session: 10,
            },
            ws_queue_bytes: 4 << 20,
            ws_send_timeout: Duration::from_secs(10),
            conn: ConnLimits::default(),
            auth: auth::Auth::default(),
            origins: OriginPolicy::default(),
            admin: AdminConfig::default(),
            tls: None,
            wss: None,
            https: None,
            allow_ip: IpList::default(),
            ws_allow_ip: IpList::default(),
            http_allow_ip: IpList::default(),
        }
    }
}

/// Read-only view of the Janus side for status pages; cheap to clone.
#[derive(Clone)]
pub struct JanusStatus {
    gateway: Arc<gateway::Gateway>,
}

impl JanusStatus {
    pub fn counts(&self) -> JanusCounts {
        self.gateway.counts()
    }
}

fn tcp_addr(bound: &Option<listen::Bound>) -> std::io::Result<SocketAddr> {
    match bound.as_ref().and_then(|b| b.tcp()) {
        Some(l) => l.local_addr(),
        None => Err(std::io::Error::other(
            "the transport does not listen on TCP",
        )),
    }
}

/// Bind a transport's TLS server, when it has one; `key` is its port's setting in the
/// Janus config, for the error message.
async fn bind_secure(
    secure: &Option<SecureListen>,
    what: &str,
    key: &str,
) -> Result<Option<listen::Bound>> {
    let Some(s) = secure else {
        return Ok(None);
    };
    let key = format!("general.{key} in the Janus config");
    let bound = listen::Bound::bind(s.host, &Listen::Tcp(s.port), what, &key).await?;
    Ok(bound.map(|b| b.with_tls(Some(s.tls.clone()))))
}

/// Both Janus transports and the Admin API's, bound and ready to serve.
pub struct JanusServer {
    gateway: Arc<gateway::Gateway>,
    ws: Option<listen::Bound>,
    http: Option<listen::Bound>,
    wss: Option<listen::Bound>,
    https: Option<listen::Bound>,
    http_settings: http::HttpSettings,
    admin: Arc<admin::AdminApi>,
    admin_ws: Option<listen::Bound>,
    admin_http: Option<listen::Bound>,
    admin_http_settings: admin::http::AdminHttpSettings,
    ws_limits: ws::WsLimits,
    conn: ConnPolicy,
    origins: OriginPolicy,
    ws_filter: PeerFilter,
    http_filter: PeerFilter,
    /// The Admin API's listeners: `--allow-ip` alone.
    admin_filter: PeerFilter,
}

impl JanusServer {
    /// Bind both listeners; peers are made by the WebRTC engine.
    pub async fn bind(streams: Arc<Streams>, engine: RtcEngine, cfg: JanusConfig) -> Result<Self> {
        Self::bind_with_backend(streams, Arc::new(engine), cfg).await
    }

    /// Bind both listeners with any peer backend.
    pub async fn bind_with_backend(
        streams: Arc<Streams>,
        peers: Arc<dyn PeerBackend>,
        cfg: JanusConfig,
    ) -> Result<Self> {
        // Each error names only the listener that failed and the setting to change.
        let ws = listen::Bound::bind(
            cfg.ws_host.unwrap_or(cfg.host),
            &cfg.ws,
            "Janus WebSocket transport",
            if cfg.ws_host.is_some() {
                "janus_ws_port or janus_ws_host"
            } else {
                "janus_ws_port"
            },
        )
        .await?;
        let http = listen::Bound::bind(
            cfg.http_host.unwrap_or(cfg.host),
            &cfg.http,
            "Janus HTTP transport",
            if cfg.http_host.is_some() {
                "janus_http_port or janus_http_host"
            } else {
                "janus_http_port"
            },
        )
        .await?;
        let ws = ws.map(|b| b.with_tls(cfg.tls.clone()));
        let http = http.map(|b| b.with_tls(cfg.tls.clone()));
        let wss = bind_secure(&cfg.wss, "Janus secure WebSocket transport", "wss_port").await?;
        let https = bind_secure(&cfg.https, "Janus HTTPS transport", "secure_port").await?;
        let admin_ws = listen::Bound::bind(
            cfg.admin.ws_host.unwrap_or(cfg.host),
            &cfg.admin.ws,
            "Janus Admin API WebSocket transport",
            "janus_admin_ws_port or janus_admin_ws_host",
        )
        .await?
        .map(|b| b.with_tls(cfg.tls.clone()));
        let admin_http = listen::Bound::bind(
            cfg.admin.http_host.unwrap_or(cfg.host),
            &cfg.admin.http,
            "Janus Admin API HTTP transport",
            "janus_admin_http_port or janus_admin_http_host",
        )
        .await?
        .map(|b| b.with_tls(cfg.tls.clone()));
        let settings = gateway::Settings {
            session_timeout: cfg.session_timeout,
            caps: cfg.caps,
            auth: cfg.auth,
        };
        let ustreamer = ustreamer::Ustreamer::new(streams, cfg.ice_servers.first().cloned());
        let gateway = gateway::Gateway::new(vec![Arc::new(ustreamer)], peers, settings);
        Ok(JanusServer {
            admin: Arc::new(admin::AdminApi::new(gateway.clone(), cfg.admin.secret)),
            admin_ws,
            admin_http,
            admin_http_settings: admin::http::AdminHttpSettings {
                base_path: cfg.admin.http_path.trim_end_matches('/').to_string(),
                max_body_bytes: cfg.max_message_bytes,
            },
            gateway,
            ws,
            http,
            wss,
            https,
            http_settings: http::HttpSettings {
                base_path: cfg.http_path.trim_end_matches('/').to_string(),
                poll_hold: cfg.long_poll_hold,
                max_body_bytes: cfg.max_message_bytes,
            },
            ws_limits: ws::WsLimits {
                max_message_bytes: cfg.max_message_bytes,
                queue_bytes: cfg.ws_queue_bytes,
                send_timeout: cfg.ws_send_timeout,
            },
            conn: ConnPolicy::new(cfg.conn),
            origins: cfg.origins,
            ws_filter: PeerFilter::new(
                "Janus WebSocket transport",
                [cfg.allow_ip.clone(), cfg.ws_allow_ip],
            ),
            http_filter: PeerFilter::new(
                "Janus HTTP transport",
                [cfg.allow_ip.clone(), cfg.http_allow_ip],
            ),
            admin_filter: PeerFilter::new("Janus Admin API", [cfg.allow_ip]),
        })
    }

    /// The WebSocket transport's TCP address; an error when it listens elsewhere.
    pub fn ws_addr(&self) -> std::io::Result<SocketAddr> {
        tcp_addr(&self.ws)
    }

    /// The HTTP transport's TCP address; an error when it listens elsewhere.
    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        tcp_addr(&self.http)
    }

    /// The same API for another HTTP port (the bundled page uses it from its own
    /// origin): WebSocket at `/janus/ws`, REST at the HTTP base path.
    pub fn main_port_routes(&self) -> axum::Router {
        // As services, not nested routers, so both see the full request path they expect.
        let ws = ws::router(self.gateway.clone(), self.ws_limits).into_service();
        let rest = http::router(self.gateway.clone(), self.http_settings.clone()).into_service();
        let base = &self.http_settings.base_path;
        axum::Router::new()
            .route_service("/janus/ws", ws)
            .route_service(base, rest.clone())
            .route_service(&format!("{base}/{{*rest}}"), rest)
    }

    /// The connection policy, to share its caps with the main port (with no
    /// allow-lists: the main port sets its own).
    pub fn conn_policy(&self) -> ConnPolicy {
        self.conn.clone()
    }

    pub fn status(&self) -> JanusStatus {
        JanusStatus {
            gateway: self.gateway.clone(),
        }
    }

    /// Serve both transports until `shutdown` resolves, then close every session and
    /// connection.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let gateway = self.gateway;
        let base = self.http_settings.base_path.clone();
        let describe = |listeners: [&Option<listen::Bound>; 2], scheme: &str, path: &str| {
            let urls: Vec<String> = listeners
                .into_iter()
                .flatten()
                .map(|b| b.describe(scheme, path))
                .collect();
            if urls.is_empty() {
                "off".to_string()
            } else {
                urls.join(" ")
            }
        };
        tracing::info!(
            ws = %describe([&self.ws, &self.wss], "ws", "/"),
            http = %describe([&self.http, &self.https], "http", &base),
            auth = gateway.settings.auth.describe(),
            "Janus API listening"
        );
        if self.admin_ws.is_some() || self.admin_http.is_some() {
            tracing::info!(
                ws = %describe([&self.admin_ws, &None], "ws", "/"),
                http = %describe(
                    [&self.admin_http, &None],
                    "http",
                    &self.admin_http_settings.base_path
                ),
                "Janus Admin API listening"
            );
            if !self.admin.asks_for_secret() {
                tracing::warn!(
                    "the Janus Admin API asks for no admin secret: every user and process \
                     of this machine can add and remove tokens and end sessions; set \
                     --janus-admin-secret"
                );
            }
        }
        let watchdog = tokio::spawn(gateway.clone().run_watchdog());
        let closing = {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                shutdown.await;
                gateway.shut_down();
            })
        };
        let closed = |gateway: &Arc<gateway::Gateway>| {
            let mut rx = gateway.closing();
            async move {
                let _ = rx.wait_for(|c| *c).await;
            }
        };
        let serve = |bound: Option<listen::Bound>, router: axum::Router, filter: PeerFilter| {
            let closed = closed(&gateway);
            let policy = self.conn.with_filter(filter);
            async move {
                match bound {
                    Some(bound) => bound.serve(router, policy, closed).await,
                    // Off: nothing to serve, but the server keeps running.
                    None => {
                        closed.await;
                        Ok(())
                    }
                }
            }
        };
        let guard = |router| origin::guard(router, self.origins.clone());
        let ws_router = guard(ws::router(gateway.clone(), self.ws_limits));
        let http_router = guard(http::router(gateway.clone(), self.http_settings));
        let ws = serve(self.ws, ws_router.clone(), self.ws_filter.clone());
        let wss = serve(self.wss, ws_router, self.ws_filter);
        let http = serve(self.http, http_router.clone(), self.http_filter.clone());
        let https = serve(self.https, http_router, self.http_filter);
        let admin_ws = serve(
            self.admin_ws,
            guard(admin::ws::router(self.admin.clone(), self.ws_limits)),
            self.admin_filter.clone(),
        );
        let admin_http = serve(
            self.admin_http,
            guard(admin::http::router(
                self.admin.clone(),
                self.admin_http_settings,
            )),
            self.admin_filter,
        );
        let result = tokio::try_join!(ws, http, wss, https, admin_ws, admin_http);
        watchdog.abort();
        closing.abort();
        gateway.shut_down();
        result.map(|_| ())
    }
}
