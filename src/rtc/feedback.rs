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

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
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

/// Whether the application gets to see an RTCP packet.
fn is_forwarded(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    is_keyframe_request(packet) || any.is::<TransportLayerNack>() || any.is::<ReceiverReport>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let forwarded: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| is_forwarded(p.as_ref()))
                .cloned()
                .collect();
            if forwarded.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(forwarded);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
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
