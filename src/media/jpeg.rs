//! JPEG encoding of 4:2:0 pictures, for the MJPEG outputs (`/stream`, `/snapshot`).
//!
//! Pictures arrive in limited range (luma 16–235, chroma 16–240), as H.264 carries
//! them; JPEG (JFIF) is full range. Samples are expanded on the way into the encoder,
//! row by row, so a picture is never copied whole first.

use bytes::Bytes;
use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType};

use super::limits::{MAX_SIDE, MIN_SIDE};
use super::yuv::I420Frame;

/// µStreamer's default `--quality`.
pub const DEFAULT_QUALITY: u8 = 80;

/// A 4:2:0 picture seen in place: three planes, each with its own stride.
#[derive(Clone, Copy, Debug)]
pub struct Planes<'a> {
    pub width: usize,
    pub height: usize,
    pub y: &'a [u8],
    pub u: &'a [u8],
    pub v: &'a [u8],
    /// Bytes between rows of Y, U and V.
    pub strides: (usize, usize, usize),
}

impl<'a> Planes<'a> {
    /// The planes of a tightly packed I420 picture.
    pub fn of(frame: &'a I420Frame) -> Planes<'a> {
        Planes {
            width: frame.width,
            height: frame.height,
            y: &frame.y,
            u: &frame.u,
            v: &frame.v,
            strides: (frame.width, frame.width / 2, frame.width / 2),
        }
    }

    /// Whether every row the size promises is inside its plane.
    fn complete(&self) -> bool {
        let (ys, us, vs) = self.strides;
        let (cw, ch) = (self.width.div_ceil(2), self.height.div_ceil(2));
        let fits = |plane: &[u8], stride: usize, w: usize, h: usize| {
            stride >= w
                && h.checked_sub(1)
                    .is_none_or(|last| plane.len() >= last * stride + w)
        };
        fits(self.y, ys, self.width, self.height)
            && fits(self.u, us, cw, ch)
            && fits(self.v, vs, cw, ch)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JpegError {
    #[error(
        "picture size {0}x{1} cannot be encoded ({min}x{min} up to {max}x{max})",
        min = MIN_SIDE,
        max = MAX_SIDE
    )]
    BadSize(usize, usize),
    #[error("picture planes are shorter than its size")]
    Truncated,
    #[error("JPEG encoding failed: {0}")]
    Encoder(String),
}

/// Encodes pictures at one quality, reusing its output buffer's capacity.
pub struct JpegEncoder {
    quality: u8,
    luma: [u8; 256],
    chroma: [u8; 256],
    /// Size of the last picture, to allocate about right for the next.
    last_len: usize,
}

impl JpegEncoder {
    /// `quality` 1..=100 (clamped), as µStreamer's `--quality`.
    pub fn new(quality: u8) -> JpegEncoder {
        let mut luma = [0u8; 256];
        let mut chroma = [0u8; 256];
        for v in 0..256i32 {
            luma[v as usize] = ((v - 16) * 255 + 109).div_euclid(219).clamp(0, 255) as u8;
            let c = (v - 128) * 255;
            chroma[v as usize] = (128 + (c + c.signum() * 112) / 224).clamp(0, 255) as u8;
        }
        JpegEncoder {
            quality: quality.clamp(1, 100),
            luma,
            chroma,
            last_len: 0,
        }
    }

    pub fn quality(&self) -> u8 {
        self.quality
    }

    /// One baseline JPEG of `planes`.
    pub fn encode(&mut self, planes: Planes<'_>) -> Result<Bytes, JpegError> {
        let sides = [planes.width, planes.height];
        if !sides
            .iter()
            .all(|&s| (MIN_SIDE as usize..=MAX_SIDE as usize).contains(&s))
        {
            return Err(JpegError::BadSize(planes.width, planes.height));
        }
        if !planes.complete() {
            return Err(JpegError::Truncated);
        }
        let mut out = Vec::with_capacity(self.last_len + self.last_len / 4 + 1024);
        let encoder = Encoder::new(&mut out, self.quality);
        encoder
            .encode_image(FullRange {
                planes,
                luma: &self.luma,
                chroma: &self.chroma,
            })
            .map_err(|e| JpegError::Encoder(e.to_string()))?;
        self.last_len = out.len();
        Ok(Bytes::from(out))
    }
}

/// What the encoder reads: the planes, expanded to full range one row at a time.
struct FullRange<'a> {
    planes: Planes<'a>,
    luma: &'a [u8; 256],
    chroma: &'a [u8; 256],
}

impl ImageBuffer for FullRange<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        // Checked against MAX_SIDE before encoding.
        self.planes.width as u16
    }

    fn height(&self) -> u16 {
        self.planes.height as u16
    }

    fn fill_buffers(&self, row: u16, buffers: &mut [Vec<u8>; 4]) {
        let p = &self.planes;
        let row = usize::from(row);
        let (ys, us, vs) = p.strides;
        let y = &p.y[row * ys..][..p.width];
        let crow = row / 2;
        let u = &p.u[crow * us..];
        let v = &p.v[crow * vs..];
        buffers[0].extend(y.iter().map(|&s| self.luma[usize::from(s)]));
        // The encoder subsamples chroma again itself; each sample covers two columns.
        buffers[1].extend((0..p.width).map(|x| self.chroma[usize::from(u[x / 2])]));
        buffers[2].extend((0..p.width).map(|x| self.chroma[usize::from(v[x / 2])]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    use zune_jpeg::JpegDecoder;

    fn decode(jpeg: &[u8]) -> (usize, usize, Vec<u8>) {
        let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr);
        let mut d = JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
        let pixels = d.decode().expect("decodes");
        let info = d.info().unwrap();
        (info.width as usize, info.height as usize, pixels)
    }

    #[test]
    fn a_picture_decodes_at_its_size_in_full_range() {
        let mut frame = I420Frame::new(64, 48);
        // Left half limited-range white, right half black.
        for row in frame.y.chunks_mut(64) {
            row[..32].fill(235);
        }
        let mut enc = JpegEncoder::new(90);
        let jpeg = enc.encode(Planes::of(&frame)).unwrap();
        assert!(jpeg.starts_with(&[0xff, 0xd8]) && jpeg.ends_with(&[0xff, 0xd9]));
        let (w, h, pixels) = decode(&jpeg);
        assert_eq!((w, h), (64, 48));
        let luma_at = |x: usize, y: usize| pixels[(y * w + x) * 3];
        assert!(
            luma_at(8, 24) >= 250,
            "white is 255, got {}",
            luma_at(8, 24)
        );
        assert!(luma_at(56, 24) <= 5, "black is 0, got {}", luma_at(56, 24));
        let cb = pixels[(24 * w + 8) * 3 + 1];
        assert!(
            (125..=131).contains(&cb),
            "grey has neutral chroma, got {cb}"
        );
    }

    #[test]
    fn strided_planes_and_odd_sizes_encode() {
        let (w, h) = (35, 21);
        let y = vec![128u8; 40 * h];
        let c = vec![128u8; 20 * h.div_ceil(2)];
        let planes = Planes {
            width: w,
            height: h,
            y: &y,
            u: &c,
            v: &c,
            strides: (40, 20, 20),
        };
        let jpeg = JpegEncoder::new(80).encode(planes).unwrap();
        let (dw, dh, _) = decode(&jpeg);
        assert_eq!((dw, dh), (w, h));
    }

    #[test]
    fn short_planes_and_bad_sizes_are_errors_not_panics() {
        let frame = I420Frame::new(32, 32);
        let mut short = Planes::of(&frame);
        short.y = &frame.y[..100];
        let mut enc = JpegEncoder::new(80);
        assert!(matches!(enc.encode(short), Err(JpegError::Truncated)));
        let mut tiny = Planes::of(&frame);
        tiny.width = 8;
        assert!(matches!(enc.encode(tiny), Err(JpegError::BadSize(8, 32))));
        let mut narrow_stride = Planes::of(&frame);
        narrow_stride.strides.0 = 16;
        assert!(matches!(
            enc.encode(narrow_stride),
            Err(JpegError::Truncated)
        ));
    }

    #[test]
    fn quality_is_clamped_and_higher_quality_is_larger() {
        assert_eq!(JpegEncoder::new(0).quality(), 1);
        assert_eq!(JpegEncoder::new(200).quality(), 100);
        let mut frame = I420Frame::new(64, 64);
        for (i, s) in frame.y.iter_mut().enumerate() {
            *s = (16 + (i * 7919) % 219) as u8;
        }
        let low = JpegEncoder::new(10).encode(Planes::of(&frame)).unwrap();
        let high = JpegEncoder::new(95).encode(Planes::of(&frame)).unwrap();
        assert!(high.len() > low.len());
    }
}
