//! The figures read at scrape time from the parts of a running server: viewers per
//! transport, Janus objects, bytes and packets sent, WebRTC feedback counts, and the
//! state of the source and of the sound.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::janus::JanusStatus;
use crate::media::stream::{Output, Stream};
use crate::relay::Relay;
use crate::rtc::RtcEngine;
use crate::source::audio::AudioStatusHandle;
use crate::source::lifecycle::StatusHandle;

/// One stream as a scrape reads it.
#[derive(Clone)]
pub struct StreamInput {
    pub stream: Arc<Stream>,
    pub status: StatusHandle,
    /// The status of the stream's sound, when it has sound (its hub is the stream's).
    pub audio: Option<AudioStatusHandle>,
    /// The `kind` label: the kind of source configured (`SourceSpec::kind`), which the
    /// status text (a camera's device and format, say) does not always tell.
    pub kind: &'static str,
}

/// What a scrape reads.
pub struct Inputs {
    /// Every stream, the default one first.
    pub streams: Vec<StreamInput>,
    pub engine: RtcEngine,
    pub relay: Arc<Relay>,
    pub janus: JanusStatus,
    pub forwards: Arc<crate::egress::Forwards>,
    pub whep: crate::whep::Whep,
}

pub struct ServerCollector {
    inputs: Inputs,
}

impl ServerCollector {
    pub fn new(inputs: Inputs) -> ServerCollector {
        ServerCollector { inputs }
    }
}

impl fmt::Debug for ServerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerCollector")
    }
}

type Labels<const N: usize> = [(&'static str, &'static str); N];

impl Collector for ServerCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Inputs {
            streams,
            engine,
            relay,
            janus,
            forwards: _,
            whep,
        } = &self.inputs;
        let rtc = engine.stats();
        let relayed = relay.metrics();
        let sessions = janus.counts();

        let info: Labels<1> = [("version", env!("CARGO_PKG_VERSION"))];
        gauges(
            &mut enc,
            "peregrine_build_info",
            "Always 1; the version label says which peregrine runs.",
            [(info, 1)],
        )?;
        gauges(
            &mut enc,
            "peregrine_viewers",
            "Viewers receiving the stream, by transport (WebRTC: connected peers; \
             h264ws: /h264 WebSocket clients; jsmpeg: JSMpeg WebSocket viewers; direct: PiKVM \
             Direct H.264 clients with video started).",
            streams.iter().flat_map(|StreamInput { stream, .. }| {
                Output::ALL.map(|o| {
                    let labels = [("stream", stream.name()), ("transport", o.label())];
                    (labels, stream.viewers_by(o) as u64)
                })
            }),
        )?;
        gauge(
            &mut enc,
            "peregrine_webrtc_peers",
            "WebRTC peers, connected or still negotiating (what --max-viewers caps).",
            rtc.peers as u64,
        )?;
        gauges(
            &mut enc,
            "peregrine_webrtc_shard_peers",
            "WebRTC peers of each engine shard (--rtc-threads), connected or still \
             negotiating.",
            rtc.shards
                .iter()
                .enumerate()
                .map(|(i, s)| ([("shard", i.to_string())], s.peers as u64)),
        )?;
        gauge(
            &mut enc,
            "peregrine_janus_sessions",
            "Janus API sessions.",
            sessions.sessions as u64,
        )?;
        gauge(
            &mut enc,
            "peregrine_janus_handles",
            "Janus plugin handles.",
            sessions.handles as u64,
        )?;
        gauge(
            &mut enc,
            "peregrine_whep_sessions",
            "WHEP sessions, connected or still negotiating (their peers count in \
             peregrine_webrtc_peers).",
            whep.counts().sessions as u64,
        )?;
        gauge(
            &mut enc,
            "peregrine_whip_publishers",
            "WHIP publishers' sessions, connected or still negotiating.",
            whep.whip_counts().publishers as u64,
        )?;
        gauge(
            &mut enc,
            "peregrine_jsmpeg_uploads",
            "MPEG-TS uploads in progress (--jsmpeg-secret).",
            relayed.uploads as u64,
        )?;
        let transport = |t: &'static str| [("transport", t)];
        counters(
            &mut enc,
            "peregrine_sent_bytes",
            "Bytes sent to viewers, by transport (WebRTC: UDP payloads of every datagram; \
             WebSocket relays: message payloads).",
            [
                (transport("webrtc"), rtc.bytes_sent),
                (transport("h264ws"), relayed.h264_sent.1),
                (transport("jsmpeg"), relayed.jsmpeg_sent.1),
                (transport("direct"), relayed.direct_sent.1),
            ],
        )?;
        counters(
            &mut enc,
            "peregrine_sent_packets",
            "Packets sent to viewers, by transport (WebRTC: UDP datagrams, media and \
             control; WebSocket relays: messages).",
            [
                (transport("webrtc"), rtc.datagrams_sent),
                (transport("h264ws"), relayed.h264_sent.0),
                (transport("jsmpeg"), relayed.jsmpeg_sent.0),
                (transport("direct"), relayed.direct_sent.0),
            ],
        )?;
        counter(
            &mut enc,
            "peregrine_webrtc_rtp_packets_sent",
            "RTP packets sent to WebRTC viewers, first transmissions.",
            rtc.rtp_packets_sent,
        )?;
        counter(
            &mut enc,
            "peregrine_webrtc_keyframes_sent",
            "Keyframes sent to WebRTC viewers, counted once per viewer.",
            rtc.keyframes_sent,
        )?;
        counters(
            &mut enc,
            "peregrine_webrtc_keyframe_requests",
            "Keyframe requests received from WebRTC viewers, by RTCP message type.",
            [
                ([("type", "pli")], rtc.plis_received),
                ([("type", "fir")], rtc.firs_received),
            ],
        )?;
        counter(
            &mut enc,
            "peregrine_webrtc_nacks_received",
            "RTCP NACK messages received from WebRTC viewers.",
            rtc.nacks_received,
        )?;
        counter(
            &mut enc,
            "peregrine_webrtc_retransmitted_packets",
            "RTP packets sent again in answer to NACKs.",
            rtc.retransmitted_packets,
        )?;
        counter(
            &mut enc,
            "peregrine_webrtc_direct_srtp_streams",
            "Viewer streams whose RTP the engine encrypts itself once connected, past the WebRTC stack's write pipeline.",
            rtc.direct_srtp_streams,
        )?;
        counter(
            &mut enc,
            "peregrine_webrtc_direct_srtp_refused",
            "Viewer streams left to the WebRTC stack: the engine's encryption of their first packet differed from the stack's.",
            rtc.direct_srtp_refused,
        )?;

        let sources: Vec<_> = streams
            .iter()
            .map(|s| {
                (
                    [("stream", s.stream.name())],
                    (s.status.snapshot(), s.kind),
                    s.stream.hub().info(),
                )
            })
            .collect();
        gauges(
            &mut enc,
            "peregrine_source_up",
            "1 while the source delivers video; 0 while it is lost, failing or not yet started (viewers get NO SIGNAL).",
            sources.iter().map(|([stream], (status, kind), _)| {
                ([*stream, ("kind", *kind)], u64::from(status.state == "live"))
            }),
        )?;
        gauges(
            &mut enc,
            "peregrine_source_fps",
            "Frames per second of the source, measured over its last pictures.",
            sources
                .iter()
                .map(|(labels, (status, _), _)| (*labels, status.fps)),
        )?;
        counters(
            &mut enc,
            "peregrine_source_frames",
            "Pictures the stream carried (NO SIGNAL ones included).",
            sources.iter().map(|(labels, _, hub)| (*labels, hub.frames)),
        )?;
        counters(
            &mut enc,
            "peregrine_source_keyframes",
            "Keyframes among those pictures.",
            sources
                .iter()
                .map(|(labels, _, hub)| (*labels, hub.keyframes)),
        )?;
        counters(
            &mut enc,
            "peregrine_source_interruptions",
            "Times the source was lost after delivering video.",
            sources
                .iter()
                .map(|(labels, (status, _), _)| (*labels, status.interruptions)),
        )?;

        let sounds: Vec<_> = streams
            .iter()
            .filter_map(|s| {
                let status = s.audio.as_ref()?.snapshot();
                let hub = s.stream.audio()?.info();
                Some(([("stream", s.stream.name())], status, hub))
            })
            .collect();
        gauges(
            &mut enc,
            "peregrine_audio_up",
            "1 while the stream's sound source delivers; 0 while idle (nobody listens) or failing.",
            sounds
                .iter()
                .map(|(labels, status, _)| (*labels, u64::from(status.state == "live"))),
        )?;
        counters(
            &mut enc,
            "peregrine_audio_frames",
            "Opus frames (20 ms each) of the stream's sound.",
            sounds.iter().map(|(labels, _, hub)| (*labels, hub.frames)),
        )?;
        Ok(())
    }
}

fn gauge<V>(enc: &mut DescriptorEncoder, name: &str, help: &str, value: V) -> fmt::Result
where
    V: EncodeGaugeValue + fmt::Debug + Clone,
{
    let g = ConstGauge::new(value);
    g.encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// One gauge per label set.
pub(super) fn gauges<S, V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (S, V)>,
) -> fmt::Result
where
    S: EncodeLabelSet,
    V: EncodeGaugeValue + fmt::Debug + Clone,
{
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One counter per label set.
pub(super) fn counters<S, V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (S, V)>,
) -> fmt::Result
where
    S: EncodeLabelSet,
    V: EncodeCounterValue + fmt::Debug + Clone,
{
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}
