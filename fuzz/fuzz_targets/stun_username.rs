//! The first datagram from an unknown address is routed by the ufrag in its STUN
//! USERNAME; anyone can send one, so the attribute walk must survive any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::rtc::demux::{is_stun, stun_local_ufrag};

fuzz_target!(|data: &[u8]| {
    let stun = is_stun(data);
    if let Some(ufrag) = stun_local_ufrag(data) {
        assert!(stun);
        assert!(!ufrag.contains(':'));
        let range = data.as_ptr_range();
        assert!(range.start <= ufrag.as_ptr() && ufrag.as_bytes().as_ptr_range().end <= range.end);
    }
});
