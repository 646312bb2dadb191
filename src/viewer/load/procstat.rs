//! CPU time and resident memory of a process, and busy time of the whole machine,
//! read from Linux `/proc`.

use anyhow::{anyhow, Context, Result};

/// Cumulative CPU time (user + system) of process `pid` in milliseconds.
pub fn cpu_ms(pid: u32) -> Result<f64> {
    stat_cpu_ms(&format!("/proc/{pid}/stat"))
}

/// One thread of a process: its id, its name and its CPU time so far (ms).
#[derive(Clone, Debug)]
pub struct ThreadCpu {
    pub tid: u32,
    pub name: String,
    pub cpu_ms: f64,
}

/// Every thread of process `pid` with its CPU time; threads that end while being read
/// are left out.
pub fn threads(pid: u32) -> Result<Vec<ThreadCpu>> {
    let dir = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {dir}"))? {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        let (Ok(name), Ok(cpu_ms)) = (
            std::fs::read_to_string(path.join("comm")),
            stat_cpu_ms(&path.join("stat").to_string_lossy()),
        ) else {
            continue;
        };
        out.push(ThreadCpu {
            tid,
            name: name.trim_end().to_string(),
            cpu_ms,
        });
    }
    Ok(out)
}

/// CPU time between two [`threads`] readings, in % of one core over `secs`, summed by
/// thread name (a pool's threads share one), busiest first. Threads in both count.
pub fn thread_groups(before: &[ThreadCpu], after: &[ThreadCpu], secs: f64) -> Vec<ThreadGroup> {
    let mut groups: Vec<ThreadGroup> = Vec::new();
    for t in after {
        let Some(b) = before.iter().find(|b| b.tid == t.tid) else {
            continue;
        };
        let pct = (t.cpu_ms - b.cpu_ms).max(0.0) / secs.max(1e-9) / 10.0;
        match groups.iter_mut().find(|g| g.name == t.name) {
            Some(g) => {
                g.threads += 1;
                g.cpu_pct += pct;
                g.busiest_pct = g.busiest_pct.max(pct);
            }
            None => groups.push(ThreadGroup {
                name: t.name.clone(),
                threads: 1,
                cpu_pct: pct,
                busiest_pct: pct,
            }),
        }
    }
    groups.sort_by(|a, b| b.cpu_pct.total_cmp(&a.cpu_pct));
    groups
}

/// The threads of one name and the CPU they used.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ThreadGroup {
    pub name: String,
    pub threads: usize,
    /// All of them together, % of one core.
    pub cpu_pct: f64,
    /// The busiest one alone.
    pub busiest_pct: f64,
}

fn stat_cpu_ms(path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    // The command name is in parentheses and may hold spaces; fields follow the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("odd {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15 (1-based, man proc).
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("no field {i} in {path}"))
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

    #[test]
    fn threads_are_read_by_name_and_grouped() {
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        let probe = std::thread::Builder::new()
            .name("procstat-probe".into())
            .spawn(move || {
                // The thread names itself once running.
                let _ = started.send(());
                wait.recv()
            })
            .unwrap();
        running.recv().unwrap();
        let before = threads(std::process::id()).unwrap();
        let _ = stop.send(());
        let _ = probe.join();
        assert!(
            before.iter().any(|t| t.name == "procstat-probe"),
            "{before:?}"
        );
        let first = &before[0];
        let after = vec![
            ThreadCpu {
                cpu_ms: first.cpu_ms + 500.0,
                ..first.clone()
            },
            ThreadCpu {
                tid: 0,
                name: "not-there-before".into(),
                cpu_ms: 1.0,
            },
        ];
        let groups = thread_groups(&before, &after, 1.0);
        assert_eq!(groups.len(), 1, "{groups:?}");
        assert!((groups[0].cpu_pct - 50.0).abs() < 1e-9);
        assert_eq!(
            (groups[0].threads, groups[0].name.as_str()),
            (1, first.name.as_str())
        );
    }
}
