//! The test pattern: an I420 picture that makes motion, frame loss and latency visible to
//! people and measurable by machines.
//!
//! * Colour bars as a static background (drawn once, copied per frame).
//! * A vertical bar sweeping across and a box bouncing around, both moving a fixed step
//!   per frame, so a lost or repeated frame shows as a jump or a stall.
//! * The frame counter and the capture wall-clock time (UTC, `HH:MM:SS.mmm`) in a small
//!   built-in bitmap font.
//! * A machine-readable code strip in the top-left corner; see [`read_code_strip`] for
//!   its exact layout.
//!
//! Everything is drawn with slice fills and copies, never per-pixel arithmetic, so a
//! 1280x720 picture costs little more than copying it.

/// Side of one code strip block in pixels; blocks sit on the 16x16 macroblock grid, so
/// each is coded as one flat macroblock and survives heavy quantisation.
pub const CODE_BLOCK: usize = 16;
/// Blocks per code strip row: a white start block, 16 data blocks, a black end block.
pub const CODE_COLUMNS: usize = 18;
/// Code strip rows; 6 rows of 16 data bits carry 96 bits.
pub const CODE_ROWS: usize = 6;
/// Width of the code strip in pixels (288).
pub const CODE_WIDTH: usize = CODE_BLOCK * CODE_COLUMNS;
/// Height of the code strip in pixels (96).
pub const CODE_HEIGHT: usize = CODE_BLOCK * CODE_ROWS;

use crate::media::limits;
use crate::media::yuv::{BLACK, NEUTRAL};

/// Video-range luma of white.
const WHITE: u8 = 235;
/// A block reads as 1 when the mean luma of its centre reaches this.
const THRESHOLD: u32 = 128;

pub use crate::media::yuv::I420Frame;

// Drawing helpers; the picture type itself is shared with the camera path and decoder.
impl I420Frame {
    /// Fill a rectangle (luma coordinates, clipped to the picture) with one colour.
    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, (ly, lu, lv): (u8, u8, u8)) {
        fill_plane(&mut self.y, self.width, self.height, x, y, w, h, ly);
        self.fill_chroma(x, y, w, h, lu, lv);
    }

    fn fill_luma(&mut self, x: usize, y: usize, w: usize, h: usize, value: u8) {
        fill_plane(&mut self.y, self.width, self.height, x, y, w, h, value);
    }

    fn fill_chroma(&mut self, x: usize, y: usize, w: usize, h: usize, u: u8, v: u8) {
        let (cw, ch) = (self.width / 2, self.height / 2);
        let (cx, cy, cwid, chei) = (x / 2, y / 2, w.div_ceil(2), h.div_ceil(2));
        fill_plane(&mut self.u, cw, ch, cx, cy, cwid, chei, u);
        fill_plane(&mut self.v, cw, ch, cx, cy, cwid, chei, v);
    }

    fn copy_from(&mut self, other: &I420Frame) {
        self.y.copy_from_slice(&other.y);
        self.u.copy_from_slice(&other.u);
        self.v.copy_from_slice(&other.v);
    }
}

#[allow(clippy::too_many_arguments)]
fn fill_plane(
    plane: &mut [u8],
    stride: usize,
    rows: usize,
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    value: u8,
) {
    let x_end = (x + w).min(stride);
    let y_end = (y + h).min(rows);
    if x >= x_end {
        return;
    }
    for row in y.min(y_end)..y_end {
        plane[row * stride + x..row * stride + x_end].fill(value);
    }
}

/// The picture size cannot carry the pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "test pattern size must be even and within {min}x{min}..={max}x{max}, got {0}x{1}",
    min = limits::MIN_SIDE,
    max = limits::MAX_SIDE
)]
pub struct BadSize(pub u32, pub u32);

/// 75% colour bars (white, yellow, cyan, green, magenta, red, blue) as BT.601 YUV.
const BARS: [(u8, u8, u8); 7] = [
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
];

/// Draws successive pictures of the pattern into one reused buffer.
pub struct TestPattern {
    background: I420Frame,
    frame: I420Frame,
    has_code_strip: bool,
    text_scale: usize,
    text_x: usize,
    text_y: usize,
    /// First line below the code strip and text: where things move.
    motion_top: usize,
}

/// Text margin around the lines, in font pixels.
const TEXT_PAD: usize = 2;
/// Characters in the longer text line ("HH:MM:SS.mmm").
const TEXT_COLUMNS: usize = 12;

impl TestPattern {
    pub fn new(width: u32, height: u32) -> Result<TestPattern, BadSize> {
        if !limits::encodable_size(width, height) {
            return Err(BadSize(width, height));
        }
        let (w, h) = (width as usize, height as usize);
        let has_code_strip = w >= CODE_WIDTH && h >= CODE_HEIGHT;
        let strip_bottom = if has_code_strip { CODE_HEIGHT } else { 0 };
        // Two text lines of 9 font rows each, plus padding, in about an eighth of the height.
        let text_scale = (h / 90)
            .min(w / (GLYPH_ADVANCE * (TEXT_COLUMNS + 2 * TEXT_PAD)))
            .clamp(1, 8);
        let text_x = 0;
        let text_y = strip_bottom;
        let text_w = (GLYPH_ADVANCE * TEXT_COLUMNS + 2 * TEXT_PAD) * text_scale;
        let text_h = (2 * LINE_ADVANCE + 2 * TEXT_PAD) * text_scale;
        let motion_top = (text_y + text_h).min(h);

        let mut background = I420Frame::new(w, h);
        let bar_w = w.div_ceil(BARS.len());
        for (i, &colour) in BARS.iter().enumerate() {
            background.fill(i * bar_w, 0, bar_w, h, colour);
        }
        background.fill(
            0,
            0,
            CODE_WIDTH.min(w),
            strip_bottom,
            (BLACK, NEUTRAL, NEUTRAL),
        );
        background.fill(text_x, text_y, text_w, text_h, (BLACK, NEUTRAL, NEUTRAL));

        Ok(TestPattern {
            frame: background.clone(),
            background,
            has_code_strip,
            text_scale,
            text_x: text_x + TEXT_PAD * text_scale,
            text_y: text_y + TEXT_PAD * text_scale,
            motion_top,
        })
    }

    /// Draw picture number `counter`, captured at `wall_ms` (ms since the Unix epoch).
    pub fn draw(&mut self, counter: u32, wall_ms: u64) -> &I420Frame {
        self.frame.copy_from(&self.background);
        self.draw_motion(counter);
        self.draw_text(counter, wall_ms);
        if self.has_code_strip {
            draw_code_strip(&mut self.frame, counter, wall_ms);
        }
        &self.frame
    }

    fn draw_motion(&mut self, counter: u32) {
        let (w, h) = (self.frame.width, self.frame.height);
        let top = self.motion_top;
        let area_h = h - top;
        if area_h < 4 {
            return;
        }
        // Sweeping bar: crosses the picture in 120 frames.
        let bar_w = (w / 80).max(4) & !1;
        let step = (w / 120).max(2);
        let x = (counter as usize * step) % w;
        self.frame
            .fill(x & !1, top, bar_w, area_h, (BLACK, NEUTRAL, NEUTRAL));

        // Bouncing box: a white square with a black border, moving diagonally.
        let side = ((area_h / 2).min(w / 4).max(4)) & !1;
        let bx = triangle(counter as usize * step, w.saturating_sub(side));
        let by = top + triangle(counter as usize * step / 2, area_h.saturating_sub(side));
        self.frame
            .fill(bx, by, side, side, (BLACK, NEUTRAL, NEUTRAL));
        let border = (side / 8).max(2);
        self.frame.fill(
            bx + border,
            by + border,
            side - 2 * border,
            side - 2 * border,
            (WHITE, NEUTRAL, NEUTRAL),
        );
    }

    fn draw_text(&mut self, counter: u32, wall_ms: u64) {
        let mut line = [0u8; TEXT_COLUMNS];
        let digits = format_counter(counter, &mut line);
        self.draw_line(&line[..digits], 0);
        self.draw_line(&format_clock(wall_ms), 1);
    }

    fn draw_line(&mut self, text: &[u8], line: usize) {
        let s = self.text_scale;
        let y0 = self.text_y + line * LINE_ADVANCE * s;
        draw_text(&mut self.frame, text, self.text_x, y0, s, WHITE);
    }
}

/// Draw `text` in the built-in 5x7 font with its top-left corner at (`x0`, `y0`), each
/// font pixel `scale` luma pixels wide and high, clipped to the picture. Characters the
/// font lacks are left blank.
pub fn draw_text(frame: &mut I420Frame, text: &[u8], x0: usize, y0: usize, scale: usize, luma: u8) {
    for (i, &c) in text.iter().enumerate() {
        let x = x0 + i * GLYPH_ADVANCE * scale;
        for (row, bits) in glyph(c).iter().enumerate() {
            // Fill each horizontal run of set bits with one slice fill per line.
            let mut col = 0;
            while col < GLYPH_W {
                if bits & (1 << (GLYPH_W - 1 - col)) == 0 {
                    col += 1;
                    continue;
                }
                let start = col;
                while col < GLYPH_W && bits & (1 << (GLYPH_W - 1 - col)) != 0 {
                    col += 1;
                }
                frame.fill_luma(
                    x + start * scale,
                    y0 + row * scale,
                    (col - start) * scale,
                    scale,
                    luma,
                );
            }
        }
    }
}

/// 0, 1, .. max, max-1, .. 0, .. for a growing `t`.
fn triangle(t: usize, max: usize) -> usize {
    if max == 0 {
        return 0;
    }
    let phase = t % (2 * max);
    if phase <= max {
        phase
    } else {
        2 * max - phase
    }
}

/// The counter as at least 8 decimal digits; returns how many bytes were written.
fn format_counter(counter: u32, out: &mut [u8; TEXT_COLUMNS]) -> usize {
    let mut digits = [0u8; 10];
    let mut n = counter;
    let mut len = 0;
    while len < 8 || n > 0 {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
    }
    for i in 0..len {
        out[i] = digits[len - 1 - i];
    }
    len
}

/// `HH:MM:SS.mmm` (UTC) of a time in ms since the Unix epoch.
fn format_clock(wall_ms: u64) -> [u8; TEXT_COLUMNS] {
    let ms = wall_ms % 1000;
    let secs = wall_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let d = |v: u64| b'0' + v as u8;
    [
        d(h / 10),
        d(h % 10),
        b':',
        d(m / 10),
        d(m % 10),
        b':',
        d(s / 10),
        d(s % 10),
        b'.',
        d(ms / 100),
        d(ms / 10 % 10),
        d(ms % 10),
    ]
}

const GLYPH_W: usize = 5;
/// Height of a glyph in font pixels.
pub const GLYPH_H: usize = 7;
/// Horizontal distance between characters, in font pixels (glyph + 1 column gap).
pub const GLYPH_ADVANCE: usize = GLYPH_W + 1;
/// Vertical distance between lines, in font pixels (7 rows + 2 rows gap).
const LINE_ADVANCE: usize = 9;

/// A 5x7 glyph: one byte per row, top first, the low 5 bits left to right.
fn glyph(c: u8) -> [u8; 7] {
    match c {
        b'0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        b'1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        b'2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        b'3' => [0x1e, 0x01, 0x01, 0x0e, 0x01, 0x01, 0x1e],
        b'4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        b'5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        b'6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        b'7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        b'8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        b'9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        b':' => [0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00],
        b'.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c],
        // The letters of "NO SIGNAL".
        b'A' => [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        b'G' => [0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f],
        b'I' => [0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e],
        b'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f],
        b'N' => [0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x11],
        b'O' => [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        b'S' => [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e],
        _ => [0; 7],
    }
}

/// The 96 code strip bits: frame counter, capture time, CRC, most significant bit first.
fn code_bits(counter: u32, wall_ms: u64) -> [bool; 96] {
    let payload = code_payload(counter, wall_ms);
    let crc = crc16_ccitt(&payload);
    let mut bytes = [0u8; 12];
    bytes[..10].copy_from_slice(&payload);
    bytes[10..].copy_from_slice(&crc.to_be_bytes());
    let mut bits = [false; 96];
    for (i, bit) in bits.iter_mut().enumerate() {
        *bit = bytes[i / 8] & (0x80 >> (i % 8)) != 0;
    }
    bits
}

fn code_payload(counter: u32, wall_ms: u64) -> [u8; 10] {
    let mut payload = [0u8; 10];
    payload[..4].copy_from_slice(&counter.to_be_bytes());
    payload[4..].copy_from_slice(&wall_ms.to_be_bytes()[2..]);
    payload
}

/// CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR.
pub fn crc16_ccitt(data: &[u8]) -> u16 {
    let mut crc = 0xffffu16;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn draw_code_strip(frame: &mut I420Frame, counter: u32, wall_ms: u64) {
    let bits = code_bits(counter, wall_ms);
    let mut line = [BLACK; CODE_WIDTH];
    for row in 0..CODE_ROWS {
        for col in 0..CODE_COLUMNS {
            let white = match col {
                0 => true,
                c if c == CODE_COLUMNS - 1 => false,
                c => bits[row * 16 + c - 1],
            };
            line[col * CODE_BLOCK..(col + 1) * CODE_BLOCK].fill(if white { WHITE } else { BLACK });
        }
        for y in row * CODE_BLOCK..(row + 1) * CODE_BLOCK {
            let start = y * frame.width;
            frame.y[start..start + CODE_WIDTH].copy_from_slice(&line);
        }
    }
}

/// Read the frame counter and capture time (ms since the Unix epoch) back from a luma
/// plane (`y`, rows `stride` bytes apart) of a picture carrying the code strip.
///
/// Layout, in luma pixels of the picture as encoded (no scaling):
///
/// * The strip is a grid of 16x16 blocks with its top-left corner at (0, 0): 18 columns
///   by 6 rows, 288x96 pixels. A block is white (luma 235) for 1, black (16) for 0; the
///   chroma under the strip is neutral, so in RGB a block is plain white or black.
/// * Column 0 of every row is white and column 17 black (start and end guards).
/// * Columns 1..=16 of row `r` carry bits `16r .. 16r+15`, most significant first, so
///   bit `k` sits in row `k / 16`, column `1 + k % 16`.
/// * The 96 bits are 12 bytes, each most significant bit first:
///   bytes 0..4 the frame counter (u32, big-endian), bytes 4..10 the capture time in ms
///   since the Unix epoch (48-bit, big-endian), bytes 10..12 the CRC-16/CCITT-FALSE
///   (polynomial 0x1021, initial 0xFFFF, no reflection, no final XOR) of bytes 0..10,
///   big-endian.
/// * To read a block, average the luma (or (R+G+B)/3) of its central 8x8 pixels
///   (block origin + 4 .. + 12 in both directions) and compare with 128: at or above is 1.
///
/// Returns `None` when the picture is smaller than the strip, a guard block is wrong or
/// the CRC does not match.
pub fn read_code_strip(y: &[u8], stride: usize, width: usize, height: usize) -> Option<(u32, u64)> {
    if width < CODE_WIDTH || height < CODE_HEIGHT || stride < width {
        return None;
    }
    // Checked: the stride comes from a decoder and may be anything.
    let needed = (CODE_HEIGHT - 1)
        .checked_mul(stride)
        .and_then(|n| n.checked_add(CODE_WIDTH))?;
    if y.len() < needed {
        return None;
    }
    let block_is_white = |row: usize, col: usize| {
        let x0 = col * CODE_BLOCK + 4;
        let y0 = row * CODE_BLOCK + 4;
        let sum: u32 = (y0..y0 + 8)
            .map(|yy| {
                y[yy * stride + x0..yy * stride + x0 + 8]
                    .iter()
                    .map(|&p| u32::from(p))
                    .sum::<u32>()
            })
            .sum();
        sum / 64 >= THRESHOLD
    };
    let mut bytes = [0u8; 12];
    for row in 0..CODE_ROWS {
        if !block_is_white(row, 0) || block_is_white(row, CODE_COLUMNS - 1) {
            return None;
        }
        for bit in 0..16 {
            if block_is_white(row, 1 + bit) {
                let k = row * 16 + bit;
                bytes[k / 8] |= 0x80 >> (k % 8);
            }
        }
    }
    let crc = u16::from_be_bytes([bytes[10], bytes[11]]);
    if crc16_ccitt(&bytes[..10]) != crc {
        return None;
    }
    let counter = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&bytes[4..10]);
    Some((counter, u64::from_be_bytes(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_760_000_123_456;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc16_ccitt(b"123456789"), 0x29b1);
    }

    #[test]
    fn code_strip_round_trips_on_raw_pictures() {
        for (w, h) in [(320, 240), (1280, 720), (288, 96)] {
            let mut pattern = TestPattern::new(w, h).unwrap();
            for counter in [0, 1, 12345, u32::MAX] {
                let frame = pattern.draw(counter, NOW_MS + u64::from(counter));
                let got = read_code_strip(&frame.y, frame.width, frame.width, frame.height);
                assert_eq!(got, Some((counter, NOW_MS + u64::from(counter))), "{w}x{h}");
            }
        }
    }

    #[test]
    fn reader_honours_stride() {
        let mut pattern = TestPattern::new(320, 240).unwrap();
        let frame = pattern.draw(77, NOW_MS);
        let stride = 352;
        let mut padded = vec![0u8; stride * 240];
        for row in 0..240 {
            padded[row * stride..row * stride + 320].copy_from_slice(&frame.y[row * 320..][..320]);
        }
        assert_eq!(
            read_code_strip(&padded, stride, 320, 240),
            Some((77, NOW_MS))
        );
    }

    #[test]
    fn reader_rejects_pictures_without_a_valid_strip() {
        let mut pattern = TestPattern::new(320, 240).unwrap();
        let frame = pattern.draw(5, NOW_MS).clone();
        // Too small, or a plane shorter than claimed.
        assert_eq!(read_code_strip(&frame.y, 320, 256, 240), None);
        assert_eq!(read_code_strip(&frame.y[..1000], 320, 320, 240), None);
        // A flipped data block breaks the CRC.
        let mut y = frame.y.clone();
        for row in 16..32 {
            for px in &mut y[row * 320 + 16 * 3..row * 320 + 16 * 4] {
                *px = 255 - *px;
            }
        }
        assert_eq!(read_code_strip(&y, 320, 320, 240), None);
        // Plain black is no strip at all.
        assert_eq!(
            read_code_strip(&vec![BLACK; 320 * 240], 320, 320, 240),
            None
        );
    }

    #[test]
    fn absurd_strides_are_rejected_not_overflowed() {
        // Found by fuzzing: 95 * stride overflowed before the plane length was checked.
        let y = vec![BLACK; 320 * 240];
        let crashing_stride = 0xeb00usize.wrapping_mul(1 << 48);
        for stride in [crashing_stride, usize::MAX, usize::MAX / 95 + 1] {
            assert_eq!(read_code_strip(&y, stride, 290, 288), None);
        }
    }

    #[test]
    fn small_pictures_draw_without_a_strip() {
        let mut pattern = TestPattern::new(16, 16).unwrap();
        let frame = pattern.draw(3, NOW_MS);
        assert_eq!((frame.y.len(), frame.u.len()), (256, 64));
        assert!(TestPattern::new(15, 16).is_err());
        assert!(TestPattern::new(0, 0).is_err());
    }

    #[test]
    fn motion_changes_the_picture_every_frame() {
        let mut pattern = TestPattern::new(320, 240).unwrap();
        let a = pattern.draw(10, NOW_MS).y.clone();
        let b = pattern.draw(11, NOW_MS).y.clone();
        // Below the strip and the text, so only moving elements differ.
        let top = pattern.motion_top * 320;
        assert_ne!(a[top..], b[top..]);
    }

    #[test]
    fn clock_text_is_utc() {
        // 1760000123456 ms = 2025-10-09T08:55:23.456Z
        assert_eq!(&format_clock(NOW_MS), b"08:55:23.456");
        let mut out = [0u8; TEXT_COLUMNS];
        let n = format_counter(42, &mut out);
        assert_eq!(&out[..n], b"00000042");
        let n = format_counter(u32::MAX, &mut out);
        assert_eq!(&out[..n], b"4294967295");
    }

    #[test]
    fn drawing_720p_is_fast() {
        let mut pattern = TestPattern::new(1280, 720).unwrap();
        let start = std::time::Instant::now();
        for i in 0..30 {
            pattern.draw(i, NOW_MS);
        }
        // Generous even for unoptimised builds: 30 frames well under a second.
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
}
