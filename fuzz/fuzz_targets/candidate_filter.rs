//! Remote ICE candidates, trickled or inside an answer, as a viewer's browser (or anyone
//! speaking the Janus API) sends them: the per-candidate check and the answer filter
//! with its budget.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::rtc::candidates::{check, filter_answer};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for loopback_only in [true, false] {
        let _ = check(&text, loopback_only);
        let (filtered, kept, _dropped) = filter_answer(&text, loopback_only, 25);
        assert!(kept <= 25);
        assert!(filtered.len() <= text.len() + text.lines().count() + 2);
    }
});
