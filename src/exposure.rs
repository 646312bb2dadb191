//! Says at start what other machines can reach. Only the Janus API can ask for a secret
//! or token: whoever reaches a listener bound beyond loopback can otherwise watch, so
//! that must never be a surprise. It also says whether those connections are encrypted
//! (TLS hides the traffic; it does not choose who may connect).

use std::net::{IpAddr, SocketAddr};

use crate::config::Config;
use crate::janus::Listen;

/// One TCP listener that other machines can reach.
struct Exposed {
    text: String,
    tls: bool,
}

/// The TCP listeners of `cfg` that other machines can reach.
fn exposed_tcp(cfg: &Config) -> Vec<Exposed> {
    let mut out = Vec::new();
    let tls = cfg.tls.is_some();
    let mut tcp = |ip: IpAddr, listen: Listen, what: &str, tls: bool| {
        if let Listen::Tcp(port) = listen {
            if !ip.is_loopback() {
                let over = if tls { " over TLS" } else { "" };
                out.push(Exposed {
                    text: format!("{} ({what}{over})", SocketAddr::new(ip, port)),
                    tls,
                });
            }
        }
    };
    tcp(
        cfg.host,
        Listen::Tcp(cfg.port),
        "viewer pages, /state, Janus API, WebSocket relays",
        tls,
    );
    let ws_host = cfg.janus_ws_host.unwrap_or(cfg.host);
    tcp(ws_host, cfg.janus_ws_listen(), "Janus WebSocket API", tls);
    let http_host = cfg.janus_http_host.unwrap_or(cfg.host);
    tcp(http_host, cfg.janus_http_listen(), "Janus HTTP API", tls);
    if let Some(s) = &cfg.janus_wss {
        let listen = Listen::Tcp(s.port);
        tcp(s.ip.unwrap_or(ws_host), listen, "Janus WebSocket API", true);
    }
    if let Some(s) = &cfg.janus_https {
        let listen = Listen::Tcp(s.port);
        tcp(s.ip.unwrap_or(http_host), listen, "Janus HTTP API", true);
    }
    // Only with an admin secret: the start refuses an exposed Admin API without one.
    for admin in cfg.janus_admin_listeners() {
        let what = format!("Janus Admin {} API, admin secret required", admin.transport);
        tcp(admin.addr.ip(), Listen::Tcp(admin.addr.port()), &what, tls);
    }
    out
}

/// The listeners of `cfg` that other machines can reach, each described as
/// `ADDRESS (what it serves)`; empty when everything is on loopback or unix sockets.
pub fn exposed(cfg: &Config) -> Vec<String> {
    let mut out: Vec<String> = exposed_tcp(cfg).into_iter().map(|e| e.text).collect();
    if let Some(addr) = cfg
        .source
        .strip_prefix("tcp-listen://")
        .and_then(|a| a.parse::<SocketAddr>().ok())
    {
        if !addr.ip().is_loopback() && cfg.source_allow.is_empty() {
            out.push(format!(
                "{addr} (video input: anyone may push; see --source-allow)"
            ));
        }
    }
    // Media alone is no exposure: it carries video only to viewers that signalled (the
    // STUN checks need the credentials of their offer), so it is named only beside a
    // listener that is open.
    if !out.is_empty() && !cfg.media_ip().is_loopback() {
        let ports = match cfg.udp_ports {
            (0, _) => "any port".to_string(),
            (first, last) if first == last => format!("port {first}"),
            (first, last) => format!("ports {first}-{last}"),
        };
        out.push(format!("UDP {} {ports} (WebRTC media)", cfg.media_ip()));
    }
    out
}

/// The start-up warning, when anything is reachable from other machines.
pub fn warning(cfg: &Config) -> Option<String> {
    let exposed = exposed(cfg);
    if exposed.is_empty() {
        return None;
    }
    let pages = if cfg.allow_origin.iter().any(|o| o.trim() == "*") {
        "and --allow-origin * lets every web page a visitor opens use them too"
    } else {
        "web pages of other hosts are refused (--allow-origin)"
    };
    let janus_auth = cfg.janus_api_secret.is_some() || cfg.janus_token_auth;
    let who = if janus_auth {
        "the Janus API asks for its secret or token, but anyone who can reach {} can \
         read /state and watch through the WebSocket relays (/h264, /jsmpeg), which have \
         no login yet"
    } else {
        "open to the network without authentication: anyone who can reach {} can watch \
         the video and use the API"
    };
    let tcp = exposed_tcp(cfg);
    let encryption = if tcp.is_empty() {
        "" // only a push input, which is never TLS
    } else if tcp.iter().all(|e| e.tls) {
        "; TLS encrypts the connections but lets anyone connect"
    } else if tcp.iter().any(|e| e.tls) {
        "; only the listeners marked TLS are encrypted (--tls-cert and --tls-key encrypt \
         them all)"
    } else {
        "; the connections are not encrypted (--tls-cert and --tls-key serve https:// and \
         wss:// instead)"
    };
    Some(format!(
        "{}; {pages}{encryption}. Listen on 127.0.0.1 behind a proxy that authenticates, \
         or firewall these ports",
        who.replace("{}", &exposed.join(", "))
    ))
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
        assert!(text.contains("asks for its secret or token"), "{text}");
        assert!(text.contains("/state") && text.contains("/h264"), "{text}");
        assert!(!text.contains("without authentication"), "{text}");
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
            text.contains("0.0.0.0:7188 (Janus Admin WebSocket API, admin secret required)"),
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
            "0.0.0.0:8080 (viewer pages, /state, Janus API, WebSocket relays over TLS)",
            "0.0.0.0:8188 (Janus WebSocket API over TLS)",
            "0.0.0.0:8088 (Janus HTTP API over TLS)",
            "TLS encrypts the connections but lets anyone connect",
        ] {
            assert!(tls.contains(part), "{part:?} missing from {tls}");
        }
        assert!(!tls.contains("not encrypted"), "{tls}");
        // A Janus config's TLS server beside plain listeners: only it is encrypted.
        let mut mixed = config(&["--host", "0.0.0.0"]);
        mixed.janus_wss = Some(crate::memsink::jcfg::SecureTransport {
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
    }
}
