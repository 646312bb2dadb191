// Reads the frame counter and capture time that peregrine's test pattern draws into the
// top-left corner of every picture (layout documented with `read_code_strip` in
// src/source/pattern.rs): 18x6 blocks of 16x16 pixels, white guard first and black guard
// last in each row, 96 data bits = u32 counter, u48 ms since the epoch, CRC-16/CCITT-FALSE.
"use strict";

const STRIP_BLOCK = 16, STRIP_COLUMNS = 18, STRIP_ROWS = 6;

function crc16ccitt(bytes) {
  let crc = 0xffff;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** {frame, ms} from the video's current picture, or null when it carries no strip. */
function readCodeStrip(video, canvas, ctx) {
  const w = STRIP_BLOCK * STRIP_COLUMNS, h = STRIP_BLOCK * STRIP_ROWS;
  if (video.videoWidth < w || video.videoHeight < h) return null;
  canvas.width = w;
  canvas.height = h;
  // Copy the strip's pixels 1:1 from the top-left corner of the intrinsic picture.
  ctx.drawImage(video, 0, 0, w, h, 0, 0, w, h);
  const px = ctx.getImageData(0, 0, w, h).data;
  const bit = (row, col) => {
    let sum = 0;
    for (let y = row * STRIP_BLOCK + 4; y < row * STRIP_BLOCK + 12; y++) {
      for (let x = col * STRIP_BLOCK + 4; x < col * STRIP_BLOCK + 12; x++) {
        const i = (y * w + x) * 4;
        sum += (px[i] + px[i + 1] + px[i + 2]) / 3;
      }
    }
    return sum / 64 >= 128 ? 1 : 0;
  };
  const bytes = new Array(12).fill(0);
  for (let row = 0; row < STRIP_ROWS; row++) {
    if (bit(row, 0) !== 1 || bit(row, STRIP_COLUMNS - 1) !== 0) return null;
    for (let col = 1; col <= 16; col++) {
      const k = row * 16 + col - 1;
      bytes[k >> 3] |= bit(row, col) << (7 - (k & 7));
    }
  }
  if (crc16ccitt(bytes.slice(0, 10)) !== ((bytes[10] << 8) | bytes[11])) return null;
  const frame = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
  let ms = 0;
  for (let i = 4; i < 10; i++) ms = ms * 256 + bytes[i];
  return { frame, ms };
}

/**
 * A time on the page's performance clock (performance.now(), rVFC, audio timestamps) as
 * ms since the epoch, read against the wall clock now rather than at page load:
 * performance.timeOrigin is fixed when the page opens, so after the system clock is set
 * (NTP at boot, a suspend) it would be off by the step for as long as the page stays open.
 */
function wallClockOf(perfMs) {
  return Date.now() + (perfMs - performance.now());
}

/** Capture time in ms since the epoch of the picture on screen, or null. */
function readCaptureTime(video, canvas, ctx) {
  const code = readCodeStrip(video, canvas, ctx);
  if (code) window.peregrine.lastFrameCounter = code.frame;
  return code ? code.ms : null;
}
