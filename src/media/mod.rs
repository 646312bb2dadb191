//! Media primitives shared by every source and output: access units, the capture
//! clock, H.264 bitstream helpers, uncompressed pictures and the per-stream hub.

pub mod au;
pub mod clock;
pub mod h264;
pub mod hub;
pub mod refchain;
pub mod stream;
pub mod yuv;

pub use au::AccessUnit;
pub use hub::{Hub, SourceHold, StartAt, Subscriber};
pub use stream::{Stream, Streams, DEFAULT_STREAM};
