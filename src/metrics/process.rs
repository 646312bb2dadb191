//! The standard `process_*` metrics every Prometheus client library exports (memory,
//! descriptors, CPU time, start time), read from Linux `/proc/self` at each scrape.
//! A figure that cannot be read (another OS, a restricted /proc) is left out.

use std::sync::OnceLock;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let page = page_size();
        let statm = std::fs::read_to_string("/proc/self/statm").ok();
        let (virt, rss) = statm.as_deref().and_then(parse_statm).unzip();
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let fields = stat.as_deref().and_then(parse_stat);
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            rss.map(|pages| pages * page),
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            virt.map(|pages| pages * page),
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors.",
            open_fds(),
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Maximum number of open file descriptors (the soft limit).",
            max_fds(),
        )?;
        if let Some(f) = &fields {
            let cpu = (f.utime + f.stime) as f64 / ticks_per_second();
            let counter = ConstCounter::new(cpu);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                counter.metric_type(),
            )?)?;
        }
        if let Some(start) = start_time_seconds(fields.as_ref()) {
            let g = ConstGauge::new(start);
            g.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Option<u64>,
) -> Result<(), std::fmt::Error> {
    let Some(v) = value else { return Ok(()) };
    let g = ConstGauge::new(v);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

/// `size resident ...` in pages.
fn parse_statm(text: &str) -> Option<(u64, u64)> {
    let mut it = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((it.next()??, it.next()??))
}

struct StatFields {
    utime: u64,
    stime: u64,
    /// Clock ticks after boot.
    starttime: u64,
}

fn parse_stat(text: &str) -> Option<StatFields> {
    // The command name is in parentheses and may hold spaces; fields follow the last ')'.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name the state is field 3; utime 14, stime 15, starttime 22 (man proc).
    let at = |i: usize| fields.get(i - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime: at(14)?,
        stime: at(15)?,
        starttime: at(22)?,
    })
}

/// Boot time (`btime` of /proc/stat) plus the process's start ticks; read once.
fn start_time_seconds(fields: Option<&StatFields>) -> Option<f64> {
    static START: OnceLock<Option<f64>> = OnceLock::new();
    *START.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let boot = parse_btime(&stat)?;
        Some(boot as f64 + fields?.starttime as f64 / ticks_per_second())
    })
}

fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

fn max_fds() -> Option<u64> {
    crate::sys::process::open_file_limit()
}

fn page_size() -> u64 {
    crate::sys::process::page_size()
}

fn ticks_per_second() -> f64 {
    crate::sys::process::clock_ticks_per_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_parsed() {
        assert_eq!(parse_statm("2000 300 10 1 0 50 0\n"), Some((2000, 300)));
        assert_eq!(parse_statm("junk"), None);
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 9 0 1234 \
                    100000 300 rest";
        let f = parse_stat(stat).expect("fields");
        assert_eq!((f.utime, f.stime, f.starttime), (7, 3, 1234));
        assert_eq!(
            parse_btime("cpu 1 2\nbtime 1700000000\nprocesses 5\n"),
            Some(1700000000)
        );
    }

    #[test]
    fn own_process_figures_are_read() {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let (virt, rss) = parse_statm(&statm).unwrap();
        assert!(rss > 0 && virt >= rss);
        assert!(open_fds().unwrap() >= 3);
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let start = start_time_seconds(parse_stat(&stat).as_ref()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start} vs {now}"
        );
    }
}
