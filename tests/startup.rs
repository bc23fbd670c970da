//! How nvbind starts (issue 19): without std's main-thread stack probe (crate nvbind-rt), and
//! otherwise as a std program: SIGPIPE, closed standard descriptors, exit statuses. Needs
//! strace (scripts/test installs it).

mod common;

use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::Path;
use std::process::{Command, Stdio};

use common::NVBIND;

/// The files `nvbind ARGS` opened, from an strace log, and its exit status.
fn opened(dir: &Path, args: &[&str]) -> (Vec<String>, Option<i32>) {
    let log = dir.join("strace.log");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"])
        .arg(&log)
        .arg(NVBIND)
        .args(args)
        .output()
        .expect("strace is not installed: apt-get install strace (scripts/test does)");
    let files = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect();
    (files, out.status.code())
}

#[test]
fn start_up_reads_no_proc_maps() {
    // std's start asked glibc for the main thread's stack (pthread_getattr_np), which reads
    // /proc/self/maps. These verbs do not seal (src/seal reads it on purpose for the verbs that
    // put nvbind into a container: create, run, exec, restore).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let root = root.to_str().unwrap();
    for (args, code) in [
        (&["--version"][..], 0),
        (&["--root", root, "state", "missing-id"], 1),
        (&["--root", root, "list"], 0),
        (&["no-such-verb"], 1),
    ] {
        let (files, status) = opened(dir.path(), args);
        assert_eq!(status, Some(code), "{args:?}: {files:?}");
        // the trace works: the loader's cache (a dynamic build) or the state root (`list`)
        assert!(!files.is_empty(), "{args:?}: nothing traced");
        assert!(
            !files.iter().any(|f| f.ends_with("/maps")),
            "{args:?} read a maps file: {files:?}"
        );
    }
}

#[test]
fn a_write_to_a_closed_pipe_ends_nvbind_by_sigpipe_as_before() {
    // nvbind puts SIGPIPE back to its default (src/main.rs): `nvbind list | head -0` ends
    // quietly, killed by the signal, not with an error message.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for args in [
        &["--version"][..],
        &["--root", root.to_str().unwrap(), "list"],
    ] {
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        let out = Command::new(NVBIND)
            .args(args)
            .stdout(Stdio::from(w))
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {out:?}"
        );
        assert!(out.stderr.is_empty(), "{args:?}: {out:?}");
    }
    // and what it writes to an open one arrives whole, flushed at exit
    let out = Command::new(NVBIND)
        .args(["--root", root.to_str().unwrap(), "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("ID ") && text.ends_with("OWNER\n"),
        "{text:?}"
    );
}

#[test]
fn closed_standard_descriptors_are_reopened_on_dev_null() {
    // As std does: with 0 and 1 closed, the state root's directory opened by `list` must not
    // become stdout, and printing the table must not fail.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut cmd = Command::new(NVBIND);
    cmd.args(["--root", root.to_str().unwrap(), "list"])
        .stderr(Stdio::piped());
    // SAFETY: close(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::close(0);
            libc::close(1);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn no_stack_overflow_handler_is_set_up() {
    // std installed a SIGSEGV/SIGBUS handler on an alternate signal stack along with the probe;
    // nvbind-rt installs neither (a main-thread overflow dies of SIGSEGV: see its docs).
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.log");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=rt_sigaction,sigaltstack", "-o"])
        .arg(&log)
        .arg(NVBIND)
        .arg("--version")
        .output()
        .expect("strace is not installed: apt-get install strace (scripts/test does)");
    assert!(out.status.success(), "{out:?}");
    let trace = std::fs::read_to_string(&log).unwrap();
    assert!(
        !trace.contains("SIGSEGV") && !trace.contains("SIGBUS"),
        "{trace}"
    );
    assert!(!trace.contains("sigaltstack("), "{trace}");
    // SIGPIPE: ignored as std does, then back to its default by nvbind (src/main.rs)
    assert!(trace.contains("SIGPIPE, {sa_handler=SIG_IGN"), "{trace}");
    assert!(trace.contains("SIGPIPE, {sa_handler=SIG_DFL"), "{trace}");
}
