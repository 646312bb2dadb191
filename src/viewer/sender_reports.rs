//! Lets a receiver see the sender's RTCP sender reports, to count them: the `rtc`
//! chain's end drops inbound RTCP not marked for the application, and the crate's own
//! statistics never count the reports it receives.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;

/// After the report interceptors, which read the sender reports first.
pub const SLOT: usize = 11_500;

/// Lets the sender's RTCP sender reports out of the chain (whose end drops RTCP not
/// marked for the application), one per message; the rest goes on as it was.
#[derive(Default)]
pub struct SenderReportTap {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SenderReportTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for sr in packets.iter().filter(|p| p.as_any().is::<SenderReport>()) {
                let mut message = AttributedPacket::new(Packet::Rtcp(vec![sr.clone()]));
                message.add(Attribute::DeliverToApplication);
                self.reads.push_back(TaggedPacket {
                    now: msg.now,
                    transport: msg.transport,
                    message,
                });
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
}

impl Interceptor for SenderReportTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
