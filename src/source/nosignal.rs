//! The "NO SIGNAL" picture shown to viewers while a source is gone, so their players
//! keep a live stream (and stay connected) until the real video returns.

use super::pattern::{draw_text, I420Frame, GLYPH_ADVANCE, GLYPH_H};
use crate::media::encoder::H264Encoder;
use crate::media::Picture;
use crate::media::VideoSettings;

/// Pictures per second while there is no signal: enough to show the page is alive,
/// cheap enough to cost nothing.
pub const NO_SIGNAL_FPS: u32 = 5;

const BACKGROUND: u8 = 40;
const TEXT: u8 = 200;
const NEUTRAL: u8 = 128;

/// Draw "NO SIGNAL" in large letters on a dark grey picture. Sizes are made even.
pub fn draw(width: u32, height: u32) -> I420Frame {
    let (w, h) = (
        (width & !1).max(16) as usize,
        (height & !1).max(16) as usize,
    );
    let mut frame = I420Frame {
        width: w,
        height: h,
        y: vec![BACKGROUND; w * h],
        u: vec![NEUTRAL; (w / 2) * (h / 2)],
        v: vec![NEUTRAL; (w / 2) * (h / 2)],
    };
    const TEXT_STR: &[u8] = b"NO SIGNAL";
    let columns = TEXT_STR.len() * GLYPH_ADVANCE - 1;
    // The text spans about 60% of the width, and never more than a third of the height.
    let scale = (w * 6 / 10 / columns).min(h / 3 / GLYPH_H).max(1);
    let x0 = w.saturating_sub(columns * scale) / 2;
    let y0 = h.saturating_sub(GLYPH_H * scale) / 2;
    draw_text(&mut frame, TEXT_STR, x0, y0, scale, TEXT);
    frame
}

/// Encodes the NO SIGNAL picture at a given size; re-created when the size changes.
pub struct NoSignal {
    frame: I420Frame,
    encoder: H264Encoder,
}

impl NoSignal {
    pub fn new(width: u32, height: u32) -> anyhow::Result<NoSignal> {
        let frame = draw(width, height);
        let encoder = H264Encoder::new(&VideoSettings {
            width: frame.width as u32,
            height: frame.height as u32,
            fps: NO_SIGNAL_FPS,
            bitrate_kbps: 300,
            gop: NO_SIGNAL_FPS * 2,
        })?;
        Ok(NoSignal { frame, encoder })
    }

    pub fn size(&self) -> (u32, u32) {
        (self.frame.width as u32, self.frame.height as u32)
    }

    /// Encode the next picture, stamped `now_us`; `key` forces an IDR (the first after
    /// live video must be one). The picture is marked a placeholder.
    pub fn encode(&mut self, key: bool, now_us: u64) -> anyhow::Result<Option<Picture>> {
        if key {
            self.encoder.force_keyframe();
        }
        let picture = self.encoder.encode(&self.frame, now_us)?;
        Ok(picture.map(|p| Picture {
            placeholder: true,
            ..p
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264;
    use crate::viewer::decoder::H264Decoder;

    #[test]
    fn encodes_a_decodable_picture_with_the_text() {
        let mut ns = NoSignal::new(640, 360).unwrap();
        let mut decoder = H264Decoder::new().unwrap();
        let first = ns.encode(true, 0).unwrap().expect("a picture");
        assert!(first.key);
        let sps = h264::nal_units(&first.data)
            .find(|n| h264::nal_type(n) == Some(h264::NalType::Sps))
            .unwrap();
        let info = h264::parse_sps(sps).unwrap();
        assert_eq!((info.width, info.height), (640, 360));
        let frame = decoder.decode(&first.data).unwrap().expect("decoded");
        // The middle row of the letters has bright pixels, the corners stay dark.
        let row = 180 * frame.y_stride;
        let bright = frame.y[row..row + 640].iter().filter(|&&v| v > 150).count();
        assert!(bright > 50, "{bright} bright pixels across the text");
        assert!(frame.y[0] < 60 && frame.y[row + 5] < 60);
        let next = ns.encode(false, 200_000).unwrap().expect("a picture");
        assert!(!next.key);
        assert!(decoder.decode(&next.data).unwrap().is_some());
    }

    #[test]
    fn odd_and_tiny_sizes_are_made_encodable() {
        let ns = NoSignal::new(175, 9).unwrap();
        assert_eq!(ns.size(), (174, 16));
    }
}
