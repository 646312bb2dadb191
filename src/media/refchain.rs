//! Noticing a lost reference picture from the stream itself.
//!
//! A source that can drop pictures before peregrine sees them (a memsink reader that was
//! not scheduled in time, a writer that found the sink busy, a camera driver out of
//! buffers) hands on P-frames whose reference never arrived. A browser decodes those
//! against whatever it holds and shows a smeared, ghosted picture until the next IDR.
//! H.264 numbers reference pictures: each picture's `frame_num` is the previous
//! reference picture's plus one (§7.4.3), unless the SPS allows gaps. A jump means a
//! reference picture is missing, and nothing until the next IDR can be decoded right.

use super::h264::{self, BitReader, NalType, SpsInfo};

#[derive(Default)]
pub struct ReferenceChain {
    sps: Option<SpsInfo>,
    /// frame_num of the last reference picture, while the chain is intact.
    prev_ref_frame_num: Option<u32>,
}

/// What one access unit does to the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Decodable from what came before (or an IDR, which needs nothing).
    Follows,
    /// A reference picture before it is missing: it and everything up to the next IDR
    /// would decode wrong.
    Broken,
    /// Nothing to judge by (no SPS or IDR yet, gaps allowed, unreadable header).
    Unknown,
}

impl ReferenceChain {
    /// Follow `annexb`, one access unit in decoding order.
    pub fn push(&mut self, annexb: &[u8]) -> Link {
        let mut slice = None;
        for nal in h264::nal_units(annexb) {
            match h264::nal_type(nal) {
                Some(NalType::Sps) => {
                    if let Ok(sps) = h264::parse_sps(nal) {
                        self.sps = Some(sps);
                    }
                }
                Some(NalType::Slice | NalType::Idr) => {
                    slice = Some(nal);
                    break;
                }
                _ => {}
            }
        }
        let (Some(nal), Some(sps)) = (slice, self.sps) else {
            return Link::Unknown;
        };
        let Some(frame_num) = frame_num(nal, &sps) else {
            self.prev_ref_frame_num = None;
            return Link::Unknown;
        };
        let is_reference = nal[0] & 0x60 != 0;
        if h264::nal_type(nal) == Some(NalType::Idr) {
            self.prev_ref_frame_num = Some(frame_num);
            return Link::Follows;
        }
        let Some(prev) = self.prev_ref_frame_num else {
            return Link::Unknown;
        };
        if sps.frame_num_gaps_allowed {
            self.prev_ref_frame_num = is_reference.then_some(frame_num).or(Some(prev));
            return Link::Unknown;
        }
        let max = 1u32 << sps.log2_max_frame_num;
        // The second field of a pair repeats its first field's frame_num.
        if frame_num != (prev + 1) % max && frame_num != prev {
            return Link::Broken;
        }
        if is_reference {
            self.prev_ref_frame_num = Some(frame_num);
        }
        Link::Follows
    }

    /// Start over, e.g. when the stream restarts: the next IDR begins a new chain.
    pub fn reset(&mut self) {
        self.prev_ref_frame_num = None;
    }
}

/// `frame_num` from a slice NAL unit (header byte included).
fn frame_num(nal: &[u8], sps: &SpsInfo) -> Option<u32> {
    // first_mb_in_slice, slice_type, pic_parameter_set_id and frame_num fit in 16 bytes.
    let head = h264::unescape_rbsp(&nal[1..nal.len().min(17)]);
    let mut r = BitReader::new(&head);
    r.ue("first_mb_in_slice").ok()?;
    r.ue("slice_type").ok()?;
    r.ue("pic_parameter_set_id").ok()?;
    if sps.separate_colour_plane {
        r.bits(2, "colour_plane_id").ok()?;
    }
    r.bits(u32::from(sps.log2_max_frame_num), "frame_num").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Access units of one of the project's fixtures (baseline, 30 pictures, one GOP).
    fn fixture_access_units() -> Vec<Vec<u8>> {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/aud_2slices_160x120.h264"
        ))
        .unwrap();
        // Each access unit starts with an access unit delimiter.
        let mut units: Vec<Vec<u8>> = Vec::new();
        for nal in h264::nal_units(&data) {
            if h264::nal_type(nal) == Some(NalType::Aud) || units.is_empty() {
                units.push(Vec::new());
            }
            let unit = units.last_mut().unwrap();
            unit.extend_from_slice(&[0, 0, 0, 1]);
            unit.extend_from_slice(nal);
        }
        units
    }

    #[test]
    fn an_intact_stream_follows_throughout() {
        let mut chain = ReferenceChain::default();
        let links: Vec<Link> = fixture_access_units()
            .iter()
            .map(|au| chain.push(au))
            .collect();
        assert!(links.len() >= 30, "{} access units", links.len());
        assert_eq!(links[0], Link::Follows, "starts at an IDR");
        assert!(links.iter().all(|l| *l == Link::Follows), "{links:?}");
    }

    #[test]
    fn a_lost_reference_picture_breaks_the_chain_until_the_next_idr() {
        let units = fixture_access_units();
        let mut chain = ReferenceChain::default();
        for au in &units[..5] {
            assert_eq!(chain.push(au), Link::Follows);
        }
        // units[5] never arrives.
        for au in &units[6..10] {
            assert_eq!(chain.push(au), Link::Broken);
        }
        // The stream's IDR (the fixture loops back to its first picture) repairs it.
        assert_eq!(chain.push(&units[0]), Link::Follows);
        assert_eq!(chain.push(&units[1]), Link::Follows);
    }

    #[test]
    fn nothing_is_judged_before_an_sps_and_an_idr() {
        let units = fixture_access_units();
        let mut chain = ReferenceChain::default();
        assert_eq!(chain.push(&units[3]), Link::Unknown, "no SPS yet");
        assert_eq!(chain.push(b"\x00\x00\x01\x41"), Link::Unknown, "garbage");
        chain.push(&units[0]);
        chain.reset();
        assert_eq!(
            chain.push(&units[1]),
            Link::Unknown,
            "reset: wait for an IDR"
        );
    }
}
