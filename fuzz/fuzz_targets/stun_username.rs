//! The first datagram from an unknown address is routed by the ufrag in its STUN
//! USERNAME, and bound to the peer only once its MESSAGE-INTEGRITY checks out; anyone
//! can send one, so both attribute walks must survive any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::rtc::demux::{is_stun, is_webrtc, stun_local_ufrag, stun_request_authentic};

fuzz_target!(|data: &[u8]| {
    let _ = is_webrtc(data);
    if stun_request_authentic(data, b"fuzzpasswordfuzzpasswordfuzzpass") {
        // Forging a valid HMAC from random bytes does not happen: only a real check
        // passes, and that is a STUN message.
        assert!(is_stun(data));
    }
    let stun = is_stun(data);
    if let Some(ufrag) = stun_local_ufrag(data) {
        assert!(stun);
        assert!(!ufrag.contains(':'));
        let range = data.as_ptr_range();
        assert!(range.start <= ufrag.as_ptr() && ufrag.as_bytes().as_ptr_range().end <= range.end);
    }
});
