//! Streams as the outputs see them: a name, its hub (and the hub of its sound, the
//! playback of its viewers' microphones, where it has them) and who is watching. One server
//! holds any number; a page that names none gets [`DEFAULT_STREAM`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::audio::mic::MicInput;
use super::publisher::PublisherSlot;
use super::Hub;

/// The stream the command line describes, and the one a request without a name gets.
pub const DEFAULT_STREAM: &str = "default";

/// Longest stream name: it travels in URLs and Janus messages.
pub const MAX_NAME_LEN: usize = 64;

/// Whether `name` can name a stream: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `-`,
/// `_` or `.`, so it needs no escaping in a URL query, a log line or a JSON key.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The ways a viewer receives a stream, counted apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A WebRTC peer with media flowing.
    WebRtc,
    /// A `/h264` WebSocket client.
    H264Ws,
    /// A JSMpeg WebSocket viewer.
    Jsmpeg,
    /// A PiKVM Direct H.264 (`/api/media/ws`) client with video started.
    Direct,
    /// A µStreamer-style MJPEG `/stream` client.
    Mjpeg,
}

impl Output {
    pub const ALL: [Output; 5] = [
        Output::WebRtc,
        Output::H264Ws,
        Output::Jsmpeg,
        Output::Direct,
        Output::Mjpeg,
    ];

    /// The `transport` label of metrics.
    pub fn label(self) -> &'static str {
        match self {
            Output::WebRtc => "webrtc",
            Output::H264Ws => "h264ws",
            Output::Jsmpeg => "jsmpeg",
            Output::Direct => "direct",
            Output::Mjpeg => "mjpeg",
        }
    }
}

/// One stream.
pub struct Stream {
    name: String,
    hub: Arc<Hub>,
    /// Opus frames, when the stream has sound.
    audio: Option<Arc<Hub>>,
    /// Where viewers' microphones are played, when the stream has a playback device.
    mic: Option<MicInput>,
    /// The frame rate the source was asked for, for outputs that must declare one.
    fps: u32,
    /// Viewers by [`Output`], in the order of [`Output::ALL`].
    viewers: [AtomicUsize; Output::ALL.len()],
    /// Who publishes to it, when its source is a WHIP publisher.
    publisher: std::sync::OnceLock<Arc<PublisherSlot>>,
}

impl Stream {
    /// A stream of video only.
    pub fn new(name: impl Into<String>, hub: Arc<Hub>, fps: u32) -> Arc<Stream> {
        Stream::with_sound(name, hub, fps, None, None)
    }

    /// A stream with its sound (`audio`, a hub of Opus frames) and its microphone
    /// playback (`mic`), either of which may be absent.
    pub fn with_sound(
        name: impl Into<String>,
        hub: Arc<Hub>,
        fps: u32,
        audio: Option<Arc<Hub>>,
        mic: Option<MicInput>,
    ) -> Arc<Stream> {
        Arc::new(Stream {
            name: name.into(),
            hub,
            audio,
            mic,
            fps,
            viewers: Default::default(),
            publisher: Default::default(),
        })
    }

    /// Make the stream one WHIP publishers publish to (set once, at start).
    pub fn set_publisher_slot(&self, slot: Arc<PublisherSlot>) {
        let _ = self.publisher.set(slot);
    }

    /// The publisher slot, when the stream's source is `whip`.
    pub fn publisher_slot(&self) -> Option<&Arc<PublisherSlot>> {
        self.publisher.get()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The hub of the stream's sound (Opus frames), if it has any.
    pub fn audio(&self) -> Option<&Arc<Hub>> {
        self.audio.as_ref()
    }

    /// The playback of viewers' microphones, if the stream has one.
    pub fn mic(&self) -> Option<&MicInput> {
        self.mic.as_ref()
    }

    pub fn fps(&self) -> u32 {
        self.fps
    }

    /// Viewers receiving pictures now, over every output.
    pub fn viewers(&self) -> usize {
        Output::ALL.iter().map(|&o| self.viewers_by(o)).sum()
    }

    /// Viewers receiving pictures now through `output`.
    pub fn viewers_by(&self, output: Output) -> usize {
        self.viewers[output as usize].load(Ordering::SeqCst)
    }

    /// Count one viewer on `output` until the returned guard drops.
    pub fn viewer(self: &Arc<Self>, output: Output) -> Viewing {
        self.viewers[output as usize].fetch_add(1, Ordering::SeqCst);
        Viewing {
            stream: self.clone(),
            output,
        }
    }
}

/// One viewer of a stream, counted while alive.
pub struct Viewing {
    stream: Arc<Stream>,
    output: Output,
}

impl Drop for Viewing {
    fn drop(&mut self) {
        self.stream.viewers[self.output as usize].fetch_sub(1, Ordering::SeqCst);
    }
}

/// A name no stream has.
#[derive(Debug, thiserror::Error)]
#[error("no stream named {0:?}")]
pub struct UnknownStream(pub String);

/// Every stream of the server, `default` first.
pub struct Streams {
    list: Vec<Arc<Stream>>,
}

impl Streams {
    /// The streams in `list`; the first is the default one.
    ///
    /// # Panics
    /// When `list` is empty: a server always has its default stream.
    pub fn new(list: Vec<Arc<Stream>>) -> Arc<Streams> {
        assert!(!list.is_empty(), "a server has at least the default stream");
        Arc::new(Streams { list })
    }

    /// A server of one stream, fed by `hub`.
    pub fn single(hub: Arc<Hub>, fps: u32) -> Arc<Streams> {
        Streams::new(vec![Stream::new(DEFAULT_STREAM, hub, fps)])
    }

    pub fn default_stream(&self) -> &Arc<Stream> {
        &self.list[0]
    }

    /// The stream called `name`; `None` is the default one.
    pub fn get(&self, name: Option<&str>) -> Result<&Arc<Stream>, UnknownStream> {
        match name {
            None => Ok(self.default_stream()),
            Some(name) => self
                .list
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| UnknownStream(name.chars().take(MAX_NAME_LEN).collect())),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Stream>> {
        self.list.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_url_safe_words() {
        for ok in ["default", "cam2", "front-door", "a.b_c", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a b", "cam/2", "ç", "a?b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn lookup_by_name_with_the_first_as_default() {
        let streams = Streams::new(vec![
            Stream::new(DEFAULT_STREAM, Hub::new(4), 30),
            Stream::new("cam2", Hub::new(4), 15),
        ]);
        assert_eq!(streams.get(None).unwrap().name(), "default");
        assert_eq!(streams.get(Some("cam2")).unwrap().fps(), 15);
        let err = streams.get(Some("nope")).err().unwrap();
        assert_eq!(err.to_string(), "no stream named \"nope\"");
    }

    #[test]
    fn viewers_are_counted_while_their_guard_lives() {
        let stream = Stream::new("s", Hub::new(4), 30);
        let a = stream.viewer(Output::WebRtc);
        let b = stream.viewer(Output::Jsmpeg);
        assert_eq!(stream.viewers(), 2);
        assert_eq!(stream.viewers_by(Output::Jsmpeg), 1);
        drop(a);
        assert_eq!(stream.viewers(), 1);
        assert_eq!(stream.viewers_by(Output::WebRtc), 0);
        drop(b);
        assert_eq!(stream.viewers(), 0);
    }
}
