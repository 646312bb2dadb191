//! What browsers send as their microphone, as the playback takes it: any sequence of
//! RTP sequence numbers, timestamps and payloads (Opus or not) from a few talkers, with
//! hang-ups between, through the per-talker jitter buffers, Opus decoders and the mix.
//! Nothing may panic, what is held stays bounded, and every tick makes one full frame.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use peregrine::media::audio::mic::MicPacket;
use peregrine::media::audio::opus::FRAME_LEN;
use peregrine::mic::jitter::CAPACITY;
use peregrine::mic::mixer::Mixer;

fuzz_target!(|data: &[u8]| {
    let mut mixer = Mixer::new();
    let mut now = Instant::now();
    let mut out = vec![0i16; FRAME_LEN];
    let mut rest = data;
    // Each record: talker, op, seq (2), timestamp (4), payload length, payload.
    while rest.len() >= 9 {
        let (head, tail) = rest.split_at(9);
        let talker = u64::from(head[0] % 4);
        let seq = u16::from_be_bytes([head[2], head[3]]);
        let timestamp = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let len = usize::from(head[8]).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        match head[1] % 8 {
            0 => {
                mixer.left(talker);
            }
            1 => {
                now += Duration::from_millis(20);
                mixer.mix(now, &mut out);
            }
            _ => {
                mixer.push(
                    MicPacket {
                        talker,
                        seq,
                        timestamp,
                        payload: Bytes::copy_from_slice(payload),
                    },
                    now,
                );
            }
        }
        assert!(mixer.held() <= 4 * CAPACITY, "held {}", mixer.held());
    }
    now += Duration::from_millis(20);
    mixer.mix(now, &mut out);
    assert_eq!(out.len(), FRAME_LEN);
});
