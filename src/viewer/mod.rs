//! The viewer kit: client-side code that watches a peregrine (or any Janus server with
//! the ustreamer plugin) the way a browser does. The integration tests and
//! `peregrine-load` use it; the server itself never does.
//!
//! * [`janus_client`]: the Janus API as janus.js speaks it, over WebSocket or long-poll.
//! * [`receiver`]: a WebRTC receiving peer that hands back whole H.264 pictures, which
//!   [`depacketizer`] puts together from RTP, and the sound; it can send a microphone.
//! * [`audio`]: the sound received, decoded to check it, and a microphone playing a tone.
//! * [`decoder`]: H.264 decoding, to check what arrived.
//! * [`http`]: one HTTP/1.1 request, for `/state` and the Janus REST transport.
//! * [`multipart`]: an MJPEG `/stream` body cut into its pictures.
//! * [`load`]: many viewers at once (WebRTC or MJPEG), and the benchmark built on them.

pub mod audio;
pub mod decoder;
pub mod depacketizer;
pub mod http;
pub mod janus_client;
pub mod load;
pub mod multipart;
pub mod receiver;
mod sender_reports;
