//! Our own RTCP sender reports, one per stream sent (video, sound) about once a second.
//!
//! A browser lines sound up with pictures by the reports: each maps the stream's RTP
//! clock to the wall clock. Our RTP timestamps are the capture time on the monotonic
//! clock (see [`packetizer::rtp_timestamp_90k`], [`audio::rtp_timestamp_48k`]), so a
//! report made from the clock at any moment maps both streams exactly, whenever a
//! packet left. (The stack's report interceptor paired each stream's latest timestamp
//! with the time that packet was *sent*, so capture-to-send delay came out as A/V skew.)
//! The counts are what we sent, whichever way it went (see [`super::direct_srtp`]).

use std::time::{Duration, Instant};

use rtc::rtcp::sender_report::SenderReport;

use super::packetizer;
use crate::media::{audio, clock};

/// Between reports, as the stack's interceptor had it.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// From a stream's first packet to the first report: the sooner a browser has one, the
/// sooner the sound is in sync.
pub const FIRST_AFTER: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    Video90k,
    Audio48k,
}

struct Stream {
    ssrc: u32,
    clock: Clock,
    packets: u32,
    octets: u32,
}

#[derive(Default)]
pub struct SenderReports {
    streams: Vec<Stream>,
    next: Option<Instant>,
}

impl SenderReports {
    /// A packet with `payload_len` bytes of payload went out on `ssrc`.
    pub fn sent(&mut self, now: Instant, ssrc: u32, clock: Clock, payload_len: usize) {
        let stream = match self.streams.iter_mut().position(|s| s.ssrc == ssrc) {
            Some(i) => &mut self.streams[i],
            None => {
                self.streams.push(Stream {
                    ssrc,
                    clock,
                    packets: 0,
                    octets: 0,
                });
                self.next = Some(
                    self.next
                        .map_or(now + FIRST_AFTER, |n| n.min(now + FIRST_AFTER)),
                );
                self.streams.last_mut().expect("just pushed")
            }
        };
        stream.packets = stream.packets.wrapping_add(1);
        stream.octets = stream.octets.wrapping_add(payload_len as u32);
    }

    /// When the next reports are due.
    pub fn due(&self) -> Option<Instant> {
        self.next
    }

    /// Make the next reports as soon as asked (a new path: the reports also show the
    /// direct sender where to send).
    pub fn hurry(&mut self, now: Instant) {
        if self.next.is_some() {
            self.next = Some(now);
        }
    }

    /// The reports, when due at `now`, from the clock read now.
    pub fn take_due(&mut self, now: Instant) -> Option<Vec<SenderReport>> {
        if self.next.is_none_or(|next| now < next) {
            return None;
        }
        self.next = Some(now + INTERVAL);
        let mono_us = clock::monotonic_us();
        Some(self.at(mono_us, clock::monotonic_to_realtime_us(mono_us)))
    }

    /// The reports for the moment `mono_us` on the monotonic clock, `real_us` on the
    /// wall clock.
    fn at(&self, mono_us: u64, real_us: u64) -> Vec<SenderReport> {
        let ntp_time = clock::realtime_us_to_ntp(real_us);
        self.streams
            .iter()
            .map(|s| SenderReport {
                ssrc: s.ssrc,
                ntp_time,
                rtp_time: match s.clock {
                    Clock::Video90k => packetizer::rtp_timestamp_90k(mono_us),
                    Clock::Audio48k => audio::rtp_timestamp_48k(mono_us),
                },
                packet_count: s.packets,
                octet_count: s.octets,
                ..Default::default()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_reported_before_a_stream_sends() {
        let mut reports = SenderReports::default();
        assert_eq!(reports.due(), None);
        assert!(reports.take_due(Instant::now()).is_none());
    }

    #[test]
    fn the_first_report_follows_the_first_packet_then_one_a_second() {
        let t0 = Instant::now();
        let mut reports = SenderReports::default();
        reports.sent(t0, 7, Clock::Video90k, 1000);
        reports.sent(t0, 7, Clock::Video90k, 200);
        assert_eq!(reports.due(), Some(t0 + FIRST_AFTER));
        assert!(reports.take_due(t0).is_none());
        let due = reports.take_due(t0 + FIRST_AFTER).expect("due");
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].ssrc, due[0].packet_count, due[0].octet_count),
            (7, 2, 1200)
        );
        assert_eq!(reports.due(), Some(t0 + FIRST_AFTER + INTERVAL));
    }

    #[test]
    fn both_streams_map_the_same_instant_on_their_own_clocks() {
        let t0 = Instant::now();
        let mut reports = SenderReports::default();
        reports.sent(t0, 1, Clock::Video90k, 10);
        reports.sent(t0, 2, Clock::Audio48k, 10);
        let mono_us = 123_456_789_000;
        let out = reports.at(mono_us, 1_700_000_000_000_000);
        assert_eq!(out[0].ntp_time, out[1].ntp_time);
        assert_eq!(out[0].rtp_time, packetizer::rtp_timestamp_90k(mono_us));
        assert_eq!(out[1].rtp_time, audio::rtp_timestamp_48k(mono_us));
        // The same moment a frame captured then would carry.
        let later = reports.at(mono_us + 1_000_000, 1_700_000_001_000_000);
        assert_eq!(later[0].rtp_time.wrapping_sub(out[0].rtp_time), 90_000);
        assert_eq!(later[1].rtp_time.wrapping_sub(out[1].rtp_time), 48_000);
        assert_eq!(later[0].ntp_time - out[0].ntp_time, 1 << 32);
    }
}
