//! Janus API messages as data: client requests in, replies and events out.
//!
//! Nothing here does I/O or touches sessions, so every function can be unit tested and
//! fuzzed with arbitrary bytes. Requests are checked in two steps, like the Janus core:
//! the envelope (`janus`, `transaction`, ids) when the message arrives, and the fields
//! of each verb only once the session and handle it names are known to exist, so the
//! error codes come out in the same order as Janus's.

use serde_json::{json, Map, Value};

use super::error::JanusError;

/// The request kinds of the core API. Janus matches them without regard to case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Create,
    Attach,
    Message,
    Trickle,
    Keepalive,
    Detach,
    Hangup,
    Destroy,
    Claim,
    Info,
    Ping,
    Unknown,
}

impl Verb {
    fn parse(name: &str) -> Verb {
        const VERBS: [(&str, Verb); 11] = [
            ("create", Verb::Create),
            ("attach", Verb::Attach),
            ("message", Verb::Message),
            ("trickle", Verb::Trickle),
            ("keepalive", Verb::Keepalive),
            ("detach", Verb::Detach),
            ("hangup", Verb::Hangup),
            ("destroy", Verb::Destroy),
            ("claim", Verb::Claim),
            ("info", Verb::Info),
            ("ping", Verb::Ping),
        ];
        VERBS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .unwrap_or(Verb::Unknown)
    }
}

/// A request whose envelope is valid. Ids are 0 when absent (Janus's convention).
#[derive(Clone, Debug)]
pub struct Request {
    pub verb: Verb,
    /// The `janus` value as sent, for error messages.
    pub verb_name: String,
    pub transaction: String,
    pub session_id: u64,
    pub handle_id: u64,
    /// The whole request object, for the verb-specific fields.
    pub fields: Map<String, Value>,
}

impl Request {
    /// A request made up by a transport (HTTP `GET B/info`), with no ids or fields.
    pub fn synthetic(verb_name: &str, transaction: String) -> Request {
        Request {
            verb: Verb::parse(verb_name),
            verb_name: verb_name.to_string(),
            transaction,
            session_id: 0,
            handle_id: 0,
            fields: Map::new(),
        }
    }
}

/// A request refused before it reached a session, with what the error reply can echo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub transaction: Option<String>,
    pub session_id: u64,
    pub error: JanusError,
}

impl Rejected {
    fn bare(error: JanusError) -> Rejected {
        Rejected {
            transaction: None,
            session_id: 0,
            error,
        }
    }

    /// The `{"janus":"error"}` reply for this rejection.
    pub fn to_reply(&self) -> Value {
        error_reply(self.transaction.as_deref(), self.session_id, &self.error)
    }
}

/// Parse one request from raw bytes: the entry point for fuzzing.
pub fn parse_request(bytes: &[u8]) -> Result<Request, Rejected> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| Rejected::bare(JanusError::invalid_json(e)))?;
    request_from_value(value)
}

/// Parse a WebSocket frame, which Janus allows to hold several JSON objects one after
/// the other. Stops at the first unparsable one.
pub fn parse_frame(bytes: &[u8]) -> Vec<Result<Request, Rejected>> {
    frame_requests(bytes).collect()
}

/// The requests of a frame one at a time, each parsed only when the one before has been
/// handled: a frame packed with thousands of small requests holds one parsed request at
/// a time, not all of them while their replies wait for room.
pub fn frame_requests(bytes: &[u8]) -> impl Iterator<Item = Result<Request, Rejected>> + '_ {
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    let mut first = true;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let next = match values.next() {
            Some(Ok(v)) => request_from_value(v),
            Some(Err(e)) => {
                done = true;
                Err(Rejected::bare(JanusError::invalid_json(e)))
            }
            None if first => {
                done = true;
                Err(Rejected::bare(JanusError::invalid_json("empty message")))
            }
            None => return None,
        };
        first = false;
        Some(next)
    })
}

/// Check the envelope of an already parsed JSON value.
pub fn request_from_value(value: Value) -> Result<Request, Rejected> {
    let Value::Object(fields) = value else {
        return Err(Rejected::bare(JanusError::not_an_object()));
    };
    // Janus ignores ids of the wrong type, which then count as absent.
    let session_id = fields
        .get("session_id")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let handle_id = fields.get("handle_id").and_then(Value::as_u64).unwrap_or(0);
    let transaction = match fields.get("transaction") {
        None | Some(Value::Null) => {
            return Err(Rejected {
                transaction: None,
                session_id,
                error: JanusError::missing("transaction"),
            })
        }
        Some(Value::String(t)) => t.clone(),
        Some(_) => {
            return Err(Rejected {
                transaction: None,
                session_id,
                error: JanusError::wrong_type("transaction", "a string"),
            })
        }
    };
    let reject = |error| Rejected {
        transaction: Some(transaction.clone()),
        session_id,
        error,
    };
    let verb_name = match fields.get("janus") {
        None | Some(Value::Null) => return Err(reject(JanusError::missing("janus"))),
        Some(Value::String(v)) => v.clone(),
        Some(_) => return Err(reject(JanusError::wrong_type("janus", "a string"))),
    };
    Ok(Request {
        verb: Verb::parse(&verb_name),
        verb_name,
        transaction,
        session_id,
        handle_id,
        fields,
    })
}

/// Read an optional field that must have a given JSON type when present.
fn optional<'a, T>(
    fields: &'a Map<String, Value>,
    key: &str,
    expected: &str,
    get: impl Fn(&'a Value) -> Option<T>,
) -> Result<Option<T>, JanusError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => get(v)
            .map(Some)
            .ok_or_else(|| JanusError::wrong_type(key, expected)),
    }
}

fn mandatory<'a, T>(
    fields: &'a Map<String, Value>,
    key: &str,
    expected: &str,
    get: impl Fn(&'a Value) -> Option<T>,
) -> Result<T, JanusError> {
    optional(fields, key, expected, get)?.ok_or_else(|| JanusError::missing(key))
}

/// `create`: the session id the client wants, if it names one.
pub fn parse_create(req: &Request) -> Result<Option<u64>, JanusError> {
    // As in Janus, 0 asks for a random id. Ids must survive a JavaScript Number.
    const EXPECTED: &str = "a positive integer below 2^53";
    match optional(&req.fields, "id", EXPECTED, Value::as_u64)? {
        Some(0) | None => Ok(None),
        Some(id) if id >= 1 << 53 => Err(JanusError::wrong_type("id", EXPECTED)),
        Some(id) => Ok(Some(id)),
    }
}

/// `attach`: which plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attach {
    pub plugin: String,
}

pub fn parse_attach(req: &Request) -> Result<Attach, JanusError> {
    let plugin = mandatory(&req.fields, "plugin", "a string", Value::as_str)?;
    optional(&req.fields, "opaque_id", "a string", Value::as_str)?;
    Ok(Attach {
        plugin: plugin.to_string(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsepType {
    Offer,
    Answer,
}

/// A session description sent by the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jsep {
    pub kind: JsepType,
    pub sdp: String,
}

/// `message`: the plugin body and an optional session description.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginMessage {
    pub body: Map<String, Value>,
    pub jsep: Option<Jsep>,
}

pub fn parse_message(req: &Request) -> Result<PluginMessage, JanusError> {
    let body = mandatory(&req.fields, "body", "an object", Value::as_object)?.clone();
    let jsep = match req.fields.get("jsep") {
        None | Some(Value::Null) => None,
        Some(Value::Object(j)) => Some(parse_jsep(j)?),
        Some(_) => {
            return Err(JanusError::new(
                super::error::code::INVALID_JSON_OBJECT,
                "Invalid jsep object",
            ))
        }
    };
    Ok(PluginMessage { body, jsep })
}

fn parse_jsep(j: &Map<String, Value>) -> Result<Jsep, JanusError> {
    let jsep_err = |e: JanusError| JanusError::new(e.code, format!("JSEP error: {}", e.reason));
    let kind = mandatory(j, "type", "a string", Value::as_str).map_err(jsep_err)?;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "offer" => JsepType::Offer,
        "answer" => JsepType::Answer,
        _ => return Err(JanusError::unknown_jsep_type(kind)),
    };
    let sdp = mandatory(j, "sdp", "a string", Value::as_str).map_err(jsep_err)?;
    Ok(Jsep {
        kind,
        sdp: sdp.to_string(),
    })
}

/// One trickled ICE candidate, or the end-of-candidates marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrickleCandidate {
    Candidate {
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u64>,
    },
    Completed,
}

impl TrickleCandidate {
    /// Everything is BUNDLEd on the first m-line, so Janus drops candidates for others.
    pub fn is_for_first_mline(&self) -> bool {
        match self {
            TrickleCandidate::Candidate {
                sdp_mline_index: Some(i),
                ..
            } => *i == 0,
            _ => true,
        }
    }
}

/// `trickle`: a single `candidate` or a `candidates` array, never both.
pub fn parse_trickle(req: &Request) -> Result<Vec<TrickleCandidate>, JanusError> {
    let one = req.fields.get("candidate").filter(|v| !v.is_null());
    let many = req.fields.get("candidates").filter(|v| !v.is_null());
    match (one, many) {
        (Some(_), Some(_)) => Err(JanusError::new(
            super::error::code::INVALID_JSON,
            "Can't have both candidate and candidates",
        )),
        (None, None) => Err(JanusError::missing("candidate")),
        (Some(c), None) => Ok(vec![parse_candidate(c)?]),
        (None, Some(Value::Array(list))) => list.iter().map(parse_candidate).collect(),
        (None, Some(_)) => Err(JanusError::wrong_type("candidates", "an array")),
    }
}

fn parse_candidate(value: &Value) -> Result<TrickleCandidate, JanusError> {
    let Value::Object(c) = value else {
        return Err(JanusError::wrong_type("candidate", "an object"));
    };
    if c.get("completed").and_then(Value::as_bool) == Some(true) {
        return Ok(TrickleCandidate::Completed);
    }
    let sdp_mid = optional(c, "sdpMid", "a string", Value::as_str)?;
    let sdp_mline_index = optional(c, "sdpMLineIndex", "a positive integer", Value::as_u64)?;
    if sdp_mid.is_none() && sdp_mline_index.is_none() {
        return Err(JanusError::missing("sdpMid or sdpMLineIndex"));
    }
    let candidate = mandatory(c, "candidate", "a string", Value::as_str)?;
    Ok(TrickleCandidate::Candidate {
        candidate: candidate.to_string(),
        sdp_mid: sdp_mid.map(str::to_string),
        sdp_mline_index,
    })
}

// ---- replies and events -------------------------------------------------------------

fn base(kind: &str, session_id: u64, transaction: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("janus".into(), kind.into());
    // Janus leaves `session_id` out rather than sending 0.
    if session_id != 0 {
        m.insert("session_id".into(), session_id.into());
    }
    if let Some(t) = transaction {
        m.insert("transaction".into(), t.into());
    }
    m
}

/// `{"janus":"success"}` for create/claim/detach/destroy/hangup.
pub fn success(transaction: &str, session_id: u64) -> Value {
    Value::Object(base("success", session_id, Some(transaction)))
}

/// `success` with `data.id`: the new session (create) or handle (attach).
pub fn success_with_id(transaction: &str, session_id: u64, id: u64) -> Value {
    let mut m = base("success", session_id, Some(transaction));
    m.insert("data".into(), json!({ "id": id }));
    Value::Object(m)
}

pub fn ack(transaction: &str, session_id: u64) -> Value {
    Value::Object(base("ack", session_id, Some(transaction)))
}

pub fn error_reply(transaction: Option<&str>, session_id: u64, error: &JanusError) -> Value {
    let mut m = base("error", session_id, transaction);
    m.insert(
        "error".into(),
        json!({ "code": error.code, "reason": error.reason }),
    );
    Value::Object(m)
}

pub fn pong(transaction: &str) -> Value {
    Value::Object(base("pong", 0, Some(transaction)))
}

/// What a long poll answers when nothing happened while it was held.
pub fn keepalive() -> Value {
    json!({ "janus": "keepalive" })
}

/// The plugin's synchronous answer to `message`.
pub fn plugin_success(
    transaction: &str,
    session_id: u64,
    handle_id: u64,
    plugin: &str,
    data: Value,
) -> Value {
    let mut m = base("success", session_id, Some(transaction));
    m.insert("sender".into(), handle_id.into());
    m.insert(
        "plugindata".into(),
        json!({ "plugin": plugin, "data": data }),
    );
    Value::Object(m)
}

/// An asynchronous plugin event, routed by janus.js through `sender`.
pub fn plugin_event(
    session_id: u64,
    handle_id: u64,
    plugin: &str,
    data: Value,
    jsep: Option<Value>,
) -> Value {
    let mut m = base("event", session_id, None);
    m.insert("sender".into(), handle_id.into());
    m.insert(
        "plugindata".into(),
        json!({ "plugin": plugin, "data": data }),
    );
    if let Some(j) = jsep {
        m.insert("jsep".into(), j);
    }
    Value::Object(m)
}

fn handle_event(kind: &str, session_id: u64, handle_id: u64) -> Map<String, Value> {
    let mut m = base(kind, session_id, None);
    m.insert("sender".into(), handle_id.into());
    m
}

pub fn webrtcup(session_id: u64, handle_id: u64) -> Value {
    Value::Object(handle_event("webrtcup", session_id, handle_id))
}

/// `media`: incoming RTP of `kind` ("audio": the viewer's microphone) on the m-line `mid`
/// has started (`receiving` true) or stopped.
pub fn media(session_id: u64, handle_id: u64, mid: &str, kind: &str, receiving: bool) -> Value {
    let mut m = handle_event("media", session_id, handle_id);
    m.insert("mid".into(), mid.into());
    m.insert("type".into(), kind.into());
    m.insert("receiving".into(), receiving.into());
    Value::Object(m)
}

pub fn hangup(session_id: u64, handle_id: u64, reason: &str) -> Value {
    let mut m = handle_event("hangup", session_id, handle_id);
    m.insert("reason".into(), reason.into());
    Value::Object(m)
}

pub fn detached(session_id: u64, handle_id: u64) -> Value {
    Value::Object(handle_event("detached", session_id, handle_id))
}

pub fn timeout(session_id: u64) -> Value {
    Value::Object(base("timeout", session_id, None))
}

/// What `info` reports about this server and its one plugin.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub session_timeout_s: u64,
    pub plugin_package: &'static str,
    pub plugin_name: &'static str,
    pub plugin_description: &'static str,
    pub plugin_version: u32,
    pub plugin_version_string: &'static str,
    /// Requests need `apisecret`.
    pub api_secret: bool,
    /// Requests need a stored `token`.
    pub auth_token: bool,
}

pub fn server_info(transaction: &str, info: &ServerInfo) -> Value {
    let mut m = base("server_info", 0, Some(transaction));
    let pkg_version = env!("CARGO_PKG_VERSION");
    let numeric_version = pkg_version
        .split('.')
        .take(3)
        .map(|p| p.parse::<u64>().unwrap_or(0))
        .fold(0, |acc, p| acc * 100 + p);
    let extra = json!({
        "name": "peregrine",
        "version": numeric_version,
        "version_string": pkg_version,
        "author": "peregrine contributors",
        "data_channels": false,
        "ipv6": true,
        "ice-tcp": false,
        "full-trickle": false,
        "session-timeout": info.session_timeout_s,
        "api_secret": info.api_secret,
        "auth_token": info.auth_token,
        "plugins": {
            info.plugin_package: {
                "name": info.plugin_name,
                "author": "peregrine contributors",
                "description": info.plugin_description,
                "version_string": info.plugin_version_string,
                "version": info.plugin_version,
            }
        },
        "transports": {
            "janus.transport.websockets": {
                "name": "WebSockets transport",
                "description": "Janus API over WebSocket (subprotocol janus-protocol)",
            },
            "janus.transport.http": {
                "name": "HTTP transport",
                "description": "Janus API over HTTP long-poll",
            }
        },
        "events": {},
        "loggers": {},
    });
    if let Value::Object(extra) = extra {
        m.extend(extra);
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::janus::error::code;

    fn parse(s: &str) -> Result<Request, Rejected> {
        parse_request(s.as_bytes())
    }

    #[test]
    fn envelope_errors_follow_janus_order() {
        assert_eq!(parse("{").unwrap_err().error.code, code::INVALID_JSON);
        assert_eq!(
            parse("[1]").unwrap_err().error.code,
            code::INVALID_JSON_OBJECT
        );
        assert_eq!(
            parse("\"x\"").unwrap_err().error.code,
            code::INVALID_JSON_OBJECT
        );
        let e = parse(r#"{"janus":"create"}"#).unwrap_err();
        assert_eq!(e.error, JanusError::missing("transaction"));
        let e = parse(r#"{"janus":"create","transaction":5}"#).unwrap_err();
        assert_eq!(e.error.code, code::INVALID_ELEMENT_TYPE);
        let e = parse(r#"{"transaction":"t1","session_id":9}"#).unwrap_err();
        assert_eq!(e.error, JanusError::missing("janus"));
        assert_eq!(e.transaction.as_deref(), Some("t1"));
        assert_eq!(
            e.to_reply(),
            json!({"janus":"error","session_id":9,"transaction":"t1",
                   "error":{"code":456,"reason":"Missing mandatory element (janus)"}})
        );
    }

    #[test]
    fn envelope_reads_ids_and_verb() {
        let r = parse(r#"{"janus":"KeepAlive","transaction":"t","session_id":12,"handle_id":34}"#)
            .unwrap();
        assert_eq!(r.verb, Verb::Keepalive);
        assert_eq!((r.session_id, r.handle_id), (12, 34));
        let r = parse(r#"{"janus":"frobnicate","transaction":"t","session_id":"12"}"#).unwrap();
        assert_eq!(r.verb, Verb::Unknown);
        assert_eq!(r.session_id, 0, "a string id counts as absent, as in Janus");
    }

    #[test]
    fn message_and_jsep_fields() {
        let r = parse(r#"{"janus":"message","transaction":"t"}"#).unwrap();
        assert_eq!(parse_message(&r).unwrap_err(), JanusError::missing("body"));
        let r = parse(r#"{"janus":"message","transaction":"t","body":3}"#).unwrap();
        assert_eq!(
            parse_message(&r).unwrap_err().code,
            code::INVALID_ELEMENT_TYPE
        );
        let r = parse(r#"{"janus":"message","transaction":"t","body":{},"jsep":{"type":"pranswer","sdp":"v=0"}}"#)
            .unwrap();
        assert_eq!(parse_message(&r).unwrap_err().code, code::JSEP_UNKNOWN_TYPE);
        let r = parse(r#"{"janus":"message","transaction":"t","body":{"request":"start"},"jsep":{"type":"answer","sdp":"v=0","trickle":true}}"#)
            .unwrap();
        let m = parse_message(&r).unwrap();
        assert_eq!(
            m.jsep,
            Some(Jsep {
                kind: JsepType::Answer,
                sdp: "v=0".into()
            })
        );
        assert_eq!(m.body["request"], "start");
    }

    #[test]
    fn trickle_forms() {
        let r = parse(r#"{"janus":"trickle","transaction":"t","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"v","sdpMLineIndex":0}}"#).unwrap();
        let c = parse_trickle(&r).unwrap();
        assert!(matches!(&c[0], TrickleCandidate::Candidate { sdp_mid: Some(m), .. } if m == "v"));
        let r = parse(r#"{"janus":"trickle","transaction":"t","candidate":{"completed":true}}"#)
            .unwrap();
        assert_eq!(
            parse_trickle(&r).unwrap(),
            vec![TrickleCandidate::Completed]
        );
        let r = parse(r#"{"janus":"trickle","transaction":"t","candidates":[{"candidate":"candidate:x","sdpMLineIndex":1},{"completed":true}]}"#).unwrap();
        let c = parse_trickle(&r).unwrap();
        assert_eq!(c.len(), 2);
        assert!(!c[0].is_for_first_mline());
        let r = parse(r#"{"janus":"trickle","transaction":"t","candidate":{},"candidates":[]}"#)
            .unwrap();
        assert_eq!(parse_trickle(&r).unwrap_err().code, code::INVALID_JSON);
        let r = parse(r#"{"janus":"trickle","transaction":"t"}"#).unwrap();
        assert_eq!(
            parse_trickle(&r).unwrap_err().code,
            code::MISSING_MANDATORY_ELEMENT
        );
        let r = parse(r#"{"janus":"trickle","transaction":"t","candidate":{"candidate":"c"}}"#)
            .unwrap();
        assert_eq!(
            parse_trickle(&r).unwrap_err().code,
            code::MISSING_MANDATORY_ELEMENT
        );
    }

    #[test]
    fn reply_shapes() {
        assert_eq!(
            success_with_id("t", 0, 7),
            json!({"janus":"success","transaction":"t","data":{"id":7}})
        );
        assert_eq!(
            ack("t", 5),
            json!({"janus":"ack","session_id":5,"transaction":"t"})
        );
        assert_eq!(
            hangup(1, 2, "Janus API"),
            json!({"janus":"hangup","session_id":1,"sender":2,"reason":"Janus API"})
        );
        assert_eq!(timeout(3), json!({"janus":"timeout","session_id":3}));
    }

    #[test]
    fn frames_may_hold_several_objects() {
        let reqs = parse_frame(
            br#"{"janus":"ping","transaction":"a"} {"janus":"info","transaction":"b"}"#,
        );
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[1].as_ref().unwrap().verb, Verb::Info);
        let reqs = parse_frame(br#"{"janus":"ping","transaction":"a"} {"#);
        assert_eq!(reqs[1].as_ref().unwrap_err().error.code, code::INVALID_JSON);
        assert_eq!(
            parse_frame(b"  ")[0].as_ref().unwrap_err().error.code,
            code::INVALID_JSON
        );
    }

    /// Random and mutated input must only ever give errors, never a panic.
    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6a616e7573);
        let seeds: [&[u8]; 3] = [
            br#"{"janus":"trickle","transaction":"t","candidates":[{"candidate":"c","sdpMLineIndex":0}]}"#,
            br#"{"janus":"message","transaction":"t","body":{"request":"watch"},"jsep":{"type":"answer","sdp":"v=0"}}"#,
            br#"{"janus":"attach","transaction":"t","session_id":1,"plugin":"janus.plugin.ustreamer"}"#,
        ];
        for i in 0..20_000 {
            let bytes: Vec<u8> = if i % 2 == 0 {
                let len = rng.random_range(0..64);
                (0..len).map(|_| rng.random()).collect()
            } else {
                let mut b = seeds[i % seeds.len()].to_vec();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..b.len());
                    b[at] = rng.random();
                }
                b
            };
            let _ = parse_frame(&bytes);
            if let Ok(req) = parse_request(&bytes) {
                let _ = parse_attach(&req);
                let _ = parse_message(&req);
                let _ = parse_trickle(&req);
            }
        }
    }
}
