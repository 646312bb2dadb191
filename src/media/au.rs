//! One encoded picture and what outputs need to know about it.

use bytes::Bytes;

/// One H.264 access unit in Annex-B form (start codes included).
///
/// `data` is reference counted, so handing an access unit to many outputs never
/// copies the picture.
#[derive(Clone, Debug)]
pub struct AccessUnit {
    /// Annex-B bytes of every NAL unit of the picture, SPS/PPS included before an IDR.
    pub data: Bytes,
    pub width: u32,
    pub height: u32,
    /// True for an IDR picture (decoding can start here).
    pub key: bool,
    /// When the picture was captured, CLOCK_MONOTONIC in microseconds
    /// (see [`crate::media::clock`]).
    pub capture_us: u64,
    /// Position in the source's output, starting at 0; gaps mean dropped pictures.
    pub seq: u64,
}
