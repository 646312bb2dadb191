//! The video settings every part of a stream shares: the configuration resolves them
//! once per stream, and the test pattern, the camera, byte streams, the encoder and NO
//! SIGNAL all take this one type.

use super::limits;

/// Picture size, rate, bitrate and keyframe interval of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoSettings {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// H.264 bitrate, kbit/s, for pictures peregrine encodes (or asks a device to).
    pub bitrate_kbps: u32,
    /// Pictures from one IDR to the next, when none is asked for sooner.
    pub gop: u32,
}

impl Default for VideoSettings {
    /// 720p30 at 2 Mbit/s with a keyframe every two seconds.
    fn default() -> VideoSettings {
        VideoSettings {
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_kbps: 2000,
            gop: 60,
        }
    }
}

impl VideoSettings {
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Check every value against [`limits`]; the message names the setting as the
    /// configuration spells it.
    pub fn check(&self) -> Result<(), String> {
        if !limits::encodable_size(self.width, self.height) {
            return Err(format!(
                "resolution {}x{}: width and height must be even and within {}..={}",
                self.width,
                self.height,
                limits::MIN_SIDE,
                limits::MAX_SIDE
            ));
        }
        if self.fps == 0 || self.fps > limits::MAX_FPS {
            return Err(format!(
                "desired_fps must be 1..={}, got {}",
                limits::MAX_FPS,
                self.fps
            ));
        }
        if self.gop == 0 {
            return Err("h264_gop must be at least 1".into());
        }
        if self.bitrate_kbps < limits::MIN_BITRATE_KBPS {
            return Err(format!(
                "h264_bitrate is in kbit/s and must be at least {}, got {}",
                limits::MIN_BITRATE_KBPS,
                self.bitrate_kbps
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_passes_and_each_limit_is_named() {
        assert_eq!(VideoSettings::default().check(), Ok(()));
        let bad = |f: fn(&mut VideoSettings)| {
            let mut v = VideoSettings::default();
            f(&mut v);
            v.check().unwrap_err()
        };
        assert!(bad(|v| v.width = 17).starts_with("resolution 17x720"));
        assert!(bad(|v| v.fps = limits::MAX_FPS + 1).starts_with("desired_fps"));
        assert!(bad(|v| v.fps = 0).starts_with("desired_fps"));
        assert!(bad(|v| v.gop = 0).starts_with("h264_gop"));
        assert!(bad(|v| v.bitrate_kbps = 1).starts_with("h264_bitrate"));
    }
}
