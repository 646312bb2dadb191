//! Sound without a sound card: ALSA's own `file` PCM plugin over the `null` device,
//! defined in an `.asoundrc` in a temporary HOME. A capture PCM defined here reads a raw
//! file the test wrote (`arecord -D NAME` gets its samples), so the real ALSA code path
//! runs against it. The process that opens the PCM needs HOME set to [`AlsaHome::dir`].

use std::io::Write;
use std::path::PathBuf;

/// A temporary HOME holding an `.asoundrc` and the files its PCMs read.
pub struct AlsaHome {
    pub dir: PathBuf,
}

impl AlsaHome {
    pub fn new(name: &str) -> AlsaHome {
        let dir = std::env::temp_dir().join(format!("peregrine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary HOME");
        AlsaHome { dir }
    }

    /// Define `pcm.NAME`, capturing `samples` (interleaved S16_LE at whatever rate and
    /// channels the reader asks for).
    pub fn capture_pcm(&self, name: &str, samples: &[i16]) {
        let raw = self.dir.join(format!("{name}.raw"));
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        std::fs::write(&raw, bytes).expect("write the capture file");
        let mut rc = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(".asoundrc"))
            .expect("open .asoundrc");
        writeln!(
            rc,
            "pcm.{name} {{ type file; slave.pcm \"null\"; file \"/dev/null\"; infile \"{}\"; format \"raw\" }}",
            raw.display()
        )
        .expect("write .asoundrc");
    }
}

impl Drop for AlsaHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `seconds` of a sine at `hz` and `amplitude` of full scale, sampled at `rate`, the same
/// on each of `channels`, interleaved.
pub fn sine(hz: f64, amplitude: f64, rate: u32, channels: usize, seconds: f64) -> Vec<i16> {
    let len = (f64::from(rate) * seconds) as usize;
    peregrine::media::audio::signal::sine(hz, amplitude, rate, channels, 0, len)
}
