//! Lets a viewer's feedback out of the `rtc` interceptor chain: keyframe requests (PLI,
//! FIR), NACKs and receiver reports.
//!
//! The chain's terminus drops inbound RTCP unless an interceptor marks it
//! `DeliverToApplication`; without this interceptor a viewer's keyframe request would be
//! silently lost. NACKs and receiver reports are used inside the chain (the NACK
//! responder resends, the report interceptors read them) and are let out as well, to be
//! counted; anything else stays in.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
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

/// What the application gets to see, each kind as a message of its own: the connection
/// routes a message by the stream its first packet names, so a report about another
/// stream must not take a keyframe request down with it.
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
            let kind: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| wanted(p.as_ref()))
                .cloned()
                .collect();
            if kind.is_empty() {
                continue;
            }
            let mut message = AttributedPacket::new(Packet::Rtcp(kind));
            message.attributes = msg.message.attributes.clone();
            message.add(Attribute::DeliverToApplication);
            self.reads.push_back(TaggedPacket {
                now: msg.now,
                transport: msg.transport,
                message,
            });
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

impl Interceptor for FeedbackForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::reception_report::ReceptionReport;
    use rtc::shared::TransportContext;

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
