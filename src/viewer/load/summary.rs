//! Figures of a whole load run, from the viewers' reports.

use std::time::Duration;

use super::one_viewer::ViewerReport;

/// Chosen quantiles of a sample, in milliseconds (`None` with no sample).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Quantiles {
    pub samples: usize,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Quantiles {
    pub fn of(mut values: Vec<f64>) -> Quantiles {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let last = values.len().checked_sub(1)?;
            let i = ((values.len() as f64 * q).ceil() as usize).saturating_sub(1);
            values.get(i.min(last)).copied()
        };
        Quantiles {
            samples: values.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: values.last().copied(),
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LoadSummary {
    pub server: String,
    pub viewers_requested: usize,
    /// Viewers that connected and received at least one keyframe.
    pub viewers_receiving: usize,
    pub viewers_failed: usize,
    /// Receiving viewers that lost less than 0.5 % of their packets.
    pub viewers_held: usize,
    /// Viewers that decoded their pictures (the sample), the pictures they decoded and
    /// the access units their decoders refused.
    pub viewers_decoding: usize,
    pub pictures_decoded: u64,
    pub decode_errors: u64,
    pub duration_s: f64,
    pub frames: u64,
    /// Pictures per second per receiving viewer, from its first keyframe on.
    pub fps_per_viewer: f64,
    pub packets_expected: u64,
    pub packets_lost: u64,
    pub loss_pct: f64,
    pub nacks_sent: u64,
    pub plis_sent: u64,
    /// Viewers whose offer carried sound, the audio packets they got, those lost (by
    /// sequence numbers) and the loss in %.
    pub viewers_with_audio: usize,
    pub audio_packets: u64,
    pub audio_packets_lost: u64,
    pub audio_loss_pct: f64,
    pub connect_ms: Quantiles,
    /// `watch` sent → first complete keyframe.
    pub ttff_ms: Quantiles,
    /// abs-capture-time → picture complete at the viewer.
    pub end_to_end_ms: Quantiles,
    /// First distinct errors, with how many viewers hit each.
    pub errors: Vec<(String, usize)>,
    pub viewers: Vec<ViewerReport>,
}

impl LoadSummary {
    pub fn from_reports(
        server: &str,
        requested: usize,
        duration: Duration,
        viewers: Vec<ViewerReport>,
    ) -> LoadSummary {
        let receiving: Vec<&ViewerReport> =
            viewers.iter().filter(|v| v.ttff_ms.is_some()).collect();
        let frames: u64 = viewers.iter().map(|v| v.frames).sum();
        let fps: Vec<f64> = receiving
            .iter()
            .filter(|v| v.receiving_s > 0.5)
            // The catch-up burst is pictures from the past, not a frame rate.
            .map(|v| v.frames.saturating_sub(v.catch_up_frames) as f64 / v.receiving_s)
            .collect();
        let expected: u64 = viewers.iter().map(|v| v.packets_expected).sum();
        let lost: u64 = viewers.iter().map(|v| v.packets_lost).sum();
        let audio_expected: u64 = viewers.iter().map(|v| v.audio_packets_expected).sum();
        let audio_packets: u64 = viewers.iter().map(|v| v.audio_packets_received).sum();
        let audio_lost = audio_expected.saturating_sub(audio_packets);
        let mut errors: Vec<(String, usize)> = Vec::new();
        for e in viewers.iter().filter_map(|v| v.error.as_ref()) {
            if let Some((_, n)) = errors.iter_mut().find(|(m, _)| m == e) {
                *n += 1;
            } else if errors.len() < 5 {
                errors.push((e.clone(), 1));
            }
        }
        LoadSummary {
            server: server.to_string(),
            viewers_requested: requested,
            viewers_receiving: receiving.len(),
            viewers_failed: viewers.iter().filter(|v| v.error.is_some()).count(),
            viewers_held: receiving
                .iter()
                .filter(|v| v.packets_lost * 1000 < v.packets_expected.max(1) * 5)
                .count(),
            viewers_decoding: viewers.iter().filter(|v| v.decoded).count(),
            pictures_decoded: viewers.iter().map(|v| v.pictures_decoded).sum(),
            decode_errors: viewers.iter().map(|v| v.decode_errors).sum(),
            duration_s: duration.as_secs_f64(),
            frames,
            fps_per_viewer: if fps.is_empty() {
                0.0
            } else {
                fps.iter().sum::<f64>() / fps.len() as f64
            },
            packets_expected: expected,
            packets_lost: lost,
            loss_pct: if expected > 0 {
                lost as f64 * 100.0 / expected as f64
            } else {
                0.0
            },
            nacks_sent: viewers.iter().map(|v| v.nacks_sent).sum(),
            plis_sent: viewers.iter().map(|v| v.plis_sent).sum(),
            viewers_with_audio: viewers.iter().filter(|v| v.audio_offered).count(),
            audio_packets,
            audio_packets_lost: audio_lost,
            audio_loss_pct: if audio_expected > 0 {
                audio_lost as f64 * 100.0 / audio_expected as f64
            } else {
                0.0
            },
            connect_ms: Quantiles::of(viewers.iter().filter_map(|v| v.connect_ms).collect()),
            ttff_ms: Quantiles::of(viewers.iter().filter_map(|v| v.ttff_ms).collect()),
            end_to_end_ms: Quantiles::of(
                viewers
                    .iter()
                    .flat_map(|v| v.delays_ms.iter().map(|&d| f64::from(d)))
                    .collect(),
            ),
            errors,
            viewers,
        }
    }

    /// A few human lines.
    pub fn describe(&self) -> String {
        let q = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let mut s = format!(
            "{}: {}/{} viewers received video ({} failed, {} held under 0.5 % loss) over {:.1} s\n\
             frames {} ({:.1} fps per viewer), packets lost {}/{} ({:.3} %), NACKs {}, PLIs {}\n\
             connect ms p50 {} p95 {}; time to first frame ms p50 {} p95 {} p99 {} max {}\n\
             end-to-end delay ms p50 {} p99 {} max {} ({} pictures)\n",
            self.server,
            self.viewers_receiving,
            self.viewers_requested,
            self.viewers_failed,
            self.viewers_held,
            self.duration_s,
            self.frames,
            self.fps_per_viewer,
            self.packets_lost,
            self.packets_expected,
            self.loss_pct,
            self.nacks_sent,
            self.plis_sent,
            q(self.connect_ms.p50),
            q(self.connect_ms.p95),
            q(self.ttff_ms.p50),
            q(self.ttff_ms.p95),
            q(self.ttff_ms.p99),
            q(self.ttff_ms.max),
            q(self.end_to_end_ms.p50),
            q(self.end_to_end_ms.p99),
            q(self.end_to_end_ms.max),
            self.end_to_end_ms.samples,
        );
        if self.viewers_decoding > 0 {
            s += &format!(
                "decoded sample: {} viewers, {} pictures decoded, {} refused by the decoder\n",
                self.viewers_decoding, self.pictures_decoded, self.decode_errors
            );
        }
        if self.viewers_with_audio > 0 {
            s += &format!(
                "audio: {} viewers offered sound, packets {} ({:.1} per viewer-second), lost {} ({:.3} %)\n",
                self.viewers_with_audio,
                self.audio_packets,
                self.audio_packets as f64 / self.viewers_with_audio as f64 / self.duration_s.max(0.001),
                self.audio_packets_lost,
                self.audio_loss_pct,
            );
        }
        for (e, n) in &self.errors {
            s += &format!("error ({n} viewers): {e}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_nearest_rank() {
        let q = Quantiles::of((1..=100).map(f64::from).collect());
        assert_eq!(
            (q.p50, q.p95, q.p99, q.max),
            (Some(50.0), Some(95.0), Some(99.0), Some(100.0))
        );
        assert_eq!(Quantiles::of(vec![]).p50, None);
    }

    #[test]
    fn loss_and_errors_are_totalled() {
        let ok = ViewerReport {
            ttff_ms: Some(100.0),
            frames: 300,
            receiving_s: 10.0,
            packets_expected: 1000,
            packets_lost: 10,
            ..Default::default()
        };
        let bad = ViewerReport {
            error: Some("refused".into()),
            ..Default::default()
        };
        let s =
            LoadSummary::from_reports("x", 3, Duration::from_secs(10), vec![ok, bad.clone(), bad]);
        assert_eq!(s.viewers_receiving, 1);
        assert_eq!(s.viewers_failed, 2);
        assert_eq!(s.viewers_held, 0, "1 % loss is not held");
        assert!((s.loss_pct - 1.0).abs() < 1e-9);
        assert!((s.fps_per_viewer - 30.0).abs() < 1e-9);
        assert_eq!(s.errors, vec![("refused".to_string(), 2)]);
        assert_eq!(s.viewers_with_audio, 0);
        assert!(!s.describe().contains("audio"));
    }

    #[test]
    fn audio_loss_is_totalled_over_the_viewers_that_got_sound() {
        let heard = |received, expected| ViewerReport {
            ttff_ms: Some(100.0),
            audio_offered: true,
            audio_packets_received: received,
            audio_packets_expected: expected,
            ..Default::default()
        };
        let s = LoadSummary::from_reports(
            "x",
            2,
            Duration::from_secs(10),
            vec![heard(495, 500), heard(500, 500)],
        );
        assert_eq!((s.viewers_with_audio, s.audio_packets), (2, 995));
        assert_eq!(s.audio_packets_lost, 5);
        assert!((s.audio_loss_pct - 0.5).abs() < 1e-9);
        assert!(
            s.describe().contains("audio: 2 viewers"),
            "{}",
            s.describe()
        );
    }
}
