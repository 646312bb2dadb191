//! Which viewer gets which picture, and when: per stream the GOP cached for viewers
//! that join mid-GOP and the viewers receiving it; per viewer whether it waits for a
//! keyframe or still works through the cached GOP, paced. A pure step: pictures and the
//! time come in, datagrams go out through [`Stamp`] (the viewer's own SSRC, sequence
//! and SRTP). No I/O, no clock: the engine's loop does those.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::frame::OutFrame;
use super::frame_cache::FrameCache;
use super::gop::GopCache;
use super::subscriptions::{stream_key, StreamKey};
use super::PeerId;
use crate::media::{Hub, Picture};

/// A viewer starting from the cached GOP gets it in steps of this many packets (whole
/// frames, at least one) every [`CATCH_UP_TICK`]: about 30 Mbit/s, so a 2 s GOP of a
/// 2 Mbit/s stream is through in under 200 ms without one burst overflowing the
/// viewer's receive buffer.
pub const CATCH_UP_PACKETS: usize = 16;
pub const CATCH_UP_TICK: Duration = Duration::from_millis(5);

/// Datagrams ready for the socket: destination and bytes.
pub type Datagrams = Vec<(SocketAddr, BytesMut)>;

/// Turns a shared frame into one viewer's datagrams.
pub trait Stamp {
    /// Stamp `frame` for the viewer `id` and queue its datagrams in `out`; returns the
    /// packets queued.
    fn stamp(
        &mut self,
        id: PeerId,
        now: Instant,
        frame: &Arc<OutFrame>,
        out: &mut Datagrams,
    ) -> u64;
}

/// How a viewer that has just connected starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// From the cached GOP: its first step (the keyframe first) is out; the rest
    /// follows at [`Fanout::next_tick`].
    FromGop { packets: u64 },
    /// No GOP is cached: it starts at the stream's next keyframe, which the caller
    /// should ask the source for.
    AtNextKeyframe,
}

/// Where sending one picture to a stream's viewers has got to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub packets: u64,
    /// The first viewer not yet served, to continue from; `None` when all are.
    pub next: Option<usize>,
}

/// A stream with at least one viewer.
struct Stream {
    hub: Arc<Hub>,
    gop: GopCache,
    /// Viewers of the stream, connected or not.
    viewers: usize,
    /// Its connected viewers, who get its pictures.
    receivers: Vec<PeerId>,
}

struct Viewer {
    stream: StreamKey,
    /// Position in its stream's `receivers` while connected.
    slot: Option<usize>,
    waiting_key: bool,
    /// Frames still to send to a viewer that started from the cached GOP, oldest first;
    /// live frames queue behind them until it has caught up.
    catch_up: VecDeque<Arc<OutFrame>>,
}

pub struct Fanout {
    rtp_packet_size: usize,
    streams: HashMap<StreamKey, Stream>,
    viewers: HashMap<PeerId, Viewer>,
    /// Viewers with catch-up frames left, all stepped on the same tick.
    catching_up: HashSet<PeerId>,
    next_tick: Option<Instant>,
}

impl Fanout {
    /// Pictures are cut into RTP packets of at most `rtp_packet_size` bytes.
    pub fn new(rtp_packet_size: usize) -> Fanout {
        Fanout {
            rtp_packet_size,
            streams: HashMap::new(),
            viewers: HashMap::new(),
            catching_up: HashSet::new(),
            next_tick: None,
        }
    }

    /// Add the viewer `id` of `hub`'s stream. True when it is the stream's first: the
    /// caller subscribes to the hub then (and only then, as a subscription keeps the
    /// source busy).
    pub fn add_viewer(&mut self, id: PeerId, hub: &Arc<Hub>) -> bool {
        let key = stream_key(hub);
        let mut first = false;
        let stream = self.streams.entry(key).or_insert_with(|| {
            first = true;
            Stream {
                hub: hub.clone(),
                gop: GopCache::default(),
                viewers: 0,
                receivers: Vec::new(),
            }
        });
        stream.viewers += 1;
        self.viewers.insert(
            id,
            Viewer {
                stream: key,
                slot: None,
                waiting_key: true,
                catch_up: VecDeque::new(),
            },
        );
        first
    }

    /// Forget the viewer `id`. Returns its stream when that has no viewer left: the
    /// stream and its GOP are forgotten, and the caller ends the subscription.
    pub fn remove_viewer(&mut self, id: PeerId) -> Option<StreamKey> {
        self.disconnected(id);
        let viewer = self.viewers.remove(&id)?;
        let stream = self.streams.get_mut(&viewer.stream)?;
        stream.viewers -= 1;
        if stream.viewers > 0 {
            return None;
        }
        self.streams.remove(&viewer.stream);
        Some(viewer.stream)
    }

    /// The hub of the stream `id` watches (where its keyframe requests go).
    pub fn hub_of(&self, id: PeerId) -> Option<&Arc<Hub>> {
        let viewer = self.viewers.get(&id)?;
        Some(&self.streams.get(&viewer.stream)?.hub)
    }

    /// The viewer `id` has connected (or reconnected, which starts it over): it
    /// receives its stream's pictures from now on, starting from the cached GOP when
    /// there is one (keyframe first, the rest paced by [`Fanout::catch_up`]),
    /// otherwise from the next keyframe.
    pub fn connected(
        &mut self,
        now: Instant,
        id: PeerId,
        stamp: &mut impl Stamp,
        out: &mut Datagrams,
    ) -> Start {
        self.catching_up.remove(&id);
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return Start::AtNextKeyframe;
        };
        let Some(stream) = self.streams.get_mut(&viewer.stream) else {
            return Start::AtNextKeyframe;
        };
        viewer.waiting_key = true;
        viewer.catch_up.clear();
        if viewer.slot.is_none() {
            viewer.slot = Some(stream.receivers.len());
            stream.receivers.push(id);
        }
        let gop = stream.gop.current(now);
        if !gop.first().is_some_and(|f| f.key) {
            return Start::AtNextKeyframe;
        }
        viewer.catch_up = gop.iter().cloned().collect();
        viewer.waiting_key = false;
        // The keyframe leaves now, the rest paced by the tick.
        let packets = catch_up_step(viewer, id, now, stamp, out);
        if !viewer.catch_up.is_empty() {
            self.catching_up.insert(id);
            self.next_tick.get_or_insert(now + CATCH_UP_TICK);
        }
        Start::FromGop { packets }
    }

    /// The viewer `id` lost its connection: it gets nothing until it connects again.
    pub fn disconnected(&mut self, id: PeerId) {
        self.catching_up.remove(&id);
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return;
        };
        viewer.catch_up.clear();
        let (Some(slot), Some(stream)) = (viewer.slot.take(), self.streams.get_mut(&viewer.stream))
        else {
            return;
        };
        stream.receivers.swap_remove(slot);
        if let Some(moved) = stream.receivers.get(slot) {
            if let Some(v) = self.viewers.get_mut(moved) {
                v.slot = Some(slot);
            }
        }
    }

    /// Packetize a picture of the stream `key` once, for all its viewers, and keep it
    /// in the stream's GOP cache. `None` for a stream nobody watches any more or a
    /// picture with nothing to send.
    pub fn prepare(&mut self, now: Instant, key: StreamKey, au: &Picture) -> Option<Arc<OutFrame>> {
        let size = self.rtp_packet_size;
        self.keep(now, key, au.seq, || {
            OutFrame::packetize(au, size).map(Arc::new)
        })
    }

    /// As [`Fanout::prepare`], the packets shared with the other engine shards through
    /// `cache`: whichever shard takes the picture first packetizes it.
    pub fn prepare_shared(
        &mut self,
        now: Instant,
        key: StreamKey,
        au: &Arc<Picture>,
        cache: &FrameCache,
    ) -> Option<Arc<OutFrame>> {
        let size = self.rtp_packet_size;
        self.keep(now, key, au.seq, || {
            cache.get_or_make(key, au, || OutFrame::packetize(au, size))
        })
    }

    /// Keep the picture `seq` of the stream `key`, made by `make`, in the stream's GOP.
    fn keep(
        &mut self,
        now: Instant,
        key: StreamKey,
        seq: u64,
        make: impl FnOnce() -> Option<Arc<OutFrame>>,
    ) -> Option<Arc<OutFrame>> {
        let stream = self.streams.get_mut(&key)?;
        let frame = make()?;
        stream.gop.push(now, seq, &frame);
        Some(frame)
    }

    /// Send `frame` to the receivers of the stream `key` from the `from`th on, until
    /// `budget` packets are queued (at least one viewer's, however many that is), so
    /// the caller can put each group's datagrams on the wire before the next group's
    /// are made. A viewer waiting for a keyframe skips other frames; one still catching
    /// up queues the frame behind its catch-up.
    pub fn send_picture(
        &mut self,
        now: Instant,
        key: StreamKey,
        frame: &Arc<OutFrame>,
        (from, budget): (usize, u64),
        stamp: &mut impl Stamp,
        out: &mut Datagrams,
    ) -> Progress {
        let Some(stream) = self.streams.get(&key) else {
            return Progress {
                packets: 0,
                next: None,
            };
        };
        let receivers = stream.receivers.get(from..).unwrap_or_default();
        let mut packets = 0;
        for (i, &id) in receivers.iter().enumerate() {
            let Some(viewer) = self.viewers.get_mut(&id) else {
                continue;
            };
            if viewer.waiting_key && !frame.key {
                continue;
            }
            viewer.waiting_key = false;
            if !viewer.catch_up.is_empty() {
                viewer.catch_up.push_back(frame.clone());
                continue;
            }
            packets += stamp.stamp(id, now, frame, out);
            if packets >= budget && i + 1 < receivers.len() {
                return Progress {
                    packets,
                    next: Some(from + i + 1),
                };
            }
        }
        Progress {
            packets,
            next: None,
        }
    }

    /// When the next catch-up step is due, if any viewer is catching up.
    pub fn next_tick(&self) -> Option<Instant> {
        self.next_tick
    }

    /// The next step of every catch-up in progress, if due at `now`; returns packets
    /// queued.
    pub fn catch_up(&mut self, now: Instant, stamp: &mut impl Stamp, out: &mut Datagrams) -> u64 {
        if self.next_tick.is_none_or(|t| t > now) {
            return 0;
        }
        let mut packets = 0;
        let viewers = &mut self.viewers;
        self.catching_up.retain(|&id| {
            let Some(viewer) = viewers.get_mut(&id) else {
                return false;
            };
            packets += catch_up_step(viewer, id, now, stamp, out);
            !viewer.catch_up.is_empty()
        });
        self.next_tick = (!self.catching_up.is_empty()).then(|| now + CATCH_UP_TICK);
        packets
    }
}

/// Send a viewer's queued catch-up frames, whole frames of at most [`CATCH_UP_PACKETS`]
/// packets in all (but at least one frame). Returns the packets queued.
fn catch_up_step(
    viewer: &mut Viewer,
    id: PeerId,
    now: Instant,
    stamp: &mut impl Stamp,
    out: &mut Datagrams,
) -> u64 {
    let mut sent = 0;
    while let Some(frame) = viewer.catch_up.front() {
        if sent > 0 && sent + frame.payloads.len() > CATCH_UP_PACKETS {
            break;
        }
        let Some(frame) = viewer.catch_up.pop_front() else {
            break;
        };
        sent += stamp.stamp(id, now, &frame, out) as usize;
    }
    sent as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKET_SIZE: usize = 1150;

    /// What each viewer was sent: (viewer, when, frame timestamp, packets).
    #[derive(Default)]
    struct Sends(Vec<(PeerId, Instant, u32, usize)>);

    impl Stamp for Sends {
        fn stamp(
            &mut self,
            id: PeerId,
            now: Instant,
            frame: &Arc<OutFrame>,
            _: &mut Datagrams,
        ) -> u64 {
            self.0
                .push((id, now, frame.timestamp, frame.payloads.len()));
            frame.payloads.len() as u64
        }
    }

    impl Sends {
        fn to(&self, id: PeerId) -> Vec<(Instant, u32, usize)> {
            self.0
                .iter()
                .filter(|s| s.0 == id)
                .map(|s| (s.1, s.2, s.3))
                .collect()
        }
    }

    /// Picture `seq`, captured `seq` × 33 ms after `t0_us`: a keyframe of about nine
    /// packets, or a picture of about five.
    fn picture(seq: u64, key: bool, t0_us: u64) -> Picture {
        let (nal_header, len) = if key { (0x65, 10_000) } else { (0x41, 5_000) };
        let mut data = vec![0, 0, 0, 1, nal_header];
        data.resize(4 + len, 0x5a);
        Picture {
            seq,
            ..Picture::video(data, key, (64, 64), t0_us + seq * 33_333)
        }
    }

    /// Publish picture `seq` at `now` to the stream and send it to its receivers.
    fn publish(
        fanout: &mut Fanout,
        now: Instant,
        key: StreamKey,
        au: &Picture,
        sends: &mut Sends,
    ) -> Arc<OutFrame> {
        let frame = fanout.prepare(now, key, au).expect("a picture");
        let mut out = Vec::new();
        let progress = fanout.send_picture(now, key, &frame, (0, u64::MAX), sends, &mut out);
        assert_eq!(progress.next, None);
        frame
    }

    /// A viewer that connects mid-GOP gets the cached keyframe at once, then the rest
    /// of the GOP in steps of at most the packet budget, one step per tick, with live
    /// pictures queued behind; and the cache is the only way it starts, so without the
    /// pacing the whole GOP would leave in its first step.
    #[test]
    fn a_mid_gop_joiner_gets_the_keyframe_first_then_the_rest_paced() {
        let t0 = Instant::now();
        let hub = Hub::new(4);
        let key = stream_key(&hub);
        let mut fanout = Fanout::new(PACKET_SIZE);
        let mut sends = Sends::default();
        let mut out = Vec::new();

        assert!(fanout.add_viewer(1, &hub), "the stream's first viewer");
        assert_eq!(
            fanout.connected(t0, 1, &mut sends, &mut out),
            Start::AtNextKeyframe,
            "nothing cached yet"
        );
        // A keyframe and fourteen pictures: viewer 1 gets each as it comes.
        let mut gop = Vec::new();
        let mut now = t0;
        for seq in 0..15 {
            now = t0 + Duration::from_millis(33 * seq);
            gop.push(publish(
                &mut fanout,
                now,
                key,
                &picture(seq, seq == 0, 1_000_000),
                &mut sends,
            ));
        }
        assert_eq!(sends.to(1).len(), 15);
        let gop_packets: usize = gop.iter().map(|f| f.payloads.len()).sum();
        assert!(gop[0].payloads.len() < CATCH_UP_PACKETS);
        assert!(gop_packets > 3 * CATCH_UP_PACKETS, "{gop_packets} packets");

        assert!(
            !fanout.add_viewer(2, &hub),
            "same stream, no second subscription"
        );
        let joined = now + Duration::from_millis(10);
        let start = fanout.connected(joined, 2, &mut sends, &mut out);
        let Start::FromGop { packets } = start else {
            panic!("{start:?}");
        };
        assert!(
            packets as usize <= CATCH_UP_PACKETS,
            "first step: {packets} packets"
        );
        let first = sends.to(2);
        assert_eq!(first[0].1, gop[0].timestamp, "the keyframe first");
        assert!(first.iter().all(|s| s.0 == joined));
        assert_eq!(fanout.next_tick(), Some(joined + CATCH_UP_TICK));

        // Early calls do nothing; each tick sends one step; a live picture arriving
        // meanwhile waits behind the catch-up.
        let live = picture(15, false, 1_000_000);
        assert_eq!(
            fanout.catch_up(joined + CATCH_UP_TICK / 2, &mut sends, &mut out),
            0
        );
        let mut steps = vec![packets as usize];
        let mut tick = joined;
        let mut live_sent = false;
        while let Some(next) = fanout.next_tick() {
            assert_eq!(next, tick + CATCH_UP_TICK, "steps are one tick apart");
            tick = next;
            if !live_sent {
                publish(&mut fanout, tick, key, &live, &mut sends);
                live_sent = true;
            }
            let before = sends.to(2).len();
            let step = fanout.catch_up(tick, &mut sends, &mut out) as usize;
            let sent = &sends.to(2)[before..];
            assert!(sent.iter().all(|s| s.0 == tick));
            assert!(
                step <= CATCH_UP_PACKETS || sent.len() == 1,
                "a step of {step} packets"
            );
            steps.push(step);
        }
        assert!(steps.len() >= 4, "paced over several ticks: {steps:?}");
        let timestamps: Vec<u32> = sends.to(2).iter().map(|s| s.1).collect();
        let mut expected: Vec<u32> = gop.iter().map(|f| f.timestamp).collect();
        expected.push(sends.to(1).last().expect("live picture").1);
        assert_eq!(
            timestamps, expected,
            "the whole GOP in order, then the live picture"
        );

        // Caught up: live pictures go straight out.
        let now = tick + Duration::from_millis(33);
        publish(
            &mut fanout,
            now,
            key,
            &picture(16, false, 1_000_000),
            &mut sends,
        );
        assert_eq!(sends.to(2).last().map(|s| s.0), Some(now));
        assert_eq!(fanout.next_tick(), None);
    }

    #[test]
    fn viewers_get_only_their_own_stream_and_the_last_one_ends_it() {
        let t0 = Instant::now();
        let (a, b) = (Hub::new(4), Hub::new(4));
        let mut fanout = Fanout::new(PACKET_SIZE);
        let mut sends = Sends::default();
        let mut out = Vec::new();
        assert!(fanout.add_viewer(1, &a));
        assert!(fanout.add_viewer(2, &b));
        assert!(!fanout.add_viewer(3, &b));
        for id in [1, 2, 3] {
            fanout.connected(t0, id, &mut sends, &mut out);
        }
        let frame = publish(
            &mut fanout,
            t0,
            stream_key(&b),
            &picture(0, true, 0),
            &mut sends,
        );
        let got: Vec<PeerId> = sends.0.iter().map(|s| s.0).collect();
        assert_eq!(got.len(), 2);
        assert!(got.contains(&2) && got.contains(&3));
        assert!(sends.0.iter().all(|s| s.2 == frame.timestamp));
        assert!(Arc::ptr_eq(fanout.hub_of(1).expect("hub"), &a));

        assert_eq!(fanout.remove_viewer(2), None, "viewer 3 still watches b");
        assert_eq!(fanout.remove_viewer(3), Some(stream_key(&b)));
        assert_eq!(
            fanout
                .prepare(t0, stream_key(&b), &picture(1, false, 0))
                .map(|_| ()),
            None
        );
        assert_eq!(fanout.remove_viewer(1), Some(stream_key(&a)));
    }

    #[test]
    fn groups_of_receivers_cover_everyone_once_and_disconnected_viewers_get_nothing() {
        let t0 = Instant::now();
        let hub = Hub::new(4);
        let key = stream_key(&hub);
        let mut fanout = Fanout::new(PACKET_SIZE);
        let mut sends = Sends::default();
        let mut out = Vec::new();
        for id in 0..10 {
            fanout.add_viewer(id, &hub);
            fanout.connected(t0, id, &mut sends, &mut out);
        }
        fanout.disconnected(3);
        fanout.disconnected(0);
        let frame = fanout
            .prepare(t0, key, &picture(0, true, 0))
            .expect("frame");
        let per_viewer = frame.payloads.len() as u64;
        let mut from = Some(0);
        let mut groups = Vec::new();
        while let Some(start) = from {
            let progress = fanout.send_picture(
                t0,
                key,
                &frame,
                (start, 3 * per_viewer),
                &mut sends,
                &mut out,
            );
            groups.push(progress.packets / per_viewer);
            from = progress.next;
        }
        let mut got: Vec<PeerId> = sends.0.iter().map(|s| s.0).collect();
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 4, 5, 6, 7, 8, 9]);
        // Each group stops once it holds the budget's packets; disconnected viewers
        // take none of it.
        assert_eq!(groups, vec![3, 3, 2]);
    }
}
