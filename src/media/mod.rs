//! Media primitives shared by every source and output: the encoded picture, the audio
//! format and the microphone hand-over, the capture clock, H.264 bitstream helpers, RTP
//! in (wire format and depacketizer), the H.264 encoders (openh264, V4L2 M2M) and the
//! video settings they take, uncompressed pictures and the per-stream hub.

pub mod audio;
pub mod clock;
pub mod depacketizer;
pub mod encoder;
pub mod h264;
pub mod hub;
pub mod jpeg;
pub mod jpeg_tap;
pub mod limits;
pub mod m2m;
pub mod picture;
pub mod publisher;
pub mod refchain;
pub mod rtp;
pub mod signal;
pub mod stream;
pub mod video;
pub mod yuv;

pub use hub::{Hub, SourceHold, StartAt, Subscriber};
pub use picture::{MediaKind, Picture};
pub use stream::{Stream, Streams, DEFAULT_STREAM};
pub use video::VideoSettings;
