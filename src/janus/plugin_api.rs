//! The seam between the Janus core and its plugins.
//!
//! As in Janus, the core (the gateway) owns sessions, handles and each handle's WebRTC
//! peer: it applies the page's answer, passes trickled candidates on, tells the page
//! `webrtcup` and `hangup`. A plugin owns what a handle means: it answers `message`
//! bodies, pushes its own events and asks the core for a peer when it has something to
//! send. Neither side names the other's types: the core sees [`Plugin`] and
//! [`HandleState`], the plugin sees [`HandleHost`].

use std::any::Any;
use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};

use crate::rtc::{PeerOptions, RtcError};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How Janus names and describes a plugin (`attach`, `info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    pub package: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    /// Major × 1000 + minor.
    pub version: u32,
    pub version_string: &'static str,
}

/// A plugin as the core uses it.
pub trait Plugin: Send + Sync + 'static {
    fn info(&self) -> &PluginInfo;

    /// The state of a handle just attached.
    fn attach(&self) -> Box<dyn HandleState>;

    /// One `message` body sent to `handle`; returns the data of the synchronous answer.
    /// Results and errors go to the page as events through `handle`.
    fn message<'a>(
        &'a self,
        handle: &'a dyn HandleHost,
        body: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Value>;
}

/// A plugin's state for one handle, kept by the core with the handle.
pub trait HandleState: Send + 'static {
    /// The handle's peer has media flowing (`webrtcup`).
    fn media_started(&mut self) {}

    /// The handle's peer is gone (hangup, replaced, closed by the engine).
    fn media_stopped(&mut self) {}

    /// For the plugin to reach its own type again.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// What a plugin may do with one of its handles; the core provides it.
pub trait HandleHost: Send + Sync {
    /// Push a plugin event (`plugindata.data` = `data`) to the page, with a JSEP if
    /// given. Nothing happens when the handle is gone.
    fn push_event(&self, data: Value, jsep: Option<Value>);

    /// Run `f` on the handle's state; false when the handle is gone.
    fn with_state(&self, f: &mut dyn FnMut(&mut dyn HandleState)) -> bool;

    /// Give the handle a new peer sending what `opts` names, in place of the one it
    /// has, and push `event` with the peer's SDP offer as its JSEP.
    fn offer(&self, opts: PeerOptions, event: Value) -> BoxFuture<'_, Result<(), RtcError>>;
}

/// Run `f` on the handle's state as the plugin's own type `T`; `None` when the handle
/// is gone or its state is not a `T`.
pub fn with_state_as<T: Any, R>(host: &dyn HandleHost, f: impl FnOnce(&mut T) -> R) -> Option<R> {
    let mut f = Some(f);
    let mut out = None;
    host.with_state(&mut |state| {
        if let (Some(typed), Some(f)) = (state.as_any_mut().downcast_mut::<T>(), f.take()) {
            out = Some(f(typed));
        }
    });
    out
}
