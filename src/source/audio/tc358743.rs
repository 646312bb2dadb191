//! The HDMI audio rate of a TC358743 HDMI-to-CSI bridge (PiKVM's capture chip), read
//! from the driver's V4L2 controls as the ustreamer plugin does (`acap.tc358743`): the
//! chip's ALSA capture device runs at whatever rate the HDMI source sends, so it must
//! be opened at that rate.

use std::path::Path;

use v4l::control::Value;

/// `V4L2_CID_USER_TC358743_BASE`: `V4L2_CID_USER_BASE` (0x00980900) + 0x1080.
const CID_BASE: u32 = 0x0098_0900 + 0x1080;
/// `TC358743_CID_AUDIO_SAMPLING_RATE`: the HDMI audio rate in Hz.
pub const CID_AUDIO_SAMPLING_RATE: u32 = CID_BASE;
/// `TC358743_CID_AUDIO_PRESENT`: the HDMI signal carries audio.
pub const CID_AUDIO_PRESENT: u32 = CID_BASE + 1;

/// Rates a capture can run at (the plugin's `acap.sampling_rate` range).
pub const RATES: std::ops::RangeInclusive<u32> = 8_000..=192_000;

/// The rate the chip at `device` (e.g. `/dev/kvmd-video`) reports, or why there is
/// none to capture.
pub fn audio_rate(device: &Path) -> Result<u32, String> {
    let what = |e: std::io::Error| format!("TC358743 at {}: {e}", device.display());
    let dev = v4l::Device::with_path(device).map_err(what)?;
    let present = dev.control(CID_AUDIO_PRESENT).map_err(what)?.value;
    let rate = dev.control(CID_AUDIO_SAMPLING_RATE).map_err(what)?.value;
    judge(&present, &rate).map_err(|e| format!("TC358743 at {}: {e}", device.display()))
}

/// What the two controls' values say.
fn judge(present: &Value, rate: &Value) -> Result<u32, String> {
    let present = match present {
        Value::Boolean(b) => *b,
        Value::Integer(i) => *i != 0,
        other => return Err(format!("audio_present is {other:?}, not a boolean")),
    };
    if !present {
        return Err("no audio in the HDMI signal".into());
    }
    match rate {
        Value::Integer(hz) => u32::try_from(*hz)
            .ok()
            .filter(|hz| RATES.contains(hz))
            .ok_or_else(|| format!("HDMI audio at an unusable rate: {hz} Hz")),
        other => Err(format!("audio_sampling_rate is {other:?}, not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_ids_are_the_drivers() {
        assert_eq!(CID_AUDIO_SAMPLING_RATE, 0x0098_1980);
        assert_eq!(CID_AUDIO_PRESENT, 0x0098_1981);
    }

    #[test]
    fn the_rate_counts_only_with_audio_present_and_in_range() {
        let yes = Value::Boolean(true);
        assert_eq!(judge(&yes, &Value::Integer(44_100)), Ok(44_100));
        assert_eq!(
            judge(&Value::Integer(1), &Value::Integer(48_000)),
            Ok(48_000)
        );
        let none = judge(&Value::Boolean(false), &Value::Integer(48_000));
        assert_eq!(none.unwrap_err(), "no audio in the HDMI signal");
        for bad in [0, -1, 7_999, 192_001, i64::MAX] {
            let err = judge(&yes, &Value::Integer(bad)).unwrap_err();
            assert!(err.contains("unusable rate"), "{bad}: {err}");
        }
        assert!(judge(&yes, &Value::String("x".into())).is_err());
        assert!(judge(&Value::None, &Value::Integer(48_000)).is_err());
    }

    #[test]
    fn a_device_that_is_not_there_is_named_in_the_error() {
        let err = audio_rate(Path::new("/nonexistent/video9")).unwrap_err();
        assert!(err.contains("/nonexistent/video9"), "{err}");
    }
}
