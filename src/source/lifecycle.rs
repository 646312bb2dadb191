//! What the runner keeps for every source: publishing its pictures into the hub, the
//! NO SIGNAL picture while it is gone (viewers stay connected and keep a playing
//! stream), restart backoff, and the status `/state` reports.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::failure_log::{FailureLog, Verdict};
use super::nosignal::{NoSignal, NO_SIGNAL_FPS};
use crate::media::hub::HubInfo;
use crate::media::refchain::{Link, ReferenceChain};
use crate::media::{h264, Hub, Picture};

/// What `/state` says about the source.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SourceStatus {
    /// The configured source, e.g. `tcp-listen://0.0.0.0:8000`.
    pub kind: String,
    /// `live` while the source delivers video, `no_signal` otherwise.
    pub state: &'static str,
    pub width: u32,
    pub height: u32,
    /// Measured over the last pictures of live video.
    pub fps: f64,
    pub profile_level_id: Option<String>,
    /// The stream has B-frames, which WebRTC players cannot show in order.
    pub b_frames: bool,
    /// Pictures held back because a reference picture before them never arrived.
    pub lost_references: u64,
    /// Times the source was lost after delivering video.
    pub interruptions: u64,
    /// Why the source is not live (or was last lost), e.g. `cannot connect to ...`.
    pub last_error: Option<String>,
    /// Failed attempts since the source was last live.
    pub failures: u64,
    /// A source receiving RTP: who sends, and what arrived and was thrown away.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtp: Option<super::rtp_listen::RtpIngestStatus>,
}

/// `/state`'s `source`: what the source says about itself, with what the hub has seen
/// of its stream.
#[derive(Debug, serde::Serialize)]
pub struct SourceReport {
    #[serde(flatten)]
    pub status: SourceStatus,
    /// SPS and PPS are known: viewers can start.
    pub has_params: bool,
    pub frames: u64,
    pub keyframes: u64,
    /// Outputs taking pictures (WebRTC engine, relays, memsink writer).
    pub subscribers: usize,
    /// The hub carries the source's own pictures (not NO SIGNAL).
    pub online: bool,
}

impl SourceReport {
    pub fn new(status: SourceStatus, hub: &HubInfo) -> SourceReport {
        SourceReport {
            status,
            has_params: hub.has_params,
            frames: hub.frames,
            keyframes: hub.keyframes,
            subscribers: hub.subscribers,
            online: hub.online,
        }
    }
}

/// Shared, cheap to clone.
#[derive(Clone, Default)]
pub struct StatusHandle(Arc<Mutex<SourceStatus>>);

impl StatusHandle {
    pub fn new(kind: &str, state: &'static str) -> StatusHandle {
        StatusHandle(Arc::new(Mutex::new(SourceStatus {
            kind: kind.to_string(),
            state,
            ..SourceStatus::default()
        })))
    }

    pub fn snapshot(&self) -> SourceStatus {
        self.lock().clone()
    }

    /// Name the source by what it really uses (e.g. the port a `:0` listener got).
    pub fn set_kind(&self, kind: String) {
        self.lock().kind = kind;
    }

    /// What an RTP ingest received.
    pub fn set_rtp(&self, rtp: super::rtp_listen::RtpIngestStatus) {
        self.lock().rtp = Some(rtp);
    }

    /// Live video of this size; `fps` when the source knows its rate (a source that
    /// does not leaves the figure as it is).
    pub fn set_live(&self, width: u32, height: u32, fps: Option<f64>) {
        let mut s = self.lock();
        s.state = "live";
        (s.width, s.height) = (width, height);
        if let Some(fps) = fps {
            s.fps = fps;
        }
    }

    /// The source is gone (or not there yet), for `why`. Returns whether it had been
    /// live, i.e. whether this is a new interruption.
    pub fn set_lost(&self, why: &str) -> bool {
        let mut s = self.lock();
        let was_live = s.state == "live";
        if was_live {
            s.interruptions += 1;
        }
        s.state = "no_signal";
        s.fps = 0.0;
        s.last_error = Some(why.to_string());
        s.failures = if was_live { 1 } else { s.failures + 1 };
        was_live
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SourceStatus> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Restart delays that double from `min` to `max`, and start over after success.
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    /// The delay to wait now; the following one is longer.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Pictures over which the frame rate is measured.
const FPS_WINDOW: usize = 30;

/// The runner's way into the hub: numbers every picture (live or NO SIGNAL, so the
/// sequence continues across losses), holds back pictures whose reference was lost,
/// makes the NO SIGNAL picture while the source is gone, and keeps `/state` true.
pub struct Publisher {
    hub: Arc<Hub>,
    status: StatusHandle,
    seq: u64,
    live: bool,
    fallback_size: (u32, u32),
    no_signal: Option<NoSignal>,
    /// When the next NO SIGNAL picture is due (CLOCK_MONOTONIC µs); `None`: at once.
    next_no_signal_us: Option<u64>,
    /// The next NO SIGNAL picture must be an IDR (first after live video).
    no_signal_key: bool,
    recent: VecDeque<u64>,
    /// B-frames were seen (and warned about) in this source's stream.
    b_frames: bool,
    /// Follows frame_num to hold back pictures whose reference was lost.
    chain: ReferenceChain,
    chain_broken: bool,
    failure_log: FailureLog,
}

/// Time between two NO SIGNAL pictures, in µs.
pub const NO_SIGNAL_PERIOD_US: u64 = 1_000_000 / NO_SIGNAL_FPS as u64;

impl Publisher {
    /// `fallback_size` sizes the NO SIGNAL picture until the source has shown its own.
    pub fn new(hub: Arc<Hub>, status: StatusHandle, fallback_size: (u32, u32)) -> Publisher {
        Publisher {
            hub,
            status,
            seq: 0,
            live: false,
            fallback_size,
            no_signal: None,
            next_no_signal_us: None,
            no_signal_key: true,
            recent: VecDeque::with_capacity(FPS_WINDOW),
            b_frames: false,
            chain: ReferenceChain::default(),
            chain_broken: false,
            failure_log: FailureLog::default(),
        }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn status(&self) -> &StatusHandle {
        &self.status
    }

    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Publish one picture of live video at `now_us`; its `capture_us` is when it was
    /// captured (e.g. the driver's timestamp, so latency figures start at the sensor).
    /// False when it was held back (its reference picture never arrived).
    pub fn publish(&mut self, mut picture: Picture, now_us: u64) -> bool {
        let profile_level_id = match picture.key {
            true => profile_level_id(&picture.data),
            false => None,
        };
        if !self.live {
            tracing::info!(
                width = picture.width,
                height = picture.height,
                profile_level_id = profile_level_id.as_deref().unwrap_or("?"),
                "source live"
            );
            self.live = true;
            self.recent.clear();
            self.failure_log.reset();
        }
        if self.recent.len() == FPS_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(picture.capture_us);
        {
            let mut s = self.status.lock();
            s.state = "live";
            s.failures = 0;
            s.width = picture.width;
            s.height = picture.height;
            s.fps = measured_fps(&self.recent);
            if profile_level_id.is_some() && s.profile_level_id != profile_level_id {
                s.profile_level_id = profile_level_id;
            }
        }
        if self.chain.push(&picture.data) == Link::Broken {
            // Sent on, it would be decoded against the wrong picture and show as a
            // smeared ghost in every browser until the next IDR: hold back until then.
            let first = !self.chain_broken;
            self.chain_broken = true;
            self.status.lock().lost_references += 1;
            if first {
                tracing::info!("a reference picture was lost before it reached peregrine; waiting for the next keyframe");
            }
            self.hub.request_keyframe();
            return false;
        }
        self.chain_broken = false;
        if !picture.key && !self.b_frames && h264::access_unit_has_b_slice(&picture.data) {
            self.b_frames = true;
            self.status.lock().b_frames = true;
            tracing::warn!(
                "the stream has B-frames: browsers cannot play it over WebRTC (pictures \
                 arrive out of display order). Encode without them: x264 -bf 0 or \
                 -tune zerolatency, or a camera's baseline/main setting"
            );
        }
        self.fallback_size = (picture.width, picture.height);
        picture.seq = self.seq;
        picture.placeholder = false;
        self.hub.publish_at(picture, now_us);
        self.seq += 1;
        true
    }

    /// The source is not there yet: viewers get NO SIGNAL until it is.
    pub fn not_yet(&mut self) {
        self.chain.reset();
        self.status.lock().state = "no_signal";
        self.live = false;
        self.no_signal_key = true;
        self.hub.set_offline();
        self.hub.drop_gop();
    }

    /// The source is gone, or another attempt to reach it failed: viewers get NO
    /// SIGNAL from now on. Said at warn level, but not at every retry.
    pub fn lost(&mut self, why: &str) {
        let verdict = self.failure_log.judge(why, Instant::now());
        if self.status.set_lost(why) {
            tracing::warn!("source lost: {why}");
        } else {
            match verdict {
                Verdict::New => tracing::warn!("source unavailable: {why}"),
                Verdict::Repeated(n) => {
                    tracing::warn!("source still unavailable ({n} more failed attempts): {why}")
                }
                Verdict::Quiet => tracing::debug!("source unavailable: {why}"),
            }
        }
        if self.live {
            // What comes next (placeholders, or the source back) does not continue it.
            self.hub.drop_gop();
        }
        self.chain.reset();
        self.live = false;
        self.no_signal_key = true;
        self.next_no_signal_us = None;
        self.hub.set_offline();
    }

    /// When the next NO SIGNAL picture is due (CLOCK_MONOTONIC µs), while not live.
    pub fn no_signal_due_us(&self, now_us: u64) -> Option<u64> {
        (!self.live).then(|| self.next_no_signal_us.unwrap_or(now_us))
    }

    /// While not live: publish a NO SIGNAL picture at `now_us` when one is due, or
    /// when a viewer waits for a keyframe and the next is less than half a period away.
    /// The caller checks that somebody watches.
    pub fn show_no_signal(&mut self, now_us: u64) {
        if self.live {
            return;
        }
        let due = self.next_no_signal_us.is_none_or(|t| now_us >= t);
        // A viewer waiting to start gets its keyframe without waiting for the tick.
        let wanted = self.hub.keyframe_due(now_us)
            && self
                .next_no_signal_us
                .is_none_or(|t| now_us + NO_SIGNAL_PERIOD_US / 2 >= t);
        if !(due || wanted) {
            return;
        }
        self.next_no_signal_us = Some(now_us + NO_SIGNAL_PERIOD_US);
        if let Err(e) = self.publish_no_signal(wanted, now_us) {
            tracing::warn!("NO SIGNAL picture failed: {e:#}");
        }
    }

    fn publish_no_signal(&mut self, key_wanted: bool, now_us: u64) -> anyhow::Result<()> {
        let (w, h) = self.fallback_size;
        let want_size = ((w & !1).max(16), (h & !1).max(16));
        if self.no_signal.as_ref().map(|n| n.size()) != Some(want_size) {
            self.no_signal = Some(NoSignal::new(w, h)?);
            self.no_signal_key = true;
        }
        let Some(no_signal) = self.no_signal.as_mut() else {
            return Ok(());
        };
        let key = self.no_signal_key || key_wanted;
        let Some(mut picture) = no_signal.encode(key, now_us)? else {
            return Ok(());
        };
        self.no_signal_key = false;
        picture.seq = self.seq;
        self.hub.publish_at(picture, now_us);
        self.seq += 1;
        Ok(())
    }
}

/// The SDP profile-level-id of the SPS a key picture carries.
fn profile_level_id(annexb: &[u8]) -> Option<String> {
    let sps = h264::nal_units(annexb).find(|n| h264::nal_type(n) == Some(h264::NalType::Sps))?;
    h264::parse_sps(sps)
        .ok()
        .map(|info| info.profile_level_id())
}

fn measured_fps(recent: &VecDeque<u64>) -> f64 {
    match (recent.front(), recent.back()) {
        (Some(first), Some(last)) if recent.len() >= 2 && last > first => {
            let fps = (recent.len() - 1) as f64 * 1e6 / (last - first) as f64;
            (fps * 10.0).round() / 10.0
        }
        _ => 0.0,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::encoder::H264Encoder;
    use crate::media::hub::StartAt;
    use crate::media::VideoSettings;
    use crate::source::pattern::TestPattern;

    #[test]
    fn backoff_doubles_to_its_limit_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
        let got: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![250, 500, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 250);
    }

    /// The test pattern, encoded, `count` pictures of `width`x`height`; an IDR at each
    /// index in `keys` (and at 0).
    pub(crate) fn pattern_pictures(
        width: u32,
        height: u32,
        count: u32,
        keys: &[u32],
    ) -> Vec<Picture> {
        let mut encoder = H264Encoder::new(&VideoSettings {
            width,
            height,
            fps: 30,
            bitrate_kbps: 300,
            gop: 300,
        })
        .unwrap();
        let mut pattern = TestPattern::new(width, height).unwrap();
        (0..count)
            .map(|i| {
                if keys.contains(&i) {
                    encoder.force_keyframe();
                }
                encoder
                    .encode(pattern.draw(i, 0), u64::from(i) * 33_333)
                    .unwrap()
                    .unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn no_signal_while_lost_then_live_with_continuous_sequence() {
        let hub = Hub::new(64);
        let status = StatusHandle::new("test", "no_signal");
        let mut out = Publisher::new(hub.clone(), status.clone(), (320, 240));
        let mut sub = hub.subscribe(StartAt::NextKeyframe);
        out.lost("not connected");
        // 450 ms of NO SIGNAL, stepped by the caller's clock: three pictures.
        let t0 = 5_000_000;
        let mut now = t0;
        while now <= t0 + 450_000 {
            out.show_no_signal(now);
            now += 10_000;
        }
        assert_eq!(hub.info().frames, 3);
        let first = sub.recv().await.unwrap();
        assert!(first.key && first.placeholder);
        assert_eq!((first.width, first.height), (320, 240));
        assert!(!hub.info().online, "placeholders leave the hub offline");
        assert_eq!(status.snapshot().state, "no_signal");

        let live = pattern_pictures(160, 120, 1, &[]).remove(0);
        assert!(live.key);
        assert!(out.publish(live, now));
        assert!(hub.info().online);
        let s = status.snapshot();
        assert_eq!((s.state, s.width, s.height), ("live", 160, 120));
        let mut last_seq = first.seq;
        loop {
            let au = sub.recv().await.unwrap();
            assert_eq!(au.seq, last_seq + 1, "sequence continues across the switch");
            last_seq = au.seq;
            if au.width == 160 {
                assert!(au.key && !au.placeholder);
                break;
            }
        }
        // Lost again: the next placeholder is a keyframe at the live size.
        out.lost("connection closed");
        out.show_no_signal(now + 10_000);
        let au = sub.recv().await.unwrap();
        assert!(au.key);
        assert_eq!((au.width, au.height), (160, 120));
        assert_eq!(status.snapshot().interruptions, 1);
    }

    #[tokio::test]
    async fn pictures_after_a_lost_reference_are_held_back_until_the_next_idr() {
        let hub = Hub::new(64);
        let status = StatusHandle::new("test", "no_signal");
        let mut out = Publisher::new(hub.clone(), status.clone(), (160, 120));
        let mut sub = hub.subscribe(StartAt::NextKeyframe);
        for (i, picture) in pattern_pictures(160, 120, 12, &[9]).into_iter().enumerate() {
            assert_eq!(picture.key, i == 0 || i == 9, "picture {i}");
            // Picture 4, a reference P-frame, never arrives.
            if i == 4 {
                continue;
            }
            out.publish(picture, 0);
            if (5..9).contains(&i) {
                assert!(hub.keyframe_wanted(), "no keyframe asked for at {i}");
            }
        }
        // 0..=3, then the IDR and what follows it: nothing of the broken chain 5..=8.
        let mut keys = Vec::new();
        while let Ok(Some(au)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await
        {
            keys.push(au.key);
        }
        assert_eq!(
            keys,
            [true, false, false, false, true, false, false],
            "access units the hub passed on (key flags)"
        );
        assert_eq!(status.snapshot().lost_references, 4);
        assert!(!hub.keyframe_wanted(), "the IDR answered the request");
    }
}
