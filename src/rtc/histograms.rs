//! Histograms the WebRTC engine observes into: a handful of observations per picture or
//! per viewer report, never per packet, so the histogram's uncontended lock costs
//! nothing that shows.

use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug)]
pub struct WebrtcHistograms {
    /// `watch` (the offer made) → the viewer's first keyframe handed to the kernel.
    pub time_to_first_frame: Histogram,
    /// A picture's capture → its last packet handed to the kernel, for all viewers.
    pub send_delay: Histogram,
    /// RTCP receiver reports: fraction of packets lost (0..1) since the previous report.
    pub receiver_loss: Histogram,
    /// RTCP receiver reports: interarrival jitter in seconds.
    pub receiver_jitter: Histogram,
}

impl Default for WebrtcHistograms {
    fn default() -> Self {
        WebrtcHistograms {
            time_to_first_frame: Histogram::new([
                0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
            ]),
            send_delay: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
            ]),
            receiver_loss: Histogram::new([0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]),
            receiver_jitter: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
            ]),
        }
    }
}

impl WebrtcHistograms {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "peregrine_webrtc_time_to_first_frame_seconds",
            "WebRTC viewers: time from watch (the offer made) to their first keyframe \
             handed to the kernel",
            self.time_to_first_frame.clone(),
        );
        registry.register(
            "peregrine_webrtc_send_delay_seconds",
            "WebRTC pictures: time from capture (arrival, for byte-stream sources) to the \
             last packet handed to the kernel for every viewer",
            self.send_delay.clone(),
        );
        registry.register(
            "peregrine_webrtc_receiver_loss_ratio",
            "RTCP receiver reports from WebRTC viewers: fraction of packets lost since \
             the viewer's previous report",
            self.receiver_loss.clone(),
        );
        registry.register(
            "peregrine_webrtc_receiver_jitter_seconds",
            "RTCP receiver reports from WebRTC viewers: interarrival jitter",
            self.receiver_jitter.clone(),
        );
    }
}
