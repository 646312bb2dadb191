//! Uncompressed pictures: what sources draw or convert before encoding, and what the
//! decoder hands back for comparison.

/// Video-range luma of black.
pub const BLACK: u8 = 16;
/// Chroma of a grey (no colour).
pub const NEUTRAL: u8 = 128;

/// One picture in I420: full-size Y plane, U and V planes at half size in both directions.
/// Each plane is tightly packed (stride = plane width).
#[derive(Clone, Debug)]
pub struct I420Frame {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl I420Frame {
    /// A black picture.
    pub fn new(width: usize, height: usize) -> I420Frame {
        let chroma = (width / 2) * (height / 2);
        I420Frame {
            width,
            height,
            y: vec![BLACK; width * height],
            u: vec![NEUTRAL; chroma],
            v: vec![NEUTRAL; chroma],
        }
    }
}
