//! Lets a viewer's feedback out of the `rtc` interceptor chain: keyframe requests (PLI,
//! FIR), NACKs and receiver reports; and tells which of them are about the video.
//!
//! The chain's terminus drops inbound RTCP unless an interceptor marks it
//! `DeliverToApplication`; without this interceptor a viewer's keyframe request would be
//! silently lost. NACKs are let out for the peer to resend from its history (see
//! `resend`), receiver reports are read inside the chain by the report interceptors and
//! let out as well, to be counted; anything else stays in.
//!
//! After the chain, the connection hands a message to the application under the track
//! its first packet's *media* SSRC names (`destination_ssrc`: a PLI's media SSRC, a
//! FIR's entries, a report's blocks), and drops it when no track of ours has that SSRC;
//! the sender SSRC plays no part. So each packet goes up as a message of its own, and
//! [`classify`] decides by media SSRC too: Chrome ≥ 147 sends the video's PLIs with its
//! *audio* sender's SSRC as sender SSRC once it has a sending audio m-line (the mic),
//! and they must still reach the video source.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Position in the chain: after the report interceptors (10 000, 11 000), so they see
/// every inbound RTCP packet before this one narrows it down.
pub const SLOT: usize = 11_500;

#[derive(Default)]
pub struct FeedbackForwarder {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

fn is_nack(packet: &dyn rtc::rtcp::Packet) -> bool {
    packet.as_any().is::<TransportLayerNack>()
}

/// A receiver report with something in it (an empty one names no stream).
fn is_receiver_report(packet: &dyn rtc::rtcp::Packet) -> bool {
    packet
        .as_any()
        .downcast_ref::<ReceiverReport>()
        .is_some_and(|rr| !rr.reports.is_empty())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyframeRequest {
    Pli,
    Fir,
}

/// What a piece of feedback means for a viewer's video, whose SSRC is `video_ssrc`.
#[derive(Debug, PartialEq)]
pub enum VideoFeedback<'a> {
    KeyframeRequest(KeyframeRequest),
    Nack(&'a TransportLayerNack),
    Report(&'a ReceptionReport),
}

/// Hand `emit` what `packet` says about the video stream `video_ssrc`, judged by media
/// SSRC only: a PLI whose media SSRC is the video's, a FIR with an entry (or media SSRC)
/// naming it, a NACK about it, the report blocks about it. Feedback about the audio (or
/// anything else) yields nothing, whatever its sender SSRC.
pub fn classify<'a>(
    packet: &'a dyn rtc::rtcp::Packet,
    video_ssrc: u32,
    mut emit: impl FnMut(VideoFeedback<'a>),
) {
    let any = packet.as_any();
    if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
        if pli.media_ssrc == video_ssrc {
            emit(VideoFeedback::KeyframeRequest(KeyframeRequest::Pli));
        }
    } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
        if fir.media_ssrc == video_ssrc || fir.fir.iter().any(|e| e.ssrc == video_ssrc) {
            emit(VideoFeedback::KeyframeRequest(KeyframeRequest::Fir));
        }
    } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
        if nack.media_ssrc == video_ssrc {
            emit(VideoFeedback::Nack(nack));
        }
    } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
        for report in rr.reports.iter().filter(|r| r.ssrc == video_ssrc) {
            emit(VideoFeedback::Report(report));
        }
    }
}

/// What the application gets to see, each packet as a message of its own: the
/// connection routes a message by the stream its first packet names, so feedback about
/// another stream (or one it does not know) must not take a keyframe request down with
/// it.
const FORWARDED: [fn(&dyn rtc::rtcp::Packet) -> bool; 3] =
    [is_keyframe_request, is_nack, is_receiver_report];

impl Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        let Packet::Rtcp(packets) = &msg.message.packet else {
            self.reads.push_back(msg);
            return Ok(());
        };
        for wanted in FORWARDED {
            for packet in packets.iter().filter(|p| wanted(p.as_ref())) {
                self.forward(&msg, packet.clone());
            }
        }
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
}

impl FeedbackForwarder {
    /// Queue `packet`, from `msg`, for the application.
    fn forward(&mut self, msg: &TaggedPacket, packet: Box<dyn rtc::rtcp::Packet>) {
        let mut message = AttributedPacket::new(Packet::Rtcp(vec![packet]));
        message.attributes = msg.message.attributes.clone();
        message.add(Attribute::DeliverToApplication);
        self.reads.push_back(TaggedPacket {
            now: msg.now,
            transport: msg.transport,
            message,
        });
    }
}

impl Interceptor for FeedbackForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::payload_feedbacks::full_intra_request::FirEntry;
    use rtc::shared::TransportContext;

    const VIDEO: u32 = 0x1111_1111;
    const AUDIO: u32 = 0x2222_2222;

    fn video_feedback(packet: &dyn rtc::rtcp::Packet) -> Vec<String> {
        let mut out = Vec::new();
        classify(packet, VIDEO, |f| out.push(format!("{f:?}")));
        out
    }

    #[test]
    fn keyframe_requests_are_the_videos_by_media_ssrc_whatever_the_sender() {
        // Chrome >= 147 with a sending audio m-line: the video's PLI carries the audio
        // sender's SSRC as its sender SSRC.
        let pli = |sender_ssrc, media_ssrc| PictureLossIndication {
            sender_ssrc,
            media_ssrc,
        };
        let wanted = vec!["KeyframeRequest(Pli)".to_string()];
        assert_eq!(video_feedback(&pli(AUDIO, VIDEO)), wanted);
        assert_eq!(video_feedback(&pli(1, VIDEO)), wanted);
        assert!(
            video_feedback(&pli(VIDEO, AUDIO)).is_empty(),
            "about the audio"
        );
        assert!(video_feedback(&pli(AUDIO, AUDIO)).is_empty());

        // A FIR names its stream in its entries (Chrome leaves the media SSRC 0).
        let fir = |media_ssrc, entries: &[u32]| FullIntraRequest {
            sender_ssrc: AUDIO,
            media_ssrc,
            fir: entries
                .iter()
                .map(|&ssrc| FirEntry {
                    ssrc,
                    sequence_number: 1,
                })
                .collect(),
        };
        let wanted = vec!["KeyframeRequest(Fir)".to_string()];
        assert_eq!(video_feedback(&fir(0, &[VIDEO])), wanted);
        assert_eq!(video_feedback(&fir(0, &[AUDIO, VIDEO])), wanted);
        assert_eq!(video_feedback(&fir(VIDEO, &[])), wanted);
        assert!(video_feedback(&fir(0, &[AUDIO])).is_empty());
    }

    #[test]
    fn nacks_and_reports_count_only_about_the_video() {
        let nack = |media_ssrc| TransportLayerNack {
            sender_ssrc: AUDIO,
            media_ssrc,
            nacks: vec![],
        };
        assert_eq!(video_feedback(&nack(VIDEO)).len(), 1);
        assert!(video_feedback(&nack(AUDIO)).is_empty());
        let rr = ReceiverReport {
            ssrc: AUDIO,
            reports: vec![
                ReceptionReport {
                    ssrc: AUDIO,
                    fraction_lost: 9,
                    ..Default::default()
                },
                ReceptionReport {
                    ssrc: VIDEO,
                    fraction_lost: 3,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mut reports = Vec::new();
        classify(&rr, VIDEO, |f| {
            if let VideoFeedback::Report(r) = f {
                reports.push(r.fraction_lost);
            }
        });
        assert_eq!(reports, vec![3]);
    }

    fn rtcp(packets: Vec<Box<dyn rtc::rtcp::Packet>>) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        }
    }

    fn report(about: u32) -> ReceiverReport {
        ReceiverReport {
            ssrc: 1,
            reports: vec![ReceptionReport {
                ssrc: about,
                fraction_lost: 3,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn each_kind_of_feedback_goes_up_alone_and_the_rest_stays() {
        let mut f = FeedbackForwarder::default();
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 7,
        };
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 7,
            nacks: vec![],
        };
        // An empty report first, as a browser sends before media arrives: it must not
        // decide where the keyframe request goes.
        f.handle_read(rtcp(vec![
            Box::new(ReceiverReport::default()),
            Box::new(report(99)),
            Box::new(pli.clone()),
            Box::new(nack.clone()),
        ]))
        .unwrap();
        let mut kinds = Vec::new();
        while let Some(msg) = f.poll_read() {
            assert!(msg.message.has(&Attribute::DeliverToApplication));
            let Packet::Rtcp(packets) = msg.message.packet else {
                panic!("not RTCP");
            };
            kinds.push(packets);
        }
        assert_eq!(kinds.len(), 3, "{kinds:?}");
        assert_eq!(kinds[0].len(), 1);
        assert_eq!(kinds[0][0].as_any().downcast_ref(), Some(&pli));
        assert_eq!(kinds[1][0].as_any().downcast_ref(), Some(&nack));
        assert_eq!(kinds[2].len(), 1, "the empty report is left out");
        assert_eq!(kinds[2][0].as_any().downcast_ref(), Some(&report(99)));

        // Nothing of interest: nothing goes up.
        f.handle_read(rtcp(vec![Box::new(ReceiverReport::default())]))
            .unwrap();
        assert!(f.poll_read().is_none());
    }
}
