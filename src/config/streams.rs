//! Streams: the command line describes one (`default`); the TOML file may add any
//! number as `[[stream]]` tables, each with the source keys of the top level. A key a
//! table leaves out takes the top level's value (picture size, frame rate, encoder,
//! sound settings), except what belongs to one stream alone (`source_allow`,
//! `h264_sink`, `jpeg_sink`, `mic_device`, the sound source `audio`,
//! `audio_tc358743`, `rtp_forward`, `whip_forward` and `whip_token`).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::{Args, AudioConfig, AudioSpec, Config, SourceSpec};
use crate::egress::whip::WhipTarget;
use crate::egress::RtpForwardTarget;
use crate::media::encoder::H264EncoderChoice;
use crate::media::stream::{valid_name, DEFAULT_STREAM, MAX_NAME_LEN};
use crate::media::VideoSettings;

/// One `[[stream]]` table as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamArgs {
    pub name: String,
    pub source: Option<String>,
    pub source_allow: Option<Vec<IpAddr>>,
    pub device: Option<PathBuf>,
    pub format: Option<String>,
    pub resolution: Option<String>,
    pub desired_fps: Option<u32>,
    pub h264_bitrate: Option<u32>,
    pub h264_gop: Option<u32>,
    pub h264_m2m_device: Option<PathBuf>,
    pub testsrc_warmup_ms: Option<u64>,
    pub h264_sink: Option<String>,
    pub jpeg_sink: Option<String>,
    pub mic_device: Option<String>,
    pub audio: Option<String>,
    pub audio_device: Option<String>,
    pub audio_rate: Option<u32>,
    pub audio_channels: Option<u32>,
    pub audio_bitrate: Option<u32>,
    pub audio_tc358743: Option<PathBuf>,
    pub rtp_forward: Option<Vec<String>>,
    pub whip_forward: Option<Vec<String>>,
    pub whip_token: Option<String>,
}

/// One stream, resolved: what its source reads and how pictures are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    pub name: String,
    /// The source as configured, for messages and `/state`.
    pub source: String,
    /// What the source is, parsed when the configuration was read.
    pub spec: SourceSpec,
    /// No source was configured: it was chosen by whether the camera exists.
    pub source_chosen: bool,
    pub source_allow: Vec<IpAddr>,
    pub video: VideoSettings,
    pub testsrc_warmup_ms: u64,
    /// What encodes the stream's raw pictures to H.264.
    pub h264_encoder: H264EncoderChoice,
    /// The stream's own H.264 memsink output.
    pub h264_sink: Option<String>,
    /// The stream's own JPEG memsink output.
    pub jpeg_sink: Option<String>,
    /// The ALSA device its viewers' microphones play on.
    pub mic_device: Option<String>,
    /// The stream's sound.
    pub audio: AudioConfig,
    /// Where the stream is sent as plain RTP.
    pub rtp_forward: Vec<RtpForwardTarget>,
    /// WHIP endpoints the stream is published to.
    pub whip_forward: Vec<WhipTarget>,
}

impl StreamConfig {
    /// The stream the top-level keys and flags describe.
    pub fn default_of(cfg: &Config) -> StreamConfig {
        StreamConfig {
            name: DEFAULT_STREAM.into(),
            source: cfg.source.clone(),
            spec: cfg.source_spec.clone(),
            source_chosen: cfg.source_chosen,
            source_allow: cfg.source_allow.clone(),
            video: cfg.video,
            testsrc_warmup_ms: cfg.testsrc_warmup_ms,
            h264_encoder: cfg.h264_encoder.clone(),
            h264_sink: cfg.h264_sink.clone(),
            jpeg_sink: cfg.jpeg_sink.clone(),
            mic_device: cfg.mic_device.clone(),
            audio: cfg.audio.resolve(&cfg.source_spec),
            rtp_forward: cfg.rtp_forward.clone(),
            whip_forward: cfg
                .whip_forward
                .iter()
                .map(|url| WhipTarget {
                    url: url.clone(),
                    token: cfg.whip_token.clone(),
                })
                .collect(),
        }
    }
}

/// Resolve the `[[stream]]` tables over `base` (the resolved top level), checking
/// each with the rules of the top-level keys, then the streams against each other.
pub fn resolve(base: &Config, tables: Vec<StreamArgs>) -> Result<Vec<StreamConfig>> {
    let mut extra = Vec::with_capacity(tables.len());
    for (i, table) in tables.into_iter().enumerate() {
        let what = match valid_name(&table.name) {
            true => format!("[[stream]] {:?}", table.name),
            false => format!("[[stream]] number {}", i + 1),
        };
        extra.push(resolve_one(base, table).with_context(|| what)?);
    }
    check_together(&StreamConfig::default_of(base), &extra)?;
    Ok(extra)
}

fn resolve_one(base: &Config, table: StreamArgs) -> Result<StreamConfig> {
    if !valid_name(&table.name) {
        bail!(
            "name must be 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', got {:?}",
            table.name
        );
    }
    if table.name == DEFAULT_STREAM {
        bail!(
            "the name {DEFAULT_STREAM:?} belongs to the stream of the top-level keys and \
             flags; give this one another name"
        );
    }
    let Some(source) = table.source else {
        bail!("source is required, e.g. source = \"testsrc\"");
    };
    // The top level's checks, applied to a copy that keeps only what a stream inherits.
    let mut c = base.clone();
    c.source_allow.clear();
    c.h264_sink = None;
    c.jpeg_sink = None;
    c.mic_device = None;
    c.rtp_forward.clear();
    c.whip_forward.clear();
    c.whip_token = None;
    // A capture device feeds one stream: a table names its own sound, or takes the
    // default of its video source.
    c.audio.spec = None;
    c.audio.tc358743 = None;
    c.apply(Args {
        source: Some(source),
        source_allow: table.source_allow,
        device: table.device,
        format: table.format,
        resolution: table.resolution,
        desired_fps: table.desired_fps,
        h264_bitrate: table.h264_bitrate,
        h264_gop: table.h264_gop,
        h264_m2m_device: table.h264_m2m_device,
        testsrc_warmup_ms: table.testsrc_warmup_ms,
        h264_sink: table.h264_sink,
        jpeg_sink: table.jpeg_sink,
        mic_device: table.mic_device,
        audio: table.audio,
        audio_device: table.audio_device,
        audio_rate: table.audio_rate,
        audio_channels: table.audio_channels,
        audio_bitrate: table.audio_bitrate,
        audio_tc358743: table.audio_tc358743,
        rtp_forward: table.rtp_forward,
        whip_forward: table.whip_forward,
        whip_token: table.whip_token,
        ..Args::default()
    })?;
    c.source_spec = SourceSpec::parse(&c.source, &c.device, c.format)?;
    c.audio.check(&c.source_spec)?;
    check_whip(&c)?;
    let mut stream = StreamConfig::default_of(&c);
    stream.name = table.name;
    stream.source_chosen = false;
    check_source_allow(&stream)?;
    Ok(stream)
}

/// `source_allow` only means something to a listening source.
pub fn check_source_allow(s: &StreamConfig) -> Result<()> {
    let listening = matches!(s.spec, SourceSpec::TcpListen(_) | SourceSpec::RtpListen(_));
    if !s.source_allow.is_empty() && !listening {
        bail!(
            "source_allow applies to --source tcp-listen://IP:PORT and rtp-listen://IP:PORT \
             only, not to {:?}",
            s.source
        );
    }
    Ok(())
}

/// A WHIP token goes with a WHIP endpoint.
pub fn check_whip(c: &Config) -> Result<()> {
    if c.whip_token.is_some() && c.whip_forward.is_empty() {
        bail!("whip_token is set but no whip_forward endpoint: add --whip-forward URL");
    }
    Ok(())
}

/// What two streams cannot share: a name, a camera, a listening address, a memsink
/// name (as one's output, or one's output and another's input), a playback device.
fn check_together(default: &StreamConfig, extra: &[StreamConfig]) -> Result<()> {
    let all: Vec<&StreamConfig> = std::iter::once(default).chain(extra).collect();
    let mut names = HashSet::new();
    // What is read or written → the first stream that does.
    let mut inputs: HashMap<String, &str> = HashMap::new();
    let mut sinks: HashMap<&str, &str> = HashMap::new();
    let mut mics: HashMap<&str, &str> = HashMap::new();
    for s in &all {
        if !names.insert(s.name.as_str()) {
            bail!("two [[stream]] tables are named {:?}", s.name);
        }
        let sound = match &s.audio.spec {
            AudioSpec::Alsa(device) => Some(format!("the ALSA device {device}")),
            _ => None,
        };
        for input in s.spec.exclusive_input().into_iter().chain(sound) {
            if let Some(first) = inputs.insert(input.clone(), &s.name) {
                bail!(
                    "streams {first:?} and {:?} both read {input}; a source feeds one stream",
                    s.name
                );
            }
        }
        // One name is one object, whatever a stream writes into it.
        for sink in [&s.h264_sink, &s.jpeg_sink].into_iter().flatten() {
            if let Some(first) = sinks.insert(sink, &s.name) {
                bail!(
                    "streams {first:?} and {:?} both write the memsink {sink:?}",
                    s.name
                );
            }
        }
        if let Some(mic) = &s.mic_device {
            if let Some(first) = mics.insert(mic, &s.name) {
                bail!(
                    "streams {first:?} and {:?} both play microphones on {mic:?}; give each \
                     its own mic_device",
                    s.name
                );
            }
        }
    }
    for s in &all {
        let SourceSpec::Memsink { name: read } = &s.spec else {
            continue;
        };
        if let Some(writer) = sinks.get(read.as_str()) {
            return Err(anyhow!(
                "stream {:?} reads the memsink {read:?} that stream {writer:?} writes: \
                 peregrine would read its own frames",
                s.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Load `toml` as the `--config` file, with `flags` after it.
    fn load(name: &str, toml: &str, flags: &[&str]) -> Result<Config> {
        let path = std::env::temp_dir().join(format!(
            "peregrine-streams-{name}-{}.toml",
            std::process::id()
        ));
        std::fs::write(&path, toml).unwrap();
        let mut args = vec!["peregrine", "--config", path.to_str().unwrap()];
        args.extend_from_slice(flags);
        let cfg = Config::load(Args::parse_from(args));
        let _ = std::fs::remove_file(&path);
        cfg
    }

    #[test]
    fn tables_add_streams_that_inherit_the_top_level_picture_settings() {
        let cfg = load(
            "inherit",
            r#"
source = "testsrc"
resolution = "320x240"
desired_fps = 15
[[stream]]
name = "cam2"
source = "testsrc"
h264_gop = 10
[[stream]]
name = "cam3"
source = "tcp-listen://127.0.0.1:9000"
source_allow = ["127.0.0.1"]
resolution = "640x360"
"#,
            &["--h264-bitrate", "900"],
        )
        .unwrap();
        let all = cfg.stream_configs();
        let names: Vec<_> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["default", "cam2", "cam3"]);
        let cam2 = &all[1];
        assert_eq!(
            (cam2.video.width, cam2.video.height, cam2.video.fps),
            (320, 240, 15)
        );
        assert_eq!(
            (cam2.video.gop, cam2.video.bitrate_kbps),
            (10, 900),
            "flags reach every stream"
        );
        assert_eq!(all[0].video.gop, 60, "a table's keys stay in its stream");
        let cam3 = &all[2];
        assert_eq!((cam3.video.width, cam3.video.height), (640, 360));
        assert_eq!(cam3.source_allow, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(all[0].source_allow.is_empty());
    }

    #[test]
    fn a_table_may_take_its_own_m2m_encoder_and_inherits_the_boost() {
        let cfg = load(
            "m2m",
            r#"
source = "testsrc"
h264_boost = true
h264_m2m_device = "/dev/video11"
[[stream]]
name = "cam2"
source = "testsrc"
h264_m2m_device = "/dev/video12"
[[stream]]
name = "cam3"
source = "testsrc"
"#,
            &[],
        )
        .unwrap();
        let all = cfg.stream_configs();
        let device = |s: &StreamConfig| match &s.h264_encoder {
            H264EncoderChoice::M2m(m) => (m.device.clone(), m.boost),
            H264EncoderChoice::Cpu => panic!("{} has the CPU encoder", s.name),
        };
        assert_eq!(device(&all[0]), ("/dev/video11".into(), true));
        assert_eq!(device(&all[1]), ("/dev/video12".into(), true));
        assert_eq!(device(&all[2]), ("/dev/video11".into(), true));
    }

    #[test]
    fn a_microphone_device_belongs_to_its_stream() {
        let cfg = load(
            "mic",
            r#"
source = "testsrc"
[[stream]]
name = "door"
source = "testsrc"
mic_device = "plughw:Door,0"
[[stream]]
name = "garage"
source = "testsrc"
"#,
            &["--mic-device", "plughw:UAC2Gadget,0"],
        )
        .unwrap();
        let mics: Vec<_> = cfg
            .stream_configs()
            .into_iter()
            .map(|s| s.mic_device)
            .collect();
        assert_eq!(
            mics,
            [
                Some("plughw:UAC2Gadget,0".to_string()),
                Some("plughw:Door,0".to_string()),
                None
            ],
            "not inherited: one device plays one stream's talkers"
        );
    }

    #[test]
    fn rtp_forwards_belong_to_their_stream() {
        let cfg = load(
            "forward",
            r#"
source = "testsrc"
rtp_forward = ["10.0.0.2:5004"]
[[stream]]
name = "door"
source = "testsrc"
rtp_forward = ["video=10.0.0.3:6004,audio=10.0.0.3:6002", "10.0.0.4:5004"]
[[stream]]
name = "garage"
source = "testsrc"
"#,
            &[],
        )
        .unwrap();
        let targets: Vec<Vec<String>> = cfg
            .stream_configs()
            .iter()
            .map(|s| s.rtp_forward.iter().map(|t| t.to_string()).collect())
            .collect();
        assert_eq!(
            targets,
            [
                vec!["10.0.0.2:5004".to_string()],
                vec![
                    "10.0.0.3:6004 audio 10.0.0.3:6002".to_string(),
                    "10.0.0.4:5004".to_string()
                ],
                vec![],
            ]
        );
        let err = load(
            "forward-bad",
            "source = \"testsrc\"\n[[stream]]\nname = \"x\"\nsource = \"testsrc\"\nrtp_forward = [\"nowhere\"]\n",
            &[],
        )
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(
            err.contains("rtp_forward") && err.contains("HOST:PORT"),
            "{err}"
        );
    }

    #[test]
    fn the_command_line_alone_describes_the_default_stream() {
        let cfg = Config::load(Args::parse_from(["peregrine", "--source", "testsrc"])).unwrap();
        let all = cfg.stream_configs();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, DEFAULT_STREAM);
        assert_eq!(all[0].source, "testsrc");
    }

    #[test]
    fn mistakes_in_tables_are_refused_naming_the_stream_and_the_fix() {
        let cases = [
            ("[[stream]]\nname = \"a b\"\nsource = \"testsrc\"\n", "name must be"),
            ("[[stream]]\nname = \"default\"\nsource = \"testsrc\"\n", "another name"),
            ("[[stream]]\nname = \"x\"\n", "source is required"),
            (
                "[[stream]]\nname = \"x\"\nsource = \"testsrc\"\nwhip_token = \"t\"\n",
                "no whip_forward endpoint",
            ),
            (
                "[[stream]]\nname = \"x\"\nsource = \"testsrc\"\nwhip_forward = [\"ws://x/whip\"]\n",
                "not an http:// or https:// URL",
            ),
            (
                "[[stream]]\nname = \"x\"\nsource = \"rtsp://cam/1\"\n",
                "not supported",
            ),
            (
                "[[stream]]\nname = \"x\"\nsource = \"testsrc\"\ndesired_fps = 0\n",
                "desired_fps",
            ),
            (
                "[[stream]]\nname = \"x\"\nsource = \"testsrc\"\nsource_allow = [\"127.0.0.1\"]\n",
                "source_allow applies",
            ),
            (
                "[[stream]]\nname = \"x\"\nsource = \"testsrc\"\ncolour = \"red\"\n",
                "unknown field",
            ),
            (
                "[[stream]]\nname = \"x\"\nsource = \"testsrc\"\n[[stream]]\nname = \"x\"\nsource = \"testsrc\"\n",
                "two [[stream]] tables are named \"x\"",
            ),
            (
                "source = \"tcp-listen://127.0.0.1:9000\"\n[[stream]]\nname = \"x\"\nsource = \"tcp-listen://127.0.0.1:9000\"\n",
                "both read tcp-listen://127.0.0.1:9000",
            ),
            (
                "h264_sink = \"s1.h264\"\n[[stream]]\nname = \"x\"\nsource = \"testsrc\"\nh264_sink = \"s1.h264\"\n",
                "both write the memsink \"s1.h264\"",
            ),
            (
                "jpeg_sink = \"s1::jpeg\"\n[[stream]]\nname = \"x\"\nsource = \"testsrc\"\njpeg_sink = \"s1::jpeg\"\n",
                "both write the memsink \"s1::jpeg\"",
            ),
            (
                "h264_sink = \"s1::jpeg\"\n[[stream]]\nname = \"x\"\nsource = \"testsrc\"\njpeg_sink = \"s1::jpeg\"\n",
                "both write the memsink \"s1::jpeg\"",
            ),
            (
                "jpeg_sink = \"s1::jpeg\"\n[[stream]]\nname = \"x\"\nsource = \"memsink:s1::jpeg\"\n",
                "read its own frames",
            ),
            (
                "[[stream]]\nname = \"x\"\nsource = \"testsrc\"\njpeg_sink = \"x:y.jpeg\"\n",
                "jpeg_sink",
            ),
            (
                "h264_sink = \"s1.h264\"\n[[stream]]\nname = \"x\"\nsource = \"memsink:s1.h264\"\n",
                "read its own frames",
            ),
            (
                "mic_device = \"hw:1,0\"\n[[stream]]\nname = \"x\"\nsource = \"testsrc\"\nmic_device = \"hw:1,0\"\n",
                "both play microphones on \"hw:1,0\"",
            ),
            (
                "[[stream]]\nname = \"x\"\nsource = \"testsrc\"\nmic_device = \"\"\n",
                "mic_device must be",
            ),
        ];
        for (i, (toml, expected)) in cases.into_iter().enumerate() {
            let toml = match toml.starts_with("[[stream]]") {
                true => format!("source = \"testsrc\"\n{toml}"),
                false => toml.to_string(),
            };
            let err = match load(&format!("bad{i}"), &toml, &[]) {
                Ok(_) => panic!("accepted:\n{toml}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(
                err.contains(expected),
                "{expected:?} not in {err:?} for\n{toml}"
            );
        }
    }
}
