//! What a test viewer decodes, told apart: live pictures of the size the source sends,
//! the NO SIGNAL picture, and anything else (another source's pictures).

use std::process::Child;
use std::time::Duration;

use anyhow::{bail, Result};
use peregrine::viewer::decoder::{DecodedFrame, H264Decoder};
use peregrine::viewer::receiver::ReceiverPeer;

/// The NO SIGNAL picture is dark grey with light letters; ffmpeg's test sources and the
/// test pattern are bright and colourful. Mean luma tells them apart with a wide margin.
pub fn is_no_signal(frame: &DecodedFrame) -> bool {
    let mut sum = 0u64;
    for row in 0..frame.height {
        let line = &frame.y[row * frame.y_stride..][..frame.width];
        sum += line.iter().map(|&v| u64::from(v)).sum::<u64>();
    }
    sum / (frame.width * frame.height) as u64 <= 70
}

/// Counts of what a viewer decoded.
#[derive(Debug, Default)]
pub struct Decoded {
    pub live: usize,
    pub no_signal: usize,
    /// Live pictures of another size than asked for.
    pub other_size: usize,
}

/// Decode until `want_live` live pictures of `size` (or `want_no_signal` NO SIGNAL
/// pictures, when asked for) have been seen, for up to `timeout`.
pub async fn decode_until(
    peer: &mut ReceiverPeer,
    decoder: &mut H264Decoder,
    want_live: usize,
    want_no_signal: usize,
    size: (usize, usize),
    timeout: Duration,
) -> Result<Decoded> {
    let done = |got: &Decoded| {
        (want_live > 0 && got.live >= want_live)
            || (want_no_signal > 0 && got.no_signal >= want_no_signal)
    };
    decode_while(peer, decoder, size, done, timeout).await
}

/// Decode until `done` says enough has been seen, for up to `timeout`; live pictures
/// count as such when they are of `size`.
pub async fn decode_while(
    peer: &mut ReceiverPeer,
    decoder: &mut H264Decoder,
    size: (usize, usize),
    done: impl Fn(&Decoded) -> bool,
    timeout: Duration,
) -> Result<Decoded> {
    let mut got = Decoded::default();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if done(&got) {
            return Ok(got);
        }
        let Ok(Some(frame)) = tokio::time::timeout_at(deadline, peer.next_frame()).await else {
            bail!("timed out: decoded {got:?}");
        };
        // A picture that refers to one lost in a switch may fail; the next IDR recovers.
        let Ok(Some(picture)) = decoder.decode(&frame.data) else {
            continue;
        };
        if is_no_signal(&picture) {
            got.no_signal += 1;
        } else if (picture.width, picture.height) == size {
            got.live += 1;
        } else {
            got.other_size += 1;
        }
    }
}

/// A helper process (an encoder, a sender) killed and reaped when dropped, so a failing
/// test leaves none behind.
pub struct KilledOnDrop(pub Child);

impl KilledOnDrop {
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}
