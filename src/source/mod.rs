//! Sources: where a stream's pictures come from. Each implements the one contract,
//! [`runner::Source`] (open, hand over the next picture, close), and runs on its own
//! thread under [`runner`], which owns retry, liveness, NO SIGNAL and status.

pub mod annexb;
pub mod bytestream;
pub mod camera;
pub mod failure_log;
pub mod lifecycle;
pub mod memsink;
pub mod nosignal;
pub mod pattern;
pub mod runner;
pub mod testsrc;
