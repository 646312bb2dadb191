//! H.264 Annex-B helpers: splitting a byte stream into NAL units, NAL types.

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
fn find_start_code(data: &[u8], from: usize) -> Option<(usize, usize)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let data = [
            0xAA, 0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5, 0,
        ];
        let nals: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5, 0][..]]);
        assert_eq!(nal_type(nals[0]), Some(NalType::Sps));
        assert_eq!(nal_type(nals[2]), Some(NalType::Idr));
    }

    #[test]
    fn no_start_code_yields_nothing() {
        assert_eq!(nal_units(&[1, 2, 3, 4]).count(), 0);
        assert_eq!(nal_units(&[]).count(), 0);
        assert_eq!(nal_units(&[0, 0, 1]).count(), 0);
    }
}
