//! PiKVM Direct H.264 client messages (`/api/media/ws`): the input as a text message
//! (when it is UTF-8) and as a binary one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::relay::direct::protocol::{
    parse_binary, parse_text, ClientMessage, CloseReason, MAX_CLIENT_MESSAGE,
};

fuzz_target!(|data: &[u8]| {
    let binary = parse_binary(data);
    match binary {
        ClientMessage::Close(CloseReason::EmptyBinary) => assert!(data.is_empty()),
        ClientMessage::Close(CloseReason::TooLong) => assert!(data.len() > MAX_CLIENT_MESSAGE),
        ClientMessage::Ping => assert_eq!(data[0], 0x00),
        ClientMessage::KeyframeRequest => assert_eq!(data[0], 0x01),
        ClientMessage::Ignored(_) => assert!(data[0] > 0x01),
        ClientMessage::StartVideo | ClientMessage::Malformed(_) => {
            panic!("a binary message is never {binary:?}")
        }
    }

    if let Ok(text) = std::str::from_utf8(data) {
        match parse_text(text) {
            ClientMessage::StartVideo => {
                let value: serde_json::Value = serde_json::from_str(text).expect("parsed once");
                assert_eq!(value["event_type"], "start");
                assert_eq!(value["event"]["type"], "video");
                assert_eq!(value["event"]["format"], "h264");
            }
            ClientMessage::Close(reason) => {
                assert_eq!(reason, CloseReason::TooLong);
                assert!(text.len() > MAX_CLIENT_MESSAGE);
            }
            ClientMessage::Ping | ClientMessage::KeyframeRequest => {
                panic!("a text message is never a binary opcode")
            }
            ClientMessage::Ignored(_) | ClientMessage::Malformed(_) => {}
        }
    }
});
