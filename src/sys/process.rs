//! Facts about this process the kernel keeps: resource limits, ids, and the units
//! `/proc` figures are counted in.

use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
use nix::unistd::{geteuid, sysconf, SysconfVar};

/// The soft open-file limit (None when unlimited or unknown).
pub fn open_file_limit() -> Option<u64> {
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    (soft != RLIM_INFINITY).then_some(soft)
}

/// Raise the soft open-file limit to the hard one, as most servers do, and return the
/// soft limit now in force (None when unlimited or unknown).
pub fn raise_open_file_limit() -> Option<u64> {
    let (mut soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        soft = hard;
    }
    (soft != RLIM_INFINITY).then_some(soft)
}

/// The effective user id, which owns what this process creates.
pub fn effective_uid() -> u32 {
    geteuid().as_raw()
}

/// Bytes per memory page (the unit of `/proc/*/statm`); 4096 if the system will not say.
pub fn page_size() -> u64 {
    match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(size)) if size > 0 => size as u64,
        _ => 4096,
    }
}

/// Clock ticks per second (the unit of CPU times in `/proc/*/stat`); 100 if unknown.
pub fn clock_ticks_per_second() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}

/// Have the kernel send this process SIGTERM (a clean stop) when the process that
/// started it ends, as µStreamer's `--exit-on-parent-death`. Fails when the parent is
/// gone already.
pub fn stop_with_parent() -> anyhow::Result<()> {
    let parent = nix::unistd::getppid();
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .map_err(|e| anyhow::anyhow!("cannot ask to be stopped with the parent process: {e}"))?;
    // It may have ended before the request was in place.
    if nix::unistd::getppid() != parent {
        anyhow::bail!("the parent process {parent} has ended already");
    }
    Ok(())
}

/// Have the kernel kill the child `command` starts when this process ends, however it
/// ends: a crash or SIGKILL skips every clean-up, and a helper such as ffmpeg blocked on
/// a pipe would otherwise outlive the server for good.
///
/// The signal follows the thread that started the child; the runtime's worker threads
/// live as long as the server.
#[cfg(target_os = "linux")]
pub fn end_with_this_process(command: &mut tokio::process::Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // This process may have ended between the fork and the request.
            if nix::unistd::getppid() != parent {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn end_with_this_process(_command: &mut tokio::process::Command) {}
