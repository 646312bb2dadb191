//! The viewer-side reader of the test pattern's code strip, on decoded pictures whose
//! plane size, stride and dimensions come from elsewhere and may not agree.
//!
//! Input: width, height, stride as u16 LE (stride can also be "huge"), then the plane.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::source::pattern::{read_code_strip, CODE_HEIGHT, CODE_WIDTH};

fuzz_target!(|data: &[u8]| {
    let Some((head, plane)) = data.split_at_checked(7) else {
        return;
    };
    let width = usize::from(u16::from_le_bytes([head[0], head[1]]));
    let height = usize::from(u16::from_le_bytes([head[2], head[3]]));
    let mut stride = usize::from(u16::from_le_bytes([head[4], head[5]]));
    // Dimensions from a corrupt decoder output can be anything, not just small numbers.
    match head[6] % 4 {
        0 => {}
        1 => stride = stride.wrapping_add(width),
        2 => stride = usize::MAX - stride,
        _ => stride = stride.wrapping_mul(1 << 48),
    }
    // Mostly pictures big enough for the strip, so the block reader is reached.
    let plane = if plane.len() < CODE_WIDTH * CODE_HEIGHT && head[6] & 0x80 != 0 {
        let mut big = plane.to_vec();
        big.resize(CODE_WIDTH * CODE_HEIGHT * 2, 0xff);
        big
    } else {
        plane.to_vec()
    };
    let _ = read_code_strip(&plane, stride, width, height);
});
