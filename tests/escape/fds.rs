//! Host descriptors and the cwd (the runc CVE-2024-21626 class): descriptors nvbind inherits
//! must not reach the container (nor its created init), and a cwd through /proc/self/fd/N or
//! /proc/self/cwd must not lead out of the rootfs.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use super::common::*;
use super::{install_attacker, sibling_of, with_ptrace, SECRET};

/// Host objects a container must not reach: a directory holding a marker file.
struct Host {
    dir: PathBuf,
    marker: PathBuf,
}

impl Host {
    fn new(env: &Env) -> Self {
        let dir = env.dir.path().join("host");
        fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("marker");
        fs::write(&marker, SECRET).unwrap();
        Self { dir, marker }
    }

    /// Descriptors 3..=`last`, alternately the host directory and the marker file.
    fn fds(&self, last: RawFd) -> Vec<(OwnedFd, RawFd)> {
        (3..=last)
            .map(|n| {
                let p = if n % 2 == 1 { &self.dir } else { &self.marker };
                (OwnedFd::from(File::open(p).unwrap()), n)
            })
            .collect()
    }
}

/// Makes the child inherit each (descriptor, number) pair open and not close-on-exec.
fn inherit(c: &mut Command, fds: Vec<(OwnedFd, RawFd)>) {
    assert!(fds.len() <= 32);
    let pairs: Vec<(RawFd, RawFd)> = fds.iter().map(|(f, n)| (f.as_raw_fd(), *n)).collect();
    // SAFETY: between fork and exec the closure only calls fcntl and dup2 on a fixed array.
    unsafe {
        c.pre_exec(move || {
            let _open_until_spawn = &fds;
            // First above every target, so that placing one never clobbers another's source.
            let mut high = [-1; 32];
            for (i, (src, _)) in pairs.iter().enumerate() {
                high[i] = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 100);
            }
            for (i, (_, dst)) in pairs.iter().enumerate() {
                // dup2 leaves the new descriptor without FD_CLOEXEC.
                if libc::dup2(high[i], *dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
}

/// `nvbind --root ROOT ARGS` with inherited host descriptors; output through files.
fn nvbind_with(env: &Env, args: &[&str], fds: Vec<(OwnedFd, RawFd)>) -> (i32, String, String) {
    let (out, err) = (
        env.dir.path().join(".fd-out"),
        env.dir.path().join(".fd-err"),
    );
    let mut c = Command::new(NVBIND);
    c.arg("--root")
        .arg(&env.root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap());
    inherit(&mut c, fds);
    let code = c.status().unwrap().code().unwrap_or(-1);
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    (code, read(&out), read(&err))
}

/// The descriptor numbers in `escape fds` output.
fn fd_numbers(listing: &str) -> BTreeSet<i32> {
    listing
        .lines()
        .filter_map(|l| l.split(" -> ").next()?.parse().ok())
        .collect()
}

fn set(v: &[i32]) -> BTreeSet<i32> {
    v.iter().copied().collect()
}

#[test]
fn control_fd_lister_sees_inherited_descriptors() {
    // Run on the host with the same inheritance: the lister does see them, so a leak into a
    // container would be seen too.
    let env = Env::new();
    let host = Host::new(&env);
    let b = env.bundle("b", &["true"]);
    install_attacker(&b);
    let mut c = Command::new(b.join("rootfs/escape"));
    c.arg("fds").stdin(Stdio::null());
    inherit(&mut c, host.fds(6));
    let out = String::from_utf8(c.output().unwrap().stdout).unwrap();
    assert!(
        fd_numbers(&out).is_superset(&set(&[0, 1, 2, 3, 4, 5, 6])),
        "{out}"
    );
    assert!(out.contains(host.dir.to_str().unwrap()), "{out}");
}

#[test]
fn run_and_create_start_pass_only_stdio_and_preserved_fds() {
    let env = Env::new();
    let host = Host::new(&env);
    let b = env.bundle("b", &["/escape", "fds"]);
    install_attacker(&b);
    let bs = b.to_str().unwrap();

    let (code, out, err) = nvbind_with(&env, &["run", "-b", bs, "r1"], host.fds(9));
    assert_eq!(code, 0, "{err}");
    assert_eq!(fd_numbers(&out), set(&[0, 1, 2]), "run leaked:\n{out}");

    let (code, out, err) = nvbind_with(
        &env,
        &["run", "--preserve-fds", "2", "-b", bs, "r2"],
        host.fds(9),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        fd_numbers(&out),
        set(&[0, 1, 2, 3, 4]),
        "run --preserve-fds 2:\n{out}"
    );

    // create keeps the init waiting, start releases it; both inherit host descriptors.
    let (code, _, err) = nvbind_with(&env, &["create", "-b", bs, "c1"], host.fds(9));
    assert_eq!(code, 0, "{err}");
    let out_path = env.dir.path().join(".fd-out");
    fs::rename(&out_path, env.dir.path().join("create-out")).unwrap();
    let (code, _, err) = nvbind_with(&env, &["start", "c1"], host.fds(9));
    assert_eq!(code, 0, "{err}");
    assert!(wait_for(|| env.state("c1")["status"] == "stopped"));
    let out = fs::read_to_string(env.dir.path().join("create-out")).unwrap();
    assert_eq!(
        fd_numbers(&out),
        set(&[0, 1, 2]),
        "create+start leaked:\n{out}"
    );
    env.ok(&["delete", "c1"]);
    eprintln!("run, run --preserve-fds 2, create+start with host fds 3..=9 inherited: no leak");
    env.assert_clean();
}

#[test]
fn exec_passes_only_stdio_and_preserved_fds() {
    let env = Env::new();
    let host = Host::new(&env);
    let b = env.bundle("b", &["sleep", "1000"]);
    install_attacker(&b);
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "a"]);

    let (code, out, err) = nvbind_with(&env, &["exec", "a", "/escape", "fds"], host.fds(9));
    assert_eq!(code, 0, "{err}");
    assert_eq!(fd_numbers(&out), set(&[0, 1, 2]), "exec leaked:\n{out}");

    let args = ["exec", "--preserve-fds", "1", "a", "/escape", "fds"];
    let (code, out, err) = nvbind_with(&env, &args, host.fds(9));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        fd_numbers(&out),
        set(&[0, 1, 2, 3]),
        "exec --preserve-fds 1:\n{out}"
    );
    env.ok(&["delete", "-f", "a"]);
    env.assert_clean();
}

/// A created init holds what nvbind held until it execs. Container A (CAP_SYS_PTRACE) shares
/// its PID namespace with container B, created by an nvbind that inherited host descriptors
/// 3..=9 (a host directory and a file); A walks every /proc/PID/fd/N of B's init.
fn sibling_walks_created_init_fds(preserve: Option<&str>) -> String {
    let env = Env::new();
    let host = Host::new(&env);
    let a = env.bundle("a", &["sleep", "1000"]);
    install_attacker(&a);
    with_ptrace(&env, &a);
    env.ok(&["run", "-d", "-b", a.to_str().unwrap(), "a"]);
    let b = sibling_of(&env, "a", "b");
    let mut args = vec!["create"];
    if let Some(n) = preserve {
        args.extend(["--preserve-fds", n]);
    }
    args.extend(["-b", b.to_str().unwrap(), "b"]);
    let (code, _, err) = nvbind_with(&env, &args, host.fds(9));
    assert_eq!(code, 0, "{err}");
    let out = env.ok(&["exec", "a", "/escape", "procfd", NVBIND, "marker"]);
    eprintln!("created init, --preserve-fds {preserve:?}: {out}");
    env.ok(&["delete", "-f", "b"]);
    env.ok(&["delete", "-f", "a"]);
    env.assert_clean();
    out
}

#[test]
fn created_init_holds_no_inherited_host_fds() {
    let out = sibling_walks_created_init_fds(None);
    assert!(out.contains("done pid"), "the init was not found: {out}");
    assert!(
        !out.contains("reached"),
        "a host object is reachable through the init:\n{out}"
    );
}

#[test]
fn control_created_init_holds_preserved_fds() {
    // Descriptors passed on purpose are there: the walk would see a leaked one.
    let out = sibling_walks_created_init_fds(Some("2"));
    assert!(
        out.contains("reached fd 3") && out.contains("reached fd 4"),
        "{out}"
    );
}

/// The cwds an attacker would pass: descriptors nvbind holds (inherited ones at 3..=6 point
/// at the host directory or marker, nvbind's own come after), and /proc paths to the cwd.
fn hostile_cwds() -> Vec<String> {
    let mut cwds: Vec<String> = (3..=20).map(|n| format!("/proc/self/fd/{n}")).collect();
    for p in [
        "/proc/self/cwd/../../..",
        "/proc/1/cwd/../..",
        "/proc/self/root/../..",
        "/proc/self/fd/3/..",
        "/proc/self/fd/5/../..",
    ] {
        cwds.push(p.to_string());
    }
    cwds
}

/// Judges one attempt: nvbind refused it (exit `refusal`, one line: 1 for run, 255 for exec as
/// runc's exec), or the process ran and reached nothing on the host. Returns "refused" or
/// "inside".
fn judge(cwd: &str, refusal: i32, code: i32, out: &str, err: &str) -> &'static str {
    assert!(
        !out.contains("reached"),
        "cwd {cwd:?} reached the host:\n{out}"
    );
    if code == 0 {
        assert!(out.contains("done"), "cwd {cwd:?}: {out} {err}");
        "inside"
    } else {
        assert_eq!(code, refusal, "cwd {cwd:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "cwd {cwd:?}: {err}");
        "refused"
    }
}

#[test]
fn control_cwd_probe_reaches_a_host_cwd() {
    let env = Env::new();
    let host = Host::new(&env);
    let b = env.bundle("b", &["true"]);
    install_attacker(&b);
    let out = Command::new(b.join("rootfs/escape"))
        .args(["cwd", host.marker.to_str().unwrap()])
        .current_dir(&host.dir)
        .output()
        .unwrap();
    let out = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.contains("reached dotdot") && out.contains("reached basename"),
        "{out}"
    );
}

#[test]
fn run_with_hostile_cwd_stays_in_rootfs() {
    let env = Env::new();
    let host = Host::new(&env);
    let marker = host.marker.to_str().unwrap();
    let b = env.bundle("b", &["/escape", "cwd", marker]);
    install_attacker(&b);
    let (mut refused, mut inside) = (0, 0);
    for (i, cwd) in hostile_cwds().iter().enumerate() {
        env.edit(&b, |c| c["process"]["cwd"] = json!(cwd));
        let id = format!("c{i}");
        let args = ["run", "-b", b.to_str().unwrap(), &id];
        let (code, out, err) = nvbind_with(&env, &args, host.fds(6));
        match judge(cwd, 1, code, &out, &err) {
            "refused" => refused += 1,
            _ => inside += 1,
        }
        // A refused run may leave nothing; a finished one is gone already.
        let _ = env.nvbind(&["delete", "-f", &id]);
    }
    eprintln!("run with hostile cwd: {refused} refused, {inside} ran inside the rootfs, 0 escaped");
    env.assert_clean();
}

#[test]
fn exec_with_hostile_cwd_stays_in_rootfs() {
    let env = Env::new();
    let host = Host::new(&env);
    let marker = host.marker.to_str().unwrap();
    let b = env.bundle("b", &["sleep", "1000"]);
    install_attacker(&b);
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "a"]);
    let (mut refused, mut inside) = (0, 0);
    for cwd in hostile_cwds() {
        let args = ["exec", "--cwd", &cwd, "a", "/escape", "cwd", marker];
        let (code, out, err) = nvbind_with(&env, &args, host.fds(6));
        match judge(&cwd, 255, code, &out, &err) {
            "refused" => refused += 1,
            _ => inside += 1,
        }
    }
    eprintln!(
        "exec with hostile cwd: {refused} refused, {inside} ran inside the rootfs, 0 escaped"
    );
    env.ok(&["delete", "-f", "a"]);
    env.assert_clean();
}

/// What a created init holds that lives outside its rootfs, as the host sees it.
fn created_init_host_fds(env: &Env, id: &str) -> Vec<String> {
    let pid = env.state(id)["pid"].as_i64().unwrap();
    let mut out = Vec::new();
    for e in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if let Ok(target) = fs::read_link(e.path()) {
            if target.starts_with(env.dir.path()) {
                out.push(target.display().to_string());
            }
        }
    }
    out
}

/// The state root's lock file is open (its ID's byte locked) while the init is cloned; an init
/// that kept it would let a process reopening /proc/<init>/fd/N (CAP_SYS_PTRACE, shared PID
/// namespace) lock the whole file and stall every create on the host. The --log file is there on purpose (the init reports
/// its errors there), which shows the scan sees the runtime's host files.
#[test]
fn created_init_holds_no_runtime_lock() {
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "1000"]);
    let log = env.dir.path().join("nvbind.log");
    env.ok(&[
        "--log",
        log.to_str().unwrap(),
        "create",
        "-b",
        b.to_str().unwrap(),
        "c",
    ]);
    let held = created_init_host_fds(&env, "c");
    assert!(
        held.iter().any(|p| p.ends_with("nvbind.log")),
        "control: the scan missed the log file: {held:?}"
    );
    assert!(
        !held.iter().any(|p| p.contains(".nvbind")),
        "the created init holds the runtime's lock: {held:?}"
    );
    env.ok(&["delete", "-f", "c"]);
    env.assert_clean();
}
