//! A capture device's PCM (mono or stereo, at its own rate) made into what the Opus
//! encoder takes: 48 kHz interleaved stereo.
//!
//! Rates other than 48 kHz are converted by linear interpolation. That is enough for
//! what the sound is for, hearing the host behind a KVM or an HDMI capture: HDMI audio
//! is 48 kHz most of the time (nothing is converted then), and for 44.1 or 32 kHz the
//! interpolation's loss in the treble (about 1.5 dB at 10 kHz from 44.1 kHz) and its
//! images above the source's band, which the encoder's low-pass mostly removes, are not
//! heard on a remote console. Rates above 48 kHz carry next to nothing above 20 kHz, so
//! the missing anti-alias filter costs nothing audible either.

use crate::media::audio::SAMPLE_RATE;

const OUT_RATE: u64 = SAMPLE_RATE as u64;

/// Converts one device's frames to 48 kHz stereo, continuously across calls.
pub struct ToStereo48k {
    channels: usize,
    in_rate: u64,
    /// Where the next output sample falls, in input samples × [`OUT_RATE`], counted
    /// from `prev` (the last input frame of the previous call).
    pos: u64,
    prev: [i16; 2],
}

impl ToStereo48k {
    /// For a device at `rate` Hz with `channels` (1 or 2) channels.
    pub fn new(rate: u32, channels: u32) -> ToStereo48k {
        ToStereo48k {
            channels: if channels == 1 { 1 } else { 2 },
            in_rate: u64::from(rate.max(1)),
            // The first output sample is the first input sample.
            pos: OUT_RATE,
            prev: [0; 2],
        }
    }

    /// Convert `input` (whole interleaved device frames), appending to `out`.
    pub fn push(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let stereo = |frame: &[i16]| match frame {
            [mono] => [*mono, *mono],
            [l, r, ..] => [*l, *r],
            [] => [0, 0],
        };
        let frames = input.chunks_exact(self.channels).map(stereo);
        if self.in_rate == OUT_RATE {
            out.extend(frames.flatten());
            return;
        }
        let n = (input.len() / self.channels) as u64;
        if n == 0 {
            return;
        }
        // x[0] is `prev`, x[1..=n] the new frames.
        let at = |i: u64| -> [i16; 2] {
            match i {
                0 => self.prev,
                i => {
                    let start = (i as usize - 1) * self.channels;
                    stereo(&input[start..start + self.channels])
                }
            }
        };
        out.reserve((n * OUT_RATE / self.in_rate + 1) as usize * 2);
        while self.pos < n * OUT_RATE {
            let i = self.pos / OUT_RATE;
            let frac = (self.pos % OUT_RATE) as i64;
            let (a, b) = (at(i), at(i + 1));
            for c in 0..2 {
                let (a, b) = (i64::from(a[c]), i64::from(b[c]));
                out.push((a + (b - a) * frac / OUT_RATE as i64) as i16);
            }
            self.pos += self.in_rate;
        }
        self.pos -= n * OUT_RATE;
        self.prev = at(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::level;

    fn sine(hz: f64, rate: u32, channels: usize, len: usize) -> Vec<i16> {
        crate::media::audio::signal::sine(hz, 0.5, rate, channels, 0, len)
    }

    #[test]
    fn stereo_at_48_khz_passes_unchanged_and_mono_is_doubled() {
        let mut same = ToStereo48k::new(48_000, 2);
        let mut out = Vec::new();
        same.push(&[1, 2, 3, 4], &mut out);
        assert_eq!(out, [1, 2, 3, 4]);
        let mut mono = ToStereo48k::new(48_000, 1);
        out.clear();
        mono.push(&[5, -6], &mut out);
        assert_eq!(out, [5, 5, -6, -6]);
    }

    #[test]
    fn other_rates_become_48_khz_with_the_tone_kept_whatever_the_chunks() {
        for (rate, channels) in [(44_100, 2), (32_000, 1), (96_000, 2)] {
            let input = sine(1000.0, rate, channels, rate as usize); // 1 s
            let mut whole = Vec::new();
            ToStereo48k::new(rate, channels as u32).push(&input, &mut whole);
            // Fed in device-period-sized pieces, the output is the same.
            let mut pieces = Vec::new();
            let mut conv = ToStereo48k::new(rate, channels as u32);
            for chunk in input.chunks(441 * channels) {
                conv.push(chunk, &mut pieces);
            }
            assert_eq!(whole, pieces, "{rate} Hz");
            let frames = whole.len() / 2;
            assert!(
                frames.abs_diff(48_000) <= 1,
                "{rate} Hz gave {frames} frames"
            );
            let left = level::left(&whole);
            let hz = level::dominant_hz(&left, &[500.0, 918.75, 1000.0, 1088.4, 2000.0]);
            assert_eq!(hz, 1000.0, "{rate} Hz");
            let db = level::rms_dbfs(&left);
            assert!((db - -9.03).abs() < 0.3, "{rate} Hz: {db} dBFS");
        }
    }
}
