//! The hub: one per stream. Sources publish pictures into it; outputs subscribe.
//!
//! * Fan-out never copies a picture (`Arc<Picture>` over `Bytes`).
//! * The latest SPS/PPS and the current GOP are kept so a new subscriber can start at once.
//! * Publishing never waits for a subscriber: a subscriber that falls more than the
//!   queue length behind loses the old pictures, skips to the next keyframe and asks the
//!   source for one.
//! * Keyframe requests and "is anyone watching" flow back to the source, which is woken
//!   through [`Hub::demand`] when either changes instead of looking again and again.
//! * A stream's sound travels in a hub of its own ([`crate::media::Stream::audio`]):
//!   every Opus frame stands alone (a keyframe), so a late or lagging listener simply
//!   starts with the next frame, and no parameter sets are looked for in it.
//! * The hub reads no clock where a caller can give it the time (`*_at`), so what
//!   depends on time is tested without waiting.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::broadcast;

use super::clock;
use super::h264::{self, NalType};
use super::picture::{MediaKind, Picture};
use super::signal::Signal;

/// Pictures a subscriber may fall behind before it is skipped to the next keyframe.
pub const DEFAULT_QUEUE_FRAMES: usize = 30;

/// Keyframes made on request are at least this far apart, so a viewer that floods the
/// server with PLIs cannot turn the stream into all keyframes for every other viewer.
/// A request that comes sooner waits, it is not dropped.
pub const KEYFRAME_MIN_SPACING_US: u64 = 500_000;

/// Keyframes asked for by servers we forward to are at least this far apart. Every
/// downstream SFU sends its own keyframe requests (MediaMTX one every 2 s per stream it
/// ingests, Janus one per new viewer), so N servers would otherwise hold the encoder at
/// an IDR every [`KEYFRAME_MIN_SPACING_US`]; any keyframe answers all of them at once.
pub const EGRESS_KEYFRAME_SPACING_US: u64 = 1_000_000;

/// Longest GOP kept for new subscribers; a source with no keyframes for longer than
/// this gives late subscribers a keyframe request instead of a backlog.
const MAX_GOP_FRAMES: usize = 600;

/// A cached GOP with nothing published for this long is the past, not the live stream
/// (the source paused or stalled); a new subscriber gets a keyframe request instead.
const STALE_GOP_US: u64 = 1_000_000;

/// The most recent sequence and picture parameter sets seen in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSets {
    /// SPS NAL unit without start code.
    pub sps: Bytes,
    /// PPS NAL unit without start code.
    pub pps: Bytes,
}

/// A snapshot of the stream for status pages.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HubInfo {
    pub width: u32,
    pub height: u32,
    pub has_params: bool,
    pub frames: u64,
    pub keyframes: u64,
    pub subscribers: usize,
    pub online: bool,
}

/// Where a new subscriber starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// With the cached GOP (from the last keyframe), then live: an instant picture,
    /// at the cost of replaying up to one GOP. Right for buffered players (MSE), and for
    /// the WebRTC engine, which keeps the GOP to start each new viewer from it.
    Gop,
    /// With the next keyframe, which is requested from the source at once: no replay,
    /// so no added delay.
    NextKeyframe,
}

#[derive(Default)]
struct State {
    params: Option<ParamSets>,
    gop: Vec<Arc<Picture>>,
    /// When the last picture was published (CLOCK_MONOTONIC µs).
    last_publish_us: u64,
    width: u32,
    height: u32,
}

pub struct Hub {
    tx: broadcast::Sender<Arc<Picture>>,
    state: Mutex<State>,
    keyframe_wanted: AtomicBool,
    /// A keyframe asked for by a downstream server; see [`Hub::request_keyframe_for_egress`].
    egress_keyframe_wanted: AtomicBool,
    /// When the last keyframe was published (CLOCK_MONOTONIC µs; 0 before any).
    last_keyframe_us: AtomicU64,
    subscribers: AtomicUsize,
    frames: AtomicU64,
    keyframes: AtomicU64,
    online: AtomicBool,
    /// Notified when watching starts or stops and when a keyframe is first asked for.
    demand: Signal,
}

impl Hub {
    pub fn new(queue_frames: usize) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(queue_frames.max(2));
        Arc::new(Hub {
            tx,
            state: Mutex::new(State::default()),
            keyframe_wanted: AtomicBool::new(false),
            egress_keyframe_wanted: AtomicBool::new(false),
            last_keyframe_us: AtomicU64::new(0),
            subscribers: AtomicUsize::new(0),
            frames: AtomicU64::new(0),
            keyframes: AtomicU64::new(0),
            online: AtomicBool::new(false),
            demand: Signal::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State inconsistent in a way that
        // matters (every field is replaced whole), so recover from poisoning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publish one picture, now. Never blocks on subscribers.
    pub fn publish(&self, au: Picture) {
        self.publish_at(au, clock::monotonic_us());
    }

    /// Publish one picture at `now_us` (CLOCK_MONOTONIC). Never blocks on subscribers.
    pub fn publish_at(&self, au: Picture, now_us: u64) {
        let au = Arc::new(au);
        let mut state = self.state();
        if au.key {
            // Only H.264 carries parameter sets; Opus bytes could look like one by chance.
            let params = (au.kind == MediaKind::Video)
                .then(|| extract_params(&au.data))
                .flatten();
            if let Some(params) = params {
                state.params = Some(params);
            }
            state.gop.clear();
            self.keyframe_wanted.store(false, Ordering::Relaxed);
            self.egress_keyframe_wanted.store(false, Ordering::Relaxed);
            self.last_keyframe_us.store(now_us, Ordering::Relaxed);
            self.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        state.width = au.width;
        state.height = au.height;
        state.last_publish_us = now_us;
        if state.gop.len() < MAX_GOP_FRAMES && (au.key || !state.gop.is_empty()) {
            state.gop.push(au.clone());
        } else if !au.key {
            state.gop.clear();
        }
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.online.store(au.online(), Ordering::Relaxed);
        // Sending while holding the lock keeps subscribe() free of gaps and duplicates.
        let _ = self.tx.send(au);
    }

    /// Subscribe to the stream.
    pub fn subscribe(self: &Arc<Self>, start: StartAt) -> Subscriber {
        self.subscribe_at(start, clock::monotonic_us())
    }

    /// Subscribe to the stream at `now_us` (CLOCK_MONOTONIC).
    pub fn subscribe_at(self: &Arc<Self>, start: StartAt, now_us: u64) -> Subscriber {
        let state = self.state();
        let rx = self.tx.subscribe();
        let current = now_us.saturating_sub(state.last_publish_us) <= STALE_GOP_US;
        let (backlog, wait_key) = match start {
            StartAt::Gop if current && !state.gop.is_empty() => {
                (state.gop.iter().cloned().collect(), false)
            }
            _ => (VecDeque::new(), true),
        };
        drop(state);
        self.add_watcher();
        if wait_key {
            self.request_keyframe();
        }
        Subscriber {
            hub: self.clone(),
            rx,
            backlog,
            wait_key,
        }
    }

    /// Keep the source running without taking pictures (e.g. a Janus handle that is
    /// attached but not yet watching, as the ustreamer plugin opens its source on attach).
    pub fn hold(self: &Arc<Self>) -> SourceHold {
        self.add_watcher();
        SourceHold { hub: self.clone() }
    }

    fn add_watcher(&self) {
        if self.subscribers.fetch_add(1, Ordering::SeqCst) == 0 {
            self.demand.notify();
        }
    }

    /// Forget the cached GOP: the source restarted or lost its signal, so what follows
    /// does not continue it. New subscribers wait for (and request) a keyframe.
    pub fn drop_gop(&self) {
        self.state().gop.clear();
    }

    /// One subscriber or hold fewer. With nobody left the source idles, so its GOP
    /// stops being the live stream's: it is dropped, never replayed later.
    fn release(&self) {
        if self.subscribers.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.drop_gop();
            self.demand.notify();
        }
    }

    /// Ask the source for a keyframe; the flag clears when one is published. Requests
    /// made before then are one request: only the first wakes the source.
    pub fn request_keyframe(&self) {
        if !self.keyframe_wanted.swap(true, Ordering::Relaxed) {
            self.demand.notify();
        }
    }

    /// Ask for a keyframe on behalf of a server we forward the stream to (its PLI or
    /// FIR). All such requests, from any number of servers, are one: the next keyframe
    /// answers them, and it is not made before the last one is
    /// [`EGRESS_KEYFRAME_SPACING_US`] old. False when the request joined one already
    /// pending (coalesced).
    pub fn request_keyframe_for_egress(&self) -> bool {
        let first = !self.egress_keyframe_wanted.swap(true, Ordering::Relaxed);
        if first && !self.keyframe_wanted.load(Ordering::Relaxed) {
            self.demand.notify();
        }
        first
    }

    /// Whether a keyframe was requested and not yet produced.
    pub fn keyframe_wanted(&self) -> bool {
        self.keyframe_wanted.load(Ordering::Relaxed)
            || self.egress_keyframe_wanted.load(Ordering::Relaxed)
    }

    /// For sources: when a requested keyframe may be made (CLOCK_MONOTONIC µs): at
    /// once, or once the last keyframe is [`KEYFRAME_MIN_SPACING_US`] old
    /// ([`EGRESS_KEYFRAME_SPACING_US`] when only servers we forward to asked). `None`
    /// while none is requested.
    pub fn keyframe_due_at(&self) -> Option<u64> {
        let last = self.last_keyframe_us.load(Ordering::Relaxed);
        let viewer = self
            .keyframe_wanted
            .load(Ordering::Relaxed)
            .then(|| last + KEYFRAME_MIN_SPACING_US);
        let egress = self
            .egress_keyframe_wanted
            .load(Ordering::Relaxed)
            .then(|| last + EGRESS_KEYFRAME_SPACING_US);
        match (viewer, egress) {
            (Some(v), Some(e)) => Some(v.min(e)),
            (v, e) => v.or(e),
        }
    }

    /// For sources: make the picture at `now_us` a keyframe. True when one was
    /// requested and the last one is old enough (see [`Hub::keyframe_due_at`]).
    pub fn keyframe_due(&self, now_us: u64) -> bool {
        self.keyframe_due_at().is_some_and(|at| now_us >= at)
    }

    /// For sources: is anyone subscribed or holding the source?
    pub fn has_subscribers(&self) -> bool {
        self.subscribers.load(Ordering::SeqCst) > 0
    }

    /// For sources: notified when somebody starts or stops watching and when a
    /// keyframe is first requested. Note [`Signal::seen`], look at
    /// [`Hub::has_subscribers`] and [`Hub::keyframe_due_at`], then wait.
    pub fn demand(&self) -> &Signal {
        &self.demand
    }

    /// Wake whoever waits on [`Hub::demand`], e.g. to notice a stop.
    pub fn wake_source(&self) {
        self.demand.notify();
    }

    /// SPS/PPS, once the stream has carried them.
    pub fn params(&self) -> Option<ParamSets> {
        self.state().params.clone()
    }

    /// Whether the stream has its parameter sets, or gets them within `limit`. An idle
    /// source starts for the subscription made meanwhile, and its first picture (a
    /// keyframe, with them) ends the wait the moment it is published. A stream without
    /// signal has them: its NO SIGNAL pictures come through like any others.
    pub async fn wait_for_params(self: &Arc<Self>, limit: std::time::Duration) -> bool {
        if self.params().is_some() {
            return true;
        }
        let mut pictures = self.subscribe(StartAt::NextKeyframe);
        let waited = tokio::time::timeout(limit, async {
            while self.params().is_none() {
                if pictures.recv().await.is_none() {
                    return;
                }
            }
        })
        .await;
        waited.is_ok() && self.params().is_some()
    }

    /// Mark the source offline (it stopped producing); from then on each picture
    /// published says whether it is the source's own.
    pub fn set_offline(&self) {
        self.online.store(false, Ordering::Relaxed);
    }

    pub fn info(&self) -> HubInfo {
        let state = self.state();
        HubInfo {
            width: state.width,
            height: state.height,
            has_params: state.params.is_some(),
            frames: self.frames.load(Ordering::Relaxed),
            keyframes: self.keyframes.load(Ordering::Relaxed),
            subscribers: self.subscribers.load(Ordering::SeqCst),
            online: self.online.load(Ordering::Relaxed),
        }
    }
}

fn extract_params(annexb: &[u8]) -> Option<ParamSets> {
    let mut sps = None;
    let mut pps = None;
    for nal in h264::nal_units(annexb) {
        match h264::nal_type(nal) {
            Some(NalType::Sps) => sps = Some(Bytes::copy_from_slice(nal)),
            Some(NalType::Pps) => pps = Some(Bytes::copy_from_slice(nal)),
            _ => {}
        }
    }
    Some(ParamSets {
        sps: sps?,
        pps: pps?,
    })
}

/// A subscription to a hub. Dropping it unsubscribes.
pub struct Subscriber {
    hub: Arc<Hub>,
    rx: broadcast::Receiver<Arc<Picture>>,
    backlog: VecDeque<Arc<Picture>>,
    wait_key: bool,
}

impl Subscriber {
    /// Access units already waiting to be taken: how far behind the stream this
    /// subscriber is.
    pub fn waiting(&self) -> usize {
        self.backlog.len() + self.rx.len()
    }

    /// The next access unit to deliver. `None` only when the hub is gone.
    pub async fn recv(&mut self) -> Option<Arc<Picture>> {
        if let Some(au) = self.backlog.pop_front() {
            return Some(au);
        }
        loop {
            match self.rx.recv().await {
                Ok(au) => {
                    if self.wait_key && !au.key {
                        continue;
                    }
                    self.wait_key = false;
                    return Some(au);
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, "subscriber fell behind; skipping to next keyframe");
                    self.wait_key = true;
                    self.hub.request_keyframe();
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.hub.release();
    }
}

/// Keeps the source awake while alive; see [`Hub::hold`].
pub struct SourceHold {
    hub: Arc<Hub>,
}

impl Drop for SourceHold {
    fn drop(&mut self) {
        self.hub.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn au(key: bool, seq: u64) -> Picture {
        Picture {
            seq,
            ..Picture::video(
                Bytes::from_static(&[0, 0, 0, 1, 0x65, 0x88]),
                key,
                (16, 16),
                0,
            )
        }
    }

    fn backlog_len(sub: &Subscriber) -> usize {
        sub.backlog.len()
    }

    #[test]
    fn audio_frames_are_each_a_start_and_never_parameter_sets() {
        let hub = Hub::new(8);
        let _hold = hub.hold();
        // Opus bytes that happen to look like an SPS and a PPS after start codes.
        let opus = [0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0, 0, 0, 1, 0x68, 0xce];
        hub.publish(Picture::audio(Bytes::copy_from_slice(&opus), 1_000));
        hub.publish(Picture::audio(Bytes::from_static(b"next"), 21_000));
        assert_eq!(hub.params(), None);
        let late = hub.subscribe(StartAt::Gop);
        assert_eq!(
            backlog_len(&late),
            1,
            "a listener starts with the last frame"
        );
        assert!(!hub.keyframe_wanted());
    }

    #[test]
    fn the_gop_is_dropped_when_the_last_viewer_leaves() {
        let hub = Hub::new(8);
        let first = hub.subscribe(StartAt::Gop);
        hub.publish(au(true, 0));
        hub.publish(au(false, 1));
        let second = hub.subscribe(StartAt::Gop);
        assert_eq!(backlog_len(&second), 2, "a current GOP is replayed");
        drop((first, second));
        // The source idles now; its last GOP must not greet the next viewer.
        hub.publish(au(false, 2));
        let hub_wants_key = {
            let late = hub.subscribe(StartAt::Gop);
            assert_eq!(backlog_len(&late), 0);
            hub.keyframe_wanted()
        };
        assert!(hub_wants_key);
    }

    #[test]
    fn a_gop_with_nothing_new_for_a_second_is_not_replayed() {
        let hub = Hub::new(8);
        let _hold = hub.hold();
        let t0 = 10_000_000;
        hub.publish_at(au(true, 0), t0);
        assert_eq!(
            backlog_len(&hub.subscribe_at(StartAt::Gop, t0 + STALE_GOP_US)),
            1
        );
        let late = hub.subscribe_at(StartAt::Gop, t0 + STALE_GOP_US + 1);
        assert_eq!(backlog_len(&late), 0, "stale GOP replayed");
        assert!(
            hub.keyframe_wanted(),
            "the late subscriber asks for a keyframe"
        );
    }

    #[test]
    fn keyframe_requests_wait_out_the_spacing_and_are_kept() {
        let hub = Hub::new(8);
        let t0 = 10_000_000;
        hub.request_keyframe();
        assert!(hub.keyframe_due(t0), "the first request is due at once");
        hub.publish_at(au(true, 0), t0);
        assert!(!hub.keyframe_wanted());
        // A request right after a keyframe is kept but not yet due.
        hub.request_keyframe();
        assert!(hub.keyframe_wanted());
        assert!(!hub.keyframe_due(t0 + 1_000));
        assert_eq!(hub.keyframe_due_at(), Some(t0 + KEYFRAME_MIN_SPACING_US));
        assert!(hub.keyframe_due(t0 + KEYFRAME_MIN_SPACING_US));
        hub.publish_at(au(false, 1), t0 + KEYFRAME_MIN_SPACING_US);
        assert!(
            hub.keyframe_due(t0 + KEYFRAME_MIN_SPACING_US),
            "only a keyframe answers the request"
        );
    }

    #[test]
    fn a_flood_of_egress_requests_makes_one_keyframe_per_window() {
        let hub = Hub::new(8);
        let _hold = hub.hold();
        let t0 = 10_000_000;
        hub.publish_at(au(true, 0), t0);
        // Ten servers each asking every 100 ms for 5 s; the source makes a keyframe
        // whenever one is due.
        let mut keyframes = vec![];
        let mut coalesced = 0;
        for step in 1..=50u64 {
            let now = t0 + step * 100_000;
            for _ in 0..10 {
                if !hub.request_keyframe_for_egress() {
                    coalesced += 1;
                }
            }
            let key = hub.keyframe_due(now);
            hub.publish_at(au(key, step), now);
            if key {
                keyframes.push(now - t0);
            }
        }
        assert_eq!(
            keyframes,
            [1, 2, 3, 4, 5].map(|s| s * EGRESS_KEYFRAME_SPACING_US),
            "one keyframe per window"
        );
        assert_eq!(
            coalesced,
            500 - 5,
            "all but one request per window joined it"
        );
    }

    #[test]
    fn a_periodic_keyframe_answers_egress_requests_and_viewers_keep_their_spacing() {
        let hub = Hub::new(8);
        let t0 = 10_000_000;
        hub.publish_at(au(true, 0), t0);
        assert!(hub.request_keyframe_for_egress());
        assert_eq!(hub.keyframe_due_at(), Some(t0 + EGRESS_KEYFRAME_SPACING_US));
        // The source's own GOP brings a keyframe first: nothing more is owed.
        hub.publish_at(au(true, 1), t0 + 300_000);
        assert!(!hub.keyframe_wanted());
        assert_eq!(hub.keyframe_due_at(), None);
        // A viewer's request keeps the shorter spacing even with egress asking too.
        assert!(hub.request_keyframe_for_egress());
        hub.request_keyframe();
        assert_eq!(
            hub.keyframe_due_at(),
            Some(t0 + 300_000 + KEYFRAME_MIN_SPACING_US)
        );
    }

    #[test]
    fn the_source_is_woken_when_watching_starts_and_stops_and_for_a_first_request() {
        let hub = Hub::new(8);
        let woken = |hub: &Hub, seen: u64| hub.demand().seen() != seen;
        let seen = hub.demand().seen();
        let hold = hub.hold();
        assert!(woken(&hub, seen), "first watcher");
        let seen = hub.demand().seen();
        let sub = hub.subscribe(StartAt::Gop);
        assert!(
            woken(&hub, seen),
            "the second watcher asks for a keyframe (no GOP yet)"
        );
        let seen = hub.demand().seen();
        hub.request_keyframe();
        assert!(!woken(&hub, seen), "a request already pending wakes nobody");
        drop(hold);
        assert!(!woken(&hub, seen), "somebody still watches");
        drop(sub);
        assert!(woken(&hub, seen), "the last watcher left");
    }
}
