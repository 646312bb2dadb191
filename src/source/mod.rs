//! Sources: where a stream's pictures come from. Each implements the one contract,
//! [`runner::Source`] (open, hand over the next picture, close), and runs on its own
//! thread under [`runner`], which owns retry, liveness, NO SIGNAL and status. Sound
//! sources have a contract and runner of their own, in [`audio`].

pub mod annexb;
pub mod audio;
pub mod bytestream;
pub mod camera;
pub mod failure_log;
pub mod lifecycle;
pub mod memsink;
pub mod nosignal;
pub mod pattern;
pub mod rtp_listen;
pub mod runner;
pub mod testsrc;
pub mod whip;
