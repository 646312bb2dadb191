//! The memsink header as pure data: field offsets per ABI, the object size by name
//! suffix, and the `long double` encodings. Nothing here touches shared memory, so the
//! layout of every ABI can be tested on any machine.

use thiserror::Error;

/// `magic` once a frame was put.
pub const MAGIC: u64 = 0xCAFE_BABE_CAFE_BABE;
/// Protocol version this implementation speaks.
pub const VERSION: u32 = 10;
/// V4L2 fourcc of H.264 frames.
pub const FORMAT_H264: u32 = u32::from_le_bytes(*b"H264");
/// V4L2 fourcc of JPEG frames.
pub const FORMAT_JPEG: u32 = u32::from_le_bytes(*b"JPEG");
/// Length of the `wants` block (copied as one piece, padding included).
pub const WANTS_LEN: usize = 20;

/// How a C compiler lays the header out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    /// `long double` is x87 80-bit extended in a 16-byte slot.
    X86_64,
    /// `long double` is IEEE binary128.
    Aarch64,
    /// 32-bit ARM: `size_t` is 4 bytes and `long double` is an IEEE double.
    Armv7,
}

impl Abi {
    /// The ABI of the machine this program was built for, if it is one we know.
    pub const fn host() -> Option<Abi> {
        if cfg!(target_arch = "x86_64") {
            Some(Abi::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Abi::Aarch64)
        } else if cfg!(target_arch = "arm") {
            Some(Abi::Armv7)
        } else {
            None
        }
    }

    /// Field offsets of the version-10 header.
    pub const fn layout(self) -> Layout {
        match self {
            Abi::X86_64 | Abi::Aarch64 => Layout {
                abi: self,
                magic: 0,
                version: 8,
                id: 16,
                used: 24,
                used_size: 8,
                last_client_ts: 32,
                wants: 48,
                wants_key: 64,
                width: 68,
                height: 72,
                format: 76,
                stride: 80,
                online: 84,
                key: 85,
                gop: 88,
                grab_begin_ts: 96,
                grab_end_ts: 112,
                encode_begin_ts: 128,
                encode_end_ts: 144,
                long_double_size: 16,
                header_size: 160,
            },
            Abi::Armv7 => Layout {
                abi: self,
                magic: 0,
                version: 8,
                id: 16,
                used: 24,
                used_size: 4,
                last_client_ts: 32,
                wants: 40,
                wants_key: 56,
                width: 60,
                height: 64,
                format: 68,
                stride: 72,
                online: 76,
                key: 77,
                gop: 80,
                grab_begin_ts: 88,
                grab_end_ts: 96,
                encode_begin_ts: 104,
                encode_end_ts: 112,
                long_double_size: 8,
                header_size: 120,
            },
        }
    }
}

/// Byte offsets of the header fields (`us_memsink_shared_s`, version 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub abi: Abi,
    pub magic: usize,
    pub version: usize,
    pub id: usize,
    pub used: usize,
    pub used_size: usize,
    pub last_client_ts: usize,
    /// Start of the 20-byte `wants` block (width, height, format, fps, key).
    pub wants: usize,
    pub wants_key: usize,
    pub width: usize,
    pub height: usize,
    pub format: usize,
    pub stride: usize,
    pub online: usize,
    pub key: usize,
    pub gop: usize,
    pub grab_begin_ts: usize,
    pub grab_end_ts: usize,
    pub encode_begin_ts: usize,
    pub encode_end_ts: usize,
    pub long_double_size: usize,
    /// `sizeof(us_memsink_shared_s)`: the payload starts here.
    pub header_size: usize,
}

/// The frame description stored with every payload.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FrameMeta {
    pub width: u32,
    pub height: u32,
    pub format: u32,
    pub stride: u32,
    pub online: bool,
    pub key: bool,
    pub gop: u32,
    /// CLOCK_MONOTONIC seconds.
    pub grab_begin_ts: f64,
    pub grab_end_ts: f64,
    pub encode_begin_ts: f64,
    pub encode_end_ts: f64,
}

/// A decoded header.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Header {
    pub magic: u64,
    pub version: u32,
    pub id: u64,
    pub used: u64,
    pub last_client_ts: f64,
    pub wants_key: bool,
    pub meta: FrameMeta,
}

impl Layout {
    /// Decode a header from at least `header_size` bytes.
    pub fn decode(&self, b: &[u8]) -> Header {
        let used = if self.used_size == 8 {
            get_u64(b, self.used)
        } else {
            u64::from(get_u32(b, self.used))
        };
        Header {
            magic: get_u64(b, self.magic),
            version: get_u32(b, self.version),
            id: get_u64(b, self.id),
            used,
            last_client_ts: self.get_ld(b, self.last_client_ts),
            wants_key: b[self.wants_key] != 0,
            meta: FrameMeta {
                width: get_u32(b, self.width),
                height: get_u32(b, self.height),
                format: get_u32(b, self.format),
                stride: get_u32(b, self.stride),
                online: b[self.online] != 0,
                key: b[self.key] != 0,
                gop: get_u32(b, self.gop),
                grab_begin_ts: self.get_ld(b, self.grab_begin_ts),
                grab_end_ts: self.get_ld(b, self.grab_end_ts),
                encode_begin_ts: self.get_ld(b, self.encode_begin_ts),
                encode_end_ts: self.get_ld(b, self.encode_end_ts),
            },
        }
    }

    /// The bytes of `used` in this ABI's width.
    pub fn encode_used(&self, used: u64) -> Vec<u8> {
        if self.used_size == 8 {
            used.to_le_bytes().to_vec()
        } else {
            (used as u32).to_le_bytes().to_vec()
        }
    }

    /// `(offset, bytes)` of every frame-meta field, in the order the server writes them.
    pub fn encode_meta(&self, m: &FrameMeta) -> Vec<(usize, Vec<u8>)> {
        vec![
            (self.width, m.width.to_le_bytes().to_vec()),
            (self.height, m.height.to_le_bytes().to_vec()),
            (self.format, m.format.to_le_bytes().to_vec()),
            (self.stride, m.stride.to_le_bytes().to_vec()),
            (self.online, vec![u8::from(m.online)]),
            (self.key, vec![u8::from(m.key)]),
            (self.gop, m.gop.to_le_bytes().to_vec()),
            (self.grab_begin_ts, self.encode_ld(m.grab_begin_ts)),
            (self.grab_end_ts, self.encode_ld(m.grab_end_ts)),
            (self.encode_begin_ts, self.encode_ld(m.encode_begin_ts)),
            (self.encode_end_ts, self.encode_ld(m.encode_end_ts)),
        ]
    }

    /// A `long double` in this ABI's encoding (`long_double_size` bytes).
    pub fn encode_ld(&self, v: f64) -> Vec<u8> {
        match self.abi {
            Abi::X86_64 => x87_encode(v).to_vec(),
            Abi::Aarch64 => binary128_encode(v).to_vec(),
            Abi::Armv7 => v.to_le_bytes().to_vec(),
        }
    }

    fn get_ld(&self, b: &[u8], off: usize) -> f64 {
        let slot = &b[off..off + self.long_double_size];
        match self.abi {
            Abi::X86_64 => x87_decode(slot),
            Abi::Aarch64 => binary128_decode(slot),
            Abi::Armv7 => f64::from_le_bytes(slot.try_into().unwrap_or([0; 8])),
        }
    }
}

fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(v)
}

fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(v)
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error(
        "memsink name {0:?} has an invalid suffix: the text after the last ':' \
         (or, without ':', after the last '.') must be jpeg, h264 or raw"
    )]
    BadSuffix(String),
    #[error("memsink name {0:?} must not contain '/' (other than one leading '/')")]
    Slash(String),
    #[error("memsink name must not be empty")]
    Empty,
}

/// Size of the data area for an object name, from its suffix (as µStreamer sizes it).
pub fn data_size_for_name(name: &str) -> Result<usize, NameError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() {
        return Err(NameError::Empty);
    }
    if bare.contains('/') {
        return Err(NameError::Slash(name.into()));
    }
    let suffix = match name.rfind(':') {
        Some(i) => &name[i + 1..],
        None => name.rfind('.').map_or("", |i| &name[i + 1..]),
    };
    match suffix.to_ascii_lowercase().as_str() {
        "jpeg" => Ok(4 * 1024 * 1024),
        "h264" => Ok(2 * 1024 * 1024),
        "raw" => Ok(3840 * 2160 * 3),
        _ => Err(NameError::BadSuffix(name.into())),
    }
}

/// Multiply by 2^exp without overflowing intermediate powers.
fn ldexp(mut x: f64, mut exp: i32) -> f64 {
    while exp > 1000 {
        x *= 2f64.powi(1000);
        exp -= 1000;
    }
    while exp < -1000 {
        x *= 2f64.powi(-1000);
        exp += 1000;
    }
    x * 2f64.powi(exp)
}

/// Sign, unbiased exponent and 53-bit significand (leading one at bit 52) of a finite,
/// non-zero f64; subnormals are normalised.
fn split_f64(v: f64) -> (bool, i32, u64) {
    let bits = v.to_bits();
    let sign = bits >> 63 != 0;
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1 << 52) - 1);
    if exp == 0 {
        let shift = frac.leading_zeros() as i32 - 11;
        (sign, -1022 - shift, frac << shift)
    } else {
        (sign, exp - 1023, frac | (1 << 52))
    }
}

const LD_BIAS: i32 = 16383;

/// x87 80-bit extended encoding of an f64 (exact widening), in a 16-byte slot.
pub fn x87_encode(v: f64) -> [u8; 16] {
    let mut out = [0u8; 16];
    let sign: u16 = if v.is_sign_negative() { 0x8000 } else { 0 };
    let (se, sig): (u16, u64) = if v == 0.0 {
        (sign, 0)
    } else if v.is_infinite() {
        (sign | 0x7fff, 1 << 63)
    } else if v.is_nan() {
        (0x7fff, 0xC000_0000_0000_0000)
    } else {
        let (_, exp, m) = split_f64(v);
        (sign | (exp + LD_BIAS) as u16, m << 11)
    };
    out[..8].copy_from_slice(&sig.to_le_bytes());
    out[8..10].copy_from_slice(&se.to_le_bytes());
    out
}

/// An x87 extended value (bytes 0–9 of the slot) as f64, rounded to nearest.
pub fn x87_decode(b: &[u8]) -> f64 {
    let mut sig = [0u8; 8];
    sig.copy_from_slice(&b[..8]);
    let sig = u64::from_le_bytes(sig);
    let se = u16::from_le_bytes([b[8], b[9]]);
    let negative = se & 0x8000 != 0;
    let exp = i32::from(se & 0x7fff);
    let magnitude = if exp == 0x7fff {
        if sig << 1 == 0 {
            f64::INFINITY
        } else {
            f64::NAN
        }
    } else if sig == 0 {
        0.0
    } else {
        // Denormals (exp 0) use the minimum exponent 1 - bias.
        let e = exp.max(1) - LD_BIAS - 63;
        ldexp_rounded(u128::from(sig), e)
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// IEEE binary128 encoding of an f64 (exact widening).
pub fn binary128_encode(v: f64) -> [u8; 16] {
    let sign: u128 = if v.is_sign_negative() { 1 << 127 } else { 0 };
    let bits: u128 = if v == 0.0 {
        sign
    } else if v.is_infinite() {
        sign | (0x7fff << 112)
    } else if v.is_nan() {
        (0x7fff << 112) | (1 << 111)
    } else {
        let (_, exp, m) = split_f64(v);
        let frac = u128::from(m & ((1 << 52) - 1)) << 60;
        sign | ((((exp + LD_BIAS) as u128) & 0x7fff) << 112) | frac
    };
    bits.to_le_bytes()
}

/// An IEEE binary128 value as f64, rounded to nearest even.
pub fn binary128_decode(b: &[u8]) -> f64 {
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&b[..16]);
    let bits = u128::from_le_bytes(raw);
    let negative = bits >> 127 != 0;
    let exp = ((bits >> 112) & 0x7fff) as i32;
    let frac = bits & ((1u128 << 112) - 1);
    let magnitude = if exp == 0x7fff {
        if frac == 0 {
            f64::INFINITY
        } else {
            f64::NAN
        }
    } else if exp == 0 && frac == 0 {
        0.0
    } else if exp == 0 {
        ldexp_rounded(frac, 1 - LD_BIAS - 112)
    } else {
        ldexp_rounded(frac | (1 << 112), exp - LD_BIAS - 112)
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// `m · 2^e` as f64, rounding `m` to 53 significant bits (nearest, ties to even) first.
fn ldexp_rounded(mut m: u128, mut e: i32) -> f64 {
    let width = 128 - m.leading_zeros() as i32;
    if width > 53 {
        let drop = (width - 53) as u32;
        let rest = m & ((1u128 << drop) - 1);
        let half = 1u128 << (drop - 1);
        m >>= drop;
        e += drop as i32;
        if rest > half || (rest == half && m & 1 == 1) {
            m += 1;
        }
    }
    ldexp(m as f64, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn offsets_x86_64_and_aarch64_are_identical_and_pinned() {
        for abi in [Abi::X86_64, Abi::Aarch64] {
            let l = abi.layout();
            let got = [
                l.magic,
                l.version,
                l.id,
                l.used,
                l.last_client_ts,
                l.wants,
                l.wants_key,
                l.width,
                l.height,
                l.format,
                l.stride,
                l.online,
                l.key,
                l.gop,
                l.grab_begin_ts,
                l.grab_end_ts,
                l.encode_begin_ts,
                l.encode_end_ts,
                l.header_size,
            ];
            assert_eq!(
                got,
                [0, 8, 16, 24, 32, 48, 64, 68, 72, 76, 80, 84, 85, 88, 96, 112, 128, 144, 160],
                "{abi:?}"
            );
            assert_eq!((l.used_size, l.long_double_size), (8, 16));
            assert_eq!(l.wants_key - l.wants + 4, WANTS_LEN);
        }
    }

    #[test]
    fn offsets_armv7_are_pinned() {
        let l = Abi::Armv7.layout();
        assert_eq!(
            [
                l.used,
                l.last_client_ts,
                l.wants,
                l.wants_key,
                l.width,
                l.gop
            ],
            [24, 32, 40, 56, 60, 80]
        );
        assert_eq!(
            [l.grab_begin_ts, l.encode_end_ts, l.header_size],
            [88, 112, 120]
        );
    }

    #[test]
    fn fourccs() {
        assert_eq!(FORMAT_H264, 0x3436_3248);
        assert_eq!(FORMAT_JPEG, 0x4745_504A);
    }

    #[test]
    fn sizes_by_suffix() {
        assert_eq!(data_size_for_name("demo::ustreamer::h264"), Ok(2_097_152));
        assert_eq!(data_size_for_name("kvmd::ustreamer::JPEG"), Ok(4_194_304));
        assert_eq!(data_size_for_name("x.raw"), Ok(24_883_200));
        assert_eq!(data_size_for_name("a.h264:jpeg"), Ok(4_194_304));
        assert!(matches!(
            data_size_for_name("x:y.h264"),
            Err(NameError::BadSuffix(_))
        ));
        assert!(data_size_for_name("plain").is_err());
        assert!(matches!(
            data_size_for_name("a/b.h264"),
            Err(NameError::Slash(_))
        ));
        assert_eq!(data_size_for_name("/demo.h264"), Ok(2_097_152));
        assert_eq!(
            Abi::X86_64.layout().header_size + data_size_for_name("a::h264").unwrap(),
            2_097_312
        );
    }

    // (value, x87 bytes 0–9, binary128 bytes) as gcc produces them for the decimal literal.
    const VECTORS: &[(f64, &str, &str)] = &[
        (
            0.0,
            "00000000000000000000",
            "00000000000000000000000000000000",
        ),
        (
            1.0,
            "0000000000000080ff3f",
            "0000000000000000000000000000ff3f",
        ),
        (
            -2.5,
            "00000000000000a000c0",
            "000000000000000000000000004000c0",
        ),
        (
            12345.678,
            "83c0caa145b6e6c00c40",
            "be9f1a2fdd24068195438b6ccd810c40",
        ),
        (
            1000000.001,
            "bc749318040024f41240",
            "a245b6f3fdd478e92631080048e81240",
        ),
    ];

    #[test]
    fn c_vectors_decode_to_the_nearest_f64() {
        for &(v, x87, q) in VECTORS {
            assert_eq!(x87_decode(&hex(x87)), v, "x87 {x87}");
            assert_eq!(binary128_decode(&hex(q)), v, "binary128 {q}");
            assert_eq!(
                Abi::X86_64
                    .layout()
                    .get_ld(&hex(&format!("{x87}000000000000")), 0),
                v
            );
            assert_eq!(Abi::Aarch64.layout().get_ld(&hex(q), 0), v);
        }
    }

    #[test]
    fn exactly_representable_values_encode_like_c() {
        for &(v, x87, q) in &VECTORS[..3] {
            assert_eq!(x87_encode(v)[..10], hex(x87)[..], "{v}");
            assert_eq!(x87_encode(v)[10..], [0; 6]);
            assert_eq!(binary128_encode(v).to_vec(), hex(q), "{v}");
        }
    }

    #[test]
    fn round_trips() {
        let uptime = 1_234_567.891; // a monotonic clock reading, ms granular
        let values = [
            0.0,
            1.0,
            -2.5,
            12345.678,
            uptime,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            1e-300,
        ];
        for v in values {
            assert_eq!(x87_decode(&x87_encode(v)), v, "x87 {v}");
            assert_eq!(binary128_decode(&binary128_encode(v)), v, "binary128 {v}");
            for abi in [Abi::X86_64, Abi::Aarch64, Abi::Armv7] {
                let l = abi.layout();
                assert_eq!(l.get_ld(&l.encode_ld(v), 0), v, "{abi:?} {v}");
            }
        }
        assert!(x87_decode(&x87_encode(f64::INFINITY)).is_infinite());
        assert!(binary128_decode(&binary128_encode(f64::NAN)).is_nan());
    }

    #[test]
    fn header_decodes_from_bytes() {
        for abi in [Abi::X86_64, Abi::Aarch64, Abi::Armv7] {
            let l = abi.layout();
            let mut b = vec![0u8; l.header_size];
            let meta = FrameMeta {
                width: 640,
                height: 480,
                format: FORMAT_H264,
                stride: 0,
                online: true,
                key: true,
                gop: 30,
                grab_begin_ts: 100.001,
                grab_end_ts: 100.002,
                encode_begin_ts: 100.003,
                encode_end_ts: 100.004,
            };
            for (off, bytes) in l.encode_meta(&meta) {
                b[off..off + bytes.len()].copy_from_slice(&bytes);
            }
            let used = l.encode_used(1234);
            b[l.used..l.used + used.len()].copy_from_slice(&used);
            b[l.magic..l.magic + 8].copy_from_slice(&MAGIC.to_le_bytes());
            b[l.version..l.version + 4].copy_from_slice(&VERSION.to_le_bytes());
            b[l.wants_key] = 1;
            let h = l.decode(&b);
            assert_eq!(h.meta, meta);
            assert_eq!(
                (h.magic, h.version, h.used, h.wants_key),
                (MAGIC, 10, 1234, true)
            );
        }
    }
}
