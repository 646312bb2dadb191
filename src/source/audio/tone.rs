//! The test tone: sound without hardware, next to the test pattern. At each whole
//! second of the wall clock (CLOCK_REALTIME, the clock the pattern's code strip shows)
//! a 1000 Hz beep, 100 ms long, at half of full scale, begins exactly at the sample of
//! that second (with a 1 ms fade in and out so it does not click); silence otherwise.
//! Both channels are equal.
//!
//! A page measures audio latency as the time the beep's onset plays minus the whole
//! second, and video latency from the code strip, so the two compare directly.

use std::time::Instant;

use super::pacing::{wait_until, FrameClock};
use super::{AudioNext, AudioSource, Opened};
use crate::media::audio::opus::FRAME_LEN;
use crate::media::audio::{CHANNELS, FRAME_SAMPLES, SAMPLE_RATE};
use crate::media::clock;

/// The beep's frequency.
pub const TONE_HZ: u32 = 1000;
/// The beep's length in samples: 100 ms.
pub const BEEP_SAMPLES: u64 = SAMPLE_RATE as u64 / 10;
/// The beep's amplitude, of full scale.
pub const AMPLITUDE: f64 = 0.5;
/// The fade at each end of the beep, in samples: 1 ms.
const FADE_SAMPLES: u64 = SAMPLE_RATE as u64 / 1000;

/// The tone's sample `pos` samples after a whole second.
fn sample_at(pos: u64) -> i16 {
    if pos >= BEEP_SAMPLES {
        return 0;
    }
    let envelope = (pos.min(BEEP_SAMPLES - pos) as f64 / FADE_SAMPLES as f64).min(1.0);
    // The sine starts at zero phase on the whole second.
    let phase =
        2.0 * std::f64::consts::PI * f64::from(TONE_HZ) * pos as f64 / f64::from(SAMPLE_RATE);
    (AMPLITUDE * envelope * phase.sin() * f64::from(i16::MAX)).round() as i16
}

/// The sample (at 48 kHz, counted from the Unix epoch) at or just before `realtime_us`.
fn sample_index(realtime_us: u64) -> u64 {
    (u128::from(realtime_us) * u128::from(SAMPLE_RATE) / 1_000_000) as u64
}

/// Makes the tone frame by frame, continuous from one frame to the next.
pub struct Tone {
    /// The wall-clock sample the next frame starts at, once known.
    next_sample: Option<u64>,
    pcm: Vec<i16>,
}

impl Default for Tone {
    fn default() -> Self {
        Tone::new()
    }
}

impl Tone {
    pub fn new() -> Tone {
        Tone {
            next_sample: None,
            pcm: vec![0; FRAME_LEN],
        }
    }

    /// The frame whose first sample is heard at `realtime_us` (wall clock, µs since the
    /// Unix epoch). Frames follow each other sample for sample while the clock agrees
    /// within a sample; when it was set or slewed further, the tone follows the clock.
    pub fn render(&mut self, realtime_us: u64) -> &[i16] {
        let wanted = sample_index(realtime_us);
        let first = match self.next_sample {
            Some(next) if next.abs_diff(wanted) <= 1 => next,
            _ => wanted,
        };
        let per_second = u64::from(SAMPLE_RATE);
        for (i, frame) in self.pcm.chunks_exact_mut(CHANNELS).enumerate() {
            let v = sample_at((first + i as u64) % per_second);
            frame.fill(v);
        }
        self.next_sample = Some(first + FRAME_SAMPLES as u64);
        &self.pcm
    }
}

/// The tone as a source, paced by the clock.
#[derive(Default)]
pub struct ToneSource {
    tone: Tone,
    clock: Option<FrameClock>,
}

impl ToneSource {
    pub fn new() -> ToneSource {
        ToneSource::default()
    }
}

impl AudioSource for ToneSource {
    fn thread_name(&self) -> &'static str {
        "audio-tone"
    }

    fn open(&mut self) -> Result<Opened, String> {
        self.clock = Some(FrameClock::new(clock::monotonic_us()));
        self.tone = Tone::new();
        Ok(Opened {
            rate: SAMPLE_RATE,
            channels: CHANNELS as u32,
        })
    }

    fn next(&mut self, deadline: Instant) -> AudioNext<'_> {
        let Some(frames) = self.clock.as_mut() else {
            return AudioNext::Lost("not open".into());
        };
        if !wait_until(frames.due_us(), deadline) {
            return AudioNext::Waiting;
        }
        frames.catch_up(clock::monotonic_us());
        let capture_us = frames.capture_us();
        frames.advance();
        let realtime_us = clock::monotonic_to_realtime_us(capture_us);
        AudioNext::Frame(self.tone.render(realtime_us), capture_us)
    }

    fn close(&mut self) {
        self.clock = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::opus::{OpusDecoder, OpusEncoder};
    use crate::media::audio::{level, FRAME_US};

    /// Wall-clock µs of an instant 0.987654 s past a whole second.
    const T0_US: u64 = 1_700_000_000_987_654;

    /// `frames` frames rendered from `T0_US` on, as mono (left) samples.
    fn render(frames: u64) -> Vec<i16> {
        let mut tone = Tone::new();
        let mut out = Vec::new();
        for n in 0..frames {
            let pcm = tone.render(T0_US + n * FRAME_US);
            assert!(pcm.chunks(2).all(|s| s[0] == s[1]), "both channels equal");
            out.extend(level::left(pcm));
        }
        out
    }

    /// Index into [`render`]'s samples of each whole second it covers.
    fn whole_seconds(len: usize) -> Vec<usize> {
        let first = sample_index(T0_US);
        (0..len)
            .filter(|&i| (first + i as u64).is_multiple_of(u64::from(SAMPLE_RATE)))
            .collect()
    }

    #[test]
    fn beeps_begin_at_the_sample_of_each_whole_second_and_nothing_sounds_between() {
        let samples = render(150); // 3 s
        let onsets = whole_seconds(samples.len());
        assert_eq!(onsets.len(), 3);
        for &k in &onsets {
            // The onset sample's wall-clock time is the whole second, within a sample.
            let at_us = T0_US as f64 + k as f64 * 1e6 / f64::from(SAMPLE_RATE);
            let whole = (at_us / 1e6).round() * 1e6;
            assert!(
                (at_us - whole).abs() < 1e6 / f64::from(SAMPLE_RATE),
                "{at_us}"
            );
            assert_eq!(samples[k], 0, "a sine starts at zero");
            assert_ne!(samples[k + 1], 0, "the beep starts at once");
            let beep = &samples[k..k + BEEP_SAMPLES as usize];
            let peak = beep.iter().map(|s| s.unsigned_abs()).max().unwrap();
            assert!(
                (16_380..=16_384).contains(&peak),
                "half of full scale: {peak}"
            );
            // Full amplitude after the 1 ms fade.
            let faded_in = &beep[FADE_SAMPLES as usize..][..48];
            let peak = faded_in.iter().map(|s| s.unsigned_abs()).max().unwrap();
            assert!(peak >= 16_300, "{peak}");
        }
        for (i, &s) in samples.iter().enumerate() {
            let in_beep = onsets
                .iter()
                .any(|&k| (k..k + BEEP_SAMPLES as usize).contains(&i));
            if !in_beep {
                assert_eq!(s, 0, "sound at sample {i} outside the beeps");
            }
        }
    }

    #[test]
    fn frames_join_sample_for_sample_and_follow_a_clock_that_jumps() {
        let mut tone = Tone::new();
        tone.render(T0_US);
        let next = tone.next_sample.unwrap();
        // A reading a few µs off (the clock mapping's jitter) keeps the count.
        tone.render(T0_US + FRAME_US + 7);
        assert_eq!(tone.next_sample, Some(next + FRAME_SAMPLES as u64));
        // A wall clock set 0.5 s ahead is followed.
        tone.render(T0_US + 2 * FRAME_US + 500_000);
        assert_eq!(
            tone.next_sample,
            Some(sample_index(T0_US + 2 * FRAME_US + 500_000) + FRAME_SAMPLES as u64)
        );
    }

    #[test]
    fn through_opus_the_beeps_are_1000_hz_at_half_scale() {
        let samples = render(150);
        let mut encoder = OpusEncoder::new(128).unwrap();
        let mut decoder = OpusDecoder::new().unwrap();
        let mut decoded = Vec::new();
        let mut out = vec![0i16; FRAME_LEN];
        let mut tone = Tone::new();
        for n in 0..150 {
            let pcm = tone.render(T0_US + n * FRAME_US);
            let packet = encoder.encode(pcm).unwrap();
            let got = decoder.decode(&packet, &mut out).unwrap();
            decoded.extend(level::left(&out[..got * 2]));
        }
        assert_eq!(decoded.len(), samples.len());
        // Opus delays the sound by a few ms: look inside each beep, past its edges.
        for k in whole_seconds(decoded.len()) {
            let beep = &decoded[k + 960..k + 3840];
            let hz = level::dominant_hz(beep, &[440.0, 500.0, 1000.0, 2000.0, 3000.0]);
            assert_eq!(hz, 1000.0);
            let db = level::rms_dbfs(beep);
            assert!((db - -9.03).abs() < 1.0, "beep level {db} dBFS");
            let gap = &decoded[k + 9600..k + 38400];
            assert!(level::rms_dbfs(gap) < -60.0, "silence between beeps");
        }
    }

    #[test]
    fn the_source_hands_over_frames_20_ms_apart_never_ahead_of_the_clock() {
        let mut source = ToneSource::new();
        source.open().unwrap();
        let mut last = None;
        for _ in 0..5 {
            let deadline = Instant::now() + std::time::Duration::from_secs(1);
            let AudioNext::Frame(pcm, capture_us) = source.next(deadline) else {
                panic!("no frame within a second");
            };
            assert_eq!(pcm.len(), FRAME_LEN);
            assert!(
                clock::monotonic_us() >= capture_us + FRAME_US,
                "handed over before its end was captured"
            );
            if let Some(last) = last {
                assert_eq!(capture_us - last, FRAME_US);
            }
            last = Some(capture_us);
        }
    }
}
