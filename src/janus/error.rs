//! Janus API error codes and the reasons Janus gives with them.
//!
//! janus.js shows `"<code> <reason>"` to the page, and some clients look at the code,
//! so both follow the Janus core (`apierror.h` numbering, its wording for reasons).

use std::fmt;

/// Numeric codes of the Janus core.
pub mod code {
    pub const UNAUTHORIZED: u16 = 403;
    pub const UNAUTHORIZED_PLUGIN: u16 = 405;
    pub const TRANSPORT_SPECIFIC: u16 = 450;
    pub const MISSING_REQUEST: u16 = 452;
    pub const UNKNOWN_REQUEST: u16 = 453;
    pub const INVALID_JSON: u16 = 454;
    pub const INVALID_JSON_OBJECT: u16 = 455;
    pub const MISSING_MANDATORY_ELEMENT: u16 = 456;
    pub const INVALID_REQUEST_PATH: u16 = 457;
    pub const SESSION_NOT_FOUND: u16 = 458;
    pub const HANDLE_NOT_FOUND: u16 = 459;
    pub const PLUGIN_NOT_FOUND: u16 = 460;
    pub const PLUGIN_ATTACH: u16 = 461;
    pub const PLUGIN_MESSAGE: u16 = 462;
    pub const PLUGIN_DETACH: u16 = 463;
    pub const JSEP_UNKNOWN_TYPE: u16 = 464;
    pub const JSEP_INVALID_SDP: u16 = 465;
    pub const TRICKLE_INVALID_STREAM: u16 = 466;
    pub const INVALID_ELEMENT_TYPE: u16 = 467;
    pub const SESSION_CONFLICT: u16 = 468;
    pub const UNEXPECTED_ANSWER: u16 = 469;
    pub const TOKEN_NOT_FOUND: u16 = 470;
    pub const NOT_ACCEPTING_SESSIONS: u16 = 472;
    pub const UNKNOWN: u16 = 490;
}

/// One Janus API error: the `error` object of a `{"janus":"error"}` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JanusError {
    pub code: u16,
    pub reason: String,
}

impl fmt::Display for JanusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

impl std::error::Error for JanusError {}

impl JanusError {
    pub fn new(code: u16, reason: impl Into<String>) -> JanusError {
        JanusError {
            code,
            reason: reason.into(),
        }
    }

    pub fn invalid_json(detail: impl fmt::Display) -> JanusError {
        JanusError::new(code::INVALID_JSON, format!("JSON error: {detail}"))
    }

    pub fn not_an_object() -> JanusError {
        JanusError::new(code::INVALID_JSON_OBJECT, "JSON error: not an object")
    }

    pub fn missing(element: &str) -> JanusError {
        JanusError::new(
            code::MISSING_MANDATORY_ELEMENT,
            format!("Missing mandatory element ({element})"),
        )
    }

    /// `expected` reads like "a string", "an object", "a positive integer".
    pub fn wrong_type(element: &str, expected: &str) -> JanusError {
        JanusError::new(
            code::INVALID_ELEMENT_TYPE,
            format!("Invalid element type ({element} should be {expected})"),
        )
    }

    /// A verb nobody knows, inside a session or handle.
    pub fn unknown_request(verb: &str) -> JanusError {
        JanusError::new(code::UNKNOWN_REQUEST, format!("Unknown request '{verb}'"))
    }

    /// A verb sent at the wrong level (root, session or handle), or unknown at the root.
    pub fn unhandled_at_path(verb: &str) -> JanusError {
        JanusError::new(
            code::INVALID_REQUEST_PATH,
            format!("Unhandled request '{verb}' at this path"),
        )
    }

    /// `what` is "session" or "handle".
    pub fn conflicting_id(what: &str) -> JanusError {
        JanusError::new(
            code::INVALID_REQUEST_PATH,
            format!("Conflicting {what} ID (payload and path)"),
        )
    }

    pub fn no_session(session_id: u64) -> JanusError {
        JanusError::new(
            code::SESSION_NOT_FOUND,
            format!("No such session {session_id}"),
        )
    }

    pub fn no_handle(session_id: u64, handle_id: u64) -> JanusError {
        JanusError::new(
            code::HANDLE_NOT_FOUND,
            format!("No such handle {handle_id} in session {session_id}"),
        )
    }

    pub fn no_plugin(name: &str) -> JanusError {
        JanusError::new(code::PLUGIN_NOT_FOUND, format!("No such plugin '{name}'"))
    }

    pub fn unknown_jsep_type(kind: &str) -> JanusError {
        JanusError::new(
            code::JSEP_UNKNOWN_TYPE,
            format!("JSEP error: unknown message type '{kind}'"),
        )
    }

    pub fn invalid_sdp(detail: impl fmt::Display) -> JanusError {
        JanusError::new(
            code::JSEP_INVALID_SDP,
            format!("JSEP error: invalid SDP ({detail})"),
        )
    }

    pub fn unexpected_answer() -> JanusError {
        JanusError::new(code::UNEXPECTED_ANSWER, "Unexpected ANSWER (no OFFER)")
    }

    pub fn no_stream() -> JanusError {
        JanusError::new(
            code::TRICKLE_INVALID_STREAM,
            "No PeerConnection on this handle to trickle to",
        )
    }

    pub fn internal(detail: impl fmt::Display) -> JanusError {
        JanusError::new(code::UNKNOWN, format!("Internal error: {detail}"))
    }
}
