//! peregrine: live H.264 video to web browsers over WebRTC, speaking the Janus API.

pub mod access;
pub mod app;
pub mod config;
pub mod egress;
pub mod exposure;
pub mod http;
pub mod janus;
pub mod logging;
pub mod media;
pub mod memsink;
pub mod metrics;
pub mod mic;
pub mod net;
pub mod origin;
pub mod ratelog;
pub mod rejections;
pub mod relay;
pub mod rtc;
pub mod serve;
pub mod source;
// The one module allowed unsafe code: Cargo.toml denies it for the rest of the crate.
#[allow(unsafe_code)]
pub mod sys;
pub mod tls;
pub mod viewer;
pub mod whep;
