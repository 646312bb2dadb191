//! Camera buffers → I420, with the buffer, the negotiated size, stride and format all
//! from the input: a driver (or a broken camera) can hand over anything.
//!
//! Input: format selector, width and height as u16 LE, stride as u16 LE, then the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine::source::camera::convert::Converter;
use peregrine::source::camera::device::{Negotiated, PixelFormat};
use peregrine::source::pattern::I420Frame;

fuzz_target!(|data: &[u8]| {
    let Some((head, buffer)) = data.split_at_checked(7) else {
        return;
    };
    let format = PixelFormat::PREFERRED[usize::from(head[0]) % PixelFormat::PREFERRED.len()];
    // Small sizes, so raw formats are often complete and the converters run.
    let width = u32::from(u16::from_le_bytes([head[1], head[2]]) % 600);
    let height = u32::from(u16::from_le_bytes([head[3], head[4]]) % 600);
    let stride = u32::from(u16::from_le_bytes([head[5], head[6]]));
    let negotiated = Negotiated {
        format,
        width,
        height,
        stride,
        fps: None,
    };
    let mut out = I420Frame::new(16, 16);
    let mut converter = Converter::new();
    if converter.to_i420(&negotiated, buffer, &mut out).is_ok() {
        let (w, h) = (out.width, out.height);
        assert_eq!(out.y.len(), w * h);
        assert_eq!(out.u.len(), (w / 2) * (h / 2));
        assert_eq!(out.v.len(), (w / 2) * (h / 2));
    }
});
