//! The wire format of PiKVM's "Direct H.264" mode (kvmd's media server): what a client
//! may send and what the server answers. Plain data in, data out, so it can be fuzzed.
//!
//! * Text messages are JSON events `{"event_type": "...", "event": {...}}`.
//! * Binary messages are one opcode byte and a payload: from the client `[0x00]` (ping)
//!   and `[0x01]` (keyframe request); to the client `[0xFF]` (pong) and
//!   `[0x01, key] + Annex-B access unit` (a video frame).

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};

/// Client → server: "are you there"; server → client: a video frame.
pub const OP_PING: u8 = 0x00;
/// Client → server: a keyframe request; server → client: a video frame.
pub const OP_VIDEO: u8 = 0x01;
/// Server → client: the answer to a ping.
pub const OP_PONG: u8 = 0xFF;

/// What kvmd announces; used until the stream has carried its own SPS.
pub const DEFAULT_PROFILE_LEVEL_ID: &str = "42E01F";

/// Longest message a client may send. Real clients send a few bytes; anything longer
/// ends the connection rather than being buffered.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// What one client message asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// `start` of `{"type": "video", "format": "h264"}`: send video frames.
    StartVideo,
    /// `[0x00]`: answer with a pong.
    Ping,
    /// `[0x01]`: the client wants a keyframe.
    KeyframeRequest,
    /// Well formed but not something this server does (another media type, an unknown
    /// event or opcode): ignored, as kvmd ignores it.
    Ignored(&'static str),
    /// Not an event at all (bad JSON, wrong shape): ignored with a log line, as kvmd does.
    Malformed(&'static str),
    /// Ends the session: kvmd ends it on a binary message with no opcode; a message
    /// over [`MAX_CLIENT_MESSAGE`] is refused rather than kept.
    Close(CloseReason),
}

/// Why a client message ends the session; each has its WebSocket close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    EmptyBinary,
    TooLong,
}

impl CloseReason {
    /// The close code (RFC 6455 §7.4.1): unsupported data, or message too big.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::EmptyBinary => 1003,
            CloseReason::TooLong => 1009,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            CloseReason::EmptyBinary => "empty binary message",
            CloseReason::TooLong => "message too long",
        }
    }
}

/// Read one text message.
pub fn parse_text(text: &str) -> ClientMessage {
    if text.len() > MAX_CLIENT_MESSAGE {
        return ClientMessage::Close(CloseReason::TooLong);
    }
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return ClientMessage::Malformed("not JSON");
    };
    let Some(object) = value.as_object() else {
        return ClientMessage::Malformed("not a JSON object");
    };
    let Some(event_type) = object.get("event_type").and_then(Value::as_str) else {
        return ClientMessage::Malformed("event_type is not a string");
    };
    let Some(event) = object.get("event").and_then(Value::as_object) else {
        return ClientMessage::Malformed("event is not an object");
    };
    match event_type {
        "start" => {
            let is =
                |field: &str, want: &str| event.get(field).and_then(Value::as_str) == Some(want);
            if is("type", "video") && is("format", "h264") {
                ClientMessage::StartVideo
            } else {
                ClientMessage::Ignored("start of a media type other than H.264 video")
            }
        }
        _ => ClientMessage::Ignored("unknown event_type"),
    }
}

/// Read one binary message.
pub fn parse_binary(data: &[u8]) -> ClientMessage {
    if data.len() > MAX_CLIENT_MESSAGE {
        return ClientMessage::Close(CloseReason::TooLong);
    }
    match data.first() {
        None => ClientMessage::Close(CloseReason::EmptyBinary),
        Some(&OP_PING) => ClientMessage::Ping,
        Some(&OP_VIDEO) => ClientMessage::KeyframeRequest,
        Some(_) => ClientMessage::Ignored("unknown binary opcode"),
    }
}

/// The `media` description: what the server can send. kvmd's client builds its decoder's
/// codec string (`avc1.` + profile_level_id) from it.
pub fn media_info(profile_level_id: &str) -> Value {
    json!({ "video": { "h264": { "profile_level_id": profile_level_id } } })
}

/// The event sent when a client connects.
pub fn media_event(profile_level_id: &str) -> String {
    json!({ "event_type": "media", "event": media_info(profile_level_id) }).to_string()
}

/// kvmd's HTTP answer: `{"ok": true, "result": ...}`.
pub fn ok_response(result: Value) -> Value {
    json!({ "ok": true, "result": result })
}

/// kvmd's HTTP error: `{"ok": false, "result": {"error", "error_msg"}}`.
pub fn error_response(error: &str, error_msg: &str) -> Value {
    json!({ "ok": false, "result": { "error": error, "error_msg": error_msg } })
}

/// A video frame: `[0x01, key]` and the access unit.
pub fn video_frame(key: bool, access_unit: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(2 + access_unit.len());
    frame.put_u8(OP_VIDEO);
    frame.put_u8(u8::from(key));
    frame.put_slice(access_unit);
    frame.freeze()
}

/// The answer to a ping.
pub fn pong() -> Bytes {
    Bytes::from_static(&[OP_PONG])
}

/// `profile_level_id` as kvmd writes it (six uppercase hex digits), from the stream's SPS.
pub fn profile_level_id(sps: Option<&[u8]>) -> String {
    sps.and_then(|nal| crate::media::h264::parse_sps(nal).ok())
        .map(|info| info.profile_level_id().to_ascii_uppercase())
        .unwrap_or_else(|| DEFAULT_PROFILE_LEVEL_ID.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_event_of_kvmds_client_starts_video() {
        let start = r#"{"event_type":"start","event":{"type":"video","format":"h264"}}"#;
        assert_eq!(parse_text(start), ClientMessage::StartVideo);
        // Field order and extra fields do not matter.
        let reordered = r#"{"event":{"format":"h264","type":"video","x":1},"event_type":"start"}"#;
        assert_eq!(parse_text(reordered), ClientMessage::StartVideo);
    }

    #[test]
    fn other_starts_and_unknown_events_are_ignored() {
        for text in [
            r#"{"event_type":"start","event":{"type":"video","format":"jpeg"}}"#,
            r#"{"event_type":"start","event":{"type":"audio","format":"opus"}}"#,
            r#"{"event_type":"start","event":{"type":"video","format":null}}"#,
            r#"{"event_type":"start","event":{}}"#,
            r#"{"event_type":"stop","event":{}}"#,
        ] {
            assert!(
                matches!(parse_text(text), ClientMessage::Ignored(_)),
                "{text}"
            );
        }
    }

    #[test]
    fn text_that_is_no_event_is_malformed() {
        for text in [
            "",
            "not json",
            "{",
            "[]",
            "42",
            r#"{"event":{}}"#,
            r#"{"event_type":1,"event":{}}"#,
            r#"{"event_type":"start"}"#,
            r#"{"event_type":"start","event":[]}"#,
            &format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)),
        ] {
            let parsed = parse_text(text);
            assert!(
                matches!(parsed, ClientMessage::Malformed(_)),
                "{text:.40}: {parsed:?}"
            );
        }
    }

    #[test]
    fn binary_opcodes() {
        assert_eq!(parse_binary(&[0]), ClientMessage::Ping);
        assert_eq!(parse_binary(&[0, 1, 2]), ClientMessage::Ping);
        assert_eq!(parse_binary(&[1]), ClientMessage::KeyframeRequest);
        assert!(matches!(parse_binary(&[0xFF]), ClientMessage::Ignored(_)));
        assert_eq!(
            parse_binary(&[]),
            ClientMessage::Close(CloseReason::EmptyBinary)
        );
    }

    #[test]
    fn oversized_messages_close() {
        let long = vec![0u8; MAX_CLIENT_MESSAGE + 1];
        assert_eq!(
            parse_binary(&long),
            ClientMessage::Close(CloseReason::TooLong)
        );
        let text = " ".repeat(MAX_CLIENT_MESSAGE + 1);
        assert_eq!(
            parse_text(&text),
            ClientMessage::Close(CloseReason::TooLong)
        );
        assert_eq!(CloseReason::TooLong.code(), 1009);
    }

    #[test]
    fn server_messages() {
        let event: Value = serde_json::from_str(&media_event("42E01F")).unwrap();
        assert_eq!(event["event_type"], "media");
        assert_eq!(
            event["event"]["video"]["h264"]["profile_level_id"],
            "42E01F"
        );
        assert_eq!(
            &video_frame(true, &[0, 0, 0, 1, 0x65])[..],
            &[1, 1, 0, 0, 0, 1, 0x65]
        );
        assert_eq!(&video_frame(false, &[9])[..], &[1, 0, 9]);
        assert_eq!(&pong()[..], &[0xFF]);
        let err = error_response("UnknownStream", "no stream");
        assert_eq!(err["ok"], false);
        assert_eq!(err["result"]["error_msg"], "no stream");
    }

    #[test]
    fn profile_level_id_comes_from_the_sps() {
        // Main profile, level 3.0, as x264 writes it.
        let sps = [
            0x67, 0x4d, 0x40, 0x1e, 0xec, 0xa0, 0x52, 0x17, 0xf1, 0x12, 0x60, 0x22, 0x00, 0x00,
            0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x64, 0x1e, 0x2c, 0x5b, 0x2c,
        ];
        assert_eq!(profile_level_id(Some(&sps)), "4D401E");
        assert_eq!(profile_level_id(None), DEFAULT_PROFILE_LEVEL_ID);
        assert_eq!(
            profile_level_id(Some(&[0x68, 1, 2])),
            DEFAULT_PROFILE_LEVEL_ID
        );
    }
}
