//! What the microphone playback reports in `/state`, updated by its thread each tick.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

use super::mixer::Counts;

/// Loudness reported when nothing was played: the floor of `rms_dbfs`.
const SILENCE_DBFS: f64 = -120.0;

/// Live counters of one stream's playback.
#[derive(Debug)]
pub struct MicStats {
    device: String,
    open: AtomicBool,
    talkers: AtomicUsize,
    held: AtomicUsize,
    played: AtomicU64,
    concealed: AtomicU64,
    dropped: AtomicU64,
    skipped: AtomicU64,
    underruns: AtomicU64,
    /// `f64` bits of the mix's loudness over the last second.
    level_dbfs: AtomicU64,
}

/// The `mic` object of a stream in `/state`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MicReport {
    /// The ALSA playback device.
    pub device: String,
    /// Open now (only while somebody talks, and a second after).
    pub open: bool,
    /// Browsers heard now.
    pub talkers: usize,
    /// Packets waiting in the jitter buffers.
    pub buffered: usize,
    /// Packets decoded and played.
    pub played: u64,
    /// Frames made up for lost or late packets.
    pub concealed: u64,
    /// Packets dropped: late, duplicate, overflow, undecodable.
    pub dropped: u64,
    /// Mixed frames not written because the device already held enough (its clock is
    /// slower than ours).
    pub skipped: u64,
    /// Times the device ran dry and was restarted.
    pub underruns: u64,
    /// Loudness of what was played in the last second, dB full scale (-120: silence).
    pub level_dbfs: f64,
}

impl MicStats {
    pub fn new(device: &str) -> MicStats {
        MicStats {
            device: device.to_string(),
            open: AtomicBool::new(false),
            talkers: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            played: AtomicU64::new(0),
            concealed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            underruns: AtomicU64::new(0),
            level_dbfs: AtomicU64::new(SILENCE_DBFS.to_bits()),
        }
    }

    pub fn report(&self) -> MicReport {
        MicReport {
            device: self.device.clone(),
            open: self.open.load(Ordering::Relaxed),
            talkers: self.talkers.load(Ordering::Relaxed),
            buffered: self.held.load(Ordering::Relaxed),
            played: self.played.load(Ordering::Relaxed),
            concealed: self.concealed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            underruns: self.underruns.load(Ordering::Relaxed),
            level_dbfs: f64::from_bits(self.level_dbfs.load(Ordering::Relaxed)),
        }
    }

    pub(super) fn add(&self, counts: Counts) {
        self.played.fetch_add(counts.played, Ordering::Relaxed);
        self.concealed
            .fetch_add(counts.concealed, Ordering::Relaxed);
        self.dropped.fetch_add(counts.dropped, Ordering::Relaxed);
    }

    pub(super) fn set_state(&self, open: bool, talkers: usize, held: usize) {
        self.open.store(open, Ordering::Relaxed);
        self.talkers.store(talkers, Ordering::Relaxed);
        self.held.store(held, Ordering::Relaxed);
    }

    pub(super) fn skipped(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn underrun(&self) {
        self.underruns.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn set_level(&self, dbfs: f64) {
        self.level_dbfs.store(dbfs.to_bits(), Ordering::Relaxed);
    }
}

/// The loudness of a second of sound, gathered a frame at a time.
#[derive(Debug, Default)]
pub(super) struct LevelMeter {
    squares: f64,
    samples: usize,
}

impl LevelMeter {
    /// Add a frame; returns the loudness (dBFS) once a second's worth is in.
    pub fn add(&mut self, frame: &[i16]) -> Option<f64> {
        self.squares += frame.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
        self.samples += frame.len();
        let second = crate::media::audio::SAMPLE_RATE as usize * crate::media::audio::CHANNELS;
        if self.samples < second {
            return None;
        }
        let rms = (self.squares / self.samples as f64).sqrt() / 32768.0;
        *self = LevelMeter::default();
        Some((20.0 * rms.log10()).max(SILENCE_DBFS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_is_the_loudness_of_each_second() {
        let mut meter = LevelMeter::default();
        let square = [16384i16, -16384].repeat(960);
        for _ in 0..49 {
            assert_eq!(meter.add(&square), None);
        }
        let half = meter.add(&square).unwrap();
        assert!((half - -6.02).abs() < 0.01, "{half}");
        for _ in 0..49 {
            meter.add(&[0; 1920]);
        }
        assert_eq!(meter.add(&[0; 1920]), Some(SILENCE_DBFS));
    }

    #[test]
    fn report_keys() {
        let stats = MicStats::new("plughw:UAC2Gadget,0");
        stats.add(Counts {
            played: 3,
            concealed: 1,
            dropped: 2,
        });
        stats.set_state(true, 2, 4);
        stats.underrun();
        let json = serde_json::to_value(stats.report()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "device": "plughw:UAC2Gadget,0", "open": true, "talkers": 2, "buffered": 4,
                "played": 3, "concealed": 1, "dropped": 2, "skipped": 0, "underruns": 1,
                "level_dbfs": -120.0
            })
        );
    }
}
