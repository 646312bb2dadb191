//! What sound costs the server: the WebRTC steps without and with sound side by side,
//! server CPU per viewer-second in both and the difference.

use std::io::Write;

use super::bench::BenchRow;

/// One step measured without sound and with it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AudioCost {
    pub viewers: usize,
    /// Server CPU in ms per viewer-second, without and with sound.
    pub without_ms: f64,
    pub with_ms: f64,
    /// Viewers that were offered sound in the run with it.
    pub with_audio: usize,
}

impl AudioCost {
    /// What sound adds per viewer-second, in ms and in % of the cost without it.
    pub fn extra(&self) -> (f64, Option<f64>) {
        let extra = self.with_ms - self.without_ms;
        let pct = (self.without_ms > 0.0).then(|| extra * 100.0 / self.without_ms);
        (extra, pct)
    }
}

/// The steps both runs measured, paired by viewer count.
pub fn pair(without: &[BenchRow], with: &[BenchRow]) -> Vec<AudioCost> {
    without
        .iter()
        .filter_map(|a| {
            let b = with.iter().find(|b| b.viewers == a.viewers)?;
            Some(AudioCost {
                viewers: a.viewers,
                without_ms: a.server_ms_per_viewer_s,
                with_ms: b.server_ms_per_viewer_s,
                with_audio: b.with_audio,
            })
        })
        .collect()
}

pub fn print(without: &[BenchRow], with: &[BenchRow]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nWhat sound costs (server CPU in ms per viewer-second; one Opus packet per viewer every 20 ms)"
    );
    let _ = writeln!(
        out,
        "{:>7} {:>10} {:>10} {:>10} {:>8} {:>11}",
        "viewers", "no sound", "sound", "extra", "extra %", "with sound"
    );
    for c in pair(without, with) {
        let (extra, pct) = c.extra();
        let pct = pct.map_or("-".to_string(), |p| format!("{p:.0}"));
        let _ = writeln!(
            out,
            "{:>7} {:>10.3} {:>10.3} {:>10.3} {:>8} {:>11}",
            c.viewers, c.without_ms, c.with_ms, extra, pct, c.with_audio
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(viewers: usize, ms: f64, with_audio: usize) -> BenchRow {
        BenchRow {
            viewers,
            receiving: viewers,
            audio_asked: with_audio > 0,
            with_audio,
            audio_loss_pct: 0.0,
            window_s: 10.0,
            server_cpu_pct: 0.0,
            server_ms_per_viewer_s: ms,
            server_rss_kib: 0,
            rss_per_viewer_kib: 0.0,
            rss_added_per_viewer_kib: None,
            load_cpu_pct: 0.0,
            machine_cpu_pct: 0.0,
            fps_per_viewer: 30.0,
            loss_pct: 0.0,
            nacks: 0,
            ttff_p50_ms: None,
            ttff_p95_ms: None,
            e2e_p50_ms: None,
            e2e_p99_ms: None,
            server_delay_p50_us: 0,
            server_delay_p99_us: 0,
            engine_send_p99_us: 0,
            note: String::new(),
            ..Default::default()
        }
    }

    #[test]
    fn steps_pair_up_by_viewer_count() {
        let without = [row(1, 2.0, 0), row(10, 1.0, 0), row(50, 0.8, 0)];
        let with = [row(10, 1.25, 10), row(1, 2.5, 1)];
        let costs = pair(&without, &with);
        assert_eq!(costs.len(), 2, "50 was not measured with sound");
        assert_eq!((costs[0].viewers, costs[1].viewers), (1, 10));
        let (extra, pct) = costs[1].extra();
        assert!((extra - 0.25).abs() < 1e-9);
        assert!((pct.unwrap() - 25.0).abs() < 1e-9);
        assert_eq!(costs[1].with_audio, 10);
    }
}
