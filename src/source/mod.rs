//! Sources produce access units into a hub, each on its own thread.

pub mod memsink;
pub mod pattern;
pub mod testsrc;
