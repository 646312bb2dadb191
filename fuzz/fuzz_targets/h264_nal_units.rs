//! Splitting an Annex-B byte stream (a camera's or an encoder's output) into NAL units,
//! and what is read from slice headers: B-slices, and the reference chain run over the
//! input cut into access units.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::media::h264::{access_unit_has_b_slice, access_unit_is_key, nal_type, nal_units};
use peregrine::media::refchain::ReferenceChain;

fuzz_target!(|data: &[u8]| {
    let nals: Vec<&[u8]> = nal_units(data).collect();
    let range = data.as_ptr_range();
    let mut total = 0;
    let mut last_end = data.as_ptr();
    for (i, nal) in nals.iter().enumerate() {
        assert!(!nal.is_empty());
        // Every unit is a slice of the input, in order, without overlap.
        assert!(range.start <= nal.as_ptr() && nal.as_ptr_range().end <= range.end);
        assert!(nal.as_ptr() >= last_end);
        last_end = nal.as_ptr_range().end;
        // No start code inside a unit, and trailing zeros belong to the next start code.
        assert!(!nal.windows(3).any(|w| w == [0, 0, 1]));
        if i + 1 < nals.len() {
            assert_ne!(nal.last(), Some(&0));
        }
        assert!(nal_type(nal).is_some());
        total += nal.len();
    }
    assert!(total <= data.len());
    let _ = access_unit_is_key(data);
    let _ = access_unit_has_b_slice(data);
    let mut chain = ReferenceChain::default();
    for unit in data.split(|&b| b == 0xff) {
        chain.push(unit);
    }
});
