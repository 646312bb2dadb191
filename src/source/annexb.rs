//! Streaming H.264 Annex-B byte stream → pictures (access units).
//!
//! Bytes arrive in arbitrary chunks (TCP segments, pipe reads, file blocks). They are cut
//! into NAL units at start codes, and the NAL units are grouped into access units by the
//! rules of H.264 7.4.1.2.3: an access unit delimiter, SPS, PPS, SEI (or types 14–18)
//! after a picture's slices, or a slice with `first_mb_in_slice == 0`, begins the next
//! picture.
//!
//! What the network may hand us is not trusted:
//! * bytes between NAL units that are not H.264 (forbidden bit set, reserved types) are
//!   skipped and counted;
//! * a stream joined mid-GOP yields nothing until its first IDR with SPS and PPS;
//! * an IDR that comes without parameter sets gets the last ones seen put in front,
//!   so every key picture stands alone;
//! * a stream that is something else (MPEG-TS, MP4, Matroska, JPEG, random bytes) is
//!   rejected with an error that says so, after a bounded amount of input;
//! * memory is bounded: an oversized NAL unit or picture is dropped.

use crate::media::h264::{self, NalType};
use crate::media::Picture;

/// Largest NAL unit kept; anything bigger is not a picture a viewer could use.
const MAX_NAL_BYTES: usize = 8 << 20;
/// Largest access unit kept.
const MAX_AU_BYTES: usize = 16 << 20;
/// A real H.264 stream has a start code well within this much input.
const START_CODE_WITHIN: u64 = 64 << 10;
/// A usable stream carries a readable SPS within this much input.
const SPS_WITHIN: u64 = 4 << 20;
/// Bytes of the stream's head kept to recognise container formats.
const SNIFF_BYTES: usize = 377;

/// Why a byte stream cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnexBError {
    #[error(
        "input is {0}, not a raw H.264 byte stream; extract the video without re-encoding, \
         e.g. `ffmpeg -i INPUT -c:v copy -bsf:v h264_mp4toannexb -f h264 -`"
    )]
    Container(&'static str),
    #[error(
        "input is not H.264: no Annex-B start code in its first {} KiB",
        START_CODE_WITHIN >> 10
    )]
    NoStartCode,
    #[error(
        "input is not a usable H.264 stream: no readable sequence parameter set in its first \
         {} MiB (encoders must repeat SPS/PPS before keyframes, e.g. libcamera-vid --inline)",
        SPS_WITHIN >> 20
    )]
    NoSps,
}

/// Counters of what was thrown away, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitStats {
    pub bytes_in: u64,
    /// Bytes outside any usable NAL unit (before the first start code, invalid headers,
    /// oversized units).
    pub garbage_bytes: u64,
    /// Access units dropped while waiting for the first IDR.
    pub skipped_before_idr: u64,
    /// Access units dropped for other reasons (too large, slices without a picture start).
    pub dropped: u64,
    pub pictures: u64,
}

/// Cuts a byte stream into NAL units. The last NAL unit of the input is only known to
/// be complete when the next start code arrives (or on [`NalReader::flush`]).
#[derive(Default)]
struct NalReader {
    buf: Vec<u8>,
    /// Where the current NAL unit's payload starts in `buf`, once a start code was seen.
    nal_start: Option<usize>,
    /// Where to resume the start code search.
    scan: usize,
}

impl NalReader {
    /// Append input; complete NAL units (without start codes) go to `out`. Returns the
    /// number of bytes skipped as garbage.
    fn push(&mut self, data: &[u8], out: &mut Vec<Vec<u8>>) -> u64 {
        let mut garbage = 0u64;
        self.buf.extend_from_slice(data);
        while let Some((sc, after)) = h264::find_start_code(&self.buf, self.scan) {
            match self.nal_start {
                Some(start) => {
                    // A 4-byte start code's leading zero (and any trailing_zero_8bits)
                    // belongs to no NAL unit.
                    let mut end = sc;
                    while end > start && self.buf[end - 1] == 0 {
                        end -= 1;
                    }
                    if end > start {
                        out.push(self.buf[start..end].to_vec());
                    }
                }
                None => garbage += sc as u64,
            }
            self.nal_start = Some(after);
            self.scan = after;
        }
        // Drop what is consumed, keep the open NAL unit and a possible partial start code.
        let keep_from = self.nal_start.unwrap_or(self.buf.len().saturating_sub(2));
        if keep_from > 0 {
            if self.nal_start.is_none() {
                garbage += keep_from as u64;
            }
            self.buf.drain(..keep_from);
            self.nal_start = self.nal_start.map(|_| 0);
        }
        self.scan = self
            .buf
            .len()
            .saturating_sub(2)
            .max(self.nal_start.unwrap_or(0));
        if self.nal_start.is_some() && self.buf.len() > MAX_NAL_BYTES {
            garbage += self.buf.len() as u64;
            self.buf.clear();
            self.nal_start = None;
            self.scan = 0;
        }
        garbage
    }

    /// Treat the end of the input so far as the end of the open NAL unit.
    fn flush(&mut self, out: &mut Vec<Vec<u8>>) -> u64 {
        let garbage = match self.nal_start {
            Some(start) => {
                let mut end = self.buf.len();
                while end > start && self.buf[end - 1] == 0 {
                    end -= 1;
                }
                if end > start {
                    out.push(self.buf[start..end].to_vec());
                }
                0
            }
            None => self.buf.len() as u64,
        };
        self.buf.clear();
        self.nal_start = None;
        self.scan = 0;
        garbage
    }
}

/// How a NAL unit takes part in access unit grouping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Not H.264 (forbidden bit, unspecified type): skipped.
    Invalid,
    /// AUD, SPS, PPS, SEI, 14–18: begins a new access unit when it follows slices.
    Prefix,
    /// A coded slice that may start a picture (types 1, 2, 5).
    Slice { first_mb_zero: bool, idr: bool },
    /// Belongs to the current access unit (data partitions B/C, end of sequence, filler...).
    Trailing,
}

fn role(nal: &[u8]) -> Role {
    let Some(&header) = nal.first() else {
        return Role::Invalid;
    };
    if header & 0x80 != 0 {
        return Role::Invalid;
    }
    match header & 0x1f {
        1 | 2 | 5 => {
            // first_mb_in_slice is the first ue(v) after the header; ue == 0 is a lone 1 bit.
            let Some(&first) = nal.get(1) else {
                return Role::Invalid;
            };
            Role::Slice {
                first_mb_zero: first & 0x80 != 0,
                idr: header & 0x1f == 5,
            }
        }
        6..=9 | 14..=18 => Role::Prefix,
        3 | 4 | 10..=13 | 19..=21 => Role::Trailing,
        _ => Role::Invalid,
    }
}

/// Groups NAL units into pictures, tracking parameter sets.
#[derive(Default)]
struct AuAssembler {
    nals: Vec<Vec<u8>>,
    bytes: usize,
    has_slice: bool,
    /// The current access unit's first slice started a picture.
    has_picture_start: bool,
    sps: Option<(Vec<u8>, h264::SpsInfo)>,
    pps: Option<Vec<u8>>,
    seen_idr: bool,
    oversized: bool,
}

impl AuAssembler {
    /// Add a NAL unit; a picture that it completes goes to `out`.
    fn push(&mut self, nal: Vec<u8>, stats: &mut SplitStats, out: &mut Vec<Picture>) {
        let role = role(&nal);
        let starts_new = match role {
            Role::Invalid => {
                stats.garbage_bytes += nal.len() as u64;
                return;
            }
            Role::Prefix => self.has_slice,
            Role::Slice { first_mb_zero, .. } => self.has_slice && first_mb_zero,
            Role::Trailing => false,
        };
        if starts_new {
            self.finish(stats, out);
        }
        if let Role::Slice { first_mb_zero, .. } = role {
            if !self.has_slice {
                self.has_picture_start = first_mb_zero;
            }
            self.has_slice = true;
        }
        match h264::nal_type(&nal) {
            Some(NalType::Sps) => match h264::parse_sps(&nal) {
                Ok(info) => self.sps = Some((nal.clone(), info)),
                Err(e) => {
                    tracing::debug!("skipping an unreadable SPS: {e}");
                    stats.garbage_bytes += nal.len() as u64;
                    return;
                }
            },
            Some(NalType::Pps) => self.pps = Some(nal.clone()),
            _ => {}
        }
        self.bytes += nal.len() + 4;
        if self.bytes > MAX_AU_BYTES {
            self.oversized = true;
            self.nals.clear();
        } else if !self.oversized {
            self.nals.push(nal);
        }
    }

    /// Close the current access unit, emitting it when it is a usable picture.
    fn finish(&mut self, stats: &mut SplitStats, out: &mut Vec<Picture>) {
        let nals = std::mem::take(&mut self.nals);
        let (has_slice, picture_start, oversized) =
            (self.has_slice, self.has_picture_start, self.oversized);
        self.bytes = 0;
        self.has_slice = false;
        self.has_picture_start = false;
        self.oversized = false;
        if !has_slice {
            // Parameter sets or SEI with no picture after them (end of input): their
            // effect on the SPS/PPS cache is kept, nothing is emitted.
            return;
        }
        if oversized || !picture_start {
            stats.dropped += 1;
            return;
        }
        let key = nals.iter().any(|n| h264::nal_type(n) == Some(NalType::Idr));
        let (Some((sps, info)), Some(pps)) = (&self.sps, &self.pps) else {
            stats.skipped_before_idr += 1;
            return;
        };
        if key {
            self.seen_idr = true;
        }
        if !self.seen_idr {
            stats.skipped_before_idr += 1;
            return;
        }
        let has = |t| nals.iter().any(|n| h264::nal_type(n) == Some(t));
        let needs_params = key && !(has(NalType::Sps) && has(NalType::Pps));
        let params = needs_params.then_some((sps.as_slice(), pps.as_slice()));
        let data = h264::annex_b_access_unit(&nals, params);
        stats.pictures += 1;
        // Stamped with its capture time by the source, which knows it.
        out.push(Picture::video(data, key, (info.width, info.height), 0));
    }
}

/// Recognises a few container formats by their first bytes.
fn sniff_container(head: &[u8]) -> Option<&'static str> {
    if head.len() > 376 && head[0] == 0x47 && head[188] == 0x47 && head[376] == 0x47 {
        return Some("MPEG-TS");
    }
    if head.len() >= 8 && &head[4..8] == b"ftyp" {
        return Some("MP4/QuickTime");
    }
    if head.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]) {
        return Some("Matroska/WebM");
    }
    if head.starts_with(&[0xff, 0xd8, 0xff]) {
        return Some("JPEG/MJPEG");
    }
    if head.starts_with(b"RIFF") {
        return Some("RIFF/AVI");
    }
    if head.starts_with(b"FLV") {
        return Some("FLV");
    }
    None
}

/// The whole splitter: bytes in, pictures out. One per connection or file pass.
#[derive(Default)]
pub struct AnnexBSplitter {
    nals: NalReader,
    au: AuAssembler,
    stats: SplitStats,
    head: Vec<u8>,
    sniffed: bool,
    seen_start_code: bool,
    scratch: Vec<Vec<u8>>,
}

impl AnnexBSplitter {
    pub fn new() -> AnnexBSplitter {
        AnnexBSplitter::default()
    }

    /// Feed input; completed pictures are appended to `out`. An error means the input
    /// is not a usable H.264 byte stream and should be dropped.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Picture>) -> Result<(), AnnexBError> {
        self.stats.bytes_in += data.len() as u64;
        if !self.sniffed {
            let take = (SNIFF_BYTES - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            if let Some(kind) = sniff_container(&self.head) {
                return Err(AnnexBError::Container(kind));
            }
            self.sniffed = self.head.len() >= SNIFF_BYTES;
        }
        let garbage = self.nals.push(data, &mut self.scratch);
        self.stats.garbage_bytes += garbage;
        self.seen_start_code |= self.nals.nal_start.is_some() || !self.scratch.is_empty();
        self.drain_nals(out);
        self.check_usable()
    }

    /// Treat the input so far as complete: the open NAL unit and picture are finished.
    /// Call at the end of the input, or when a live input has gone quiet (an encoder
    /// writes a picture at once, so a pause means the picture is whole).
    pub fn flush(&mut self, out: &mut Vec<Picture>) {
        self.stats.garbage_bytes += self.nals.flush(&mut self.scratch);
        self.drain_nals(out);
        self.au.finish(&mut self.stats, out);
    }

    fn drain_nals(&mut self, out: &mut Vec<Picture>) {
        for nal in self.scratch.drain(..) {
            self.au.push(nal, &mut self.stats, out);
        }
    }

    fn check_usable(&self) -> Result<(), AnnexBError> {
        if self.au.sps.is_some() {
            return Ok(());
        }
        if !self.seen_start_code && self.stats.bytes_in >= START_CODE_WITHIN {
            return Err(AnnexBError::NoStartCode);
        }
        if self.stats.bytes_in >= SPS_WITHIN {
            return Err(AnnexBError::NoSps);
        }
        Ok(())
    }

    /// Emit nothing until the next IDR (after viewers missed pictures this one refers to).
    pub fn wait_for_idr(&mut self) {
        self.au.seen_idr = false;
    }

    /// The SDP profile-level-id of the SPS in force.
    pub fn profile_level_id(&self) -> Option<String> {
        self.au
            .sps
            .as_ref()
            .map(|(_, info)| info.profile_level_id())
    }

    pub fn stats(&self) -> SplitStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewer::decoder::H264Decoder;

    const AUD_2SLICES: &[u8] = include_bytes!("../../tests/fixtures/aud_2slices_160x120.h264");
    const MAIN_3SLICES: &[u8] = include_bytes!("../../tests/fixtures/main_3slices_176x144.h264");
    const MPEG_TS: &[u8] = include_bytes!("../../tests/fixtures/testsrc_160x120.ts");

    /// Split `data` fed in chunks of `chunk` bytes, flushing at the end.
    fn split(data: &[u8], chunk: usize) -> (Vec<Picture>, SplitStats) {
        let mut s = AnnexBSplitter::new();
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            s.push(c, &mut out).expect("valid stream");
        }
        s.flush(&mut out);
        (out, s.stats())
    }

    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    #[test]
    fn splits_x264_streams_into_their_pictures_whatever_the_chunking() {
        let mut s = AnnexBSplitter::new();
        s.push(AUD_2SLICES, &mut Vec::new()).unwrap();
        assert_eq!(s.profile_level_id().unwrap()[..2], *"42");
        for chunk in [1, 7, 188, 1500, 65536] {
            let (pics, stats) = split(AUD_2SLICES, chunk);
            assert_eq!(pics.len(), 30, "chunk {chunk}: {stats:?}");
            assert_eq!(pics.iter().filter(|p| p.key).count(), 3, "GOP of 10");
            assert!(pics.iter().all(|p| (p.width, p.height) == (160, 120)));
            let (pics, _) = split(MAIN_3SLICES, chunk);
            assert_eq!(pics.len(), 30, "chunk {chunk}");
            assert!(pics.iter().all(|p| (p.width, p.height) == (176, 144)));
            assert!(pics.iter().all(|p| p.data.starts_with(&[0, 0, 0, 1])));
        }
    }

    #[test]
    fn every_picture_decodes_on_its_own_turn() {
        let (pics, _) = split(AUD_2SLICES, 4096);
        let mut decoder = H264Decoder::new().unwrap();
        let mut decoded = 0;
        for p in &pics {
            let slices = h264::nal_units(&p.data)
                .filter(|n| matches!(role(n), Role::Slice { .. }))
                .count();
            assert_eq!(slices, 2, "both slices of a picture stay together");
            if let Some(frame) = decoder.decode(&p.data).unwrap() {
                assert_eq!((frame.width, frame.height), (160, 120));
                decoded += 1;
            }
        }
        assert_eq!(decoded, 30);
    }

    #[test]
    fn joining_mid_gop_waits_for_the_next_idr() {
        // Cut the stream inside its first GOP, after the first SPS/PPS.
        let (pics, _) = split(AUD_2SLICES, 4096);
        let whole: Vec<u8> = pics.iter().flat_map(|p| p.data.clone()).collect();
        let cut = pics[..4].iter().map(|p| p.data.len()).sum::<usize>() + 5;
        let (late, stats) = split(&whole[cut..], 1000);
        assert_eq!(late.len(), 20, "{stats:?}");
        assert!(late[0].key);
        assert_eq!(stats.skipped_before_idr, 6, "pictures 4..10");
        assert!(stats.garbage_bytes > 0, "the cut picture's tail is garbage");
    }

    #[test]
    fn idr_without_parameter_sets_gets_the_last_ones() {
        // x264 writes SPS/PPS once; later IDRs in a raw stream lack them.
        let (pics, _) = split(MAIN_3SLICES, 4096);
        for p in pics.iter().filter(|p| p.key) {
            let types: Vec<_> = h264::nal_units(&p.data)
                .filter_map(h264::nal_type)
                .collect();
            let sps = types.iter().position(|t| *t == NalType::Sps).expect("SPS");
            let pps = types.iter().position(|t| *t == NalType::Pps).expect("PPS");
            let idr = types.iter().position(|t| *t == NalType::Idr).expect("IDR");
            assert!(sps < pps && pps < idr, "{types:?}");
        }
    }

    #[test]
    fn garbage_between_units_is_skipped() {
        let (clean, _) = split(AUD_2SLICES, 4096);
        let mut rng = xorshift(7);
        let mut dirty = b"hello, this is not video".to_vec();
        for p in &clean {
            dirty.extend_from_slice(&p.data);
            // Noise that starts with a start code and an invalid header, then random
            // bytes without start codes.
            dirty.extend_from_slice(&[0, 0, 1, 0xff]);
            dirty.extend((0..50).map(|_| (rng() as u8) | 0x80));
        }
        let (pics, stats) = split(&dirty, 333);
        assert_eq!(pics.len(), clean.len(), "{stats:?}");
        assert!(stats.garbage_bytes >= 30 * 50, "{stats:?}");
        let mut decoder = H264Decoder::new().unwrap();
        for p in &pics {
            assert!(decoder.decode(&p.data).unwrap().is_some());
        }
    }

    #[test]
    fn truncated_nal_units_never_panic() {
        let (pics, _) = split(AUD_2SLICES, 4096);
        let mut rng = xorshift(11);
        let mut data = Vec::new();
        for p in &pics {
            // Each picture cut short at a random place.
            let keep = 1 + rng() as usize % p.data.len();
            data.extend_from_slice(&p.data[..keep]);
        }
        let mut s = AnnexBSplitter::new();
        let mut out = Vec::new();
        for c in data.chunks(100) {
            s.push(c, &mut out).unwrap();
        }
        s.flush(&mut out);
        let mut decoder = H264Decoder::new().unwrap();
        for p in &out {
            let _ = decoder.decode(&p.data);
        }
        assert!(out.len() <= pics.len());
    }

    #[test]
    fn mpeg_ts_is_rejected_with_a_clear_message() {
        let mut s = AnnexBSplitter::new();
        let mut out = Vec::new();
        let err = MPEG_TS
            .chunks(100)
            .find_map(|c| s.push(c, &mut out).err())
            .expect("MPEG-TS is refused");
        assert_eq!(err, AnnexBError::Container("MPEG-TS"));
        assert!(err.to_string().contains("MPEG-TS"), "{err}");
        assert!(out.is_empty());
    }

    #[test]
    fn random_bytes_are_rejected_never_panic() {
        let mut rng = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut s = AnnexBSplitter::new();
        let mut out = Vec::new();
        let mut fed = 0u64;
        let err = loop {
            let chunk: Vec<u8> = (0..4096).map(|_| rng() as u8).collect();
            fed += chunk.len() as u64;
            if let Err(e) = s.push(&chunk, &mut out) {
                break e;
            }
            assert!(fed <= SPS_WITHIN, "random input accepted");
        };
        assert!(
            matches!(err, AnnexBError::NoStartCode | AnnexBError::NoSps),
            "{err}"
        );
        assert!(out.is_empty());

        // Random bytes full of start codes and plausible headers: bounded, no panic.
        let mut s = AnnexBSplitter::new();
        let mut fed = 0u64;
        let err = loop {
            let mut chunk = Vec::new();
            for _ in 0..64 {
                chunk.extend_from_slice(&[0, 0, 1]);
                chunk.extend((0..(rng() % 64)).map(|_| rng() as u8));
            }
            fed += chunk.len() as u64;
            if let Err(e) = s.push(&chunk, &mut out) {
                break Some(e);
            }
            if fed > 2 * SPS_WITHIN {
                break None;
            }
        };
        // Random SPS units sometimes parse; then the stream is accepted but every
        // picture is still bounded and emitted only after an IDR.
        if let Some(err) = err {
            assert_eq!(err, AnnexBError::NoSps);
        }
        for p in &out {
            assert!(p.data.len() <= MAX_AU_BYTES + 1024);
        }
    }

    #[test]
    fn other_containers_are_named() {
        let mut mp4 = vec![0, 0, 0, 0x20];
        mp4.extend_from_slice(b"ftypisom");
        let cases: [(&[u8], &str); 3] = [
            (&mp4, "MP4/QuickTime"),
            (&[0x1a, 0x45, 0xdf, 0xa3, 1], "Matroska/WebM"),
            (&[0xff, 0xd8, 0xff, 0xe0], "JPEG/MJPEG"),
        ];
        for (data, name) in cases {
            let err = AnnexBSplitter::new()
                .push(data, &mut Vec::new())
                .unwrap_err();
            assert_eq!(err, AnnexBError::Container(name));
        }
    }

    #[test]
    fn an_oversized_nal_unit_is_dropped() {
        let mut s = AnnexBSplitter::new();
        let mut out = Vec::new();
        s.push(AUD_2SLICES, &mut out).unwrap();
        let before = out.len();
        s.push(&[0, 0, 1, 0x41], &mut out).unwrap();
        let big = vec![0x55u8; 1 << 20];
        for _ in 0..10 {
            s.push(&big, &mut out).unwrap();
        }
        assert!(s.nals.buf.len() <= MAX_NAL_BYTES);
        s.push(AUD_2SLICES, &mut out).unwrap();
        s.flush(&mut out);
        assert!(out.len() >= before + 29);
    }
}
