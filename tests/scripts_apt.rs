//! The install scripts must wait for another apt (unattended-upgrades) instead of
//! failing at once. A stand-in `apt-get` first in PATH answers as apt 2.6 does while
//! another process holds a lock, and records every call; the real lock behaviour was
//! checked by hand (see scripts/lib/apt.sh).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A PATH directory with an `apt-get` whose first `busy_updates` updates fail on the
/// lists lock, and a `sudo` that just runs its command.
fn fake_apt(dir: &Path, busy_updates: u32) {
    std::fs::create_dir_all(dir).unwrap();
    write_exec(
        &dir.join("apt-get"),
        &format!(
            r#"#!/bin/bash
echo "$*" >> "{log}"
if [[ " $* " == *" update "* ]]; then
  n=$(grep -c ' update' "{log}")
  if [ "$n" -le {busy_updates} ]; then
    echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 1 (apt-get)" >&2
    exit 100
  fi
fi
"#,
            log = dir.join("calls").display()
        ),
    );
    write_exec(&dir.join("sudo"), "#!/bin/sh\nexec \"$@\"\n");
}

fn run_apt_install(dir: &Path, wait_s: u32) -> std::process::Output {
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    Command::new("bash")
        .args([
            "-c",
            "set -euo pipefail; . scripts/lib/apt.sh; apt_install pkg-a pkg-b",
        ])
        .current_dir(ROOT)
        .env("PATH", path)
        .env("APT_LOCK_WAIT", wait_s.to_string())
        .env("APT_LOCK_RETRY_SECONDS", "0.05")
        .output()
        .unwrap()
}

#[test]
fn apt_install_waits_for_a_busy_lists_lock_and_passes_the_dpkg_lock_timeout() {
    let dir = std::env::temp_dir().join(format!("peregrine-apt-{}-wait", std::process::id()));
    fake_apt(&dir, 2);
    let out = run_apt_install(&dir, 30);
    assert!(out.status.success(), "{out:?}");
    let calls = std::fs::read_to_string(dir.join("calls")).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(
        calls.len(),
        4,
        "three updates (two busy) and one install: {calls:?}"
    );
    for call in &calls {
        assert!(call.contains("DPkg::Lock::Timeout=30"), "{call}");
    }
    assert!(calls[3].contains("install -y -qq pkg-a pkg-b"), "{calls:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn apt_install_gives_up_after_its_bound() {
    let dir = std::env::temp_dir().join(format!("peregrine-apt-{}-bound", std::process::id()));
    fake_apt(&dir, u32::MAX);
    let started = std::time::Instant::now();
    let out = run_apt_install(&dir, 1);
    assert!(!out.status.success());
    assert!(started.elapsed().as_secs() < 10);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Could not get lock"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_apt_get_in_the_scripts_goes_through_apt_install() {
    for entry in std::fs::read_dir(Path::new(ROOT).join("scripts")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "sh") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let code = line.split('#').next().unwrap_or_default();
            let runs_apt = code.contains("apt-get ")
                && !code.contains("command -v apt-get")
                && !code.contains("echo");
            assert!(
                !runs_apt,
                "{}: call apt_install (scripts/lib/apt.sh) instead: {line}",
                path.display()
            );
        }
    }
}
