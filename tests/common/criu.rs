//! Helpers for the tests that checkpoint and restore with CRIU.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use super::{wait_for, Env, NVBIND};

/// CRIU runs iptables (network locking) during dump and restore, and iptables gives up when
/// another one holds the xtables lock. A restore failed twice in ~25 parallel runs of this
/// file (never when run alone); that lock is the suspected cause, so the tests take turns.
pub static CRIU_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    CRIU_TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// The CRIU nvbind would use, if `criu check` passes with it.
pub fn working_criu() -> Option<PathBuf> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: checkpoint tests need root");
        return None;
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("NVBIND_CRIU")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.push("/usr/local/sbin/criu".into());
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("criu")));
    }
    for c in candidates.into_iter().filter(|c| c.exists()) {
        let ok = Command::new(&c)
            .arg("check")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if ok.is_ok_and(|s| s.success()) {
            return Some(c);
        }
    }
    eprintln!("skipping: no criu passes `criu check` on this kernel; run scripts/setup-criu");
    None
}

/// Counts into /tmp/count, rewriting it in place at a fixed width (`1<>` opens without
/// truncating): CRIU records the size of every open file and refuses a restore where it
/// differs, so a dump that caught `echo > file` between its truncate and its write made a
/// `--leave-running` image unrestorable once the counter went on (CI of 73dd847).
pub const COUNTER: &str =
    "i=0; while true; do i=$((i+1)); printf '%08d\\n' $i 1<>/tmp/count; sleep 0.05; done";

/// A counter bundle with a writable rootfs.
pub fn counter_bundle(env: &Env, name: &str, script: &str) -> PathBuf {
    let b = env.bundle(name, &["sh", "-c", script]);
    env.edit(&b, |c| c["root"]["readonly"] = json!(false));
    b
}

pub fn count(b: &Path) -> u64 {
    fs::read_to_string(b.join("rootfs/tmp/count"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs nvbind with pipes as stdio (what engines give a container), keeping the read ends
/// open in `keep` so a detached container's stdio stays valid; asserts success.
pub fn detached(env: &Env, criu: &Path, args: &[&str], keep: &mut Vec<OwnedFd>) {
    let (r1, w1) = nix::unistd::pipe().unwrap();
    let (r2, w2) = nix::unistd::pipe().unwrap();
    let status = Command::new(NVBIND)
        .arg("--root")
        .arg(&env.root)
        .arg("--criu")
        .arg(criu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(w1))
        .stderr(Stdio::from(w2))
        .env("RUST_BACKTRACE", "0")
        .status()
        .unwrap();
    if !status.success() {
        // Nothing holds the write ends any more: read what nvbind said.
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut fs::File::from(r2), &mut err);
        panic!("nvbind {args:?} failed ({status:?}): {err}");
    }
    keep.push(r1);
    keep.push(r2);
}

pub fn with_criu<'a>(criu: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--criu", criu.to_str().unwrap()];
    v.extend_from_slice(args);
    v
}

/// Starts container "c1" from a counter bundle, detached, and waits until it counts.
pub fn start_counter(env: &Env, criu: &Path, keep: &mut Vec<OwnedFd>) -> PathBuf {
    let b = counter_bundle(env, "b", COUNTER);
    detached(
        env,
        criu,
        &["run", "-d", "-b", b.to_str().unwrap(), "c1"],
        keep,
    );
    assert!(wait_for(|| count(&b) > 2));
    b
}
