//! Says at start what other machines can reach. Only the Janus API can ask for a secret
//! or token: whoever reaches a listener bound beyond loopback can otherwise watch, so
//! that must never be a surprise.

use std::net::{IpAddr, SocketAddr};

use crate::config::Config;
use crate::janus::Listen;

/// The listeners of `cfg` that other machines can reach, each described as
/// `ADDRESS (what it serves)`; empty when everything is on loopback or unix sockets.
pub fn exposed(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut tcp = |ip: IpAddr, listen: Listen, what: &str| {
        if let Listen::Tcp(port) = listen {
            if !ip.is_loopback() {
                out.push(format!("{} ({what})", SocketAddr::new(ip, port)));
            }
        }
    };
    tcp(
        cfg.host,
        Listen::Tcp(cfg.port),
        "viewer pages, /state, /metrics, Janus API, WebSocket relays",
    );
    tcp(
        cfg.janus_ws_host.unwrap_or(cfg.host),
        cfg.janus_ws_listen(),
        "Janus WebSocket API",
    );
    tcp(
        cfg.janus_http_host.unwrap_or(cfg.host),
        cfg.janus_http_listen(),
        "Janus HTTP API",
    );
    if !cfg.host.is_loopback() {
        let ports = match cfg.udp_ports {
            (0, _) => "any port".to_string(),
            (first, last) if first == last => format!("port {first}"),
            (first, last) => format!("ports {first}-{last}"),
        };
        out.push(format!("UDP {} {ports} (WebRTC media)", cfg.host));
    }
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
         read /state and /metrics and watch through the WebSocket relays (/h264, \
         /jsmpeg), which have no login yet"
    } else {
        "open to the network without authentication: anyone who can reach {} can watch \
         the video and use the API"
    };
    Some(format!(
        "{}; {pages}. Listen on 127.0.0.1 behind a proxy that authenticates, or firewall \
         these ports",
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
    fn an_open_push_input_is_named() {
        let text = warning(&config(&["--source", "tcp-listen://0.0.0.0:8000"])).unwrap();
        assert!(text.contains("0.0.0.0:8000 (video input"), "{text}");
        let guarded = config(&[
            "--source",
            "tcp-listen://0.0.0.0:8000",
            "--source-allow",
            "192.168.1.20",
        ]);
        assert_eq!(warning(&guarded), None);
    }
}
