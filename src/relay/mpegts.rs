//! MPEG transport stream packets, as far as a relay needs them: cutting a byte stream into
//! whole 188-byte packets (so uploads can be interleaved without splitting a packet),
//! noticing input that is not a transport stream, and finding packets where a new viewer
//! can start (a PAT, or a video PES that opens with an MPEG-1/2 sequence header).

use bytes::{Bytes, BytesMut};

pub const PACKET_SIZE: usize = 188;
pub const SYNC_BYTE: u8 = 0x47;

/// The upload is not an MPEG transport stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TsError {
    #[error("not an MPEG transport stream: first byte is 0x{0:02x}, expected sync byte 0x47")]
    NotTs(u8),
    #[error(
        "not an MPEG transport stream: byte 188 is 0x{0:02x}, expected the second packet's sync byte 0x47"
    )]
    NoSecondPacket(u8),
    #[error("lost MPEG-TS packet sync and found none in the next {0} bytes")]
    LostSync(usize),
}

/// Garbage an upload may contain in all before it is given up on. Uploads come over TCP,
/// which loses nothing: a sender that needs more than this to stay in sync is not
/// sending a transport stream.
const MAX_GARBAGE_BYTES: u64 = 64 * 1024;
/// Packets in a row that must look right before sync counts as found again.
const RESYNC_PACKETS: usize = 3;

/// Whether `header` (at least 4 bytes) can start a packet: the sync byte, no transport
/// error flagged, and a payload and/or adaptation field announced. Random bytes pass
/// this about once in 700 tries, against 1 in 256 for the sync byte alone.
fn plausible_header(header: &[u8]) -> bool {
    header[0] == SYNC_BYTE && header[1] & 0x80 == 0 && header[3] & 0x30 != 0
}

/// Turns an upload's byte stream into runs of whole packets, passing on only what keeps
/// packet sync: once sync is lost, nothing is passed on until [`RESYNC_PACKETS`]
/// plausible packet headers in a row are found, and an upload with more than
/// [`MAX_GARBAGE_BYTES`] of garbage in all is refused.
#[derive(Default)]
pub struct PacketSplitter {
    pending: BytesMut,
    started: bool,
    /// The start has been checked (two packets where they should be).
    verified: bool,
    /// The packet at the front of `pending` is known to be in sync.
    locked: bool,
    /// Total bytes dropped while resynchronising.
    pub dropped_bytes: u64,
}

impl PacketSplitter {
    pub fn new() -> PacketSplitter {
        PacketSplitter::default()
    }

    /// Feed bytes; returns the whole packets now available (possibly none).
    pub fn push(&mut self, data: &[u8]) -> Result<Bytes, TsError> {
        if !self.started {
            if let Some(&first) = data.first() {
                if first != SYNC_BYTE {
                    return Err(TsError::NotTs(first));
                }
                self.started = true;
            }
        }
        self.pending.extend_from_slice(data);
        if !self.verified {
            // The first byte alone could be chance ('G' is 0x47): the second packet must
            // follow where it should.
            if self.pending.len() <= PACKET_SIZE {
                return Ok(Bytes::new());
            }
            if self.pending[PACKET_SIZE] != SYNC_BYTE {
                return Err(TsError::NoSecondPacket(self.pending[PACKET_SIZE]));
            }
            self.verified = true;
            self.locked = true;
        }
        let mut out = BytesMut::with_capacity(self.pending.len());
        loop {
            if self.locked {
                if self.pending.len() < PACKET_SIZE {
                    break;
                }
                if plausible_header(&self.pending) {
                    out.extend_from_slice(&self.pending.split_to(PACKET_SIZE));
                    continue;
                }
                self.locked = false;
            }
            let found = self.resync();
            if self.dropped_bytes > MAX_GARBAGE_BYTES {
                return Err(TsError::LostSync(self.dropped_bytes as usize));
            }
            if !found {
                break;
            }
            self.locked = true;
        }
        Ok(out.freeze())
    }

    /// Drop bytes up to the next place where [`RESYNC_PACKETS`] plausible headers
    /// follow each other: true when found, false when more data is needed to tell.
    fn resync(&mut self) -> bool {
        let len = self.pending.len();
        let span = (RESYNC_PACKETS - 1) * PACKET_SIZE + 4;
        let mut i = 0;
        while i < len {
            if self.pending[i] == SYNC_BYTE {
                if i + span > len {
                    self.drop_front(i);
                    return false;
                }
                if (0..RESYNC_PACKETS)
                    .all(|k| plausible_header(&self.pending[i + k * PACKET_SIZE..]))
                {
                    self.drop_front(i);
                    return true;
                }
            }
            i += 1;
        }
        self.drop_front(len);
        false
    }

    fn drop_front(&mut self, n: usize) {
        let _ = self.pending.split_to(n);
        self.dropped_bytes += n as u64;
    }
}

/// The 13-bit packet identifier.
pub fn pid(packet: &[u8]) -> u16 {
    (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2])
}

/// Payload unit start indicator: a PES packet or a table section begins here.
pub fn payload_unit_start(packet: &[u8]) -> bool {
    packet[1] & 0x40 != 0
}

/// The packet's payload, after the header and any adaptation field.
pub fn payload(packet: &[u8]) -> &[u8] {
    let afc = (packet[3] >> 4) & 0x3;
    let mut start = 4;
    if afc & 0x2 != 0 {
        start += 1 + usize::from(packet[4]);
    }
    if afc & 0x1 == 0 || start >= PACKET_SIZE {
        return &[];
    }
    &packet[start..PACKET_SIZE]
}

/// A PES packet starting in this packet, as (stream_id, elementary stream data that follows
/// the PES header in this packet).
pub fn pes_start(packet: &[u8]) -> Option<(u8, &[u8])> {
    if !payload_unit_start(packet) {
        return None;
    }
    let p = payload(packet);
    if p.len() < 9 || p[0..3] != [0, 0, 1] {
        return None;
    }
    let stream_id = p[3];
    // MPEG-2 PES header (what every muxer writes for audio/video streams).
    let header_len = 9 + usize::from(p[8]);
    Some((stream_id, p.get(header_len..).unwrap_or(&[])))
}

/// MPEG-1/2 video stream ids are 0xE0..=0xEF.
pub fn is_video_stream(stream_id: u8) -> bool {
    stream_id & 0xf0 == 0xe0
}

/// Is this packet a good place for a new viewer to start? A PAT (decoders learn the
/// programs from it) or a video PES opening with a sequence header (a picture can be
/// decoded from it).
pub fn is_join_point(packet: &[u8]) -> bool {
    if !payload_unit_start(packet) {
        return false;
    }
    if pid(packet) == 0 {
        return true;
    }
    matches!(pes_start(packet), Some((id, es)) if is_video_stream(id) && es.starts_with(&[0, 0, 1, 0xb3]))
}

/// Offset of the first join point in a run of whole packets.
pub fn find_join_point(packets: &[u8]) -> Option<usize> {
    packets
        .chunks_exact(PACKET_SIZE)
        .position(is_join_point)
        .map(|i| i * PACKET_SIZE)
}

/// Picture size from an MPEG-1/2 sequence header at the start of `es`.
pub fn sequence_header_size(es: &[u8]) -> Option<(u16, u16)> {
    if es.len() < 7 || es[0..4] != [0, 0, 1, 0xb3] {
        return None;
    }
    let width = (u16::from(es[4]) << 4) | (u16::from(es[5]) >> 4);
    let height = (u16::from(es[5] & 0x0f) << 8) | u16::from(es[6]);
    Some((width, height))
}

/// Extracts one video elementary stream from whole TS packets (for players that take a
/// raw MPEG-1 video stream rather than a transport stream).
#[derive(Default)]
pub struct VideoEsExtractor {
    video_pid: Option<u16>,
    in_pes: bool,
}

impl VideoEsExtractor {
    pub fn new() -> VideoEsExtractor {
        VideoEsExtractor::default()
    }

    /// Append the video data carried by `packets` to `out`.
    pub fn extract(&mut self, packets: &[u8], out: &mut BytesMut) {
        for packet in packets.chunks_exact(PACKET_SIZE) {
            if let Some((id, es)) = pes_start(packet) {
                if is_video_stream(id) && self.video_pid.is_none_or(|p| p == pid(packet)) {
                    self.video_pid = Some(pid(packet));
                    self.in_pes = true;
                    out.extend_from_slice(es);
                    continue;
                }
            }
            if self.in_pes && Some(pid(packet)) == self.video_pid {
                if payload_unit_start(packet) {
                    // A new unit on the video PID that is not a video PES: stop.
                    self.in_pes = false;
                    continue;
                }
                out.extend_from_slice(payload(packet));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pid: u16, pusi: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0xffu8; PACKET_SIZE];
        p[0] = SYNC_BYTE;
        p[1] = ((pid >> 8) as u8 & 0x1f) | if pusi { 0x40 } else { 0 };
        p[2] = pid as u8;
        p[3] = 0x10;
        p[4..4 + payload.len()].copy_from_slice(payload);
        p
    }

    fn video_pes(es: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1];
        v.extend_from_slice(es);
        v
    }

    #[test]
    fn splits_on_packet_boundaries_across_pushes() {
        let stream: Vec<u8> = (0..5).flat_map(|i| packet(0x100 + i, false, &[])).collect();
        let mut s = PacketSplitter::new();
        let mut out = Vec::new();
        for piece in stream.chunks(100) {
            let packets = s.push(piece).unwrap();
            assert_eq!(packets.len() % PACKET_SIZE, 0);
            out.extend_from_slice(&packets);
        }
        assert_eq!(out, stream);
    }

    #[test]
    fn rejects_non_ts_and_resyncs_after_garbage() {
        assert_eq!(
            PacketSplitter::new().push(b"hello"),
            Err(TsError::NotTs(b'h'))
        );
        assert_eq!(
            PacketSplitter::new().push(&b"GET / HTTP/1.1\r\n".repeat(20)),
            Err(TsError::NoSecondPacket(b"GET / HTTP/1.1\r\n"[188 % 16]))
        );
        let mut s = PacketSplitter::new();
        let mut stream = [packet(1, false, &[]), packet(1, false, &[])].concat();
        stream.extend_from_slice(&[1, 2, 3, 4, 5]);
        for _ in 0..3 {
            stream.extend(packet(2, false, &[]));
        }
        let out = s.push(&stream).unwrap();
        assert_eq!(out.len(), 5 * PACKET_SIZE);
        assert_eq!(s.dropped_bytes, 5);
        let mut garbage = PacketSplitter::new();
        let mut long = [packet(1, false, &[]), packet(1, false, &[])].concat();
        long.extend(vec![0u8; MAX_GARBAGE_BYTES as usize + 1000]);
        assert!(matches!(garbage.push(&long), Err(TsError::LostSync(_))));
    }

    /// Deterministic noise (xorshift).
    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn random_bytes_after_a_valid_stream_are_never_passed_on() {
        let valid: Vec<u8> = (0..20)
            .flat_map(|i| packet(0x100 + i, i == 0, &[]))
            .collect();
        for piece in [100, 188, 1316, 4096] {
            let mut stream = valid.clone();
            stream.extend(noise(1 << 20));
            let mut s = PacketSplitter::new();
            let mut out = Vec::new();
            let mut error = None;
            for chunk in stream.chunks(piece) {
                match s.push(chunk) {
                    Ok(packets) => out.extend_from_slice(&packets),
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            assert_eq!(out, valid, "chunks of {piece}: garbage passed on");
            assert!(
                matches!(error, Some(TsError::LostSync(n)) if n as u64 <= MAX_GARBAGE_BYTES + 4096),
                "chunks of {piece}: {error:?}"
            );
        }
    }

    #[test]
    fn join_points_and_sequence_size() {
        let pat = packet(0, true, &[0, 0, 0xb0]);
        let mid = packet(0x100, false, &[1, 2, 3]);
        let seq = packet(
            0x100,
            true,
            &video_pes(&[0, 0, 1, 0xb3, 0x28, 0x01, 0xe0, 0x13]),
        );
        let pframe = packet(0x100, true, &video_pes(&[0, 0, 1, 0x00, 0, 0]));
        assert!(is_join_point(&pat));
        assert!(!is_join_point(&mid));
        assert!(is_join_point(&seq));
        assert!(!is_join_point(&pframe));
        let run: Vec<u8> = [mid.clone(), pframe.clone(), seq.clone()].concat();
        assert_eq!(find_join_point(&run), Some(2 * PACKET_SIZE));
        let (_, es) = pes_start(&seq).unwrap();
        assert_eq!(sequence_header_size(es), Some((640, 480)));

        let mut ex = VideoEsExtractor::new();
        let mut out = BytesMut::new();
        ex.extract(&[pat, seq, mid].concat(), &mut out);
        assert!(out.starts_with(&[0, 0, 1, 0xb3]));
        assert!(out.len() > PACKET_SIZE);
    }
}
