//! Egress: the streams sent on to other servers, so that a fleet (Janus Streaming
//! mountpoints, SFUs) can carry more viewers than one machine. Each target is a task
//! that subscribes to its stream's hub like any viewer; what flows back from the target
//! is only keyframe requests, coalesced in the hub ([`crate::media::Hub::request_keyframe_for_egress`]).

pub mod rtcp;
pub mod rtp_forward;
pub mod target;

pub use rtp_forward::{ForwardReport, ForwardStats, RtpForwards};
pub use target::RtpForwardTarget;
