//! `peregrine_rtp_forward_*{stream,target}`: what each `--rtp-forward` sent and was
//! asked; `peregrine_whip_forward_*{stream,url}`: each `--whip-forward`'s sessions.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::egress::whip::WhipReport;
use crate::egress::{ForwardReport, Forwards};

/// A counter family: its name, its help and how to read it from a report.
type Family = (&'static str, &'static str, fn(&ForwardReport) -> u64);
type WhipFamily = (&'static str, &'static str, fn(&WhipReport) -> u64);

#[derive(Debug)]
pub struct EgressCollector {
    pub forwards: Arc<Forwards>,
}

impl Collector for EgressCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reports = self.forwards.reports();
        let families: [Family; 6] = [
            (
                "peregrine_rtp_forward_packets",
                "RTP packets of video sent to a --rtp-forward target.",
                |r| r.packets,
            ),
            (
                "peregrine_rtp_forward_bytes",
                "RTP payload bytes of video sent to a --rtp-forward target.",
                |r| r.bytes,
            ),
            (
                "peregrine_rtp_forward_audio_packets",
                "RTP packets of sound sent to a --rtp-forward target.",
                |r| r.audio_packets,
            ),
            (
                "peregrine_rtp_forward_keyframe_requests",
                "PLIs and FIRs received from a --rtp-forward target.",
                |r| r.keyframe_requests,
            ),
            (
                "peregrine_rtp_forward_keyframe_requests_coalesced",
                "Keyframe requests from a --rtp-forward target that joined one already pending.",
                |r| r.keyframe_requests_coalesced,
            ),
            (
                "peregrine_rtp_forward_send_errors",
                "RTP packets to a --rtp-forward target the system refused to send.",
                |r| r.send_errors,
            ),
        ];
        for (name, help, value) in families {
            super::collector::counters(
                &mut enc,
                name,
                help,
                reports.iter().map(|r| {
                    (
                        [("stream", r.stream.clone()), ("target", r.target.clone())],
                        value(r),
                    )
                }),
            )?;
        }
        let whip = self.forwards.whip_reports();
        let whip_families: [WhipFamily; 3] = [
            (
                "peregrine_whip_forward_sessions",
                "Sessions a --whip-forward endpoint accepted (201 Created).",
                |r| r.sessions,
            ),
            (
                "peregrine_whip_forward_connected",
                "--whip-forward sessions that connected (ICE and DTLS up).",
                |r| r.connected,
            ),
            (
                "peregrine_whip_forward_failures",
                "--whip-forward POSTs refused or failed, and sessions lost.",
                |r| r.failures,
            ),
        ];
        for (name, help, value) in whip_families {
            super::collector::counters(
                &mut enc,
                name,
                help,
                whip.iter().map(|r| {
                    (
                        [("stream", r.stream.clone()), ("url", r.url.clone())],
                        value(r),
                    )
                }),
            )?;
        }
        Ok(())
    }
}
