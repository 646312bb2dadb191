//! The `/state` document. Its `ok` and `result` keys have µStreamer's shape, so tools
//! written for µStreamer (kvmd polls it over a unix socket) read it unchanged; beside
//! them, under keys µStreamer does not use, is peregrine's own report of every stream.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::mjpeg::{HttpStreamState, Mjpeg};
use crate::egress::whip::WhipReport;
use crate::egress::{ForwardReport, Forwards};
use crate::janus::gateway::JanusCounts;
use crate::janus::JanusStatus;
use crate::media::stream::{Output, UnknownStream};
use crate::metrics::collector::StreamInput;
use crate::mic::{MicReport, MicStats};
use crate::relay::Relay;
use crate::rtc::{RtcEngine, RtcStats};
use crate::source::audio::AudioReport;
use crate::source::lifecycle::SourceReport;

/// The whole document.
#[derive(Debug, Serialize)]
pub struct StateDocument {
    /// Always true, as in µStreamer's replies.
    pub ok: bool,
    /// µStreamer's `result`, for the stream asked for (`?stream=NAME`) or the default one.
    pub result: UstreamerState,
    #[serde(flatten)]
    pub peregrine: PeregrineState,
}

/// µStreamer's `/state` result, with the same keys and JSON types.
#[derive(Debug, Serialize)]
pub struct UstreamerState {
    pub instance_id: String,
    pub encoder: EncoderState,
    /// µStreamer has it with an H.264 sink only; peregrine always makes H.264.
    pub h264: H264State,
    /// Absent without sinks, as in µStreamer.
    #[serde(skip_serializing_if = "Sinks::is_empty")]
    pub sinks: Sinks,
    pub source: CaptureState,
    pub stream: HttpStreamState,
}

/// The JPEG encoder's kind (`CPU`, `HW`, ...) and quality.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EncoderState {
    #[serde(rename = "type")]
    pub kind: String,
    pub quality: u32,
}

impl Default for EncoderState {
    fn default() -> Self {
        EncoderState {
            kind: "CPU".into(),
            quality: u32::from(crate::media::jpeg::DEFAULT_QUALITY),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct H264State {
    /// kbit/s asked of the encoder.
    pub bitrate: u32,
    pub gop: u32,
    pub online: bool,
    pub fps: u32,
}

/// The memsink outputs, by kind.
#[derive(Debug, Default, Serialize)]
pub struct Sinks {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jpeg: Option<SinkState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h264: Option<SinkState>,
}

impl Sinks {
    fn is_empty(&self) -> bool {
        self.jpeg.is_none() && self.h264.is_none()
    }
}

#[derive(Debug, Serialize)]
pub struct SinkState {
    /// A reader touched the sink within its client TTL.
    pub has_clients: bool,
}

impl SinkState {
    fn of(readers: &AtomicBool) -> SinkState {
        SinkState {
            has_clients: readers.load(Ordering::Relaxed),
        }
    }
}

/// µStreamer's `source`: what is captured.
#[derive(Debug, Serialize)]
pub struct CaptureState {
    pub resolution: Resolution,
    pub online: bool,
    pub desired_fps: u32,
    pub captured_fps: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Resolution {
    pub width: u32,
    pub height: u32,
}

/// peregrine's own keys.
#[derive(Debug, Serialize)]
pub struct PeregrineState {
    pub version: &'static str,
    pub pid: u32,
    pub uptime_s: f64,
    /// The default stream's source.
    pub source: SourceReport,
    pub streams: BTreeMap<String, StreamReport>,
    /// Connected WebRTC viewers, over every stream.
    pub viewers: usize,
    pub rtc: RtcStats,
    pub janus: JanusCounts,
    /// WHEP sessions (their connected viewers are in `viewers` and `viewers_by.webrtc`
    /// like Janus viewers).
    pub whep: crate::whep::WhepCounts,
    pub whip: crate::whep::WhipCounts,
    pub relay: serde_json::Value,
    pub mjpeg: serde_json::Value,
    /// Each `--rtp-forward` target: where it sends and what it was asked.
    pub rtp_forwards: Vec<ForwardReport>,
    /// Each `--whip-forward` endpoint: its session's state and counters.
    pub whip_forwards: Vec<WhipReport>,
}

/// One stream in `streams`.
#[derive(Debug, Serialize)]
pub struct StreamReport {
    pub source: SourceReport,
    /// The stream's sound; `null` when it has none.
    pub audio: Option<AudioReport>,
    /// Viewers receiving its pictures, over every output.
    pub viewers: usize,
    /// The same, by output (`webrtc`, `h264ws`, `jsmpeg`).
    pub viewers_by: BTreeMap<&'static str, usize>,
    /// The browsers' microphones played on the host, when the stream has a device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mic: Option<MicReport>,
}

/// What `/state` says of one stream besides what its hub and source status tell.
pub struct StreamFacts {
    pub input: StreamInput,
    /// The size asked for, reported until the source has said its own.
    pub configured: Resolution,
    pub bitrate_kbps: u32,
    pub gop: u32,
    /// The H.264 memsink's "a reader is there", when the stream has one.
    pub h264_sink: Option<Arc<AtomicBool>>,
    /// The same of the JPEG memsink.
    pub jpeg_sink: Option<Arc<AtomicBool>>,
    /// The microphone playback's counters, when the stream has one.
    pub mic: Option<Arc<MicStats>>,
}

/// Builds the document from the live server.
pub struct StateReporter {
    pub started: Instant,
    pub instance_id: String,
    /// Reported instead of every source's size (`--fake-resolution`).
    pub fake_resolution: Option<Resolution>,
    pub encoder: EncoderState,
    /// The default stream first.
    pub streams: Vec<StreamFacts>,
    pub engine: RtcEngine,
    pub relay: Arc<Relay>,
    pub janus: JanusStatus,
    pub mjpeg: Arc<Mjpeg>,
    pub forwards: Arc<Forwards>,
    pub whep: crate::whep::Whep,
}

impl StateReporter {
    /// The document, its `result` for the stream called `name` (`None`: the default).
    pub fn document(&self, name: Option<&str>) -> Result<StateDocument, UnknownStream> {
        let facts = match name {
            None => &self.streams[0],
            Some(name) => self
                .streams
                .iter()
                .find(|f| f.input.stream.name() == name)
                .ok_or_else(|| {
                    UnknownStream(
                        name.chars()
                            .take(crate::media::stream::MAX_NAME_LEN)
                            .collect(),
                    )
                })?,
        };
        Ok(StateDocument {
            ok: true,
            result: self.ustreamer(facts),
            peregrine: self.peregrine(),
        })
    }

    fn ustreamer(&self, facts: &StreamFacts) -> UstreamerState {
        let report = source_report(&facts.input);
        // The status keeps the rate of the last live pictures; while none flow (the
        // source is idle or lost) nothing is captured.
        let live = report.status.state == "live" && report.online;
        let captured_fps = if live {
            report.status.fps.round() as u32
        } else {
            0
        };
        let resolution = if let Some(fake) = self.fake_resolution {
            fake
        } else if report.status.width > 0 && report.status.height > 0 {
            Resolution {
                width: report.status.width,
                height: report.status.height,
            }
        } else {
            facts.configured
        };
        UstreamerState {
            instance_id: self.instance_id.clone(),
            encoder: self.encoder.clone(),
            h264: H264State {
                bitrate: facts.bitrate_kbps,
                gop: facts.gop,
                online: report.online,
                fps: captured_fps,
            },
            sinks: Sinks {
                jpeg: facts.jpeg_sink.as_deref().map(SinkState::of),
                h264: facts.h264_sink.as_deref().map(SinkState::of),
            },
            source: CaptureState {
                resolution,
                online: report.online,
                desired_fps: facts.input.stream.fps(),
                captured_fps,
            },
            stream: self.mjpeg.http_stream_state(facts.input.stream.name()),
        }
    }

    fn peregrine(&self) -> PeregrineState {
        let rtc = self.engine.stats();
        let streams = self
            .streams
            .iter()
            .map(|f| {
                let stream = &f.input.stream;
                let report = StreamReport {
                    source: source_report(&f.input),
                    audio: audio_report(&f.input),
                    viewers: stream.viewers(),
                    viewers_by: Output::ALL
                        .iter()
                        .map(|&o| (o.label(), stream.viewers_by(o)))
                        .collect(),
                    mic: f.mic.as_deref().map(MicStats::report),
                };
                (stream.name().to_string(), report)
            })
            .collect();
        PeregrineState {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            source: source_report(&self.streams[0].input),
            streams,
            viewers: rtc.connected,
            rtc,
            janus: self.janus.counts(),
            whep: self.whep.counts(),
            whip: self.whep.whip_counts(),
            relay: self.relay.stats(),
            mjpeg: self.mjpeg.stats(),
            rtp_forwards: self.forwards.reports(),
            whip_forwards: self.forwards.whip_reports(),
        }
    }
}

fn source_report(input: &StreamInput) -> SourceReport {
    SourceReport::new(input.status.snapshot(), &input.stream.hub().info())
}

fn audio_report(input: &StreamInput) -> Option<AudioReport> {
    let status = input.audio.as_ref()?.snapshot();
    Some(AudioReport::new(status, &input.stream.audio()?.info()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys and JSON types kvmd and µStreamer's own page read.
    #[test]
    fn ustreamer_result_has_its_keys_and_types() {
        let result = UstreamerState {
            instance_id: String::new(),
            encoder: EncoderState::default(),
            h264: H264State {
                bitrate: 2000,
                gop: 60,
                online: true,
                fps: 30,
            },
            sinks: Sinks::default(),
            source: CaptureState {
                resolution: Resolution {
                    width: 640,
                    height: 480,
                },
                online: true,
                desired_fps: 30,
                captured_fps: 29,
            },
            stream: HttpStreamState::default(),
        };
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["encoder"]["type"], "CPU");
        assert_eq!(json["encoder"]["quality"], 80);
        assert_eq!(json["source"]["resolution"]["width"], 640);
        assert!(json["source"]["online"].is_boolean());
        assert!(json["stream"]["clients"].is_u64());
        assert!(json["stream"]["clients_stat"].is_object());
        assert!(json.get("sinks").is_none(), "no sinks, no key: {json}");

        let with_sink = Sinks {
            jpeg: None,
            h264: Some(SinkState { has_clients: false }),
        };
        let json = serde_json::to_value(&with_sink).unwrap();
        assert_eq!(json, serde_json::json!({"h264": {"has_clients": false}}));
        let both = Sinks {
            jpeg: Some(SinkState { has_clients: true }),
            h264: Some(SinkState { has_clients: false }),
        };
        let json = serde_json::to_value(&both).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"jpeg": {"has_clients": true}, "h264": {"has_clients": false}})
        );
    }
}
