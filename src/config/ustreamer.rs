//! µStreamer's flags that have no field of their own in [`super::Args`]: the ones
//! peregrine already behaves as asked without a setting (accepted), and the ones it
//! cannot honour (refused by name, with the reason), so a µStreamer command line either
//! means the same here or fails at start saying which flag and why — never ignored.

use anyhow::{bail, Result};
use clap::{Arg, ArgAction, ArgMatches, Command};

/// What becomes of one µStreamer flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// peregrine always does what the flag asks.
    Always,
    /// peregrine does what the flag asks with one of these values (case-insensitive)
    /// and refuses the others.
    Only(&'static [&'static str]),
    /// Not honoured.
    Refused,
}

/// A µStreamer flag without an [`super::Args`] field.
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    pub long: &'static str,
    pub short: Option<char>,
    pub takes_value: bool,
    pub verdict: Verdict,
    /// Why, in the refusal message and the README.
    pub why: &'static str,
}

const fn flag(long: &'static str, short: Option<char>, takes_value: bool) -> Flag {
    Flag {
        long,
        short,
        takes_value,
        verdict: Verdict::Refused,
        why: "",
    }
}

const fn always(long: &'static str, short: Option<char>, why: &'static str) -> Flag {
    Flag {
        verdict: Verdict::Always,
        why,
        ..flag(long, short, false)
    }
}

const fn refused(long: &'static str, short: Option<char>, value: bool, why: &'static str) -> Flag {
    Flag {
        why,
        ..flag(long, short, value)
    }
}

const NOT_YET_CAMERA: &str = "peregrine does not set this camera option yet; set it with \
     v4l2-ctl before starting, or leave the flag out";
const DEPRECATED: &str = "deprecated in µStreamer, which ignores it; leave it out";

/// Every µStreamer flag peregrine knows by name but has no field for.
pub const FLAGS: &[Flag] = &[
    always(
        "persistent",
        Some('n'),
        "peregrine always keeps a lost or absent camera open for retry, showing NO SIGNAL",
    ),
    always(
        "tcp-nodelay",
        None,
        "peregrine sets TCP_NODELAY on every accepted connection",
    ),
    Flag {
        verdict: Verdict::Only(&["MMAP"]),
        why: "peregrine captures into mmap buffers; USERPTR is not supported",
        ..flag("io-method", Some('I'), true)
    },
    Flag {
        // µStreamer's --encoder picks its JPEG encoder. CPU and NOOP (its alias of CPU)
        // are what peregrine does; so is HW, which µStreamer too turns into CPU for a
        // raw camera and peregrine does for an MJPEG one (its frames pass through).
        verdict: Verdict::Only(&["CPU", "HW", "NOOP"]),
        why: "µStreamer's --encoder picks the JPEG encoder of /stream; peregrine encodes \
              JPEG on the CPU (an MJPEG camera's frames pass through untouched) and has no \
              V4L2 M2M JPEG encoder yet. For the Pi's hardware H.264 encoder, give \
              --h264-m2m-device /dev/video11",
        ..flag("encoder", Some('c'), true)
    },
    refused(
        "dv-timings",
        Some('t'),
        false,
        "DV timings (HDMI capture bridges such as the TC358743) are not supported yet",
    ),
    refused("input", Some('i'), true, NOT_YET_CAMERA),
    refused("tv-standard", Some('a'), true, NOT_YET_CAMERA),
    refused(
        "buffers",
        Some('b'),
        true,
        "peregrine uses 4 capture buffers; the number is not settable yet",
    ),
    refused(
        "workers",
        Some('w'),
        true,
        "peregrine encodes each picture once for every client, on one thread per stream; \
         there are no worker threads to size",
    ),
    refused(
        "min-frame-size",
        Some('z'),
        true,
        "peregrine checks every camera frame itself and drops broken ones; the threshold \
         is not settable",
    ),
    refused(
        "allow-truncated-frames",
        Some('T'),
        false,
        "peregrine drops frames it cannot decode",
    ),
    refused(
        "format-swap-rgb",
        None,
        false,
        "RGB camera formats are not supported",
    ),
    refused(
        "slowdown",
        Some('l'),
        false,
        "peregrine stops capturing entirely while nobody watches; leave it out",
    ),
    refused(
        "device-timeout",
        None,
        true,
        "peregrine's own timeouts and retry backoff apply",
    ),
    refused(
        "device-error-delay",
        None,
        true,
        "peregrine retries a failed camera with a growing backoff",
    ),
    refused(
        "m2m-device",
        None,
        true,
        "it names µStreamer's V4L2 M2M JPEG encoder, which peregrine does not have yet; \
         the hardware H.264 encoder is --h264-m2m-device",
    ),
    refused("media-device", None, true, NOT_YET_CAMERA),
    refused("media-entity-name", None, true, NOT_YET_CAMERA),
    refused("image-default", None, false, NOT_YET_CAMERA),
    refused("brightness", None, true, NOT_YET_CAMERA),
    refused("contrast", None, true, NOT_YET_CAMERA),
    refused("saturation", None, true, NOT_YET_CAMERA),
    refused("hue", None, true, NOT_YET_CAMERA),
    refused("gamma", None, true, NOT_YET_CAMERA),
    refused("sharpness", None, true, NOT_YET_CAMERA),
    refused("backlight-compensation", None, true, NOT_YET_CAMERA),
    refused("white-balance", None, true, NOT_YET_CAMERA),
    refused("gain", None, true, NOT_YET_CAMERA),
    refused("color-effect", None, true, NOT_YET_CAMERA),
    refused("rotate", None, true, NOT_YET_CAMERA),
    refused("flip-vertical", None, true, NOT_YET_CAMERA),
    refused("flip-horizontal", None, true, NOT_YET_CAMERA),
    refused("glitched-resolutions", Some('g'), true, DEPRECATED),
    refused("blank", Some('k'), true, DEPRECATED),
    refused("last-as-blank", Some('K'), true, DEPRECATED),
    refused(
        "systemd",
        Some('S'),
        false,
        "socket activation is not supported; use --port or --unix",
    ),
    refused(
        "server-timeout",
        None,
        true,
        "use --header-timeout and --idle-timeout",
    ),
    refused(
        "raw-sink",
        None,
        true,
        "the raw memsink is not supported; peregrine writes --h264-sink and --jpeg-sink",
    ),
    refused(
        "raw-sink-mode",
        None,
        true,
        "the raw memsink is not supported",
    ),
    refused(
        "raw-sink-rm",
        None,
        false,
        "the raw memsink is not supported",
    ),
    refused(
        "raw-sink-client-ttl",
        None,
        true,
        "the raw memsink is not supported",
    ),
    refused(
        "raw-sink-timeout",
        None,
        true,
        "the raw memsink is not supported",
    ),
    refused("v4p", None, false, "the DRM video output is not supported"),
    refused(
        "gpio-device",
        None,
        true,
        "GPIO signalling is not supported",
    ),
    refused(
        "gpio-consumer-prefix",
        None,
        true,
        "GPIO signalling is not supported",
    ),
    refused(
        "gpio-prog-running",
        None,
        true,
        "GPIO signalling is not supported",
    ),
    refused(
        "gpio-stream-online",
        None,
        true,
        "GPIO signalling is not supported",
    ),
    refused(
        "gpio-has-http-clients",
        None,
        true,
        "GPIO signalling is not supported",
    ),
    refused(
        "exit-on-device-error",
        None,
        false,
        "peregrine keeps retrying a failed camera and shows NO SIGNAL meanwhile",
    ),
    refused(
        "exit-on-no-clients",
        None,
        true,
        "peregrine stops capturing while nobody watches instead of exiting",
    ),
    refused(
        "process-name-prefix",
        None,
        true,
        "setting the process title is not supported yet",
    ),
    refused(
        "notify-parent",
        None,
        false,
        "signalling the parent process on state changes is not supported yet",
    ),
    refused("perf", None, false, "use --log-level debug"),
    refused("verbose", None, false, "use --log-level debug"),
    refused("debug", None, false, "use --log-level debug"),
    always(
        "force-log-colors",
        None,
        "the text log is coloured even when it is not a terminal",
    ),
    always("no-log-colors", None, "the text log is never coloured"),
    refused(
        "features",
        None,
        false,
        "peregrine --version names the build",
    ),
];

/// `command` with every flag of [`FLAGS`] added, hidden from `--help`.
pub fn with_flags(mut command: Command) -> Command {
    for f in FLAGS {
        let mut arg = Arg::new(f.long).long(f.long).hide(true);
        if let Some(c) = f.short {
            arg = arg.short(c);
        }
        arg = if f.takes_value {
            arg.num_args(1).value_name("VALUE").action(ArgAction::Set)
        } else {
            arg.action(ArgAction::SetTrue)
        };
        command = command.arg(arg);
    }
    command
}

/// Fails naming the first flag of [`FLAGS`] in `matches` that peregrine cannot honour;
/// else the flags given that it honours.
pub fn check(matches: &ArgMatches) -> Result<Vec<&'static str>> {
    let mut honoured = Vec::new();
    for f in FLAGS {
        let value = if f.takes_value {
            match matches.get_one::<String>(f.long) {
                Some(v) => Some(v.as_str()),
                None => continue,
            }
        } else if matches.get_flag(f.long) {
            None
        } else {
            continue;
        };
        let (long, why) = (f.long, f.why);
        match (f.verdict, value) {
            (Verdict::Always, _) => {}
            (Verdict::Only(ok), Some(v)) if ok.iter().any(|o| o.eq_ignore_ascii_case(v)) => {}
            (Verdict::Only(_), Some(v)) => bail!("--{long}={v} is not supported: {why}"),
            _ => bail!("--{long} (a µStreamer flag) is not supported: {why}"),
        }
        honoured.push(long);
    }
    Ok(honoured)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Vec<&'static str>> {
        let command = with_flags(Command::new("peregrine").no_binary_name(true));
        let matches = command.try_get_matches_from(args)?;
        check(&matches)
    }

    #[test]
    fn refusals_name_the_flag_and_why() {
        let err = parse(&["--workers=3"]).unwrap_err().to_string();
        assert!(err.contains("--workers") && err.contains("thread"), "{err}");
        let err = parse(&["-t"]).unwrap_err().to_string();
        assert!(err.contains("--dv-timings"), "{err}");
        let err = parse(&["--encoder", "m2m-image"]).unwrap_err().to_string();
        assert!(err.contains("--encoder=m2m-image"), "{err}");
        let err = parse(&["--encoder=M2M-VIDEO"]).unwrap_err().to_string();
        assert!(
            err.contains("JPEG") && err.contains("--h264-m2m-device"),
            "{err}"
        );
    }

    #[test]
    fn what_peregrine_always_does_is_accepted() {
        let given = parse(&["--persistent", "--tcp-nodelay", "--no-log-colors"]).unwrap();
        assert_eq!(given, ["persistent", "tcp-nodelay", "no-log-colors"]);
        assert_eq!(parse(&["-n"]).unwrap(), ["persistent"]);
        parse(&["--encoder=cpu", "--io-method", "MMAP"]).unwrap();
        parse(&["--encoder=HW"]).unwrap();
        parse(&["--encoder=noop"]).unwrap();
        assert!(parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn every_flag_is_named_once_with_a_reason() {
        let mut names: Vec<&str> = FLAGS.iter().map(|f| f.long).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FLAGS.len());
        assert!(FLAGS.iter().all(|f| !f.why.is_empty()));
    }
}
