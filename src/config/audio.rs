//! A stream's sound as configured: `--audio` (`tone`, `none` or `alsa:DEVICE`), its
//! shorthand `--audio-device`, and the ALSA capture and Opus settings, checked when
//! the configuration is read. Without `--audio` a stream of the test pattern has the
//! test tone and any other stream has no sound.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::{Args, SourceSpec};
use crate::source::audio::tc358743::RATES;

/// Every form `--audio` takes, for error messages.
pub const AUDIO_FORMS: &str = "tone, none or alsa:DEVICE (e.g. alsa:hw:1,0; `arecord -L` \
lists the devices)";

/// Opus bitrates libopus accepts, kbit/s.
pub const BITRATES: std::ops::RangeInclusive<u32> = 6..=510;

/// Where a stream's sound comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioSpec {
    /// No sound.
    None,
    /// The embedded test tone: a 1000 Hz beep at each whole second.
    Tone,
    /// ALSA capture from the named device.
    Alsa(String),
}

impl AudioSpec {
    /// Parse an `audio` value.
    pub fn parse(text: &str) -> Result<AudioSpec> {
        match text {
            "tone" => return Ok(AudioSpec::Tone),
            "none" => return Ok(AudioSpec::None),
            _ => {}
        }
        match text.strip_prefix("alsa:") {
            Some(device) => Ok(AudioSpec::Alsa(alsa_device("audio", device)?)),
            None => bail!("audio must be {AUDIO_FORMS}, got {text:?}"),
        }
    }

    /// How `/state` and the log name it: `tone` or `alsa:DEVICE`.
    pub fn label(&self) -> String {
        match self {
            AudioSpec::None => "none".into(),
            AudioSpec::Tone => "tone".into(),
            AudioSpec::Alsa(device) => format!("alsa:{device}"),
        }
    }
}

/// An ALSA device name as given to `key`: not empty, one line.
fn alsa_device(key: &str, name: &str) -> Result<String> {
    if name.trim().is_empty() {
        bail!("{key} needs the ALSA device's name, e.g. hw:1,0 (`arecord -L` lists them)");
    }
    if name.chars().any(char::is_control) {
        bail!("{key} {name:?}: an ALSA device name has no control characters");
    }
    Ok(name.to_string())
}

/// The sound settings, layer over layer (defaults, Janus config, file, flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioSettings {
    /// `None`: not configured, the stream's video source decides.
    pub spec: Option<AudioSpec>,
    /// ALSA capture rate (Hz), unless a TC358743 tells it.
    pub rate: u32,
    /// ALSA capture channels, 1 or 2.
    pub channels: u32,
    /// Opus bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// The TC358743 HDMI bridge to read the capture rate from.
    pub tc358743: Option<PathBuf>,
}

impl Default for AudioSettings {
    fn default() -> Self {
        AudioSettings {
            spec: None,
            rate: 48_000,
            channels: 2,
            // As the ustreamer plugin.
            bitrate_kbps: 128,
            tc358743: None,
        }
    }
}

impl AudioSettings {
    /// Take one layer's keys over what the layers before set.
    pub(super) fn apply(&mut self, a: &Args) -> Result<()> {
        let spec = a.audio.as_deref().map(AudioSpec::parse).transpose()?;
        let device = a
            .audio_device
            .as_deref()
            .map(|d| alsa_device("audio_device", d).map(AudioSpec::Alsa))
            .transpose()?;
        match (spec, device) {
            (Some(spec), Some(device)) if spec != device => bail!(
                "audio {:?} and audio_device {:?} name two sources; give one of them",
                spec.label(),
                a.audio_device.as_deref().unwrap_or_default()
            ),
            (Some(spec), _) | (None, Some(spec)) => {
                // A later layer choosing another source drops the device's chip.
                if !matches!(spec, AudioSpec::Alsa(_)) && a.audio_tc358743.is_none() {
                    self.tc358743 = None;
                }
                self.spec = Some(spec);
            }
            (None, None) => {}
        }
        if let Some(rate) = a.audio_rate {
            if !RATES.contains(&rate) {
                bail!("audio_rate must be 8000..=192000 Hz, got {rate}");
            }
            self.rate = rate;
        }
        if let Some(channels) = a.audio_channels {
            if !(1..=2).contains(&channels) {
                bail!("audio_channels must be 1 (sent as stereo) or 2, got {channels}");
            }
            self.channels = channels;
        }
        if let Some(kbps) = a.audio_bitrate {
            if !BITRATES.contains(&kbps) {
                bail!("audio_bitrate is Opus's, in kbit/s, and must be 6..=510, got {kbps}");
            }
            self.bitrate_kbps = kbps;
        }
        if let Some(path) = &a.audio_tc358743 {
            if path.as_os_str().is_empty() {
                bail!("audio_tc358743 must be the chip's V4L2 device, e.g. /dev/kvmd-video");
            }
            self.tc358743 = Some(path.clone());
        }
        Ok(())
    }

    /// The source of a stream whose video comes from `video`.
    pub fn spec_for(&self, video: &SourceSpec) -> AudioSpec {
        match (&self.spec, video) {
            (Some(spec), _) => spec.clone(),
            (None, SourceSpec::Testsrc) => AudioSpec::Tone,
            (None, _) => AudioSpec::None,
        }
    }

    /// What cannot go together, once every layer is in.
    pub fn check(&self, video: &SourceSpec) -> Result<()> {
        if self.tc358743.is_some() && !matches!(self.spec_for(video), AudioSpec::Alsa(_)) {
            bail!(
                "audio_tc358743 tells the rate of an ALSA capture: give --audio-device too \
                 (e.g. hw:tc358743,0), or leave --audio-tc358743 out"
            );
        }
        Ok(())
    }

    /// The stream's sound, resolved.
    pub fn resolve(&self, video: &SourceSpec) -> AudioConfig {
        let spec = self.spec_for(video);
        let tc358743 = match spec {
            AudioSpec::Alsa(_) => self.tc358743.clone(),
            _ => None,
        };
        AudioConfig {
            spec,
            rate: self.rate,
            channels: self.channels,
            bitrate_kbps: self.bitrate_kbps,
            tc358743,
        }
    }
}

/// One stream's sound, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioConfig {
    pub spec: AudioSpec,
    pub rate: u32,
    pub channels: u32,
    pub bitrate_kbps: u32,
    pub tc358743: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use clap::Parser;

    fn load(flags: &[&str]) -> Result<Config> {
        let mut args = vec!["peregrine"];
        args.extend_from_slice(flags);
        Config::load(Args::parse_from(args))
    }

    fn audio(flags: &[&str]) -> AudioConfig {
        load(flags).unwrap().stream_configs().remove(0).audio
    }

    #[test]
    fn the_test_pattern_has_the_tone_and_other_sources_no_sound_by_default() {
        assert_eq!(audio(&["--source", "testsrc"]).spec, AudioSpec::Tone);
        let memsink = audio(&["--source", "memsink:x.h264"]);
        assert_eq!(memsink.spec, AudioSpec::None);
        assert_eq!(
            audio(&["--source", "testsrc", "--audio", "none"]).spec,
            AudioSpec::None
        );
        let defaults = audio(&["--source", "testsrc"]);
        assert_eq!(
            (defaults.rate, defaults.channels, defaults.bitrate_kbps),
            (48_000, 2, 128)
        );
    }

    #[test]
    fn alsa_capture_by_either_flag_with_its_settings() {
        let a = audio(&[
            "--source",
            "memsink:x.h264",
            "--audio-device",
            "hw:tc358743,0",
            "--audio-rate",
            "44100",
            "--audio-channels",
            "1",
            "--audio-bitrate",
            "64",
            "--audio-tc358743",
            "/dev/kvmd-video",
        ]);
        assert_eq!(a.spec, AudioSpec::Alsa("hw:tc358743,0".into()));
        assert_eq!((a.rate, a.channels, a.bitrate_kbps), (44_100, 1, 64));
        assert_eq!(a.tc358743, Some("/dev/kvmd-video".into()));
        let b = audio(&["--audio", "alsa:plughw:1,0", "--audio-device", "plughw:1,0"]);
        assert_eq!(b.spec, AudioSpec::Alsa("plughw:1,0".into()));
        assert_eq!(b.spec.label(), "alsa:plughw:1,0");
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("peregrine-audio-cfg-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_janus_installs_capture_is_used_and_flags_win() {
        let dir = temp_dir("janus");
        std::fs::write(
            dir.join("janus.plugin.ustreamer.jcfg"),
            "video: { sink = \"kvmd::ustreamer::h264\" }\n\
             acap: { device = \"hw:tc358743,0\"; tc358743 = \"/dev/kvmd-video\" }",
        )
        .unwrap();
        let janus = dir.to_str().unwrap();
        let a = audio(&["--janus-config", janus]);
        assert_eq!(a.spec, AudioSpec::Alsa("hw:tc358743,0".into()));
        assert_eq!(a.tc358743, Some("/dev/kvmd-video".into()));
        let tone = audio(&["--janus-config", janus, "--audio", "tone"]);
        assert_eq!((tone.spec, tone.tc358743), (AudioSpec::Tone, None));
        let other = audio(&["--janus-config", janus, "--audio-device", "hw:2"]);
        assert_eq!(other.spec, AudioSpec::Alsa("hw:2".into()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn each_stream_has_its_own_sound_and_a_device_feeds_one_stream() {
        let dir = temp_dir("streams");
        let path = dir.join("peregrine.toml");
        let toml = |text: &str| {
            std::fs::write(&path, text).unwrap();
            load(&["--config", path.to_str().unwrap()])
        };
        let cfg = toml(
            "source = \"memsink:a.h264\"\naudio_device = \"hw:1\"\naudio_bitrate = 96\n\
             [[stream]]\nname = \"pattern\"\nsource = \"testsrc\"\n\
             [[stream]]\nname = \"cam\"\nsource = \"memsink:b.h264\"\n\
             [[stream]]\nname = \"hdmi\"\nsource = \"memsink:c.h264\"\n\
             audio = \"alsa:hw:2\"\naudio_rate = 44100\naudio_channels = 1\n",
        )
        .unwrap();
        let all: Vec<_> = cfg.stream_configs().into_iter().map(|s| s.audio).collect();
        assert_eq!(all[0].spec, AudioSpec::Alsa("hw:1".into()));
        assert_eq!(
            all[1].spec,
            AudioSpec::Tone,
            "a table takes its video's default"
        );
        assert_eq!(all[1].bitrate_kbps, 96, "and the top level's settings");
        assert_eq!(all[2].spec, AudioSpec::None);
        assert_eq!(all[3].spec, AudioSpec::Alsa("hw:2".into()));
        assert_eq!((all[3].rate, all[3].channels), (44_100, 1));
        let err = toml(
            "source = \"testsrc\"\naudio_device = \"hw:1\"\n\
             [[stream]]\nname = \"x\"\nsource = \"testsrc\"\naudio_device = \"hw:1\"\n",
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("both read the ALSA device hw:1"),
            "{err:#}"
        );
        let err = toml(
            "source = \"testsrc\"\n[[stream]]\nname = \"x\"\nsource = \"testsrc\"\n\
             audio_channels = 5\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("audio_channels"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mistakes_name_the_option_and_the_fix() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--audio", "pulse"],
                "audio must be tone, none or alsa:DEVICE",
            ),
            (&["--audio", "alsa:"], "audio needs the ALSA device's name"),
            (&["--audio-device", ""], "audio_device needs"),
            (&["--audio-device", "hw:1\n"], "control characters"),
            (
                &["--audio", "tone", "--audio-device", "hw:1"],
                "give one of them",
            ),
            (
                &["--audio-rate", "7999"],
                "audio_rate must be 8000..=192000",
            ),
            (&["--audio-rate", "192001"], "audio_rate"),
            (&["--audio-channels", "3"], "audio_channels must be 1"),
            (&["--audio-bitrate", "5"], "audio_bitrate"),
            (&["--audio-bitrate", "511"], "audio_bitrate"),
            (
                &["--audio-tc358743", "/dev/video0"],
                "give --audio-device too",
            ),
        ];
        for (flags, expected) in cases {
            let mut all = vec!["--source", "testsrc"];
            all.extend_from_slice(flags);
            let err = match load(&all) {
                Ok(_) => panic!("accepted {flags:?}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.contains(expected), "{flags:?}: {err}");
        }
    }
}
