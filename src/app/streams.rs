//! Starts every configured stream: its hub, its JPEG tap, its source on the runner, its
//! sound (a hub of its own and the sound source on the audio runner, or, for a `whip`
//! stream without one, its publishers' sound), its memsink
//! output and its microphone playback, and gathers what the outputs and `/state` need
//! of each.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::{usage_error, AudioSpec, Config, SourceSpec, StreamConfig};
use crate::http::state::{Resolution, StreamFacts};
use crate::media::audio::mic::{MicInput, MIC_QUEUE};
use crate::media::audio::published::SoundOutlet;
use crate::media::hub::DEFAULT_QUEUE_FRAMES;
use crate::media::jpeg_tap::{JpegTap, TapConfig};
use crate::media::publisher::PublisherSlot;
use crate::media::{Hub, Stream};
use crate::memsink::jpeg_output as memsink_jpeg_output;
use crate::memsink::output as memsink_output;
use crate::memsink::writer::SinkConfig;
use crate::metrics::collector::StreamInput;
use crate::mic::MicStats;
use crate::source::audio::alsa::{AlsaConfig, AlsaSource};
use crate::source::audio::tone::ToneSource;
use crate::source::audio::{self, AudioSource, AudioStatusHandle};
use crate::source::bytestream::{ByteStreamConfig, ByteStreamSource, Input};
use crate::source::camera::replay::{self, ReplayOpener};
use crate::source::camera::v4l2::{V4l2Opener, V4l2Settings};
use crate::source::camera::{CameraConfig, CameraSource};
use crate::source::lifecycle::StatusHandle;
use crate::source::memsink::{MemsinkSource, MemsinkSourceConfig};
use crate::source::rtp_listen::RtpListenSource;
use crate::source::runner::{self, RunnerConfig, Source};
use crate::source::testsrc::{PatternSource, TestsrcConfig};

/// The streams, started.
pub struct Started {
    /// Each stream with its source status, the default stream first.
    pub running: Vec<StreamInput>,
    pub facts: Vec<StreamFacts>,
    /// Source and sink threads, joined at shutdown after `stop` is set.
    pub threads: Vec<Option<std::thread::JoinHandle<()>>>,
    pub jpeg_taps: Vec<(Arc<Stream>, Arc<JpegTap>)>,
}

/// Start every stream of `cfg`; their threads end once `stop` is set and their hubs
/// are woken.
pub fn start_streams(cfg: &Config, stop: &Arc<AtomicBool>) -> Result<Started> {
    let mut running = Vec::new();
    let mut facts = Vec::new();
    let mut threads = Vec::new();
    let mut jpeg_taps = Vec::new();
    for stream_cfg in cfg.stream_configs() {
        let hub = Hub::new(DEFAULT_QUEUE_FRAMES);
        let status = StatusHandle::new(&stream_cfg.source, "no_signal");
        let publisher_sound = publisher_sound(&stream_cfg);
        let publisher = (stream_cfg.spec == SourceSpec::Whip).then(|| {
            Arc::new(match publisher_sound.clone() {
                Some(outlet) => PublisherSlot::with_sound(outlet),
                None => PublisherSlot::default(),
            })
        });
        // Made before the source: a JPEG camera hands its pictures to it directly.
        let jpeg_tap = JpegTap::new(
            stream_cfg.name.clone(),
            hub.clone(),
            TapConfig {
                quality: cfg.jpeg_quality,
                max_fps: stream_cfg.video.fps,
            },
        );
        threads.push(
            start_source(
                &stream_cfg,
                hub.clone(),
                status.clone(),
                stop.clone(),
                &jpeg_tap,
                publisher.clone(),
            )
            .with_context(|| format!("stream {:?}", stream_cfg.name))?,
        );
        let sink_readers = stream_cfg
            .h264_sink
            .as_ref()
            .map(|_| Arc::new(AtomicBool::new(false)));
        threads.push(start_sink(
            cfg,
            &stream_cfg,
            hub.clone(),
            stop.clone(),
            sink_readers.clone().unwrap_or_default(),
        )?);
        let jpeg_sink_readers = stream_cfg
            .jpeg_sink
            .as_ref()
            .map(|_| Arc::new(AtomicBool::new(false)));
        threads.push(start_jpeg_sink(
            cfg,
            &stream_cfg,
            &jpeg_tap,
            stop.clone(),
            jpeg_sink_readers.clone().unwrap_or_default(),
        )?);
        let sound = start_sound(&stream_cfg, stop.clone())
            .with_context(|| format!("stream {:?}: sound", stream_cfg.name))?;
        let (audio_hub, audio_status) = match sound {
            Some(Sound {
                hub,
                status,
                thread,
            }) => {
                threads.push(Some(thread));
                (Some(hub), Some(status))
            }
            None => match publisher_sound {
                Some(outlet) => (Some(outlet.hub), Some(outlet.status)),
                None => (None, None),
            },
        };
        let (mic, mic_stats, mic_thread) = start_mic(&stream_cfg, stop)?;
        threads.push(mic_thread);
        let kind = stream_cfg.spec.kind();
        let stream = Stream::with_sound(stream_cfg.name, hub, stream_cfg.video.fps, audio_hub, mic);
        if let Some(slot) = publisher {
            stream.set_publisher_slot(slot);
        }
        jpeg_taps.push((stream.clone(), jpeg_tap));
        let input = StreamInput {
            stream,
            status,
            audio: audio_status,
            kind,
        };
        facts.push(StreamFacts {
            input: input.clone(),
            configured: Resolution {
                width: stream_cfg.video.width,
                height: stream_cfg.video.height,
            },
            bitrate_kbps: stream_cfg.video.bitrate_kbps,
            gop: stream_cfg.video.gop,
            h264_sink: sink_readers,
            jpeg_sink: jpeg_sink_readers,
            mic: mic_stats,
        });
        running.push(input);
    }
    Ok(Started {
        running,
        facts,
        threads,
        jpeg_taps,
    })
}

/// Start a stream's source: made from its spec, run by the runner.
fn start_source(
    cfg: &StreamConfig,
    hub: Arc<Hub>,
    status: StatusHandle,
    stop: Arc<AtomicBool>,
    jpeg_tap: &Arc<JpegTap>,
    publisher: Option<Arc<PublisherSlot>>,
) -> Result<Option<std::thread::JoinHandle<()>>> {
    let (source, mut runner) = make_source(cfg, jpeg_tap, publisher)?;
    // Only sources of raw pictures use the encoder; a missing device stops the start.
    if matches!(
        cfg.spec,
        SourceSpec::Testsrc | SourceSpec::V4l2 { .. } | SourceSpec::Recording(_)
    ) {
        cfg.h264_encoder.check().map_err(usage_error)?;
    }
    runner.encoders = cfg.h264_encoder.factory();
    Ok(Some(runner::spawn(source, runner, hub, status, stop)?))
}

/// The source `cfg.spec` names, and how the runner makes pictures for it. What the
/// configuration can fix (a file that cannot be used, a port in use) fails here.
fn make_source(
    cfg: &StreamConfig,
    jpeg_tap: &Arc<JpegTap>,
    publisher: Option<Arc<PublisherSlot>>,
) -> Result<(Box<dyn Source>, RunnerConfig)> {
    let camera = CameraConfig::new(cfg.video);
    let byte_stream = ByteStreamConfig {
        video: cfg.video,
        allow: cfg.source_allow.clone(),
    };
    let made: (Box<dyn Source>, RunnerConfig) = match &cfg.spec {
        SourceSpec::Testsrc => {
            if cfg.source_chosen {
                tracing::info!("no --source given and no camera: using the test pattern");
            }
            let pattern = TestsrcConfig {
                video: cfg.video,
                warmup: std::time::Duration::from_millis(cfg.testsrc_warmup_ms),
            };
            (Box::new(PatternSource::new(&pattern)?), camera.runner())
        }
        SourceSpec::V4l2 { device, format } => {
            if cfg.source_chosen && device.exists() {
                tracing::info!(device = %device.display(), "no --source given: using the camera");
            } else if cfg.source_chosen {
                tracing::warn!(
                    device = %device.display(),
                    "no --source given and the device named is not there: waiting for it"
                );
            }
            let opener = V4l2Opener::new(V4l2Settings {
                path: device.clone(),
                format: *format,
                video: cfg.video,
            });
            let source =
                CameraSource::new(&camera, Box::new(opener)).with_jpeg_tap(jpeg_tap.clone());
            (Box::new(source), camera.runner())
        }
        SourceSpec::Recording(path) => {
            // A named file that cannot be used is a usage error, like a bad flag.
            let recording = replay::recording_from_file(path, cfg.video.width, cfg.video.height)
                .map_err(usage_error)?;
            tracing::info!(
                file = %path.display(),
                format = %recording.negotiated.format,
                pictures = recording.frames.len(),
                "replaying a camera recording through the camera pipeline"
            );
            let (opener, _) = ReplayOpener::new(recording, cfg.video.fps, &[]);
            let source =
                CameraSource::new(&camera, Box::new(opener)).with_jpeg_tap(jpeg_tap.clone());
            (Box::new(source), camera.runner())
        }
        SourceSpec::Memsink { name } => {
            let source = MemsinkSource::new(MemsinkSourceConfig::new(name))?;
            (Box::new(source), MemsinkSource::runner())
        }
        SourceSpec::Tcp(addr) => {
            let source = ByteStreamSource::new(Input::Connect(addr.clone()), &byte_stream)?;
            (Box::new(source), byte_stream.runner())
        }
        SourceSpec::TcpListen(addr) => {
            let source = ByteStreamSource::new(Input::Listen(*addr), &byte_stream)?;
            (Box::new(source), byte_stream.runner())
        }
        SourceSpec::RtpListen(addr) => {
            let source = RtpListenSource::listen(*addr, &cfg.source_allow)?;
            (Box::new(source), RtpListenSource::runner(cfg.video))
        }
        SourceSpec::Whip => {
            let slot = publisher.unwrap_or_default();
            (
                Box::new(crate::source::whip::source(slot)),
                RtpListenSource::runner(cfg.video),
            )
        }
        SourceSpec::Stdin => {
            let source = ByteStreamSource::new(Input::Stdin, &byte_stream)?;
            (Box::new(source), byte_stream.runner())
        }
        SourceSpec::H264File(path) => {
            let source = ByteStreamSource::new(Input::File(path.clone()), &byte_stream)
                .map_err(usage_error)?;
            (Box::new(source), byte_stream.runner())
        }
    };
    Ok(made)
}

/// What a stream with a microphone device (`--mic-device`) has of it: the engine's end
/// of the hand-over, the counters, and the playback thread.
type Mic = (
    Option<MicInput>,
    Option<Arc<MicStats>>,
    Option<std::thread::JoinHandle<()>>,
);

/// A stream's microphone playback, when configured. The device is opened only while
/// somebody talks, so a device that is not there shows then, in the log and `/state`.
fn start_mic(stream: &StreamConfig, stop: &Arc<AtomicBool>) -> Result<Mic> {
    let Some(device) = &stream.mic_device else {
        return Ok((None, None, None));
    };
    let (input, events) = MicInput::channel(MIC_QUEUE);
    let stats = Arc::new(MicStats::new(device));
    let thread = crate::mic::spawn(device, events, stats.clone(), stop.clone())
        .context("cannot start the microphone playback thread")?;
    tracing::info!(stream = %stream.name, device = %device, "browsers' microphones play on ALSA");
    Ok((Some(input), Some(stats), Some(thread)))
}

/// Where a `whip` stream's publishers' sound goes: a stream without a sound source of
/// its own has theirs. `/state` names the source `whip`.
fn publisher_sound(cfg: &StreamConfig) -> Option<SoundOutlet> {
    let takes = cfg.spec == SourceSpec::Whip && matches!(cfg.audio.spec, AudioSpec::None);
    takes.then(|| SoundOutlet {
        hub: Hub::new(audio::runner::QUEUE_FRAMES),
        status: AudioStatusHandle::new("whip"),
    })
}

/// A stream's sound, started.
struct Sound {
    hub: Arc<Hub>,
    status: AudioStatusHandle,
    /// The sound source's thread, joined at shutdown with the others.
    thread: std::thread::JoinHandle<()>,
}

/// A stream's sound, when it has any: its hub and its source on the audio runner.
fn start_sound(cfg: &StreamConfig, stop: Arc<AtomicBool>) -> Result<Option<Sound>> {
    let sound = &cfg.audio;
    let source: Box<dyn AudioSource> = match &sound.spec {
        AudioSpec::None => return Ok(None),
        AudioSpec::Tone => Box::new(ToneSource::new()),
        AudioSpec::Alsa(device) => Box::new(AlsaSource::new(AlsaConfig {
            device: device.clone(),
            rate: sound.rate,
            channels: sound.channels,
            tc358743: sound.tc358743.clone(),
        })),
    };
    let hub = Hub::new(audio::runner::QUEUE_FRAMES);
    let status = AudioStatusHandle::new(&sound.spec.label());
    let thread = audio::runner::spawn(
        source,
        sound.bitrate_kbps,
        hub.clone(),
        status.clone(),
        stop,
    )?;
    Ok(Some(Sound {
        hub,
        status,
        thread,
    }))
}

/// A stream's H.264 memsink output (`--h264-sink`), when configured.
fn start_sink(
    cfg: &Config,
    stream: &StreamConfig,
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
    readers: Arc<AtomicBool>,
) -> Result<Option<std::thread::JoinHandle<()>>> {
    let Some(name) = &stream.h264_sink else {
        return Ok(None);
    };
    let sink = SinkConfig {
        name: name.clone(),
        mode: cfg.h264_sink_mode,
        remove_on_exit: cfg.h264_sink_rm,
        client_ttl: std::time::Duration::from_secs(cfg.h264_sink_client_ttl_s),
        timeout: std::time::Duration::from_secs(cfg.h264_sink_timeout_s),
    };
    Ok(Some(memsink_output::spawn_reporting(
        sink,
        stream.video.gop,
        hub,
        stop,
        readers,
    )?))
}

/// A stream's JPEG memsink output (`--jpeg-sink`), when configured.
fn start_jpeg_sink(
    cfg: &Config,
    stream: &StreamConfig,
    tap: &Arc<JpegTap>,
    stop: Arc<AtomicBool>,
    readers: Arc<AtomicBool>,
) -> Result<Option<std::thread::JoinHandle<()>>> {
    let Some(name) = &stream.jpeg_sink else {
        return Ok(None);
    };
    let sink = SinkConfig {
        name: name.clone(),
        mode: cfg.jpeg_sink_mode,
        remove_on_exit: cfg.jpeg_sink_rm,
        client_ttl: std::time::Duration::from_secs(cfg.jpeg_sink_client_ttl_s),
        timeout: std::time::Duration::from_secs(cfg.jpeg_sink_timeout_s),
    };
    Ok(Some(memsink_jpeg_output::spawn(
        sink,
        tap.clone(),
        stop,
        readers,
        tokio::runtime::Handle::current(),
    )?))
}
