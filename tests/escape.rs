//! Isolation attacks from inside a container, each asserted to fail (issue #9):
//! - CVE-2019-5736: a container process grabs /proc/PID/exe of a process running the nvbind
//!   binary and rewrites it once nvbind is gone. The attacks aim at a private COPY of the binary
//!   (a successful one harms nothing), and each has a control run with sealing switched off
//!   (NVBIND_UNSAFE_NO_SEAL=1) that must succeed, so the test can see a working attack.
//! - CVE-2024-21626: host descriptors inherited by nvbind must not reach the container, and a
//!   cwd through /proc/self/fd/N or /proc/self/cwd must not lead out of the rootfs
//!   (escape/fds.rs).
//!
//! The attacker is tests/fixtures/escape.c, built with `cc -static` into each rootfs.
//! Needs root, gcc and libc6-dev (scripts/test installs them).

mod common;
#[path = "escape/fds.rs"]
mod fds;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const NO_SEAL: &str = "NVBIND_UNSAFE_NO_SEAL";
const SECRET: &str = "HOST-SECRET";

/// Builds the attacker into ROOTFS/escape.
fn install_attacker(bundle: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/escape.c");
    let out = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(bundle.join("rootfs/escape"))
        .arg(&src)
        .output()
        .expect("cannot run cc: apt-get install gcc libc6-dev (scripts/test does)");
    assert!(
        out.status.success(),
        "cc -static {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    fs::create_dir_all(bundle.join("rootfs/out")).unwrap();
    // The verdict is written to /out, read by the test from the host.
    let p = bundle.join("config.json");
    let mut c: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    c["root"]["readonly"] = json!(false);
    fs::write(&p, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
}

/// A private copy of the nvbind binary under test: the target of the attacks.
struct Victim {
    path: PathBuf,
}

impl Victim {
    /// `beside_root`: the copy sits in the directory that holds the state root, so overlayfs
    /// refuses the two layers (one inside the other) and nvbind falls back to a sealed memfd.
    fn new(env: &Env, beside_root: bool) -> Self {
        let dir = if beside_root {
            env.dir.path().to_path_buf()
        } else {
            env.dir.path().join("bin")
        };
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nvbind");
        fs::copy(NVBIND, &path).unwrap();
        Self { path }
    }

    /// Whether the copy still holds exactly the bytes of the binary it was copied from.
    fn unchanged(&self) -> bool {
        let (mut a, mut b) = (File::open(NVBIND).unwrap(), File::open(&self.path).unwrap());
        let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        loop {
            let n = a.read(&mut x).unwrap();
            let mut m = 0;
            while m < n {
                match b.read(&mut y[m..n]).unwrap() {
                    0 => return false,
                    k => m += k,
                }
            }
            if x[..n] != y[..n] {
                return false;
            }
            if n == 0 {
                return b.read(&mut y[..1]).unwrap() == 0;
            }
        }
    }

    /// `COPY --root ROOT ARGS`, sealing switched off for the control runs.
    fn cmd(&self, env: &Env, unsealed: bool, args: &[&str]) -> Command {
        let mut c = Command::new(&self.path);
        c.arg("--root")
            .arg(&env.root)
            .args(args)
            .stdin(Stdio::null());
        if unsealed {
            c.env(NO_SEAL, "1");
        } else {
            c.env_remove(NO_SEAL);
        }
        c
    }

    /// Runs to the end with output through files (a container may hold a pipe open).
    fn ok(&self, env: &Env, unsealed: bool, args: &[&str]) {
        let err = env.dir.path().join(".victim-err");
        let status = self
            .cmd(env, unsealed, args)
            .stdout(Stdio::null())
            .stderr(File::create(&err).unwrap())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "nvbind {args:?}: {}",
            fs::read_to_string(&err).unwrap_or_default()
        );
    }
}

/// Polls for a file for up to `secs` seconds.
fn wait_file(path: &Path, secs: u64) -> Option<String> {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if let Ok(s) = fs::read_to_string(path) {
            return Some(s.trim().to_string());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn wait_child(child: &mut Child, secs: u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A pipe whose buffer is full: a process writing to it blocks until the read end is closed.
fn full_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors that we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both were just returned by pipe2.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut file = File::from(w);
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    while file.write(&[b'x'; 4096]).is_ok() {}
    // SAFETY: as above; blocking again, so the writer in the container waits.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) };
    (r, OwnedFd::from(file))
}

/// Copies the shared libraries a dynamically linked binary needs into the rootfs, at the same
/// paths, so that the binary can run inside the container.
fn install_libs(bin: &Path, rootfs: &Path) {
    let out = Command::new("ldd").arg(bin).output().unwrap();
    for lib in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let dst = rootfs.join(lib.trim_start_matches('/'));
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::copy(lib, &dst).unwrap();
    }
}

/// The original CVE-2019-5736 exploit: `nvbind exec CTR /proc/self/exe` makes nvbind's clone
/// execute the nvbind binary inside the container (it blocks writing its usage to a full
/// pipe); the container's main process grabs that process's /proc/PID/exe and rewrites the
/// binary once nothing runs it. Returns the attacker's verdict and whether the copy is intact.
fn attack_through_exec(unsealed: bool, beside_root: bool) -> (String, bool) {
    let env = Env::new();
    let victim = Victim::new(&env, beside_root);
    let verdict = attack_through_exec_on(&env, &victim, unsealed, &[]);
    env.assert_clean();
    verdict
}

/// The attack of `attack_through_exec` on a given copy; `global` goes before each verb.
fn attack_through_exec_on(
    env: &Env,
    victim: &Victim,
    unsealed: bool,
    global: &[&str],
) -> (String, bool) {
    let b = env.bundle("a", &["/escape", "exe", "/proc/self/exe", "/out"]);
    install_attacker(&b);
    install_libs(&victim.path, &b.join("rootfs"));
    let bs = b.to_str().unwrap();
    let with = |args: &[&'static str]| -> Vec<String> {
        global
            .iter()
            .map(|s| s.to_string())
            .chain(args.iter().map(|s| s.to_string()))
            .collect()
    };
    let run: Vec<String> = with(&["run", "-d", "-b"])
        .into_iter()
        .chain([bs.to_string(), "a".to_string()])
        .collect();
    victim.ok(
        env,
        unsealed,
        &run.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    let (r, w) = full_pipe();
    let exec_args = with(&["exec", "a", "/proc/self/exe"]);
    let mut exec = victim
        .cmd(
            env,
            unsealed,
            &exec_args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .stdout(Stdio::from(w.try_clone().unwrap()))
        .stderr(Stdio::from(w))
        .spawn()
        .unwrap();
    let grabbed = wait_file(&b.join("rootfs/out/grabbed"), 15);
    // The blocked writer dies of SIGPIPE, the exec ends; the binary is no longer busy.
    drop(r);
    wait_child(&mut exec, 10);
    let result = wait_file(&b.join("rootfs/out/result"), 30).unwrap_or_default();
    eprintln!("exec attack (unsealed: {unsealed}): {grabbed:?} -> {result:?}");
    assert!(
        grabbed.is_some(),
        "the attacker never found the process: {result}"
    );
    env.ok(&["delete", "-f", "a"]);
    (result, victim.unchanged())
}

/// Gives the bundle's process CAP_SYS_PTRACE, as debugging containers have.
fn with_ptrace(env: &Env, bundle: &Path) {
    env.edit(bundle, |c| {
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push(json!("CAP_SYS_PTRACE"));
        }
    });
}

/// A bundle NAME running sleep in the PID namespace of the running container `of`.
fn sibling_of(env: &Env, of: &str, name: &str) -> PathBuf {
    let pid = env.state(of)["pid"].as_i64().unwrap();
    let b = env.bundle(name, &["sleep", "1000"]);
    env.edit(&b, |c| {
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "pid" {
                ns["path"] = json!(format!("/proc/{pid}/ns/pid"));
            }
        }
    });
    b
}

/// The created-but-not-started init is a clone of nvbind. Container A (with CAP_SYS_PTRACE,
/// as debugging containers have) shares its PID namespace with container B; while B is
/// created, A grabs B's init's /proc/PID/exe, and rewrites the binary after `start`.
fn attack_created_init(unsealed: bool) -> (String, bool) {
    let env = Env::new();
    let victim = Victim::new(&env, false);
    let argv0 = victim.path.to_str().unwrap().to_string();
    // The attacker is not A's init: the PID namespace, with B in it, dies with its init.
    let script = format!("/escape exe {argv0} /out; exec sleep 1000");
    let a = env.bundle("a", &["sh", "-c", &script]);
    install_attacker(&a);
    with_ptrace(&env, &a);
    victim.ok(
        &env,
        unsealed,
        &["run", "-d", "-b", a.to_str().unwrap(), "a"],
    );
    let b = sibling_of(&env, "a", "b");
    victim.ok(&env, unsealed, &["create", "-b", b.to_str().unwrap(), "b"]);
    let grabbed = wait_file(&a.join("rootfs/out/grabbed"), 15);
    victim.ok(&env, unsealed, &["start", "b"]);
    let result = wait_file(&a.join("rootfs/out/result"), 30).unwrap_or_default();
    eprintln!("created-init attack (unsealed: {unsealed}): {grabbed:?} -> {result:?}");
    assert!(
        grabbed.is_some(),
        "the attacker never found the init: {result}"
    );
    env.ok(&["delete", "-f", "b"]);
    env.ok(&["delete", "-f", "a"]);
    env.assert_clean();
    (result, victim.unchanged())
}

#[test]
fn exe_cannot_be_rewritten_through_exec_of_proc_self_exe() {
    let (result, unchanged) = attack_through_exec(false, false);
    assert_eq!(
        result, "open-denied EROFS",
        "expected the read-only overlayfs copy"
    );
    assert!(unchanged, "the nvbind copy was modified ({result})");
}

#[test]
fn exe_in_memfd_fallback_cannot_be_rewritten() {
    let (result, unchanged) = attack_through_exec(false, true);
    // A sealed memfd may be reopened for writing once idle; the write itself is refused.
    assert_eq!(
        result, "write-denied EPERM",
        "expected the sealed memfd copy"
    );
    assert!(unchanged, "the nvbind copy was modified ({result})");
}

/// The copy's directory bind-mounted read-only onto itself, unmounted on drop (also when the
/// test fails, so that no mount outlives it).
struct ReadOnlyDir(PathBuf);

impl ReadOnlyDir {
    fn new(dir: &Path) -> Self {
        let mount = |args: &[&str]| {
            let out = Command::new("mount")
                .args(args)
                .arg(dir)
                .arg(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "mount {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        mount(&["--bind"]);
        let guard = Self(dir.to_path_buf());
        mount(&["-o", "remount,bind,ro"]);
        guard
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A binary on a read-only mount runs without any re-exec or copy (nothing to pay), and the
/// attack still cannot write it: the link leads to the read-only mount.
#[test]
fn exe_on_read_only_mount_is_not_copied_and_cannot_be_rewritten() {
    let env = Env::new();
    let victim = Victim::new(&env, false);
    let ro = ReadOnlyDir::new(victim.path.parent().unwrap());
    let log = env.dir.path().join("victim.log");
    let log_arg = log.to_str().unwrap();
    let (result, unchanged) =
        attack_through_exec_on(&env, &victim, false, &["--debug", "--log", log_arg]);
    drop(ro);
    env.assert_clean();
    assert_eq!(result, "open-denied EROFS", "expected the read-only mount");
    assert!(unchanged, "the nvbind copy was modified ({result})");
    let log = fs::read_to_string(&log).unwrap();
    let kinds: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("out of the container's reach"))
        .collect();
    // run and exec: each said so once, from the binary the test started (no re-exec).
    assert_eq!(kinds.len(), 2, "{log}");
    assert!(kinds.iter().all(|l| l.contains("ReadOnlyMount")), "{log}");
}

#[test]
fn control_unsealed_exe_is_rewritten_through_exec_of_proc_self_exe() {
    let (result, unchanged) = attack_through_exec(true, false);
    assert_eq!(
        result, "wrote",
        "the attack should work on an unsealed nvbind"
    );
    assert!(
        !unchanged,
        "the attacker said it wrote but the copy is intact"
    );
}

#[test]
fn exe_of_created_init_cannot_be_rewritten() {
    let (result, unchanged) = attack_created_init(false);
    assert_eq!(
        result, "open-denied EROFS",
        "expected the read-only overlayfs copy"
    );
    assert!(unchanged, "the nvbind copy was modified ({result})");
}

#[test]
fn control_unsealed_exe_of_created_init_is_rewritten() {
    let (result, unchanged) = attack_created_init(true);
    assert_eq!(
        result, "wrote",
        "the attack should work on an unsealed nvbind"
    );
    assert!(
        !unchanged,
        "the attacker said it wrote but the copy is intact"
    );
}

#[test]
fn reexec_marker_set_by_hand_fails_instead_of_looping() {
    // The marker nvbind sets on its own re-exec, on a binary that is not sealed: one clear
    // error, no second re-exec (a loop would hang here).
    let env = Env::new();
    let out = Command::new(NVBIND)
        .arg("--root")
        .arg(&env.root)
        .args(["exec", "nosuch", "true"])
        .env("_NVBIND_SEALED", "1")
        .env_remove(NO_SEAL)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // 255: exec's exit status for any error, as runc's exec.
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(err.contains("still not sealed"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// The overlayfs copy is adopted in place (src/seal/adopt.rs): `run` and `exec` start the
/// binary once, with no re-exec, and still leave nothing of the installed file reachable (the
/// attack tests above run through the same path). Fails on a nvbind that re-executes: its
/// trace has an execveat of the copy.
#[test]
fn sealing_adopts_the_copy_without_a_second_start() {
    let env = Env::new();
    let victim = Victim::new(&env, false);
    let b = env.bundle("s", &["sleep", "1000"]);
    let traced = |args: &[&str], log: &str| {
        let log = env.dir.path().join(log);
        let cmd = victim.cmd(&env, false, args);
        let mut strace = Command::new("strace");
        // Not -f: the re-exec is the runtime's own; a detached container would keep a
        // following strace waiting.
        strace
            .args(["-e", "trace=execve,execveat", "-o"])
            .arg(&log)
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let status = strace.status().expect("strace (scripts/test installs it)");
        assert!(status.success(), "nvbind {args:?} under strace: {status}");
        let trace = fs::read_to_string(&log).unwrap();
        // Calls that succeeded: the initial start, and a re-exec if there is one.
        let execs: Vec<String> = trace
            .lines()
            .filter(|l| l.contains("execve") && l.trim_end().ends_with("= 0"))
            .map(String::from)
            .collect();
        assert_eq!(
            execs.len(),
            1,
            "nvbind {args:?} started more than once: {execs:#?}"
        );
    };
    traced(&["run", "-d", "-b", b.to_str().unwrap(), "s"], "run.trace");
    let pid = env.ok(&["state", "s"]);
    let pid: Value = serde_json::from_str(&pid).unwrap();
    let pid = pid["pid"].as_i64().unwrap();
    assert!(pid > 0);
    traced(&["exec", "s", "true"], "exec.trace");
    env.ok(&["delete", "-f", "s"]);
    env.assert_clean();
}
