//! Camera pictures (MJPEG, YUYV, NV12, YU12) → I420 for the H.264 encoder.
//!
//! Buffers come from a driver or a file and are checked, never trusted: a short buffer
//! or a broken JPEG is an error for that one picture, not a panic. Odd sizes lose their
//! last column or row, since 4:2:0 needs even ones.
//!
//! Range: JPEG carries full-range YCbCr (0–255), while V4L2's raw formats and the H.264
//! we send are limited range (luma 16–235, chroma 16–240). Decoded JPEG samples are
//! therefore compressed into the limited range; without that, pictures would look too
//! contrasty and too saturated in every player.

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::device::{Negotiated, PixelFormat};
use crate::media::limits::{self, MAX_SIDE};
use crate::source::pattern::I420Frame;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{format} buffer of {got} bytes is too short for {width}x{height} (needs {need})")]
    Truncated {
        format: PixelFormat,
        width: u32,
        height: u32,
        need: usize,
        got: usize,
    },
    #[error("broken JPEG picture: {0}")]
    Jpeg(String),
    #[error(
        "picture size {0}x{1} is not usable ({min}x{min} up to {max}x{max})",
        min = limits::MIN_SIDE,
        max = MAX_SIDE
    )]
    BadSize(u32, u32),
    #[error("H.264 pictures are not converted")]
    Compressed,
}

/// Converts one camera picture at a time, keeping its scratch memory between pictures.
pub struct Converter {
    /// Interleaved full-range YCbCr from the JPEG decoder.
    jpeg_pixels: Vec<u8>,
    luma_to_limited: [u8; 256],
    chroma_to_limited: [u8; 256],
}

impl Default for Converter {
    fn default() -> Self {
        Converter::new()
    }
}

impl Converter {
    pub fn new() -> Converter {
        let mut luma_to_limited = [0u8; 256];
        let mut chroma_to_limited = [0u8; 256];
        for v in 0..256usize {
            luma_to_limited[v] = (16 + (v * 219 + 127) / 255) as u8;
            let c = (v as i32 - 128) * 224;
            chroma_to_limited[v] = (128 + (c + c.signum() * 127) / 255) as u8;
        }
        Converter {
            jpeg_pixels: Vec::new(),
            luma_to_limited,
            chroma_to_limited,
        }
    }

    /// Convert `data` (one buffer in the negotiated format) into `out`, which is resized
    /// to the picture's even size.
    pub fn to_i420(
        &mut self,
        negotiated: &Negotiated,
        data: &[u8],
        out: &mut I420Frame,
    ) -> Result<(), ConvertError> {
        let (w, h) = (negotiated.width, negotiated.height);
        match negotiated.format {
            PixelFormat::H264 => Err(ConvertError::Compressed),
            PixelFormat::Mjpeg => self.jpeg_to_i420(data, out),
            PixelFormat::Yuyv => {
                let stride = (negotiated.stride as usize).max(w as usize * 2);
                check_len(negotiated, data, stride * h as usize)?;
                resize(out, w, h)?;
                yuyv_to_i420(data, stride, out);
                Ok(())
            }
            PixelFormat::Nv12 | PixelFormat::Yu12 => {
                let stride = (negotiated.stride as usize).max(w as usize);
                check_len(negotiated, data, stride * h as usize * 3 / 2)?;
                resize(out, w, h)?;
                if negotiated.format == PixelFormat::Nv12 {
                    nv12_to_i420(data, stride, h as usize, out);
                } else {
                    yu12_to_i420(data, stride, h as usize, out);
                }
                Ok(())
            }
        }
    }

    fn jpeg_to_i420(&mut self, data: &[u8], out: &mut I420Frame) -> Result<(), ConvertError> {
        let options = DecoderOptions::default()
            .set_max_width(MAX_SIDE as usize)
            .set_max_height(MAX_SIDE as usize)
            .jpeg_set_out_colorspace(ColorSpace::YCbCr);
        let mut decoder = JpegDecoder::new_with_options(ZCursor::new(data), options);
        decoder
            .decode_headers()
            .map_err(|e| ConvertError::Jpeg(e.to_string()))?;
        let info = decoder
            .info()
            .ok_or_else(|| ConvertError::Jpeg("no picture header".into()))?;
        let grey = decoder.input_colorspace() == Some(ColorSpace::Luma);
        if grey {
            decoder.set_options(options.jpeg_set_out_colorspace(ColorSpace::Luma));
        }
        let size = decoder
            .output_buffer_size()
            .ok_or_else(|| ConvertError::Jpeg("no picture size".into()))?;
        self.jpeg_pixels.resize(size, 0);
        decoder
            .decode_into(&mut self.jpeg_pixels)
            .map_err(|e| ConvertError::Jpeg(e.to_string()))?;
        let (w, h) = (u32::from(info.width), u32::from(info.height));
        resize(out, w, h)?;
        let components = if grey { 1 } else { 3 };
        self.full_range_to_i420(components, w as usize, out);
        Ok(())
    }

    /// `jpeg_pixels` (interleaved, `components` per pixel, `width` per row) → `out`.
    fn full_range_to_i420(&self, components: usize, width: usize, out: &mut I420Frame) {
        let (ow, oh) = (out.width, out.height);
        let row_bytes = width * components;
        let src = &self.jpeg_pixels;
        for y in 0..oh {
            let row = &src[y * row_bytes..][..ow * components];
            let dst = &mut out.y[y * ow..][..ow];
            for (d, px) in dst.iter_mut().zip(row.chunks_exact(components)) {
                *d = self.luma_to_limited[px[0] as usize];
            }
        }
        if components == 1 {
            out.u.fill(128);
            out.v.fill(128);
            return;
        }
        let cw = ow / 2;
        for cy in 0..oh / 2 {
            let top = &src[2 * cy * row_bytes..][..ow * 3];
            let bottom = &src[(2 * cy + 1) * row_bytes..][..ow * 3];
            for cx in 0..cw {
                let i = cx * 6;
                let cb = average4(top[i + 1], top[i + 4], bottom[i + 1], bottom[i + 4]);
                let cr = average4(top[i + 2], top[i + 5], bottom[i + 2], bottom[i + 5]);
                out.u[cy * cw + cx] = self.chroma_to_limited[cb as usize];
                out.v[cy * cw + cx] = self.chroma_to_limited[cr as usize];
            }
        }
    }
}

fn average4(a: u8, b: u8, c: u8, d: u8) -> u8 {
    ((u16::from(a) + u16::from(b) + u16::from(c) + u16::from(d) + 2) / 4) as u8
}

fn average2(a: u8, b: u8) -> u8 {
    (u16::from(a) + u16::from(b)).div_ceil(2) as u8
}

fn check_len(n: &Negotiated, data: &[u8], need: usize) -> Result<(), ConvertError> {
    if data.len() < need {
        return Err(ConvertError::Truncated {
            format: n.format,
            width: n.width,
            height: n.height,
            need,
            got: data.len(),
        });
    }
    Ok(())
}

/// Make `out` an even-sized picture of (about) `w`x`h`.
fn resize(out: &mut I420Frame, w: u32, h: u32) -> Result<(), ConvertError> {
    if !limits::side_in_range(w) || !limits::side_in_range(h) {
        return Err(ConvertError::BadSize(w, h));
    }
    let (w, h) = ((w & !1) as usize, (h & !1) as usize);
    if (out.width, out.height) != (w, h) {
        *out = I420Frame::new(w, h);
    }
    Ok(())
}

/// Packed Y0 U Y1 V (4:2:2) → I420; chroma of two lines is averaged.
fn yuyv_to_i420(data: &[u8], stride: usize, out: &mut I420Frame) {
    let (w, h) = (out.width, out.height);
    for y in 0..h {
        let row = &data[y * stride..][..w * 2];
        for (d, px) in out.y[y * w..][..w].iter_mut().zip(row.chunks_exact(2)) {
            *d = px[0];
        }
    }
    let cw = w / 2;
    for cy in 0..h / 2 {
        let top = &data[2 * cy * stride..][..w * 2];
        let bottom = &data[(2 * cy + 1) * stride..][..w * 2];
        for cx in 0..cw {
            let i = cx * 4;
            out.u[cy * cw + cx] = average2(top[i + 1], bottom[i + 1]);
            out.v[cy * cw + cx] = average2(top[i + 3], bottom[i + 3]);
        }
    }
}

/// Luma plane, then one plane of interleaved U V at half height, both `stride` wide.
fn nv12_to_i420(data: &[u8], stride: usize, rows: usize, out: &mut I420Frame) {
    let (w, h) = (out.width, out.height);
    copy_plane(data, stride, &mut out.y, w, h);
    let chroma = &data[stride * rows..];
    let cw = w / 2;
    for cy in 0..h / 2 {
        let row = &chroma[cy * stride..][..cw * 2];
        for (cx, uv) in row.chunks_exact(2).enumerate() {
            out.u[cy * cw + cx] = uv[0];
            out.v[cy * cw + cx] = uv[1];
        }
    }
}

/// Luma plane `stride` wide, then U and V planes half as wide and high.
fn yu12_to_i420(data: &[u8], stride: usize, rows: usize, out: &mut I420Frame) {
    let (w, h) = (out.width, out.height);
    copy_plane(data, stride, &mut out.y, w, h);
    let cstride = stride / 2;
    let crows = rows / 2;
    let u = &data[stride * rows..];
    let v = &u[cstride * crows..];
    copy_plane(u, cstride, &mut out.u, w / 2, h / 2);
    copy_plane(v, cstride, &mut out.v, w / 2, h / 2);
}

fn copy_plane(src: &[u8], stride: usize, dst: &mut [u8], w: usize, h: usize) {
    for y in 0..h {
        dst[y * w..][..w].copy_from_slice(&src[y * stride..][..w]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiated(format: PixelFormat, width: u32, height: u32, stride: u32) -> Negotiated {
        Negotiated {
            format,
            width,
            height,
            stride,
            fps: None,
        }
    }

    #[test]
    fn yuyv_keeps_luma_and_averages_chroma_over_two_lines() {
        // 16x16 with stride padding; each pixel pair's luma is its x, chroma by line.
        let (w, h, stride) = (16usize, 16usize, 40usize);
        let mut data = vec![0xEEu8; stride * h];
        for y in 0..h {
            for x in 0..w / 2 {
                let p = &mut data[y * stride + x * 4..][..4];
                p.copy_from_slice(&[(2 * x) as u8, 100 + y as u8, (2 * x + 1) as u8, 50]);
            }
        }
        let mut out = I420Frame::new(2, 2);
        Converter::new()
            .to_i420(
                &negotiated(PixelFormat::Yuyv, 16, 16, stride as u32),
                &data,
                &mut out,
            )
            .unwrap();
        assert_eq!((out.width, out.height), (16, 16));
        assert_eq!(&out.y[..4], &[0, 1, 2, 3]);
        assert_eq!(out.y[15 * 16 + 15], 15);
        // Lines 2 and 3: (102 + 103) / 2 rounded up.
        assert_eq!(out.u[8], 103);
        assert!(out.v.iter().all(|&v| v == 50));
    }

    #[test]
    fn nv12_and_yu12_split_their_chroma() {
        let (w, h) = (16usize, 16usize);
        let mut nv12 = vec![7u8; w * h];
        for _ in 0..w * h / 4 {
            nv12.extend_from_slice(&[90, 160]);
        }
        let mut out = I420Frame::new(w, h);
        let mut conv = Converter::new();
        conv.to_i420(&negotiated(PixelFormat::Nv12, 16, 16, 16), &nv12, &mut out)
            .unwrap();
        assert!(out.y.iter().all(|&v| v == 7));
        assert!(out.u.iter().all(|&v| v == 90));
        assert!(out.v.iter().all(|&v| v == 160));

        let mut yu12 = vec![9u8; w * h];
        yu12.extend(std::iter::repeat_n(60u8, w * h / 4));
        yu12.extend(std::iter::repeat_n(200u8, w * h / 4));
        conv.to_i420(&negotiated(PixelFormat::Yu12, 16, 16, 16), &yu12, &mut out)
            .unwrap();
        assert!(out.u.iter().all(|&v| v == 60));
        assert!(out.v.iter().all(|&v| v == 200));
    }

    #[test]
    fn short_buffers_and_broken_jpegs_are_errors() {
        let mut conv = Converter::new();
        let mut out = I420Frame::new(16, 16);
        let err = conv
            .to_i420(
                &negotiated(PixelFormat::Yuyv, 640, 480, 0),
                &[0; 1000],
                &mut out,
            )
            .unwrap_err();
        assert!(matches!(err, ConvertError::Truncated { need: 614400, .. }));
        let mjpeg = negotiated(PixelFormat::Mjpeg, 640, 480, 0);
        for junk in [
            &[][..],
            &[0xFF, 0xD8][..],
            &[0xFF, 0xD8, 0xFF, 0xC0, 0, 2][..],
        ] {
            assert!(matches!(
                conv.to_i420(&mjpeg, junk, &mut out),
                Err(ConvertError::Jpeg(_))
            ));
        }
        let huge = negotiated(PixelFormat::Yuyv, 8192, 16, 0);
        assert_eq!(
            conv.to_i420(&huge, &vec![0; 8192 * 32], &mut out),
            Err(ConvertError::BadSize(8192, 16))
        );
    }

    #[test]
    fn full_range_maps_onto_the_limited_range() {
        let conv = Converter::new();
        assert_eq!(conv.luma_to_limited[0], 16);
        assert_eq!(conv.luma_to_limited[255], 235);
        assert_eq!(conv.chroma_to_limited[128], 128);
        assert_eq!(conv.chroma_to_limited[0], 16);
        assert_eq!(conv.chroma_to_limited[255], 240);
    }
}
