//! How an I420 picture is laid out in the encoder's input buffer: the driver may pad
//! rows (its `bytesperline`) and the plane height (hardware works in 16-row
//! macroblocks), so the planes are copied row by row to where it reads them.

use std::io;

use crate::media::yuv::I420Frame;

/// One-buffer I420 (`YU12`) as the driver answered `VIDIOC_S_FMT`: the Y plane of
/// `rows` rows of `bytes_per_line` bytes, then U and V at half of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputLayout {
    pub bytes_per_line: u32,
    pub rows: u32,
}

impl InputLayout {
    /// Tightly packed, as for a driver that pads nothing.
    pub fn packed(width: u32, height: u32) -> InputLayout {
        InputLayout {
            bytes_per_line: width,
            rows: height,
        }
    }

    /// Bytes one picture takes.
    pub fn size(&self) -> usize {
        let luma = self.bytes_per_line as usize * self.rows as usize;
        luma + 2 * (luma / 4)
    }

    /// The layout must hold a `width`×`height` picture with even strides.
    pub fn check(&self, width: u32, height: u32) -> anyhow::Result<()> {
        if self.bytes_per_line < width
            || self.rows < height
            || !self.bytes_per_line.is_multiple_of(2)
        {
            anyhow::bail!(
                "the device lays out {width}x{height} pictures as {} bytes by {} rows, \
                 which cannot hold them",
                self.bytes_per_line,
                self.rows
            );
        }
        Ok(())
    }

    /// Write `frame` into `buffer`; the bytes used.
    pub fn write(&self, frame: &I420Frame, buffer: &mut [u8]) -> io::Result<usize> {
        let size = self.size();
        if buffer.len() < size {
            return Err(io::Error::other(format!(
                "input buffer of {} bytes, a picture needs {size}",
                buffer.len()
            )));
        }
        let (w, h) = (frame.width, frame.height);
        let stride = self.bytes_per_line as usize;
        let luma = stride * self.rows as usize;
        let (y, chroma) = buffer[..size].split_at_mut(luma);
        let (u, v) = chroma.split_at_mut(luma / 4);
        copy_plane(&frame.y, w, h, y, stride);
        copy_plane(&frame.u, w / 2, h / 2, u, stride / 2);
        copy_plane(&frame.v, w / 2, h / 2, v, stride / 2);
        Ok(size)
    }

    /// Read a picture of `width`×`height` back out of `buffer` (what the device sees).
    pub fn read(&self, buffer: &[u8], width: usize, height: usize) -> Option<I420Frame> {
        let stride = self.bytes_per_line as usize;
        let luma = stride * self.rows as usize;
        if buffer.len() < self.size() || stride < width || (self.rows as usize) < height {
            return None;
        }
        let rows = |plane: &[u8], w: usize, h: usize, stride: usize| -> Vec<u8> {
            (0..h)
                .flat_map(|r| plane[r * stride..r * stride + w].iter().copied())
                .collect()
        };
        Some(I420Frame {
            width,
            height,
            y: rows(&buffer[..luma], width, height, stride),
            u: rows(&buffer[luma..], width / 2, height / 2, stride / 2),
            v: rows(
                &buffer[luma + luma / 4..],
                width / 2,
                height / 2,
                stride / 2,
            ),
        })
    }
}

/// Copy `h` rows of `w` bytes from a packed plane into one of `stride`; rows below the
/// picture repeat its last row, so padding encodes as nothing new.
fn copy_plane(src: &[u8], w: usize, h: usize, dst: &mut [u8], stride: usize) {
    if w == 0 || h == 0 {
        return;
    }
    for (r, row) in dst.chunks_exact_mut(stride).enumerate() {
        let from = r.min(h - 1) * w;
        if let Some(src_row) = src.get(from..from + w) {
            row[..w].copy_from_slice(src_row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(w: usize, h: usize) -> I420Frame {
        let mut f = I420Frame::new(w, h);
        f.y.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        f.u.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i * 3) as u8);
        f.v.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i * 7) as u8);
        f
    }

    #[test]
    fn padded_rows_and_planes_round_trip() {
        let frame = numbered(100, 58);
        let layout = InputLayout {
            bytes_per_line: 128,
            rows: 64,
        };
        layout.check(100, 58).unwrap();
        let mut buffer = vec![0; layout.size() + 10];
        assert_eq!(layout.write(&frame, &mut buffer).unwrap(), 128 * 64 * 3 / 2);
        let back = layout.read(&buffer, 100, 58).unwrap();
        assert_eq!((back.y, back.u, back.v), (frame.y, frame.u, frame.v));
    }

    #[test]
    fn a_buffer_or_layout_too_small_is_an_error_not_a_panic() {
        let frame = numbered(64, 48);
        let layout = InputLayout::packed(64, 48);
        let mut small = vec![0; layout.size() - 1];
        assert!(layout.write(&frame, &mut small).is_err());
        assert!(InputLayout::packed(62, 48).check(64, 48).is_err());
        assert!(InputLayout::packed(64, 46).check(64, 48).is_err());
    }
}
