//! Seccomp through the nvbind binary: the notify agent's socket, ENOSYS for syscalls newer
//! than the profile. Needs root (CI runs as root).

mod common;

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::Path;

use common::*;
use serde_json::{json, Value};

/// The notify fd and the message a seccomp agent receives on `listener`.
fn recv_seccomp(listener: &UnixListener) -> (OwnedFd, Value) {
    let (stream, _) = listener.accept().unwrap();
    let mut buf = [0u8; 8192];
    let (n, fd) = recv_with_fd(&stream, &mut buf);
    let body: Value = serde_json::from_slice(&buf[..n]).unwrap();
    (fd.expect("no seccomp fd"), body)
}

#[test]
fn exec_with_a_notify_profile_sends_the_containers_state_to_the_agent() {
    // runc's seccomp-notify.bats "runc exec [seccomp] (SCMP_ACT_NOTIFY ...)": the exec'd
    // process has the container's profile, so its listener fd goes to the agent too, with
    // the state of the container it joined (libcontainer had none: "container state is
    // required").
    let env = Env::new();
    let b = env.bundle("n", &["sleep", "1000"]);
    let sock = env.dir.path().join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    env.edit(&b, |c| {
        c["process"]["noNewPrivileges"] = json!(true);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": sock.to_str().unwrap(),
            "listenerMetadata": "m1",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
        });
    });
    let agent = std::thread::spawn(move || {
        let init = recv_seccomp(&listener);
        let exec = recv_seccomp(&listener);
        (init.1, exec.1)
    });
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "n1"]);
    let init_pid = env.state("n1")["pid"].as_i64().unwrap();
    // With the agent's fd closed, the kernel answers mkdir with ENOSYS.
    let out = env.nvbind(&["exec", "n1", "sh", "-c", "mkdir /tmp/x; echo $?"]);
    // Before the join: an exec that never reached the agent would leave it waiting.
    assert!(out.status.success(), "{out:?}");
    let (init, exec) = agent.join().unwrap();
    assert_eq!(init["state"]["id"], "n1", "{init}");
    assert_eq!(init["metadata"], "m1", "{init}");
    assert_eq!(exec["state"]["id"], "n1", "{exec}");
    assert_eq!(exec["state"]["status"], "running", "{exec}");
    assert_eq!(exec["state"]["pid"], init_pid, "{exec}");
    assert_eq!(exec["metadata"], "m1", "{exec}");
    assert!(
        exec["pid"].as_i64().is_some_and(|p| p > 0 && p != init_pid),
        "{exec}"
    );
    env.ok(&["delete", "--force", "n1"]);
    env.assert_clean();
}

#[test]
fn a_syscall_newer_than_the_profile_gets_enosys() {
    // runc's seccomp.bats "-ENOSYS handling", with its own test program and profile (in
    // tests/runc-integration): a default-EPERM profile, syscall 1000 must see ENOSYS (runc's
    // stub), named syscalls their rules; the program exits non-zero on any difference.
    let data = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/runc-integration/upstream/tests/integration/testdata");
    let env = Env::new();
    let b = env.bundle("e", &["/seccomp_test"]);
    let out = std::process::Command::new("gcc")
        .args(["-static", "-o"])
        .arg(b.join("rootfs/seccomp_test"))
        .arg(data.join("seccomp_syscall_test1.c"))
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        // gcc and a static libc are the suite's packages (scripts/runc-integration installs them)
        _ => return,
    }
    let profile: Value =
        serde_json::from_slice(&fs::read(data.join("seccomp_syscall_test1.json")).unwrap())
            .unwrap();
    env.edit(&b, |c| c["linux"]["seccomp"] = profile);
    let out = env.nvbind(&["run", "-b", b.to_str().unwrap(), "e1"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    env.assert_clean();
}
