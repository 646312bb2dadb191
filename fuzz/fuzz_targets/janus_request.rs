//! Janus API and Admin API requests from the network: a WebSocket frame or an HTTP
//! body, then the per-verb field checks the gateway and the Admin API apply, and the
//! HTTP transports' paths and query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::janus::admin::{parse_token, parse_token_change, TokenVerb};
use peregrine::janus::http::{max_events, parse_id, segments};
use peregrine::janus::message::{
    parse_attach, parse_create, parse_frame, parse_message, parse_request, parse_trickle, Request,
};

fn check_fields(req: &Request) {
    let _ = parse_create(req);
    let _ = parse_attach(req);
    let _ = parse_message(req);
    if let Ok(candidates) = parse_trickle(req) {
        for c in &candidates {
            let _ = c.is_for_first_mline();
        }
    }
    let token = parse_token(&req.fields);
    for verb in [TokenVerb::Add, TokenVerb::Allow, TokenVerb::Disallow] {
        match parse_token_change(&req.fields, verb) {
            // The token is read the same way by every token request.
            Ok(change) => assert_eq!(Some(&change.token), token.as_ref().ok()),
            Err(e) => assert!(!e.reason.is_empty()),
        }
    }
    if let Ok(change) = parse_token_change(&req.fields, TokenVerb::Allow) {
        assert!(!change.plugins.is_empty(), "a grant names plugins");
    }
}

fuzz_target!(|data: &[u8]| {
    let single = parse_request(data);
    match &single {
        Ok(req) => check_fields(req),
        Err(rejected) => {
            let _ = rejected.to_reply().to_string();
        }
    }

    let frame = parse_frame(data);
    assert!(!frame.is_empty(), "a frame always gets at least one reply");
    for parsed in &frame {
        match parsed {
            Ok(req) => check_fields(req),
            Err(rejected) => {
                let _ = rejected.to_reply().to_string();
            }
        }
    }
    // A body that is one valid request is the same request as a one-object frame.
    if let Ok(req) = &single {
        assert_eq!(frame.len(), 1);
        let other = frame[0].as_ref().expect("same bytes parsed as a frame");
        assert_eq!(other.transaction, req.transaction);
        assert_eq!(other.verb_name, req.verb_name);
        assert_eq!(other.session_id, req.session_id);
        assert_eq!(other.handle_id, req.handle_id);
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let (path, query) = text.split_once('?').unwrap_or((text, ""));
        for base in ["/janus", "/admin"] {
            if let Some(parts) = segments(base, path) {
                for p in parts {
                    assert!(!p.is_empty() && !p.contains('/'));
                    if let Some(id) = parse_id(p) {
                        assert_ne!(id, 0);
                    }
                }
            }
        }
        let max = max_events(Some(query));
        assert!((1..=1000).contains(&max));
    }
});
