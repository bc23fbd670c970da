//! Seccomp through the nvbind binary: the notify agent's socket, ENOSYS for syscalls newer
//! than the profile, and the compiled programs the state root keeps (src/seccomp_cache.rs).
//! Needs root (CI runs as root).

mod common;

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
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

/// The files of the root's seccomp cache (src/seccomp_cache.rs), by name.
fn cached_programs(env: &Env) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(&env.root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".nvbind-seccomp-")
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A cache file's key and program (its format: magic, key length, listener, program length).
fn key_and_program(file: &[u8]) -> (&[u8], &[u8]) {
    let key_len = u32::from_le_bytes(file[8..12].try_into().unwrap()) as usize;
    (&file[17..17 + key_len], &file[17 + key_len..])
}

#[test]
fn a_profile_is_compiled_once_and_its_cached_program_is_what_loads() {
    let env = Env::new();
    // /dev: a tmpfs of each container's own, writable on the read-only rootfs
    let b = env.bundle("c", &["sh", "-c", "mkdir /dev/d"]);
    // What mkdir says: busybox exits 1 whatever the errno, and its message names it.
    let denied = |id: &str| {
        let out = env.nvbind(&["run", "-b", b.to_str().unwrap(), id]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let deny_mkdir = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]
    });
    env.edit(&b, |c| c["linux"]["seccomp"] = deny_mkdir.clone());
    // errno 42 is ENOMSG: "No message of desired type"
    let first = denied("c1");
    assert!(first.contains("No message of desired type"), "{first}");
    let files = cached_programs(&env);
    assert_eq!(files.len(), 1, "{files:?}");
    let cached = fs::read(&files[0]).unwrap();
    let modified = fs::metadata(&files[0]).unwrap().modified().unwrap();
    // A hit: the same answer, the file neither rewritten nor joined by another.
    let second = denied("c2");
    assert!(second.contains("No message of desired type"), "{second}");
    assert_eq!(cached_programs(&env), files);
    assert_eq!(
        fs::metadata(&files[0]).unwrap().modified().unwrap(),
        modified
    );

    // Another profile (denying rmdir only) gets its own file; its program, put under the
    // first profile's key, is what the first profile's next container loads: the cache is
    // really used (mkdir passes).
    env.edit(&b, |c| {
        c["linux"]["seccomp"]["syscalls"][0]["names"] = json!(["rmdir"]);
    });
    assert_eq!(denied("c3"), "");
    let other = cached_programs(&env)
        .into_iter()
        .find(|f| *f != files[0])
        .expect("no second cache file");
    let other_bytes = fs::read(&other).unwrap();
    let (_, other_program) = key_and_program(&other_bytes);
    let (key, _) = key_and_program(&cached);
    let mut swapped = cached[..17].to_vec();
    swapped[13..17].copy_from_slice(&(other_program.len() as u32).to_le_bytes());
    swapped.extend_from_slice(key);
    swapped.extend_from_slice(other_program);
    fs::write(&files[0], &swapped).unwrap();
    fs::set_permissions(&files[0], fs::Permissions::from_mode(0o600)).unwrap();
    env.edit(&b, |c| c["linux"]["seccomp"] = deny_mkdir.clone());
    assert_eq!(denied("c4"), "", "the cached program was not used");

    // The same file open to others is not trusted: compiled again, and replaced.
    fs::set_permissions(&files[0], fs::Permissions::from_mode(0o644)).unwrap();
    let again = denied("c5");
    assert!(again.contains("No message of desired type"), "{again}");
    assert_eq!(fs::read(&files[0]).unwrap(), cached);

    // So is a file of another key under the profile's name (a hash collision).
    let mut foreign = swapped.clone();
    foreign[17] ^= 1;
    fs::write(&files[0], &foreign).unwrap();
    fs::set_permissions(&files[0], fs::Permissions::from_mode(0o600)).unwrap();
    let collided = denied("c6");
    assert!(
        collided.contains("No message of desired type"),
        "{collided}"
    );
    assert_eq!(fs::read(&files[0]).unwrap(), cached);
    env.assert_clean();
}

#[test]
fn an_unwritable_cache_costs_a_compile_not_the_container() {
    // A directory where the profile's cache file goes: nothing can be stored or read there,
    // and every container still gets its profile; a killed store's temp file is removed by
    // the next store.
    let env = Env::new();
    let b = env.bundle("u", &["sh", "-c", "mkdir /dev/d"]);
    env.edit(&b, |c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]
        });
    });
    let denied = |id: &str| {
        let out = env.nvbind(&["run", "-b", b.to_str().unwrap(), id]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("No message of desired type"), "{id}: {err}");
    };
    denied("u0");
    let files = cached_programs(&env);
    assert_eq!(files.len(), 1, "{files:?}");
    fs::remove_file(&files[0]).unwrap();
    fs::create_dir(&files[0]).unwrap();
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    let killed = env
        .root
        .join(format!(".{name}.tmp-999999999-0123456789abcdef"));
    fs::write(&killed, b"torn").unwrap();
    for id in ["u1", "u2"] {
        denied(id);
    }
    assert!(files[0].is_dir());
    assert!(!killed.exists(), "the stale temp file is still there");
    fs::remove_dir(&files[0]).unwrap();
    env.assert_clean();
}
