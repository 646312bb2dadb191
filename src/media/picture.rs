//! One encoded picture or audio frame and what outputs need to know about it: the one
//! type that travels from a source through a hub to every output.

use bytes::Bytes;

/// What a [`Picture`] carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MediaKind {
    /// H.264 in Annex-B form.
    #[default]
    Video,
    /// One Opus frame of [`crate::media::audio::FRAME_US`] (48 kHz, stereo), in a hub of
    /// its own (see [`crate::media::Stream::audio`]).
    Audio,
}

/// One encoded picture: for video an H.264 access unit in Annex-B form (start codes
/// included, SPS and PPS in front of every IDR).
///
/// `data` is reference counted, so handing a picture to many outputs never copies it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Picture {
    pub kind: MediaKind,
    pub data: Bytes,
    /// True for an IDR picture (decoding can start here).
    pub key: bool,
    pub width: u32,
    pub height: u32,
    /// When the picture was captured, CLOCK_MONOTONIC in microseconds
    /// (see [`crate::media::clock`]).
    pub capture_us: u64,
    /// Position in the stream, starting at 0; gaps mean dropped pictures. Numbered by
    /// whoever publishes into the hub, so it continues across NO SIGNAL and restarts.
    pub seq: u64,
    /// Not the source's own picture but a stand-in (NO SIGNAL) while the source is gone.
    pub placeholder: bool,
}

impl Picture {
    /// A picture of live video, not yet numbered.
    pub fn video(
        data: impl Into<Bytes>,
        key: bool,
        (width, height): (u32, u32),
        capture_us: u64,
    ) -> Picture {
        Picture {
            kind: MediaKind::Video,
            data: data.into(),
            key,
            width,
            height,
            capture_us,
            seq: 0,
            placeholder: false,
        }
    }

    /// One Opus frame captured at `capture_us` (the time of its first sample). Every
    /// audio frame stands alone, so it counts as a keyframe.
    pub fn audio(data: impl Into<Bytes>, capture_us: u64) -> Picture {
        Picture {
            kind: MediaKind::Audio,
            data: data.into(),
            key: true,
            width: 0,
            height: 0,
            capture_us,
            seq: 0,
            placeholder: false,
        }
    }

    /// Whether the picture is the source's own (not a NO SIGNAL stand-in).
    pub fn online(&self) -> bool {
        !self.placeholder
    }
}
