//! Sources produce access units into a hub, each on its own thread.

pub mod annexb;
pub mod bytestream;
pub mod camera;
pub mod failure_log;
pub mod lifecycle;
pub mod memsink;
pub mod nosignal;
pub mod pattern;
pub mod testsrc;
