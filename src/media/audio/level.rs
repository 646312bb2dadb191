//! Measuring sound: loudness and which of a few frequencies a signal carries. Used to
//! report levels and, in tests and the load generator, to check that a tone arrived.

use super::SAMPLE_RATE;

/// The left channel of interleaved stereo PCM.
pub fn left(stereo: &[i16]) -> Vec<i16> {
    stereo.iter().step_by(2).copied().collect()
}

/// Loudness in dB relative to full scale (a full-scale square wave is 0), floored at
/// -120 for silence so it can be shown and compared.
pub fn rms_dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return -120.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
    let rms = (sum / samples.len() as f64).sqrt() / 32768.0;
    (20.0 * rms.log10()).max(-120.0)
}

/// The power of `hz` in `samples` (mono, 48 kHz), by the Goertzel algorithm,
/// normalised by the length so windows of different lengths compare.
pub fn power_at(samples: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(SAMPLE_RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) / 32768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let n = samples.len().max(1) as f64;
    power / (n * n)
}

/// Which of `candidates` (Hz) is strongest in `samples` (mono, 48 kHz).
pub fn dominant_hz(samples: &[i16], candidates: &[f64]) -> f64 {
    candidates
        .iter()
        .copied()
        .map(|hz| (hz, power_at(samples, hz)))
        .fold(
            (0.0, f64::MIN),
            |best, c| if c.1 > best.1 { c } else { best },
        )
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f64, amp: f64, len: usize) -> Vec<i16> {
        super::super::signal::sine(hz, amp, SAMPLE_RATE, 1, 0, len)
    }

    #[test]
    fn the_strongest_frequency_is_found() {
        let mut mix = sine(700.0, 0.3, 4800);
        for (m, s) in mix.iter_mut().zip(sine(1500.0, 0.1, 4800)) {
            *m = m.saturating_add(s);
        }
        assert_eq!(dominant_hz(&mix, &[700.0, 1000.0, 1500.0]), 700.0);
        assert!(power_at(&mix, 1500.0) > 10.0 * power_at(&mix, 1000.0));
    }

    #[test]
    fn loudness_of_a_sine_and_of_silence() {
        let half = rms_dbfs(&sine(1000.0, 0.5, 4800));
        assert!((half - -9.03).abs() < 0.2, "{half}");
        assert_eq!(rms_dbfs(&[0; 100]), -120.0);
        assert_eq!(rms_dbfs(&[]), -120.0);
        assert_eq!(left(&[1, 2, 3, 4]), vec![1, 3]);
    }
}
