//! Sequence parameter sets from a stream: the size and profile they announce are used
//! for signalling, so a malformed one must give an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::media::h264::{parse_sps, unescape_rbsp};
use peregrine::rtc::sdp;

fuzz_target!(|data: &[u8]| {
    let rbsp = unescape_rbsp(data);
    assert!(rbsp.len() <= data.len());

    // Also as an SPS whatever the first byte says, so the body gets fuzzed fully.
    let mut as_sps = Vec::with_capacity(data.len() + 1);
    as_sps.push(0x67);
    as_sps.extend_from_slice(data);
    for nal in [data, &as_sps[..]] {
        if let Ok(info) = parse_sps(nal) {
            assert!(info.width >= 1 && info.width <= 4096 * 16);
            assert!(info.height >= 1 && info.height <= 4096 * 16 * 2);
            let id = info.profile_level_id();
            assert_eq!(id.len(), 6);
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        if let Some(id) = sdp::profile_level_id(nal) {
            assert_eq!(id.len(), 6);
        }
    }
});
