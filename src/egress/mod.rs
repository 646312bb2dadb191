//! Egress: the streams sent on to other servers (plain RTP, WHIP), so that a fleet (Janus Streaming
//! mountpoints, SFUs) can carry more viewers than one machine. Each target is a task
//! that subscribes to its stream's hub like any viewer; what flows back from the target
//! is only keyframe requests, coalesced in the hub ([`crate::media::Hub::request_keyframe_for_egress`]).

pub mod http_client;
pub mod rtcp;
pub mod rtp_forward;
pub mod target;
pub mod whip;

pub use rtp_forward::{ForwardReport, ForwardStats, Forwards};
pub use target::RtpForwardTarget;
