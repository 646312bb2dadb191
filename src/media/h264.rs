//! H.264 Annex-B helpers: splitting a byte stream into NAL units, NAL types, and the
//! few fields of a sequence parameter set that signalling needs (size, profile, level).

/// NAL unit types peregrine cares about (ITU-T H.264 table 7-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NalType {
    Slice,
    Idr,
    Sei,
    Sps,
    Pps,
    Aud,
    Other(u8),
}

impl NalType {
    pub fn from_header(byte: u8) -> NalType {
        match byte & 0x1f {
            1 => NalType::Slice,
            5 => NalType::Idr,
            6 => NalType::Sei,
            7 => NalType::Sps,
            8 => NalType::Pps,
            9 => NalType::Aud,
            other => NalType::Other(other),
        }
    }
}

/// An access unit in Annex-B form from its NAL units. With `params` (an IDR whose SPS and
/// PPS came earlier) those go in band, after the access unit delimiter as H.264
/// 7.4.1.2.3 orders it, in place of any the unit carried.
pub fn annex_b_access_unit(nals: &[Vec<u8>], params: Option<(&[u8], &[u8])>) -> Vec<u8> {
    let extra = params.map_or(0, |(sps, pps)| sps.len() + pps.len() + 8);
    let mut data = Vec::with_capacity(nals.iter().map(|n| n.len() + 4).sum::<usize>() + extra);
    let mut put = |nal: &[u8]| {
        data.extend_from_slice(&[0, 0, 0, 1]);
        data.extend_from_slice(nal);
    };
    if let Some((sps, pps)) = params {
        if let Some(aud) = nals.iter().find(|n| nal_type(n) == Some(NalType::Aud)) {
            put(aud);
        }
        put(sps);
        put(pps);
    }
    for nal in nals {
        let in_band = matches!(
            nal_type(nal),
            Some(NalType::Aud | NalType::Sps | NalType::Pps)
        );
        if params.is_some() && in_band {
            continue;
        }
        put(nal);
    }
    data
}

/// The type of a NAL unit given without its start code.
pub fn nal_type(nal: &[u8]) -> Option<NalType> {
    nal.first().map(|&b| NalType::from_header(b))
}

/// NAL units of an Annex-B buffer, without start codes. Bytes before the first start
/// code are skipped; a 4-byte start code's leading zero is not part of the previous NAL.
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = find_start_code(data, 0).map(|(_, after)| after);
    std::iter::from_fn(move || {
        let start = pos?;
        match find_start_code(data, start) {
            Some((sc, after)) => {
                pos = Some(after);
                let mut end = sc;
                while end > start && data[end - 1] == 0 {
                    end -= 1;
                }
                Some(&data[start..end])
            }
            None => {
                pos = None;
                Some(&data[start..])
            }
        }
    })
    .filter(|nal| !nal.is_empty())
}

/// Position of the next `00 00 01` at or after `from`, and the index just past it.
pub fn find_start_code(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 3 <= data.len() {
        if data[i + 2] > 1 {
            i += 3;
        } else if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            return Some((i, i + 3));
        } else {
            i += 1;
        }
    }
    None
}

/// True when the access unit carries an IDR slice (decoding can start at it).
pub fn access_unit_is_key(annexb: &[u8]) -> bool {
    nal_units(annexb).any(|nal| nal_type(nal) == Some(NalType::Idr))
}

/// True when the access unit's first slice is a B slice (slice_type 1 or 6, H.264
/// §7.4.3): such streams are sent out of display order, which WebRTC receivers do not
/// reorder. Reads only the first bytes of the slice header.
pub fn access_unit_has_b_slice(annexb: &[u8]) -> bool {
    nal_units(annexb)
        .find(|nal| matches!(nal_type(nal), Some(NalType::Slice | NalType::Idr)))
        .is_some_and(|nal| {
            // Two exp-Golomb codes fit in a few bytes; unescaping those is enough.
            let head = unescape_rbsp(&nal[1..nal.len().min(12)]);
            let mut r = BitReader::new(&head);
            let slice_type = r.ue("first_mb_in_slice").and_then(|_| r.ue("slice_type"));
            matches!(slice_type, Ok(1 | 6))
        })
}

/// Why a sequence parameter set could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H264Error {
    #[error("not an SPS NAL unit")]
    NotSps,
    #[error("SPS ends before its {0}")]
    Truncated(&'static str),
    #[error("SPS {0} out of range")]
    OutOfRange(&'static str),
}

/// What a sequence parameter set says about the pictures that follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpsInfo {
    /// Displayed size, after frame cropping.
    pub width: u32,
    pub height: u32,
    pub profile_idc: u8,
    /// constraint_set0..5 flags and the two reserved bits, as the byte in the SPS.
    pub constraint_flags: u8,
    pub level_idc: u8,
    /// Bits of `frame_num` in slice headers (log2_max_frame_num_minus4 + 4).
    pub log2_max_frame_num: u8,
    /// Slice headers carry a colour_plane_id (4:4:4 coded as three planes).
    pub separate_colour_plane: bool,
    /// gaps_in_frame_num_value_allowed_flag: frame_num may skip values on purpose.
    pub frame_num_gaps_allowed: bool,
}

impl SpsInfo {
    /// The SDP `profile-level-id`: profile, constraint byte and level as 6 lowercase hex digits.
    pub fn profile_level_id(&self) -> String {
        format!(
            "{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }
}

/// The payload of a NAL unit with emulation-prevention bytes removed: every `03` that
/// follows two zero bytes was inserted by the encoder and is not part of the syntax.
pub fn unescape_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Reads bits MSB first, with the exp-Golomb codes H.264 headers use. Every read checks
/// the length, so malformed input ends in an error instead of a panic.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    fn bit(&mut self, field: &'static str) -> Result<u32, H264Error> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or(H264Error::Truncated(field))?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(bit))
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, H264Error> {
        Ok(self.bit(field)? == 1)
    }

    pub(crate) fn bits(&mut self, n: u32, field: &'static str) -> Result<u32, H264Error> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit(field)?;
        }
        Ok(v)
    }

    /// ue(v). Values above 2^32 - 2 do not occur in valid streams and are rejected.
    pub(crate) fn ue(&mut self, field: &'static str) -> Result<u32, H264Error> {
        let mut zeros = 0;
        while self.bit(field)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(H264Error::OutOfRange(field));
            }
        }
        let rest = self.bits(zeros, field)?;
        let value = (1u64 << zeros) - 1 + u64::from(rest);
        u32::try_from(value).map_err(|_| H264Error::OutOfRange(field))
    }

    /// ue(v) that must not exceed `max`.
    fn ue_max(&mut self, max: u32, field: &'static str) -> Result<u32, H264Error> {
        let v = self.ue(field)?;
        if v > max {
            return Err(H264Error::OutOfRange(field));
        }
        Ok(v)
    }

    /// se(v).
    fn se(&mut self, field: &'static str) -> Result<i64, H264Error> {
        let k = i64::from(self.ue(field)?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// Profiles whose SPS carries chroma format, bit depths and scaling lists (7.3.2.1.1).
fn has_chroma_info(profile_idc: u8) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

/// Walks a scaling_list() only to get past it (7.3.2.1.1.1).
fn skip_scaling_list(r: &mut BitReader, size: usize) -> Result<(), H264Error> {
    let mut last = 8i64;
    let mut next = 8i64;
    for _ in 0..size {
        if next != 0 {
            let delta = r.se("scaling list")?;
            if !(-128..=127).contains(&delta) {
                return Err(H264Error::OutOfRange("delta_scale"));
            }
            next = (last + delta + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Size, profile and level of a sequence parameter set NAL unit (header byte included,
/// no start code). Malformed or truncated input gives an error, never a panic.
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, H264Error> {
    if nal_type(nal) != Some(NalType::Sps) {
        return Err(H264Error::NotSps);
    }
    let rbsp = unescape_rbsp(&nal[1..]);
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.bits(8, "profile_idc")? as u8;
    let constraint_flags = r.bits(8, "constraint flags")? as u8;
    let level_idc = r.bits(8, "level_idc")? as u8;
    r.ue_max(31, "seq_parameter_set_id")?;

    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if has_chroma_info(profile_idc) {
        chroma_format_idc = r.ue_max(3, "chroma_format_idc")?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag("separate_colour_plane_flag")?;
        }
        r.ue_max(6, "bit_depth_luma_minus8")?;
        r.ue_max(6, "bit_depth_chroma_minus8")?;
        r.flag("qpprime_y_zero_transform_bypass_flag")?;
        if r.flag("seq_scaling_matrix_present_flag")? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag("seq_scaling_list_present_flag")? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }

    let log2_max_frame_num = r.ue_max(12, "log2_max_frame_num_minus4")? as u8 + 4;
    match r.ue_max(2, "pic_order_cnt_type")? {
        0 => {
            r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")?;
        }
        1 => {
            r.flag("delta_pic_order_always_zero_flag")?;
            r.se("offset_for_non_ref_pic")?;
            r.se("offset_for_top_to_bottom_field")?;
            let cycle = r.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle")?;
            for _ in 0..cycle {
                r.se("offset_for_ref_frame")?;
            }
        }
        _ => {}
    }
    r.ue("max_num_ref_frames")?;
    let frame_num_gaps_allowed = r.flag("gaps_in_frame_num_value_allowed_flag")?;
    // Far beyond any level's limit, small enough that the arithmetic below cannot overflow.
    let width_mbs = u64::from(r.ue_max(4095, "pic_width_in_mbs_minus1")?) + 1;
    let height_map_units = u64::from(r.ue_max(4095, "pic_height_in_map_units_minus1")?) + 1;
    let frame_mbs_only = r.flag("frame_mbs_only_flag")?;
    if !frame_mbs_only {
        r.flag("mb_adaptive_frame_field_flag")?;
    }
    r.flag("direct_8x8_inference_flag")?;

    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let mut width = width_mbs * 16;
    let mut height = height_map_units * 16 * field_factor;
    if r.flag("frame_cropping_flag")? {
        let (left, right, top, bottom) = (
            u64::from(r.ue("frame_crop_left_offset")?),
            u64::from(r.ue("frame_crop_right_offset")?),
            u64::from(r.ue("frame_crop_top_offset")?),
            u64::from(r.ue("frame_crop_bottom_offset")?),
        );
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (unit_x, unit_y) = match chroma_array_type {
            0 => (1, field_factor),
            1 => (2, 2 * field_factor),
            2 => (2, field_factor),
            _ => (1, field_factor),
        };
        let crop_x = (left + right) * unit_x;
        let crop_y = (top + bottom) * unit_y;
        if crop_x >= width || crop_y >= height {
            return Err(H264Error::OutOfRange("frame cropping"));
        }
        width -= crop_x;
        height -= crop_y;
    }
    Ok(SpsInfo {
        width: width as u32,
        height: height as u32,
        profile_idc,
        constraint_flags,
        level_idc,
        log2_max_frame_num,
        separate_colour_plane,
        frame_num_gaps_allowed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b_slices_are_recognised_from_the_slice_header() {
        // first_mb_in_slice ue(0) = "1", then slice_type as ue(v).
        let au = |slice_header: u8| vec![0, 0, 0, 1, 0x41, slice_header, 0x80];
        assert!(
            access_unit_has_b_slice(&au(0b1010_0000)),
            "slice_type 1 (B)"
        );
        assert!(
            access_unit_has_b_slice(&au(0b1001_1100)),
            "slice_type 6 (B, all)"
        );
        assert!(
            !access_unit_has_b_slice(&au(0b1100_0000)),
            "slice_type 0 (P)"
        );
        assert!(
            !access_unit_has_b_slice(&au(0b1001_1000)),
            "slice_type 5 (P, all)"
        );
        assert!(!access_unit_has_b_slice(&[0, 0, 1, 0x67, 0x42]), "no slice");
        assert!(
            !access_unit_has_b_slice(&[0, 0, 1, 0x41]),
            "truncated slice"
        );
    }

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let data = [
            0xAA, 0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5, 0,
        ];
        let nals: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(
            nals,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5, 0][..]]
        );
        assert_eq!(nal_type(nals[0]), Some(NalType::Sps));
        assert_eq!(nal_type(nals[2]), Some(NalType::Idr));
    }

    #[test]
    fn no_start_code_yields_nothing() {
        assert_eq!(nal_units(&[1, 2, 3, 4]).count(), 0);
        assert_eq!(nal_units(&[]).count(), 0);
        assert_eq!(nal_units(&[0, 0, 1]).count(), 0);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// SPS units written by libx264, with the size ffprobe reports for each stream.
    const X264_SPS: &[(&str, u32, u32, &str)] = &[
        // constrained baseline, 1080 lines coded as 1088 and cropped
        (
            "6742c028d900780227e5c044000003000400000300c83c60c920",
            1920,
            1080,
            "42c028",
        ),
        (
            "6742c01fd9005005bb011000000300100000030320f1832480",
            1280,
            720,
            "42c01f",
        ),
        // High 4:4:4: chroma_format_idc 3, crop units of one pixel
        (
            "67f40028919b280f0044f71780880000030008000003019078c18cb0",
            1918,
            1078,
            "f40028",
        ),
        (
            "6764001facd9405005beab011000000300100000030320f1831960",
            1278,
            718,
            "64001f",
        ),
        // interlaced: frame_mbs_only_flag 0, height in field macroblock pairs
        (
            "67640028acd94078044fde0220000003002000000643e2c5b2c0",
            1920,
            1080,
            "640028",
        ),
        // High 4:2:2: vertical crop unit of one line
        (
            "677a001ebcd940a42fe227c044000003000400000300c83c58b658",
            642,
            362,
            "7a001e",
        ),
        (
            "674d401eeca05217f1126022000003000200000300641e2c5b2c",
            642,
            362,
            "4d401e",
        ),
    ];

    #[test]
    fn parses_real_sps_units() {
        for &(sps, width, height, pli) in X264_SPS {
            let sps = hex(sps);
            let info = parse_sps(&sps).unwrap_or_else(|e| panic!("{pli}: {e}"));
            assert_eq!((info.width, info.height), (width, height), "{pli}");
            assert_eq!(info.profile_level_id(), pli);
        }
    }

    #[test]
    fn profile_level_id_is_lowercase_hex() {
        let info = SpsInfo {
            width: 16,
            height: 16,
            profile_idc: 0x42,
            constraint_flags: 0xe0,
            level_idc: 0x1f,
            log2_max_frame_num: 4,
            separate_colour_plane: false,
            frame_num_gaps_allowed: false,
        };
        assert_eq!(info.profile_level_id(), "42e01f");
    }

    /// Writes the bits of a hand-made SPS, for syntax no encoder here produces.
    #[derive(Default)]
    struct BitWriter {
        bits: Vec<bool>,
    }

    impl BitWriter {
        fn u(&mut self, n: u32, v: u32) -> &mut Self {
            for i in (0..n).rev() {
                self.bits.push((v >> i) & 1 == 1);
            }
            self
        }
        fn ue(&mut self, v: u32) -> &mut Self {
            let v = u64::from(v) + 1;
            let len = 64 - v.leading_zeros();
            self.u(len - 1, 0);
            for i in (0..len).rev() {
                self.bits.push((v >> i) & 1 == 1);
            }
            self
        }
        fn se(&mut self, v: i32) -> &mut Self {
            self.ue(if v > 0 {
                2 * v as u32 - 1
            } else {
                (-2 * v) as u32
            })
        }
        /// NAL unit with trailing bits and emulation prevention.
        fn nal(&mut self) -> Vec<u8> {
            self.bits.push(true);
            while !self.bits.len().is_multiple_of(8) {
                self.bits.push(false);
            }
            let mut out = vec![0x67];
            let mut zeros = 0;
            for chunk in self.bits.chunks(8) {
                let b = chunk.iter().fold(0u8, |acc, &bit| (acc << 1) | bit as u8);
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
    }

    #[test]
    fn skips_scaling_lists_and_poc_type_1() {
        let mut w = BitWriter::default();
        w.u(8, 100).u(8, 0).u(8, 40).ue(0); // High, level 4.0, sps id 0
        w.ue(1).ue(0).ue(0).u(1, 0); // 4:2:0, 8 bit, no bypass
        w.u(1, 1); // scaling matrix present
        for i in 0..8 {
            if i % 2 == 0 {
                w.u(1, 0);
                continue;
            }
            w.u(1, 1);
            let size = if i < 6 { 16 } else { 64 };
            // Deltas that walk the scale around, then back to 0, which ends the list early.
            let mut last = 8i32;
            for j in 0..size {
                if j == size - 3 {
                    w.se(if last <= 128 { -last } else { 256 - last });
                    break;
                }
                let delta = if j == 0 { 0 } else { 5 };
                w.se(delta);
                last = (last + delta + 256) % 256;
            }
        }
        w.ue(0).ue(1); // log2_max_frame_num, poc type 1
        w.u(1, 0).se(-3).se(7).ue(3).se(1).se(-2).se(100);
        w.ue(4).u(1, 0).ue(79).ue(44).u(1, 1).u(1, 1); // 1280x720, frame_mbs_only
        w.u(1, 1).ue(0).ue(5).ue(0).ue(4); // crop 10 px right, 8 lines bottom
        w.u(1, 0); // no VUI
        let info = parse_sps(&w.nal()).unwrap();
        assert_eq!((info.width, info.height), (1270, 712));
        assert_eq!(info.profile_level_id(), "640028");
    }

    #[test]
    fn removes_emulation_prevention() {
        assert_eq!(
            unescape_rbsp(&[0, 0, 3, 1, 0, 0, 3, 0, 3]),
            vec![0, 0, 1, 0, 0, 0, 3]
        );
        assert_eq!(unescape_rbsp(&[0, 3, 0, 0, 3]), vec![0, 3, 0, 0]);
    }

    #[test]
    fn rejects_truncated_and_foreign_input() {
        assert_eq!(parse_sps(&[]), Err(H264Error::NotSps));
        assert_eq!(parse_sps(&[0x68, 1, 2]), Err(H264Error::NotSps));
        for &(sps, ..) in X264_SPS {
            let sps = hex(sps);
            // Cutting anywhere inside the fields we read must fail cleanly.
            for len in 1..8 {
                assert!(parse_sps(&sps[..len]).is_err(), "{len} bytes");
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift64: deterministic, no extra dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut parsed = 0;
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let mut nal: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(first) = nal.first_mut() {
                *first = 0x67;
            }
            if let Ok(info) = parse_sps(&nal) {
                parsed += 1;
                assert!(info.width > 0 && info.height > 0);
            }
            // Mutations of a real SPS exercise deeper paths than pure noise.
            let mut real = hex(X264_SPS[(next() % X264_SPS.len() as u64) as usize].0);
            let i = 1 + (next() as usize % (real.len() - 1));
            real[i] = next() as u8;
            let cut = 1 + next() as usize % real.len();
            let _ = parse_sps(&real[..cut]);
        }
        assert!(parsed < 20_000);
    }

    #[test]
    fn key_access_unit_has_idr_slice() {
        assert!(access_unit_is_key(&[0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x65, 2]));
        assert!(!access_unit_is_key(&[0, 0, 0, 1, 0x41, 1, 2]));
        assert!(!access_unit_is_key(&[]));
    }
}
