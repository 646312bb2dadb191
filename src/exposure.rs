//! Says at start what other machines can reach, and which of it asks for nothing: the
//! main port can ask for a password (`--user`), the Janus API for a secret or token;
//! whoever reaches a listener that asks for neither can watch, so that must never be a
//! surprise. It also says whether those connections are encrypted (TLS hides the
//! traffic; it does not choose who may connect).

use std::net::{IpAddr, SocketAddr};

use crate::config::Config;
use crate::janus::Listen;

/// One listener other machines can reach.
#[derive(Debug)]
struct Reachable {
    /// `ADDRESS (what it serves[, only from LIST])`.
    text: String,
    /// What it asks for, when it asks for something.
    guard: Option<&'static str>,
    /// A TCP listener (not the push input or media), and whether it speaks TLS.
    tls: Option<bool>,
}

/// The listeners of `cfg` that other machines can reach, each described as
/// `ADDRESS (what it serves)`; empty when everything is on loopback or unix sockets.
pub fn exposed(cfg: &Config) -> Vec<String> {
    reachable(cfg).into_iter().map(|r| r.text).collect()
}

fn reachable(cfg: &Config) -> Vec<Reachable> {
    let janus_auth = (cfg.janus_api_secret.is_some() || cfg.janus_token_auth)
        .then_some("the Janus API secret or token");
    let only_from = |lists: &[&crate::access::IpList]| {
        let lists: Vec<String> = lists
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| l.describe())
            .collect();
        match lists.as_slice() {
            [] => String::new(),
            [one] => format!(", only from {one}"),
            _ => format!(", only from {}", lists.join(" and from ")),
        }
    };
    let mut out = Vec::new();
    let tls = cfg.tls.is_some();
    let mut tcp = |ip: IpAddr,
                   listen: Listen,
                   (what, from): (&str, String),
                   guard: Option<&'static str>,
                   tls: bool| {
        if let Listen::Tcp(port) = listen {
            if !ip.is_loopback() {
                let over = if tls { " over TLS" } else { "" };
                let text = format!("{} ({what}{over}{from})", SocketAddr::new(ip, port));
                out.push(Reachable {
                    text,
                    guard,
                    tls: Some(tls),
                });
            }
        }
    };
    let main_guard = cfg.basic_auth.as_ref().map(|_| "a password (--user)");
    tcp(
        cfg.host,
        Listen::Tcp(cfg.port),
        (
            "viewer pages, /state, /metrics, Janus API, WebSocket relays",
            only_from(&[&cfg.allow_ip]),
        ),
        main_guard,
        tls,
    );
    let ws_host = cfg.janus_ws_host.unwrap_or(cfg.host);
    let ws_from = only_from(&[&cfg.allow_ip, &cfg.janus_ws_allow_ip]);
    let ws = "Janus WebSocket API";
    tcp(
        ws_host,
        cfg.janus_ws_listen(),
        (ws, ws_from.clone()),
        janus_auth,
        tls,
    );
    let http_host = cfg.janus_http_host.unwrap_or(cfg.host);
    let http_from = only_from(&[&cfg.allow_ip, &cfg.janus_http_allow_ip]);
    let http = "Janus HTTP API";
    tcp(
        http_host,
        cfg.janus_http_listen(),
        (http, http_from.clone()),
        janus_auth,
        tls,
    );
    if let Some(s) = &cfg.janus_wss {
        let listen = Listen::Tcp(s.port);
        tcp(
            s.ip.unwrap_or(ws_host),
            listen,
            (ws, ws_from),
            janus_auth,
            true,
        );
    }
    if let Some(s) = &cfg.janus_https {
        let listen = Listen::Tcp(s.port);
        tcp(
            s.ip.unwrap_or(http_host),
            listen,
            (http, http_from),
            janus_auth,
            true,
        );
    }
    // The start refuses an Admin API beyond loopback without its secret.
    for admin in cfg.janus_admin_listeners() {
        let what = format!("Janus Admin {} API", admin.transport);
        let listen = Listen::Tcp(admin.addr.port());
        let from = only_from(&[&cfg.allow_ip]);
        tcp(
            admin.addr.ip(),
            listen,
            (&what, from),
            Some("the admin secret"),
            tls,
        );
    }
    if let Some(addr) = ["tcp-listen://", "rtp-listen://"]
        .iter()
        .find_map(|scheme| cfg.source.strip_prefix(scheme))
        .and_then(|a| a.trim_end_matches('/').parse::<SocketAddr>().ok())
    {
        if !addr.ip().is_loopback() && cfg.source_allow.is_empty() {
            out.push(Reachable {
                text: format!("{addr} (video input: anyone may push; see --source-allow)"),
                guard: None,
                tls: None,
            });
        }
    }
    // Media alone is no exposure: it carries video only to viewers that signalled (the
    // STUN checks need the credentials of their offer), so it is named only beside a
    // listener that is reachable, and is as open as the signalling that is.
    if !out.is_empty() && !cfg.media_ip().is_loopback() {
        let ports = match cfg.udp_ports {
            (0, _) => "any port".to_string(),
            (first, last) if first == last => format!("port {first}"),
            (first, last) => format!("ports {first}-{last}"),
        };
        let open_signalling = out.iter().any(|r| r.guard.is_none());
        out.push(Reachable {
            text: format!(
                "UDP {} {ports} (WebRTC media{})",
                cfg.media_ip(),
                only_from(&[&cfg.allow_ip])
            ),
            guard: (!open_signalling).then_some("a viewer admitted by the API"),
            tls: None,
        });
    }
    out
}

/// The start-up warning, when anything is reachable from other machines.
pub fn warning(cfg: &Config) -> Option<String> {
    let reachable = reachable(cfg);
    if reachable.is_empty() {
        return None;
    }
    let list = |guarded: bool| -> Vec<String> {
        reachable
            .iter()
            .filter(|r| r.guard.is_some() == guarded)
            .map(|r| match r.guard {
                Some(guard) => format!("{} asks for {guard}", r.text),
                None => r.text.clone(),
            })
            .collect()
    };
    let (open, guarded) = (list(false), list(true));
    let mut parts = Vec::new();
    if !open.is_empty() {
        parts.push(format!(
            "open to the network without authentication: anyone who can reach {} can watch \
             the video and use the API",
            open.join(", ")
        ));
    }
    if !guarded.is_empty() {
        parts.push(format!(
            "reachable from the network: {}",
            guarded.join(", ")
        ));
    }
    parts.push(
        if cfg.allow_origin.iter().any(|o| o.trim() == "*") {
            "--allow-origin * lets every web page a visitor opens use them too"
        } else {
            "web pages of other hosts are refused (--allow-origin)"
        }
        .to_string(),
    );
    if !open.is_empty() {
        parts.push(
            "set --user/--passwd and --janus-api-secret, or listen on 127.0.0.1 behind a \
             proxy that authenticates, or firewall these ports (--allow-ip)"
                .to_string(),
        );
    }
    let tcp: Vec<bool> = reachable.iter().filter_map(|r| r.tls).collect();
    if tcp.is_empty() {
        // Only a push input, which is never TLS.
    } else if tcp.iter().all(|&tls| tls) {
        parts.push("TLS encrypts the connections but lets anyone connect".to_string());
    } else if tcp.iter().any(|&tls| tls) {
        parts.push(
            "only the listeners marked TLS are encrypted (--tls-cert and --tls-key encrypt \
             them all)"
                .to_string(),
        );
    } else {
        parts.push(
            "the connections are not encrypted (--tls-cert and --tls-key serve https:// and \
             wss:// instead)"
                .to_string(),
        );
    }
    if cfg.basic_auth.is_some() && cfg.tls.is_none() {
        parts.push(
            "HTTP Basic auth sends the password readable to anyone on the path: use it \
             behind TLS on networks you do not trust"
                .to_string(),
        );
    }
    Some(parts.join("; "))
}

/// What a start with `cfg` should warn about in these settings.
pub fn start_warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = &cfg.basic_auth {
        if c.passwd.is_empty() {
            out.push(format!(
                "user {:?} has an empty password (no --passwd or --passwd-file)",
                c.user
            ));
        }
        let janus_ports = [cfg.janus_ws_listen(), cfg.janus_http_listen()]
            .iter()
            .any(|l| !matches!(l, crate::janus::Listen::Off));
        let janus_auth = cfg.janus_api_secret.is_some() || cfg.janus_token_auth;
        if janus_ports && !janus_auth {
            out.push(
                "--user guards the main port only: the Janus transports (--janus-ws-port, \
                 --janus-http-port) take no password; give them --janus-api-secret or \
                 --janus-token-auth, or turn them off"
                    .to_string(),
            );
        }
    }
    for (key, flag, list) in [
        (
            "general.ws_acl",
            "--janus-ws-allow-ip",
            &cfg.janus_ws_allow_ip,
        ),
        (
            "general.acl",
            "--janus-http-allow-ip",
            &cfg.janus_http_allow_ip,
        ),
    ] {
        for entry in list.whole_address_prefixes() {
            out.push(format!(
                "{key} entry {entry:?} is matched as Janus matches it, as the start of the \
                 written address, so it also admits addresses that begin with it (e.g. \
                 {entry}0); for that host alone give {flag} {entry}"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::Args;
    use clap::Parser;

    fn config(args: &[&str]) -> Config {
        let mut argv = vec!["peregrine"];
        if !args.contains(&"--source") {
            argv.extend(["--source", "testsrc"]);
        }
        argv.extend_from_slice(args);
        Config::load(Args::parse_from(argv)).unwrap()
    }

    #[test]
    fn loopback_alone_says_nothing() {
        assert_eq!(warning(&config(&[])), None);
        assert_eq!(warning(&config(&["--host", "::1"])), None);
    }

    #[test]
    fn every_listener_beyond_loopback_is_named() {
        let text = warning(&config(&["--host", "0.0.0.0"])).unwrap();
        for part in [
            "0.0.0.0:8080 (viewer pages",
            "0.0.0.0:8188 (Janus WebSocket API)",
            "0.0.0.0:8088 (Janus HTTP API)",
            "UDP 0.0.0.0 ports 20000-40000",
            "without authentication",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
    }

    #[test]
    fn with_janus_auth_it_says_what_is_still_open() {
        let text = warning(&config(&["--host", "0.0.0.0", "--janus-api-secret", "s"])).unwrap();
        let (open, guarded) = text.split_once("reachable from the network").unwrap();
        assert!(
            open.contains("without authentication: anyone who can reach 0.0.0.0:8080"),
            "{text}"
        );
        assert!(open.contains("UDP"), "media follows an open port: {text}");
        assert!(!open.contains("8188") && !open.contains("8088"), "{text}");
        assert!(
            guarded.contains("0.0.0.0:8188 (Janus WebSocket API) asks for the Janus API secret"),
            "{text}"
        );
        assert!(text.contains("--user/--passwd"), "{text}");
    }

    #[test]
    fn with_a_password_and_janus_auth_nothing_is_open() {
        let text = warning(&config(&[
            "--host",
            "0.0.0.0",
            "--user",
            "admin",
            "--passwd",
            "pw",
            "--janus-api-secret",
            "s",
        ]))
        .unwrap();
        assert!(!text.contains("without authentication"), "{text}");
        for part in [
            "0.0.0.0:8080 (viewer pages, /state, /metrics, Janus API, WebSocket relays) asks for a password (--user)",
            "0.0.0.0:8188 (Janus WebSocket API) asks for the Janus API secret or token",
            "(WebRTC media) asks for a viewer admitted by the API",
            "behind TLS",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
        // The password alone leaves the Janus ports open, and says so.
        let text = warning(&config(&["--host", "0.0.0.0", "--user", "admin"])).unwrap();
        let open = text.split("reachable from the network").next().unwrap();
        assert!(
            open.contains("0.0.0.0:8188") && !open.contains("8080"),
            "{text}"
        );
    }

    #[test]
    fn allow_lists_are_named_with_their_listener() {
        let text = warning(&config(&[
            "--host",
            "0.0.0.0",
            "--allow-ip",
            "10.0.0.0/8",
            "--janus-ws-allow-ip",
            "10.1.",
        ]))
        .unwrap();
        for part in [
            "0.0.0.0:8080 (viewer pages, /state, /metrics, Janus API, WebSocket relays, only from 10.0.0.0/8)",
            "0.0.0.0:8188 (Janus WebSocket API, only from 10.0.0.0/8 and from 10.1.)",
            "0.0.0.0:8088 (Janus HTTP API, only from 10.0.0.0/8)",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
    }

    #[test]
    fn a_transport_on_its_own_address_counts_alone() {
        let text = warning(&config(&["--janus-ws-host", "0.0.0.0"])).unwrap();
        assert!(
            text.contains("0.0.0.0:8188 (Janus WebSocket API)"),
            "{text}"
        );
        assert!(!text.contains("8080"), "{text}");
        assert!(!text.contains("UDP"), "{text}");
    }

    #[test]
    fn media_alone_on_the_network_is_not_an_exposure() {
        // PiKVM's layout: signalling on loopback or a unix socket, media for everyone.
        assert_eq!(warning(&config(&["--media-host", "0.0.0.0"])), None);
        let text = warning(&config(&["--host", "0.0.0.0", "--media-host", "10.1.2.3"])).unwrap();
        assert!(text.contains("UDP 10.1.2.3 ports"), "{text}");
    }

    #[test]
    fn an_admin_api_beyond_loopback_is_named() {
        let text = warning(&config(&[
            "--janus-admin-ws-port",
            "7188",
            "--janus-admin-ws-host",
            "0.0.0.0",
            "--janus-admin-http-port",
            "7088",
            "--janus-admin-secret",
            "adm1n",
        ]))
        .unwrap();
        assert!(
            text.contains("0.0.0.0:7188 (Janus Admin WebSocket API) asks for the admin secret"),
            "{text}"
        );
        assert!(
            !text.contains("7088"),
            "the HTTP one is on loopback: {text}"
        );
    }

    #[test]
    fn it_says_whether_the_connections_are_encrypted() {
        let plain = warning(&config(&["--host", "0.0.0.0"])).unwrap();
        assert!(
            plain.contains("not encrypted") && plain.contains("--tls-cert"),
            "{plain}"
        );
        let tls = warning(&config(&[
            "--host",
            "0.0.0.0",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ]))
        .unwrap();
        for part in [
            "0.0.0.0:8080 (viewer pages, /state, /metrics, Janus API, WebSocket relays over TLS)",
            "0.0.0.0:8188 (Janus WebSocket API over TLS)",
            "0.0.0.0:8088 (Janus HTTP API over TLS)",
            "TLS encrypts the connections but lets anyone connect",
        ] {
            assert!(tls.contains(part), "{part:?} missing from {tls}");
        }
        assert!(!tls.contains("not encrypted"), "{tls}");
        // A Janus config's TLS server beside plain listeners: only it is encrypted.
        let mut mixed = config(&["--host", "0.0.0.0"]);
        mixed.janus_wss = Some(crate::config::janus_install::SecureTransport {
            port: 8989,
            ip: None,
            cert: "c.pem".into(),
            key: "k.pem".into(),
        });
        let text = warning(&mixed).unwrap();
        assert!(
            text.contains("0.0.0.0:8989 (Janus WebSocket API over TLS)"),
            "{text}"
        );
        assert!(text.contains("only the listeners marked TLS"), "{text}");
    }

    #[test]
    fn an_open_push_input_is_named() {
        let text = warning(&config(&["--source", "tcp-listen://0.0.0.0:8000"])).unwrap();
        assert!(text.contains("0.0.0.0:8000 (video input"), "{text}");
        assert!(!text.contains("TLS"), "no listener to encrypt: {text}");
        let guarded = config(&[
            "--source",
            "tcp-listen://0.0.0.0:8000",
            "--source-allow",
            "192.168.1.20",
        ]);
        assert_eq!(warning(&guarded), None);
        let text = warning(&config(&["--source", "rtp-listen://0.0.0.0:5004"])).unwrap();
        assert!(text.contains("0.0.0.0:5004 (video input"), "{text}");
    }
}
