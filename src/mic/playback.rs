//! The playback thread: every 20 ms by its own clock it takes in what the engine
//! handed over, mixes one frame of every talker and gives it to the device. The clock
//! is ours because ALSA's null and file plugins do not pace at all; a real device's
//! own pace is kept in step by skipping a frame when it holds enough (see
//! [`super::device`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::Receiver;

use super::device::{AlsaMessages, AlsaPlayback, DeviceError, PlaybackDevice, Wrote};
use super::keeper::{DeviceKeeper, Opener, Tick};
use super::mixer::Mixer;
use super::stats::{LevelMeter, MicStats};
use crate::media::audio::mic::{MicEvent, MIC_QUEUE};
use crate::media::audio::opus::FRAME_LEN;
use crate::media::audio::FRAME_US;

const TICK: Duration = Duration::from_micros(FRAME_US);
/// Behind the clock by more than this (the machine was suspended or starved), the
/// clock starts afresh instead of running the missed ticks back to back.
const MAX_BEHIND: Duration = Duration::from_millis(100);

/// Start playing the talkers of `events` on the ALSA device `device` until `stop` is
/// set or every sender is gone.
pub fn spawn(
    device: &str,
    events: Receiver<MicEvent>,
    stats: Arc<MicStats>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = device.to_string();
    std::thread::Builder::new()
        .name("mic-playback".into())
        .spawn(move || {
            let mut messages = AlsaMessages::capture();
            let device = name.clone();
            let open: Opener<AlsaPlayback> = Box::new(move || {
                AlsaPlayback::open(&device).map_err(|e| {
                    let said = messages.take();
                    match said.is_empty() {
                        true => e,
                        false => DeviceError(format!("{e} ({said})")),
                    }
                })
            });
            run(DeviceKeeper::new(&name, open), events, &stats, &stop);
        })
}

/// The loop of the thread, over any device.
pub fn run<D: PlaybackDevice>(
    mut keeper: DeviceKeeper<D>,
    mut events: Receiver<MicEvent>,
    stats: &MicStats,
    stop: &AtomicBool,
) {
    let mut mixer = Mixer::new();
    let mut meter = LevelMeter::default();
    let mut frame = vec![0i16; FRAME_LEN];
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        // At most a queue's worth per tick, so a flood cannot hold up the clock.
        for _ in 0..MIC_QUEUE {
            match events.try_recv() {
                Ok(MicEvent::Packet(packet)) => stats.add(mixer.push(packet, now)),
                Ok(MicEvent::Left(talker)) => stats.add(mixer.left(talker)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        stats.add(mixer.mix(now, &mut frame));
        let talking = mixer.talkers() > 0;
        match keeper.tick(now, talking, &frame) {
            Tick::Wrote(Wrote::Skipped) => stats.skipped(),
            Tick::Wrote(Wrote::AfterUnderrun) => stats.underrun(),
            Tick::Wrote(Wrote::Played) | Tick::Closed | Tick::Unavailable => {}
        }
        stats.set_state(keeper.is_open(), mixer.talkers(), mixer.held());
        if let Some(dbfs) = meter.add(&frame) {
            stats.set_level(dbfs);
        }
        next += TICK;
        let now = Instant::now();
        if now > next + MAX_BEHIND {
            next = now;
        }
        std::thread::sleep(next.saturating_duration_since(now));
    }
}
