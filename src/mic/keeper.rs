//! When the playback device is open: as the plugin does, only while somebody talks
//! (and for a second after, so a pause between words does not close it). A device that
//! cannot be opened, or fails while playing, is tried again with a growing delay, and
//! said in the log at most every few seconds. Time is passed in.

use std::time::{Duration, Instant};

use super::device::{DeviceError, PlaybackDevice, Wrote};
use crate::ratelog::RateLimited;

/// The device stays open this long after the last talker.
pub const CLOSE_AFTER: Duration = Duration::from_secs(1);
/// The first delay before opening a failed device again; it doubles up to
/// [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
pub const MAX_RETRY: Duration = Duration::from_secs(5);

/// Opens the device.
pub type Opener<D> = Box<dyn FnMut() -> Result<D, DeviceError>>;

/// What happened to the device at one tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// Closed, and nobody needs it.
    Closed,
    /// Needed but not open (waiting to try again).
    Unavailable,
    Wrote(Wrote),
}

/// Holds the device open while it is needed.
pub struct DeviceKeeper<D> {
    name: String,
    open: Opener<D>,
    device: Option<D>,
    last_needed: Option<Instant>,
    retry_at: Option<Instant>,
    retry: Duration,
    failures: RateLimited,
}

impl<D: PlaybackDevice> DeviceKeeper<D> {
    pub fn new(name: &str, open: Opener<D>) -> DeviceKeeper<D> {
        DeviceKeeper {
            name: name.to_string(),
            open,
            device: None,
            last_needed: None,
            retry_at: None,
            retry: FIRST_RETRY,
            failures: RateLimited::new(crate::ratelog::PERIOD),
        }
    }

    pub fn is_open(&self) -> bool {
        self.device.is_some()
    }

    /// One tick: play `frame` if the device is needed (`talking`, or was within
    /// [`CLOSE_AFTER`]), opening it first when it is not open.
    pub fn tick(&mut self, now: Instant, talking: bool, frame: &[i16]) -> Tick {
        if talking {
            self.last_needed = Some(now);
        }
        let needed = self
            .last_needed
            .is_some_and(|t| now.saturating_duration_since(t) < CLOSE_AFTER);
        if !needed {
            if self.device.take().is_some() {
                tracing::info!(device = %self.name, "microphone playback closed: nobody talks");
            }
            // The next talker gets a fresh try.
            (self.retry_at, self.retry) = (None, FIRST_RETRY);
            return Tick::Closed;
        }
        let device = match &mut self.device {
            Some(device) => device,
            None => {
                if self.retry_at.is_some_and(|t| now < t) {
                    return Tick::Unavailable;
                }
                match (self.open)() {
                    Ok(device) => {
                        tracing::info!(device = %self.name, "microphone playback opened");
                        self.device.insert(device)
                    }
                    Err(e) => {
                        self.failed(now, "cannot open the microphone playback device", e);
                        return Tick::Unavailable;
                    }
                }
            }
        };
        match device.write(frame) {
            Ok(wrote) => {
                self.retry = FIRST_RETRY;
                Tick::Wrote(wrote)
            }
            Err(e) => {
                self.device = None;
                self.failed(now, "microphone playback failed; opening it again", e);
                Tick::Unavailable
            }
        }
    }

    fn failed(&mut self, now: Instant, what: &str, e: DeviceError) {
        if let Some(count) = self.failures.hit() {
            tracing::warn!(device = %self.name, error = %e, count, "{what}");
        }
        self.retry_at = Some(now + self.retry);
        self.retry = (self.retry * 2).min(MAX_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Frames written, and whether the next open or write fails.
    #[derive(Default)]
    struct Log {
        opens: usize,
        frames: usize,
        open_fails: bool,
        write_fails: bool,
    }

    struct Mock(Rc<RefCell<Log>>);

    impl PlaybackDevice for Mock {
        fn write(&mut self, _frame: &[i16]) -> Result<Wrote, DeviceError> {
            let mut log = self.0.borrow_mut();
            if log.write_fails {
                return Err(DeviceError("gone".into()));
            }
            log.frames += 1;
            Ok(Wrote::Played)
        }
    }

    fn keeper() -> (DeviceKeeper<Mock>, Rc<RefCell<Log>>) {
        let log = Rc::new(RefCell::new(Log::default()));
        let shared = log.clone();
        let open: Opener<Mock> = Box::new(move || {
            let mut l = shared.borrow_mut();
            l.opens += 1;
            match l.open_fails {
                true => Err(DeviceError("no such device".into())),
                false => Ok(Mock(shared.clone())),
            }
        });
        (DeviceKeeper::new("test", open), log)
    }

    const TICK: Duration = Duration::from_millis(20);
    const FRAME: [i16; 4] = [0; 4];

    #[test]
    fn open_only_while_somebody_talks_and_a_second_after() {
        let (mut k, log) = keeper();
        let t = Instant::now();
        assert_eq!(k.tick(t, false, &FRAME), Tick::Closed);
        assert_eq!(log.borrow().opens, 0, "nobody talks: not opened");
        assert_eq!(k.tick(t, true, &FRAME), Tick::Wrote(Wrote::Played));
        assert!(k.is_open());
        // Silence after the last word keeps it open, and playing, for a second.
        let mut now = t;
        while now < t + CLOSE_AFTER - TICK {
            now += TICK;
            assert_eq!(k.tick(now, false, &FRAME), Tick::Wrote(Wrote::Played));
        }
        assert_eq!(k.tick(t + CLOSE_AFTER, false, &FRAME), Tick::Closed);
        assert!(!k.is_open());
        assert_eq!(log.borrow().opens, 1);
        assert_eq!(log.borrow().frames, 50);
    }

    #[test]
    fn a_failing_device_is_retried_with_growing_delays() {
        let (mut k, log) = keeper();
        log.borrow_mut().open_fails = true;
        let t = Instant::now();
        let mut opens_at = Vec::new();
        for tick in 0..300u32 {
            let now = t + TICK * tick;
            let before = log.borrow().opens;
            assert_eq!(k.tick(now, true, &FRAME), Tick::Unavailable);
            if log.borrow().opens > before {
                opens_at.push(tick * 20);
            }
        }
        // 250 ms, then 500, 1000, 2000, 4000 (5000 at most).
        assert_eq!(opens_at, [0, 260, 760, 1760, 3760]);
        // It comes back: the next try opens it.
        log.borrow_mut().open_fails = false;
        let mut now = t + TICK * 300;
        while k.tick(now, true, &FRAME) == Tick::Unavailable {
            now += TICK;
            assert!(now < t + Duration::from_secs(12));
        }
        assert!(k.is_open());
        // A device that fails while playing is closed and opened again.
        log.borrow_mut().write_fails = true;
        assert_eq!(k.tick(now, true, &FRAME), Tick::Unavailable);
        assert!(!k.is_open());
        log.borrow_mut().write_fails = false;
        assert_eq!(
            k.tick(now + FIRST_RETRY, true, &FRAME),
            Tick::Wrote(Wrote::Played)
        );
    }
}
