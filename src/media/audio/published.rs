//! A WHIP publisher's sound: each Opus RTP payload it sends becomes one audio frame of
//! its stream's sound hub, as a sound source's frames do. The payload is passed on as it
//! came (a decoder conceals what does not decode); its capture time keeps the spacing of
//! the publisher's own RTP timestamps, laid on our clock from its first packet, so the
//! viewers' timestamps advance as the publisher's did whatever the network's jitter.

use std::sync::Arc;

use super::SAMPLE_RATE;
use crate::media::{Hub, Picture};
use crate::source::audio::{AudioStatusHandle, Opened};

/// Longest Opus payload taken: one datagram's worth. Longer ones are dropped.
pub const MAX_FRAME_BYTES: usize = 1500;
/// A publisher's timeline this far from ours (a jump in its timestamps, a clock running
/// off) is laid on ours afresh.
const RESYNC_US: i64 = 1_000_000;

/// Where a publisher's sound goes: its stream's sound hub and `/state`'s account of it.
#[derive(Clone)]
pub struct SoundOutlet {
    pub hub: Arc<Hub>,
    pub status: AudioStatusHandle,
}

impl std::fmt::Debug for SoundOutlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoundOutlet")
            .field("hub", &Arc::as_ptr(&self.hub))
            .field("status", &self.status)
            .finish()
    }
}

/// The publisher's last packet: its stream, RTP timestamp and the capture time given.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    ssrc: u32,
    rtp: u32,
    capture_us: u64,
}

/// One publisher's sound, made into frames. `/state` says it is live from its first
/// frame until the publisher goes.
pub struct PublishedSound {
    outlet: SoundOutlet,
    payload_type: u8,
    anchor: Option<Anchor>,
    live: bool,
    pub frames: u64,
    pub dropped: u64,
}

impl PublishedSound {
    /// The sound a publisher sends as Opus on `payload_type`.
    pub fn new(outlet: SoundOutlet, payload_type: u8) -> PublishedSound {
        PublishedSound {
            outlet,
            payload_type,
            anchor: None,
            live: false,
            frames: 0,
            dropped: 0,
        }
    }

    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    /// One Opus RTP payload of the publisher (stream `ssrc`, RTP `timestamp`), come at
    /// `now_us` (CLOCK_MONOTONIC): published as a frame unless empty or too long.
    pub fn take(&mut self, ssrc: u32, timestamp: u32, payload: &[u8], now_us: u64) {
        if payload.is_empty() || payload.len() > MAX_FRAME_BYTES {
            self.dropped += 1;
            return;
        }
        let capture_us = self.capture_us(ssrc, timestamp, now_us);
        let mut frame = Picture::audio(bytes::Bytes::copy_from_slice(payload), capture_us);
        // Numbered on from the frames the hub had, across publishers.
        frame.seq = self.outlet.hub.info().frames;
        self.outlet.hub.publish_at(frame, now_us);
        self.frames += 1;
        if !self.live {
            self.live = true;
            self.outlet.status.set_live(Opened {
                rate: SAMPLE_RATE,
                channels: 2,
            });
        }
    }

    /// The capture time of the packet stamped `timestamp`: the last one's moved on by
    /// the samples between them, or `now_us` for a new stream or one gone off our clock.
    fn capture_us(&mut self, ssrc: u32, timestamp: u32, now_us: u64) -> u64 {
        let followed = self.anchor.filter(|a| a.ssrc == ssrc).and_then(|a| {
            // Signed: a packet that came late (reordered) is a little earlier.
            let samples = i64::from(timestamp.wrapping_sub(a.rtp) as i32);
            let us = a.capture_us as i64 + samples * 1_000_000 / i64::from(SAMPLE_RATE);
            (us > 0 && (us - now_us as i64).abs() <= RESYNC_US).then_some(us as u64)
        });
        let capture_us = followed.unwrap_or(now_us);
        self.anchor = Some(Anchor {
            ssrc,
            rtp: timestamp,
            capture_us,
        });
        capture_us
    }
}

impl Drop for PublishedSound {
    fn drop(&mut self) {
        if self.live {
            self.outlet.status.set_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{MediaKind, StartAt, Subscriber};

    fn outlet() -> SoundOutlet {
        SoundOutlet {
            hub: Hub::new(64),
            status: AudioStatusHandle::new("whip"),
        }
    }

    /// The capture times of the `n` frames published since `rx` subscribed.
    async fn stamps(rx: &mut Subscriber, n: usize) -> Vec<u64> {
        let mut out = Vec::new();
        for _ in 0..n {
            let frame = rx.recv().await.expect("a frame");
            assert_eq!(frame.kind, MediaKind::Audio);
            out.push(frame.capture_us);
        }
        out
    }

    #[tokio::test]
    async fn payloads_become_frames_spaced_as_the_publisher_stamped_them() {
        let outlet = outlet();
        let mut rx = outlet.hub.subscribe(StartAt::Gop);
        let mut sound = PublishedSound::new(outlet.clone(), 96);
        let t0 = 5_000_000;
        // Arrival jitter does not move the stamps: 960 samples are 20 ms.
        sound.take(7, 1000, b"\x78abc", t0);
        sound.take(7, 1960, b"\x78def", t0 + 27_000);
        sound.take(7, 2920, b"\x78ghi", t0 + 38_000);
        assert_eq!(stamps(&mut rx, 3).await, [t0, t0 + 20_000, t0 + 40_000]);
        assert_eq!(outlet.status.snapshot().state, "live");
        drop(sound);
        assert_eq!(outlet.status.snapshot().state, "idle", "the publisher went");
    }

    #[tokio::test]
    async fn a_jump_or_a_new_stream_starts_from_now_and_oversized_frames_are_dropped() {
        let outlet = outlet();
        let mut rx = outlet.hub.subscribe(StartAt::Gop);
        let mut sound = PublishedSound::new(outlet, 111);
        let t0 = 9_000_000;
        sound.take(1, 0, b"a", t0);
        sound.take(1, 48_000 * 60, b"b", t0 + 20_000);
        sound.take(2, 77, b"c", t0 + 40_000);
        sound.take(2, 1037, &[0u8; MAX_FRAME_BYTES + 1], t0 + 60_000);
        sound.take(2, 1037, b"", t0 + 60_000);
        assert_eq!((sound.frames, sound.dropped), (3, 2));
        assert_eq!(stamps(&mut rx, 3).await, [t0, t0 + 20_000, t0 + 40_000]);
        assert_eq!(rx.waiting(), 0, "nothing else was published");
    }
}
