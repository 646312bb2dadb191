//! Janus API requests from the network: a WebSocket frame or an HTTP body, then the
//! per-verb field checks the gateway applies, and the HTTP transport's path and query.
#![no_main]

use libfuzzer_sys::fuzz_target;
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
        if let Some(parts) = segments("/janus", path) {
            for p in parts {
                assert!(!p.is_empty() && !p.contains('/'));
                if let Some(id) = parse_id(p) {
                    assert_ne!(id, 0);
                }
            }
        }
        let max = max_events(Some(query));
        assert!((1..=1000).contains(&max));
    }
});
