//! The talkers, mixed: each browser's packets go through its own jitter buffer and
//! Opus decoder, and every tick takes one 20 ms frame of each and sums them, clamped
//! to the sample range. A talker that stops sending is concealed for a few frames,
//! then silent, then forgotten; the others' sound never waits for it.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::media::audio::mic::{MicPacket, TalkerId};
use crate::media::audio::opus::{OpusDecoder, FRAME_LEN};
use crate::media::audio::CHANNELS;

use super::jitter::{JitterBuffer, Turn};

/// Talkers mixed at most; packets of more are dropped.
pub const MAX_TALKERS: usize = 32;
/// Lost frames made up by the decoder in a row; after these a talker is silent.
pub const MAX_CONCEALED: u32 = 3;
/// Samples (both channels) of the longest Opus packet: 120 ms.
const MAX_DECODED: usize = 5760 * CHANNELS;

/// What one tick or one packet did, for the counters of `/state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Packets decoded into the mix.
    pub played: u64,
    /// Frames made up for missing packets.
    pub concealed: u64,
    /// Packets dropped: late, duplicate, overflow, undecodable, or beyond the talkers.
    pub dropped: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.played += other.played;
        self.concealed += other.concealed;
        self.dropped += other.dropped;
    }
}

struct Talker {
    jitter: JitterBuffer,
    decoder: OpusDecoder,
    /// Decoded samples not mixed yet (a packet longer than 20 ms leaves some).
    pcm: Vec<i16>,
    /// Frames concealed since the last packet played.
    missing_run: u32,
}

/// Every talker of one playback, and the mix of them.
pub struct Mixer {
    talkers: BTreeMap<TalkerId, Talker>,
    decoded: Vec<i16>,
    sum: Vec<i32>,
}

impl Default for Mixer {
    fn default() -> Self {
        Mixer::new()
    }
}

impl Mixer {
    pub fn new() -> Mixer {
        Mixer {
            talkers: BTreeMap::new(),
            decoded: vec![0; MAX_DECODED],
            sum: vec![0; FRAME_LEN],
        }
    }

    /// Take in a talker's packet.
    pub fn push(&mut self, packet: MicPacket, now: Instant) -> Counts {
        let dropped = match self.talkers.get_mut(&packet.talker) {
            Some(talker) => talker.jitter.push(packet.seq, packet.payload, now),
            None => self.add(packet, now),
        };
        Counts {
            dropped: dropped as u64,
            ..Counts::default()
        }
    }

    /// The talker is gone: it is no longer mixed (what it still held is dropped).
    pub fn left(&mut self, talker: TalkerId) -> Counts {
        let held = self.talkers.remove(&talker).map_or(0, |t| t.jitter.held());
        Counts {
            dropped: held as u64,
            ..Counts::default()
        }
    }

    /// Talkers heard now (including those still gathering their first packets).
    pub fn talkers(&self) -> usize {
        self.talkers.len()
    }

    /// Packets waiting in the jitter buffers.
    pub fn held(&self) -> usize {
        self.talkers.values().map(|t| t.jitter.held()).sum()
    }

    /// Mix the next 20 ms of every talker into `out` ([`FRAME_LEN`] samples,
    /// interleaved stereo), forgetting talkers that went quiet.
    pub fn mix(&mut self, now: Instant, out: &mut [i16]) -> Counts {
        let mut counts = Counts::default();
        self.talkers.retain(|_, t| {
            let idle = t.jitter.idle(now);
            if idle {
                counts.dropped += t.jitter.held() as u64;
            }
            !idle
        });
        self.sum.fill(0);
        for talker in self.talkers.values_mut() {
            counts += talker.fill(&mut self.decoded);
            let n = talker.pcm.len().min(FRAME_LEN);
            for (sum, &sample) in self.sum.iter_mut().zip(&talker.pcm[..n]) {
                *sum += i32::from(sample);
            }
            talker.pcm.drain(..n);
        }
        for (o, &s) in out.iter_mut().zip(&self.sum) {
            *o = s.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        }
        counts
    }

    /// A new talker, when there is room and a decoder; returns the packets dropped.
    fn add(&mut self, packet: MicPacket, now: Instant) -> usize {
        if self.talkers.len() >= MAX_TALKERS {
            return 1;
        }
        let Ok(decoder) = OpusDecoder::new() else {
            return 1;
        };
        let talker = Talker {
            jitter: JitterBuffer::new(packet.seq, packet.payload, now),
            decoder,
            pcm: Vec::with_capacity(MAX_DECODED + FRAME_LEN),
            missing_run: 0,
        };
        self.talkers.insert(packet.talker, talker);
        0
    }
}

impl Talker {
    /// Decode until a frame's worth is ready, or the talker has nothing for this
    /// tick (still gathering, or silent after its concealed frames).
    fn fill(&mut self, decoded: &mut [i16]) -> Counts {
        let mut counts = Counts::default();
        while self.pcm.len() < FRAME_LEN {
            let (turn, skipped) = self.jitter.turn();
            counts.dropped += skipped as u64;
            let packet = match turn {
                Turn::Waiting => break,
                Turn::Packet(packet) => Some(packet),
                Turn::Missing => None,
            };
            let samples = match packet.map(|p| self.decoder.decode(&p, decoded)) {
                Some(Ok(per_channel)) => {
                    counts.played += 1;
                    self.missing_run = 0;
                    per_channel * CHANNELS
                }
                missing_or_broken => {
                    if matches!(missing_or_broken, Some(Err(_))) {
                        counts.dropped += 1;
                    }
                    self.missing_run += 1;
                    if self.missing_run > MAX_CONCEALED {
                        break;
                    }
                    match self.decoder.conceal(decoded) {
                        Ok(per_channel) => {
                            counts.concealed += 1;
                            per_channel * CHANNELS
                        }
                        Err(_) => break,
                    }
                }
            };
            self.pcm
                .extend_from_slice(&decoded[..samples.min(decoded.len())]);
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::super::jitter::IDLE_TIMEOUT;
    use super::*;
    use crate::media::audio::level;
    use crate::media::audio::signal::OpusTone;
    use bytes::Bytes;
    use std::time::Duration;

    const TICK: Duration = Duration::from_millis(20);

    fn tone(hz: f64, amplitude: f64) -> OpusTone {
        OpusTone::new(hz, amplitude).unwrap()
    }

    fn packet(talker: TalkerId, seq: u16, payload: Bytes) -> MicPacket {
        MicPacket {
            talker,
            seq,
            timestamp: u32::from(seq) * 960,
            payload,
        }
    }

    /// Run `ticks` ticks from `t`, feeding each talker of `tones` one packet per tick
    /// while `sends(talker, tick)` says so; returns the mixed output and counts.
    fn run(
        mixer: &mut Mixer,
        tones: &mut [(TalkerId, OpusTone)],
        ticks: usize,
        t: Instant,
        sends: impl Fn(TalkerId, usize) -> bool,
    ) -> (Vec<i16>, Counts) {
        let mut out = Vec::new();
        let mut counts = Counts::default();
        let mut frame = vec![0i16; FRAME_LEN];
        for tick in 0..ticks {
            let now = t + TICK * tick as u32;
            for (id, tone) in tones.iter_mut() {
                let payload = tone.next_frame().unwrap();
                if sends(*id, tick) {
                    counts += mixer.push(packet(*id, tick as u16, payload), now);
                }
            }
            counts += mixer.mix(now, &mut frame);
            out.extend_from_slice(&frame);
        }
        (out, counts)
    }

    fn frames(pcm: &[i16]) -> Vec<Vec<i16>> {
        pcm.chunks(FRAME_LEN).map(level::left).collect()
    }

    #[test]
    fn two_talkers_are_both_heard() {
        let mut mixer = Mixer::new();
        let mut tones = [(1, tone(700.0, 0.3)), (2, tone(1500.0, 0.3))];
        let (out, counts) = run(&mut mixer, &mut tones, 30, Instant::now(), |_, _| true);
        assert_eq!(mixer.talkers(), 2);
        assert_eq!(counts.concealed, 0);
        assert_eq!(counts.dropped, 0);
        let tail = level::left(&out[FRAME_LEN * 10..]);
        let (a, b) = (
            level::power_at(&tail, 700.0),
            level::power_at(&tail, 1500.0),
        );
        let neither = level::power_at(&tail, 1100.0);
        assert!(
            a > 100.0 * neither && b > 100.0 * neither,
            "{a} {b} {neither}"
        );
    }

    #[test]
    fn the_sum_saturates_instead_of_wrapping() {
        let mut mixer = Mixer::new();
        // Three loud talkers of the same tone in phase: their sum exceeds full scale.
        let mut tones = [
            (1, tone(400.0, 0.9)),
            (2, tone(400.0, 0.9)),
            (3, tone(400.0, 0.9)),
        ];
        let (out, _) = run(&mut mixer, &mut tones, 20, Instant::now(), |_, _| true);
        let tail = &out[FRAME_LEN * 8..];
        let max = tail.iter().copied().max().unwrap();
        let min = tail.iter().copied().min().unwrap();
        assert_eq!((max, min), (i16::MAX, i16::MIN), "clipped at full scale");
        // Wrapping round would flip the sign at the peaks: the samples next to a
        // clipped one keep its sign.
        for pair in level::left(tail).windows(2) {
            if pair[0] == i16::MAX {
                assert!(pair[1] > 0, "{pair:?}");
            }
        }
    }

    #[test]
    fn a_talker_that_stops_is_concealed_then_silent_then_removed() {
        let mut mixer = Mixer::new();
        let mut tones = [(1, tone(700.0, 0.3)), (2, tone(1500.0, 0.3))];
        let t = Instant::now();
        // Talker 2 sends for 20 ticks, then nothing; talker 1 sends throughout.
        let (out, counts) = run(&mut mixer, &mut tones, 40, t, |id, tick| {
            id == 1 || tick < 20
        });
        assert_eq!(counts.concealed, u64::from(MAX_CONCEALED));
        assert_eq!(mixer.talkers(), 1, "talker 2 timed out");
        let frames = frames(&out);
        let b = |f: &Vec<i16>| level::power_at(f, 1500.0);
        let a = |f: &Vec<i16>| level::power_at(f, 700.0);
        let loud = b(&frames[15]);
        // Talker 2's last packet plays at tick 20 (after its cushion); then the
        // concealed frames, then nothing of it.
        let silent_from = 21 + MAX_CONCEALED as usize;
        for f in &frames[silent_from..] {
            assert!(b(f) < loud / 1000.0, "{} vs {loud}", b(f));
        }
        // Talker 1 goes on as before, every frame.
        let steady = a(&frames[15]);
        for (i, f) in frames.iter().enumerate().skip(5) {
            assert!(a(f) > steady / 4.0, "frame {i}: {} vs {steady}", a(f));
        }
        // After the timeout the talker is forgotten.
        let idle = t + TICK * 39 + IDLE_TIMEOUT;
        let mut frame = vec![0; FRAME_LEN];
        mixer.mix(idle, &mut frame);
        assert_eq!(mixer.talkers(), 0, "talker 1 stopped too");
        assert!(frame.iter().all(|&s| s == 0));
    }

    #[test]
    fn a_talker_that_left_is_removed_at_once() {
        let mut mixer = Mixer::new();
        let mut tones = [(7, tone(700.0, 0.3))];
        run(&mut mixer, &mut tones, 5, Instant::now(), |_, _| true);
        assert_eq!(mixer.talkers(), 1);
        let held = mixer.held() as u64;
        assert_eq!(mixer.left(7).dropped, held);
        assert_eq!((mixer.talkers(), mixer.held()), (0, 0));
    }

    #[test]
    fn garbage_and_too_many_talkers_are_dropped_not_mixed() {
        let mut mixer = Mixer::new();
        let t = Instant::now();
        for id in 0..MAX_TALKERS as u64 {
            assert_eq!(
                mixer
                    .push(packet(id, 0, Bytes::from_static(&[0xff; 3])), t)
                    .dropped,
                0
            );
        }
        let over = mixer.push(packet(99, 0, Bytes::from_static(&[0xff; 3])), t);
        assert_eq!(over.dropped, 1);
        assert_eq!(mixer.talkers(), MAX_TALKERS);
        let mut frame = vec![0; FRAME_LEN];
        for seq in 1..5 {
            for id in 0..MAX_TALKERS as u64 {
                mixer.push(packet(id, seq, Bytes::new()), t);
            }
            mixer.mix(t, &mut frame);
        }
    }
}
