//! The limits every part applies to the pictures it makes or accepts, in one place so
//! that a size or rate one part takes is never refused by another (the configuration,
//! the camera converter, the test pattern and NO SIGNAL all check against these).

/// Shortest picture side: H.264 macroblocks are 16 pixels.
pub const MIN_SIDE: u32 = 16;
/// Longest picture side: beyond H.264 level 5.2's largest frame, and more than any camera
/// peregrine serves.
pub const MAX_SIDE: u32 = 4096;
/// Highest frame rate asked of a source.
pub const MAX_FPS: u32 = 120;
/// Lowest H.264 bitrate, kbit/s, that still makes a picture.
pub const MIN_BITRATE_KBPS: u32 = 50;

/// Whether `v` is a usable picture side.
pub fn side_in_range(v: u32) -> bool {
    (MIN_SIDE..=MAX_SIDE).contains(&v)
}

/// Whether a 4:2:0 picture of `width`x`height` can be made: sides in range and even.
pub fn encodable_size(width: u32, height: u32) -> bool {
    [width, height]
        .into_iter()
        .all(|v| side_in_range(v) && v.is_multiple_of(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_even_and_in_range() {
        assert!(encodable_size(16, 16) && encodable_size(4096, 2160));
        assert!(!encodable_size(15, 16) && !encodable_size(18, 17));
        assert!(!encodable_size(4098, 16) && !encodable_size(14, 16));
    }
}
