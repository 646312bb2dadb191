//! What an RTP forward's target sends back: any bytes, read for PLIs and FIRs. Must
//! never panic, and can find at most one request per four bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::egress::rtcp::keyframe_requests;

fuzz_target!(|data: &[u8]| {
    let found = keyframe_requests(data);
    assert!((found.pli + found.fir) as usize * 12 <= data.len());
});
