//! The table: one row per figure, repeated measurements as median and range with the
//! machine's load next to them, and progress lines on stderr while it runs.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One line of the table.
pub struct Row {
    pub attack: &'static str,
    pub measure: String,
    pub value: String,
}

impl Row {
    pub fn new(attack: &'static str, measure: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            attack,
            measure: measure.into(),
            value: value.into(),
        }
    }
}

fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// A progress line on stderr, with the time since the benchmark started.
pub fn progress(msg: impl AsRef<str>) {
    eprintln!(
        "[{:6.1} s] {}",
        started().elapsed().as_secs_f64(),
        msg.as_ref()
    );
}

/// The 1-minute load average.
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A measurement repeated over runs; `None` where it did not complete within `limit`.
pub struct Samples {
    unit: Unit,
    values: Vec<(Option<f64>, f64)>,
}

#[derive(Clone, Copy)]
pub enum Unit {
    Millis,
    Fps,
    Mib,
    Percent,
}

impl Samples {
    pub fn new(unit: Unit) -> Samples {
        Samples {
            unit,
            values: Vec::new(),
        }
    }

    /// A value measured while the 1-minute load was `load`.
    pub fn push(&mut self, value: Option<f64>, load: f64) {
        self.values.push((value, load));
    }

    pub fn push_duration(&mut self, d: Option<Duration>, load: f64) {
        self.push(d.map(|d| d.as_secs_f64() * 1000.0), load);
    }

    fn fmt(&self, v: f64) -> String {
        match self.unit {
            Unit::Millis if v >= 1000.0 => format!("{:.1} s", v / 1000.0),
            Unit::Millis if v >= 10.0 => format!("{v:.0} ms"),
            Unit::Millis => format!("{v:.1} ms"),
            Unit::Fps => format!("{v:.1} fps"),
            Unit::Mib => format!("{v:.0} MiB"),
            Unit::Percent => format!("{v:.0} %"),
        }
    }

    /// `median (min–max; load a–b)`; runs that never completed are named with `limit`
    /// (e.g. "no offer within 60 s") and count as worse than any completed one.
    pub fn summary(&self, limit: &str) -> String {
        if self.values.is_empty() {
            return "not measured".into();
        }
        let mut done: Vec<f64> = self.values.iter().filter_map(|(v, _)| *v).collect();
        done.sort_by(f64::total_cmp);
        let missing = self.values.len() - done.len();
        let loads: Vec<f64> = self.values.iter().map(|(_, l)| *l).collect();
        let lo = loads.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = loads.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let load = format!("load {lo:.1}–{hi:.1}");
        let n = self.values.len();
        if done.is_empty() {
            return format!("{limit} ({n} of {n} runs; {load})");
        }
        // The median of all runs, with the incomplete ones ranked last.
        let median = if (n - 1) / 2 < done.len() {
            self.fmt(done[(n - 1) / 2])
        } else {
            limit.to_string()
        };
        let min = self.fmt(done[0]);
        let max = if missing > 0 {
            format!("{limit} in {missing} of {n}")
        } else {
            self.fmt(done[done.len() - 1])
        };
        if n == 1 {
            return format!("{median} ({load})");
        }
        format!("{median} (range {min} – {max}; {n} runs, {load})")
    }
}

impl Samples {
    /// `median (min – max)` of the completed runs, for figures that are not latencies.
    pub fn brief(&self) -> String {
        let mut done: Vec<f64> = self.values.iter().filter_map(|(v, _)| *v).collect();
        done.sort_by(f64::total_cmp);
        match done.len() {
            0 => "not measured".into(),
            1 => self.fmt(done[0]),
            n => format!(
                "{} ({} – {})",
                self.fmt(done[(n - 1) / 2]),
                self.fmt(done[0]),
                self.fmt(done[n - 1])
            ),
        }
    }
}

/// The table as Markdown, ready for the README.
pub fn print_table(bin: &str, rows: &[Row]) {
    println!();
    println!("Attack figures for {bin}");
    println!();
    println!("| attack | measure | figure |");
    println!("|---|---|---|");
    let mut last = "";
    for row in rows {
        let attack = if row.attack == last { "" } else { row.attack };
        last = row.attack;
        println!("| {attack} | {} | {} |", row.measure, row.value);
    }
}

pub fn mib(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:.0} MiB"),
        None => "(process gone)".into(),
    }
}
