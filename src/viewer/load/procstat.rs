//! CPU time and resident memory of a process, and busy time of the whole machine,
//! read from Linux `/proc`.

use anyhow::{anyhow, Context, Result};

/// Cumulative CPU time (user + system) of process `pid` in milliseconds.
pub fn cpu_ms(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces; fields follow the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15 (1-based, man proc).
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("no field {i} in /proc/{pid}/stat"))
    };
    Ok((ticks(14)? + ticks(15)?) * 1000.0 / ticks_per_second())
}

/// Resident set size of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// Busy and total CPU time of the machine (all cores) in milliseconds, from /proc/stat.
pub fn machine_ms() -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("no cpu line in /proc/stat"))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...; idle and iowait are not busy.
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    let k = 1000.0 / ticks_per_second();
    Ok(((total - idle) * k, total * k))
}

fn ticks_per_second() -> f64 {
    crate::sys::process::clock_ticks_per_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_figures_are_read() {
        let pid = std::process::id();
        let before = cpu_ms(pid).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(cpu_ms(pid).unwrap() >= before);
        assert!(rss_kib(pid).unwrap() > 100);
        let (busy, total) = machine_ms().unwrap();
        assert!(total > busy && busy > 0.0);
    }
}
