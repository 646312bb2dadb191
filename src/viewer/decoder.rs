//! H.264 decoding with openh264, for checking what the encoders and outputs carry (tests,
//! load generators). Only the luma plane is kept: it is what measurements read.

use openh264::decoder::{DecodedYUV, Decoder};
use openh264::formats::YUVSource;

use crate::media::yuv::I420Frame;

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
        Ok(self.decode_yuv(annexb)?.map(|yuv| {
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

impl H264Decoder {
    fn decode_yuv(&mut self, annexb: &[u8]) -> Result<Option<DecodedYUV<'_>>, DecodeError> {
        self.inner
            .decode(annexb)
            .map_err(|e| DecodeError(e.to_string()))
    }

    /// Like [`H264Decoder::decode`], with the chroma planes too (for picture
    /// comparisons; measurements need only luma).
    pub fn decode_planes(&mut self, annexb: &[u8]) -> Result<Option<I420Frame>, DecodeError> {
        Ok(self.decode_yuv(annexb)?.map(|yuv| {
            let (width, height) = yuv.dimensions();
            let (ys, us, vs) = yuv.strides();
            let plane = |data: &[u8], stride: usize, w: usize, h: usize| {
                let mut out = Vec::with_capacity(w * h);
                for row in data.chunks(stride).take(h) {
                    out.extend_from_slice(&row[..w.min(row.len())]);
                }
                out
            };
            I420Frame {
                width,
                height,
                y: plane(yuv.y(), ys, width, height),
                u: plane(yuv.u(), us, width / 2, height / 2),
                v: plane(yuv.v(), vs, width / 2, height / 2),
            }
        }))
    }
}

/// Peak signal-to-noise ratio of two 8-bit planes of equal size, in dB (capped at 99
/// for identical planes). The usual measure of how close a coded picture is to its
/// source: about 30 dB and up is hard to tell apart by eye.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    let sum: u64 = a[..n]
        .iter()
        .zip(&b[..n])
        .map(|(&x, &y)| {
            let d = i64::from(x) - i64::from(y);
            (d * d) as u64
        })
        .sum();
    if sum == 0 {
        return 99.0;
    }
    let mse = sum as f64 / n as f64;
    (10.0 * (255.0 * 255.0 / mse).log10()).min(99.0)
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
