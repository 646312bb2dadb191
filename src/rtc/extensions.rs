//! RTP header extensions the ustreamer plugin offers, with the ids it offers them under.
//! Values are encoded once per access unit and shared (as `Bytes`) by every peer.

use bytes::Bytes;

pub const VIDEO_ORIENTATION_URI: &str = "urn:3gpp:video-orientation";
pub const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
pub const ABS_CAPTURE_TIME_URI: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";

/// Extension ids offered, as the plugin offers them (1, 2, 3).
pub const OFFERED: [(u8, &str); 3] = [
    (1, VIDEO_ORIENTATION_URI),
    (2, PLAYOUT_DELAY_URI),
    (3, ABS_CAPTURE_TIME_URI),
];

/// Bytes the extension block can add to one packet: 4-byte 0xBEDE header, then
/// playout-delay (1+3), abs-capture-time (1+8) and CVO (1+1) = 15, padded to 16.
pub const MAX_EXTENSION_BYTES: usize = 4 + 16;

/// Negotiated ids (those the answer kept) of the extensions we write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtensionIds {
    pub video_orientation: Option<u8>,
    pub playout_delay: Option<u8>,
    pub abs_capture_time: Option<u8>,
}

impl ExtensionIds {
    /// Pick our extensions out of negotiated `(uri, id)` pairs.
    pub fn from_negotiated<'a>(pairs: impl IntoIterator<Item = (&'a str, u16)>) -> ExtensionIds {
        let mut ids = ExtensionIds::default();
        for (uri, id) in pairs {
            let Ok(id) = u8::try_from(id) else { continue };
            if !(1..=14).contains(&id) {
                continue; // one-byte header form only
            }
            match uri {
                VIDEO_ORIENTATION_URI => ids.video_orientation = Some(id),
                PLAYOUT_DELAY_URI => ids.playout_delay = Some(id),
                ABS_CAPTURE_TIME_URI => ids.abs_capture_time = Some(id),
                _ => {}
            }
        }
        ids
    }
}

/// playout-delay: 12-bit minimum then 12-bit maximum, in 10 ms units.
///
/// We send min = max = 0: the browser then renders each frame as soon as it is decoded
/// instead of building a jitter buffer, which is the lowest latency a live camera view
/// can get; the cost is visible stutter on a jittery network rather than added delay.
pub fn playout_delay(min_10ms: u16, max_10ms: u16) -> Bytes {
    let min = u32::from(min_10ms.min(0xfff));
    let max = u32::from(max_10ms.min(0xfff));
    let v = (min << 12) | max;
    Bytes::copy_from_slice(&v.to_be_bytes()[1..])
}

/// The playout-delay of a viewer that also gets the sound: minimum 0, maximum 1 s (the
/// ustreamer plugin's setting without `zero_playout_delay`). A browser plays sound
/// with a jitter buffer, so a picture rendered at once would run ahead of its sound;
/// this lets the browser hold pictures back until their sound plays (lip sync, from the
/// sender reports), and no longer than that.
pub fn lip_sync_playout_delay() -> Bytes {
    playout_delay(0, 100)
}

/// abs-capture-time without the optional clock offset: a 64-bit NTP timestamp (32.32).
pub fn abs_capture_time(ntp: u64) -> Bytes {
    Bytes::copy_from_slice(&ntp.to_be_bytes())
}

/// CVO byte (3GPP TS 26.114) for a viewer's requested rotation in degrees
/// counter-clockwise. CVO rotates clockwise, so 90 becomes 270 and 270 becomes 90.
/// Returns `None` for 0 (nothing to send) and for values that are not multiples of 90.
pub fn video_orientation(ccw_degrees: u16) -> Option<Bytes> {
    let rotation = match ccw_degrees % 360 {
        90 => 3,  // 270 clockwise
        180 => 2, // 180
        270 => 1, // 90 clockwise
        _ => return None,
    };
    Some(Bytes::copy_from_slice(&[rotation]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lip_sync_lets_the_browser_hold_pictures_up_to_a_second() {
        assert_eq!(playout_delay(0, 0).as_ref(), &[0, 0, 0]);
        // min 0, max 100 × 10 ms
        assert_eq!(lip_sync_playout_delay().as_ref(), &[0x00, 0x00, 0x64]);
    }

    #[test]
    fn playout_delay_layout() {
        assert_eq!(&playout_delay(0, 0)[..], &[0, 0, 0]);
        assert_eq!(&playout_delay(0, 1000)[..], &[0x00, 0x03, 0xe8]);
        assert_eq!(&playout_delay(0x123, 0x456)[..], &[0x12, 0x34, 0x56]);
        assert_eq!(&playout_delay(0xffff, 0xffff)[..], &[0xff, 0xff, 0xff]);
    }

    #[test]
    fn abs_capture_time_is_ntp_big_endian() {
        let ntp = 0x0123_4567_89ab_cdef;
        let b = abs_capture_time(ntp);
        assert_eq!(&b[..], &[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
    }

    #[test]
    fn cvo_is_clockwise() {
        assert_eq!(video_orientation(0), None);
        assert_eq!(video_orientation(90).as_deref(), Some(&[3u8][..]));
        assert_eq!(video_orientation(180).as_deref(), Some(&[2u8][..]));
        assert_eq!(video_orientation(270).as_deref(), Some(&[1u8][..]));
        assert_eq!(video_orientation(45), None);
    }

    #[test]
    fn ids_come_from_the_answer() {
        let ids =
            ExtensionIds::from_negotiated([(PLAYOUT_DELAY_URI, 2), (ABS_CAPTURE_TIME_URI, 3)]);
        assert_eq!(ids.video_orientation, None);
        assert_eq!(ids.playout_delay, Some(2));
        assert_eq!(ids.abs_capture_time, Some(3));
        assert_eq!(
            ExtensionIds::from_negotiated([(PLAYOUT_DELAY_URI, 20)]).playout_delay,
            None
        );
    }
}
