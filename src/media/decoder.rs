//! H.264 decoding with openh264, for checking what the encoders and outputs carry (tests,
//! load generators). Only the luma plane is kept: it is what measurements read.

use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

/// The decoder rejected the stream or could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("H.264 decoding failed: {0}")]
pub struct DecodeError(String);

/// The luma plane of one decoded picture.
#[derive(Clone, Debug)]
pub struct DecodedFrame {
    pub width: usize,
    pub height: usize,
    /// `height` rows, each `y_stride` bytes apart (the first `width` bytes are the picture).
    pub y: Vec<u8>,
    pub y_stride: usize,
}

pub struct H264Decoder {
    inner: Decoder,
}

impl H264Decoder {
    pub fn new() -> Result<H264Decoder, DecodeError> {
        let inner = Decoder::new().map_err(|e| DecodeError(e.to_string()))?;
        Ok(H264Decoder { inner })
    }

    /// Decode one access unit (Annex-B, parameter sets included before an IDR). Returns
    /// the picture once the decoder has one to show.
    pub fn decode(&mut self, annexb: &[u8]) -> Result<Option<DecodedFrame>, DecodeError> {
        let picture = self
            .inner
            .decode(annexb)
            .map_err(|e| DecodeError(e.to_string()))?;
        Ok(picture.map(|yuv| {
            let (width, height) = yuv.dimensions();
            let (y_stride, _, _) = yuv.strides();
            let rows = y_stride * height;
            DecodedFrame {
                width,
                height,
                y: yuv.y()[..rows.min(yuv.y().len())].to_vec(),
                y_stride,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_or_nothing_never_a_panic() {
        let mut dec = H264Decoder::new().unwrap();
        let junk = [
            0u8, 0, 0, 1, 0x65, 0xff, 0x00, 0x12, 0x34, 0, 0, 1, 0x41, 9, 9,
        ];
        let result = dec.decode(&junk);
        assert!(matches!(result, Err(_) | Ok(None)));
        assert!(matches!(dec.decode(&[]), Err(_) | Ok(None)));
    }
}
