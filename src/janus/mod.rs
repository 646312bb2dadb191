//! The Janus API (sessions, handles, transactions) over WebSocket and HTTP long-poll,
//! with the `janus.plugin.ustreamer` plugin's semantics.
