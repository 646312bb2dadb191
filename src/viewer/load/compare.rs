//! WebRTC and MJPEG figures of one benchmark side by side, step by step.

use std::io::Write;

use super::bench::BenchRow;
use super::mjpeg_bench::MjpegBenchReport;

/// Server CPU ms per second for the clients beyond the first of a step of `n`, against
/// the 1-client step (`one_ms_s`).
fn marginal(total_ms_s: f64, one_ms_s: Option<f64>, n: usize) -> Option<f64> {
    one_ms_s
        .filter(|_| n > 1)
        .map(|one| (total_ms_s - one) / (n - 1) as f64)
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

pub fn print(webrtc: &[BenchRow], mjpeg: &MjpegBenchReport, fps: f64) {
    let mut steps: Vec<usize> = webrtc
        .iter()
        .map(|r| r.viewers)
        .chain(mjpeg.rows.iter().map(|r| r.clients))
        .collect();
    steps.sort_unstable();
    steps.dedup();
    let one_webrtc = webrtc
        .iter()
        .find(|r| r.viewers == 1)
        .map(|r| r.server_cpu_pct * 10.0);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nWebRTC and MJPEG side by side at {fps:.0} fps (server CPU in ms per client-second: all / beyond the first client)"
    );
    let _ = writeln!(
        out,
        "{:>7} | {:^39} | {:^40}",
        "", "WebRTC (Janus API)", "MJPEG (/stream)"
    );
    let _ = writeln!(
        out,
        "{:>7} | {:>5} {:>6} {:>7} {:>8} {:>8} | {:>5} {:>6} {:>8} {:>8} {:>8}",
        "clients",
        "recv",
        "fps",
        "loss %",
        "ms/cl/s",
        "marginal",
        "held",
        "fps",
        "dropped%",
        "ms/cl/s",
        "marginal"
    );
    for n in steps {
        let w = webrtc.iter().find(|r| r.viewers == n);
        let m = mjpeg.rows.iter().find(|r| r.clients == n);
        let webrtc_cells = match w {
            Some(r) => format!(
                "{:>5} {:>6.1} {:>7.3} {:>8.3} {:>8}",
                r.receiving,
                r.fps_per_viewer,
                r.loss_pct,
                r.server_ms_per_viewer_s,
                cell(marginal(r.server_cpu_pct * 10.0, one_webrtc, n), 3)
            ),
            None => format!("{:>39}", "-"),
        };
        let mjpeg_cells = match m {
            Some(r) => format!(
                "{:>5} {:>6.1} {:>8.2} {:>8.3} {:>8}",
                r.held,
                r.fps_per_client,
                r.dropped_pct,
                r.server_ms_per_client_s,
                cell(r.marginal_ms_per_client_s, 3)
            ),
            None => format!("{:>40}", "-"),
        };
        let _ = writeln!(out, "{n:>7} | {webrtc_cells} | {mjpeg_cells}");
    }
    if let Some(one) = mjpeg.one_client() {
        let _ = writeln!(
            out,
            "MJPEG's 1-client step carries the fixed cost of making the JPEG pictures ({:.1} % of a core over {:.1} % idle).",
            one.server_cpu_pct, mjpeg.idle_cpu_pct
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marginal_cost_leaves_the_first_client_out() {
        assert_eq!(marginal(110.0, Some(20.0), 10), Some(10.0));
        assert_eq!(marginal(20.0, Some(20.0), 1), None);
        assert_eq!(marginal(110.0, None, 10), None);
    }
}
