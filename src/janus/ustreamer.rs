//! `janus.plugin.ustreamer`: the plugin kvmd and µStreamer's pages talk to, behind the
//! core's [`Plugin`] seam.
//!
//! Requests arrive as the `body` of a Janus `message`. Each one gets the synchronous
//! `{"ok":true}` answer, and its result or error goes out as a separate `event`
//! (the plugin's behaviour since 6.18). The event is pushed before the answer is
//! returned, so on a WebSocket it reaches the page first, as with the real plugin.

use std::any::Any;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::plugin_api::{with_state_as, BoxFuture, HandleHost, HandleState, Plugin, PluginInfo};
use crate::media::hub::SourceHold;
use crate::media::stream::{Output, Stream, Streams, Viewing};
use crate::rtc::{PeerOptions, RtcError};

pub const PACKAGE: &str = "janus.plugin.ustreamer";
pub const NAME: &str = "ustreamer";
pub const DESCRIPTION: &str = "PiKVM uStreamer Janus plugin for H.264 video";
/// The plugin release whose behaviour this follows (major × 1000 + minor).
pub const VERSION: u32 = 6062;
pub const VERSION_STRING: &str = "6.62";

/// `watch` answers this until the stream has carried SPS and PPS: the signal that
/// clients have understood as "retry shortly" since the first plugin versions.
pub const NO_PARAMS_CODE: u16 = 503;
pub const NO_PARAMS_REASON: &str = "Haven't received SPS/PPS from memsink yet";
/// How long `watch` waits for a stream's first parameter sets before that answer.
const FIRST_PARAMS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `watch` answers this when `--max-viewers` peers exist already.
pub const TOO_MANY_VIEWERS_CODE: u16 = 429;

/// `watch` answers this for a `stream` the server does not have, and
/// [`BAD_REQUEST_CODE`] for one that is not a string.
pub const NO_SUCH_STREAM_CODE: u16 = 404;
pub const BAD_REQUEST_CODE: u16 = 400;

/// What the page asked for in `watch.params`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchParams {
    /// Degrees counter-clockwise: 0, 90, 180 or 270.
    pub orientation: u16,
    pub audio: bool,
    pub mic: bool,
    pub camera: bool,
}

impl WatchParams {
    /// Like the plugin: flags count only as JSON booleans, orientation only as one of
    /// the three right angles; anything else is ignored.
    pub fn from_body(body: &Map<String, Value>) -> WatchParams {
        let Some(params) = body.get("params").and_then(Value::as_object) else {
            return WatchParams::default();
        };
        let flag = |k: &str| params.get(k).and_then(Value::as_bool).unwrap_or(false);
        let orientation = match params.get("orientation").and_then(Value::as_i64) {
            Some(o @ (90 | 180 | 270)) => o as u16,
            _ => 0,
        };
        WatchParams {
            orientation,
            audio: flag("audio"),
            mic: flag("mic"),
            camera: flag("camera"),
        }
    }
}

/// `{"ustreamer":"event","result":{"status":X}}`.
pub fn status_event(status: &str) -> Value {
    json!({ "ustreamer": "event", "result": { "status": status } })
}

/// What a stream can do beyond video, as `features` reports it and `watch` honours it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sound {
    /// The stream has sound (`features.audio`, `watch {audio: true}`).
    pub audio: bool,
    /// The stream plays viewers' microphones (`features.mic`, `watch {mic: true}`).
    pub mic: bool,
}

impl Sound {
    pub fn of(stream: &Stream) -> Sound {
        Sound {
            audio: stream.audio().is_some(),
            mic: stream.mic().is_some(),
        }
    }
}

/// `features`: whether the stream has sound and plays microphones; `ice` is always an
/// object, since kvmd reads `features.ice.url` without checking that `ice` exists.
pub fn features_event(ice_url: Option<&str>, sound: Sound) -> Value {
    let ice = match ice_url {
        Some(url) => json!({ "url": url }),
        None => json!({}),
    };
    json!({
        "ustreamer": "event",
        "result": {
            "status": "features",
            "features": { "audio": sound.audio, "mic": sound.mic, "ice": ice }
        }
    })
}

pub fn error_event(code: u16, reason: &str) -> Value {
    json!({ "ustreamer": "event", "error_code": code, "error": reason })
}

/// The plugin's state for one handle.
pub struct UstreamerHandle {
    /// The stream watched, or to be watched: the default one until `watch` names another.
    stream: Arc<Stream>,
    /// The plugin opens its source as soon as a client attaches; this keeps the
    /// stream's source open.
    hold: SourceHold,
    params: WatchParams,
    /// Counts the viewer on its stream while media flows.
    viewing: Option<Viewing>,
}

impl UstreamerHandle {
    fn new(stream: Arc<Stream>) -> UstreamerHandle {
        UstreamerHandle {
            hold: stream.hub().hold(),
            stream,
            params: WatchParams::default(),
            viewing: None,
        }
    }

    /// Watch `stream` from now on; its source is held open instead of the old one's.
    fn switch_to(&mut self, stream: &Arc<Stream>) {
        if !Arc::ptr_eq(&self.stream, stream) {
            self.hold = stream.hub().hold();
            self.stream = stream.clone();
        }
    }
}

impl HandleState for UstreamerHandle {
    fn media_started(&mut self) {
        if self.viewing.is_none() {
            self.viewing = Some(self.stream.viewer(Output::WebRtc));
        }
    }

    fn media_stopped(&mut self) {
        self.viewing = None;
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The plugin: the server's streams, sent to each handle that watches one.
pub struct Ustreamer {
    streams: Arc<Streams>,
    /// The first STUN/TURN server, told to pages in `features`.
    ice_url: Option<String>,
}

pub const INFO: PluginInfo = PluginInfo {
    package: PACKAGE,
    name: NAME,
    description: DESCRIPTION,
    version: VERSION,
    version_string: VERSION_STRING,
};

impl Ustreamer {
    pub fn new(streams: Arc<Streams>, ice_url: Option<String>) -> Ustreamer {
        Ustreamer { streams, ice_url }
    }

    /// `features` of the stream `body.stream` names, or else of the handle's (the
    /// default one until a `watch` names another).
    fn features(&self, host: &dyn HandleHost, body: &Map<String, Value>) -> Value {
        let named = match body.get("stream") {
            Some(Value::String(name)) => self.streams.get(Some(name)).ok().cloned(),
            _ => None,
        };
        let stream = named
            .or_else(|| with_state_as(host, |h: &mut UstreamerHandle| h.stream.clone()))
            .unwrap_or_else(|| self.streams.default_stream().clone());
        features_event(self.ice_url.as_deref(), Sound::of(&stream))
    }

    async fn watch(&self, host: &dyn HandleHost, body: &Map<String, Value>) {
        let error = |code, reason: &str| host.push_event(error_event(code, reason), None);
        let params = WatchParams::from_body(body);
        let stream = match body.get("stream") {
            None | Some(Value::Null) => self.streams.default_stream(),
            Some(Value::String(name)) => match self.streams.get(Some(name)) {
                Ok(stream) => stream,
                Err(e) => return error(NO_SUCH_STREAM_CODE, &format!("No such stream: {e}")),
            },
            Some(_) => {
                return error(
                    BAD_REQUEST_CODE,
                    "Invalid stream: a name as a string expected",
                )
            }
        };
        // The handle holds the stream asked for open from now on, as the plugin opens
        // its source on attach: an idle source starts, and a retried watch finds it.
        let chosen = with_state_as(host, |h: &mut UstreamerHandle| {
            h.params = params;
            h.switch_to(stream);
        });
        if chosen.is_none() {
            return; // the handle went away meanwhile
        }
        // A source only starting now (the first watch of an idle stream) gets a moment
        // for its first keyframe: the page would retry a 503 only after its back-off.
        if !stream.hub().wait_for_params(FIRST_PARAMS_WAIT).await {
            return error(NO_PARAMS_CODE, NO_PARAMS_REASON);
        }
        // As the plugin: each flag counts only when the stream can honour it.
        let opts = PeerOptions {
            orientation: params.orientation,
            audio: stream.audio().filter(|_| params.audio).cloned(),
            mic: stream.mic().filter(|_| params.mic).cloned(),
            ..PeerOptions::new(stream.hub().clone())
        };
        match host.offer(opts, status_event("started")).await {
            Ok(()) => {}
            Err(RtcError::TooManyViewers(max)) => error(
                TOO_MANY_VIEWERS_CODE,
                &format!("Too many viewers (at most {max})"),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a WebRTC offer");
                error(500, &format!("Can't create offer: {e}"));
            }
        }
    }
}

impl Plugin for Ustreamer {
    fn info(&self) -> &PluginInfo {
        &INFO
    }

    fn attach(&self) -> Box<dyn HandleState> {
        Box::new(UstreamerHandle::new(self.streams.default_stream().clone()))
    }

    fn message<'a>(
        &'a self,
        host: &'a dyn HandleHost,
        body: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Value> {
        Box::pin(async move {
            let event = |data: Value| host.push_event(data, None);
            match body.get("request") {
                None => event(error_event(400, "Request missing")),
                Some(Value::String(request)) => match request.as_str() {
                    "features" => event(self.features(host, body)),
                    "watch" => self.watch(host, body).await,
                    "start" => event(status_event("started")),
                    "stop" => event(status_event("stopped")),
                    "key_required" => {
                        with_state_as(host, |h: &mut UstreamerHandle| {
                            h.stream.hub().request_keyframe()
                        });
                    }
                    other => {
                        tracing::debug!(request = other, "unknown ustreamer request");
                        event(error_event(405, "Not implemented"))
                    }
                },
                Some(_) => event(error_event(400, "Request not a string")),
            }
            json!({ "ok": true })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_params_follow_plugin_rules() {
        let body = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            WatchParams::from_body(&body(json!({"request":"watch"}))),
            WatchParams::default()
        );
        let p = WatchParams::from_body(&body(
            json!({"params":{"orientation":90,"audio":true,"mic":"yes","camera":1}}),
        ));
        assert_eq!(
            p,
            WatchParams {
                orientation: 90,
                audio: true,
                mic: false,
                camera: false
            }
        );
        for bad in [json!(45), json!("90"), json!(90.5), json!(-90)] {
            let p = WatchParams::from_body(&body(json!({"params":{"orientation":bad}})));
            assert_eq!(p.orientation, 0);
        }
    }

    #[test]
    fn features_ice_is_always_an_object() {
        let none = Sound::default();
        assert_eq!(
            features_event(None, none)["result"]["features"]["ice"],
            json!({})
        );
        assert_eq!(
            features_event(Some("stun:192.0.2.1:3478"), none)["result"]["features"]["ice"]["url"],
            "stun:192.0.2.1:3478"
        );
    }

    #[test]
    fn features_say_what_the_stream_has() {
        let features =
            |audio, mic| features_event(None, Sound { audio, mic })["result"]["features"].clone();
        assert_eq!(features(false, false)["audio"], false);
        assert_eq!(features(false, false)["mic"], false);
        assert_eq!(features(true, false)["audio"], true);
        assert_eq!(features(true, false)["mic"], false);
        assert_eq!(features(false, true)["mic"], true);
        let stream = Stream::new("s", crate::media::Hub::new(4), 30);
        assert_eq!(Sound::of(&stream), Sound::default());
        let (mic, _rx) = crate::media::audio::mic::MicInput::channel(4);
        let sound = Some(crate::media::Hub::new(4));
        let stream = Stream::with_sound("s", crate::media::Hub::new(4), 30, sound, Some(mic));
        assert_eq!(
            Sound::of(&stream),
            Sound {
                audio: true,
                mic: true
            }
        );
    }
}
