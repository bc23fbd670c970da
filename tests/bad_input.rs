//! Every bad input the runtime can be handed: one-line error, exit 1, and nothing left behind.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};

use common::*;
use serde_json::json;

#[test]
fn missing_bundle() {
    let env = Env::new();
    let err = env.fails(&["create", "-b", "/nonexistent/bundle", "x"]);
    assert!(err.contains("/nonexistent/bundle"), "{err}");
    env.assert_clean();
}

#[test]
fn unreadable_or_invalid_config() {
    let env = Env::new();
    let b = env.bundle("b", &["true"]);
    let cfg = b.join("config.json");
    let bs = b.to_str().unwrap();

    fs::write(&cfg, "{ this is not json").unwrap();
    let err = env.fails(&["create", "-b", bs, "x"]);
    assert!(
        err.contains("config.json") && err.contains("not JSON"),
        "{err}"
    );

    fs::write(&cfg, r#"{"ociVersion": "1.0.2", "process": {"args": 5}}"#).unwrap();
    let err = env.fails(&["create", "-b", bs, "x"]);
    assert!(err.contains("invalid type"), "{err}");

    fs::write(&cfg, r#"{"root": {"path": "rootfs"}}"#).unwrap();
    let err = env.fails(&["create", "-b", bs, "x"]);
    assert!(err.contains("ociVersion"), "{err}");

    fs::remove_file(&cfg).unwrap();
    let err = env.fails(&["create", "-b", bs, "x"]);
    assert!(err.contains("config.json"), "{err}");
    env.assert_clean();
}

#[test]
fn rootfs_that_does_not_exist() {
    let env = Env::new();
    let b = env.bundle("b", &["true"]);
    env.edit(&b, |c| c["root"]["path"] = json!("no-such-rootfs"));
    let err = env.fails(&["create", "-b", b.to_str().unwrap(), "x"]);
    assert!(err.contains("no-such-rootfs"), "{err}");
    env.assert_clean();
}

#[test]
fn program_that_does_not_exist_in_the_rootfs() {
    let env = Env::new();
    let b = env.bundle("b", &["/bin/no-such-program"]);
    let out = env.nvbind(&["run", "-b", b.to_str().unwrap(), "x"]);
    assert!(!out.status.success());
    env.assert_clean();
}

#[test]
fn bad_container_ids() {
    let env = Env::new();
    let b = env.bundle("b", &["true"]);
    let bs = b.to_str().unwrap();
    for (id, needle) in [
        ("", "empty"),
        ("a/b", "'/'"),
        ("..", ".."),
        ("../../etc", ".."),
    ] {
        let err = env.fails(&["create", "-b", bs, id]);
        assert!(err.contains(needle), "{id:?}: {err}");
    }
    env.assert_clean();
}

#[test]
fn id_that_already_exists() {
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "100"]);
    let bs = b.to_str().unwrap();
    env.ok(&["create", "-b", bs, "dup"]);
    let pid = env.state("dup")["pid"].clone();
    let err = env.fails(&["create", "-b", bs, "dup"]);
    assert!(err.contains("already exists"), "{err}");
    // The first container is untouched.
    assert_eq!(env.state("dup")["pid"], pid);
    assert_eq!(env.state("dup")["status"], "created");
    env.ok(&["delete", "dup"]);
    env.assert_clean();
}

#[test]
fn two_creates_of_one_id_at_once_exactly_one_wins() {
    let env = Arc::new(Env::new());
    let b = env.bundle("b", &["sleep", "100"]);
    for round in 0..5 {
        let id = format!("race{round}");
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (env, b, id, barrier) = (env.clone(), b.clone(), id.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    env.nvbind(&["create", "-b", b.to_str().unwrap(), &id])
                })
            })
            .collect();
        let outs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let wins = outs.iter().filter(|o| o.status.success()).count();
        assert_eq!(wins, 1, "round {round}: {outs:?}");
        let loser = outs.iter().find(|o| !o.status.success()).unwrap();
        assert!(String::from_utf8_lossy(&loser.stderr).contains("already exists"));
        assert_eq!(env.state(&id)["status"], "created");
        env.ok(&["delete", &id]);
    }
    env.assert_clean();
}

#[test]
fn operations_on_a_container_that_does_not_exist() {
    let env = Env::new();
    for args in [
        vec!["start", "ghost"],
        vec!["state", "ghost"],
        vec!["kill", "ghost"],
        vec!["delete", "ghost"],
        vec!["pause", "ghost"],
        vec!["exec", "ghost", "--", "true"],
        vec!["ps", "ghost"],
    ] {
        // exec exits 255 when it cannot run the process, as runc's
        let code = if args[0] == "exec" { 255 } else { 1 };
        let err = env.fails_with(&args, code);
        assert!(err.contains("\"ghost\" does not exist"), "{args:?}: {err}");
    }
    env.assert_clean();
}

#[test]
fn root_that_is_not_writable() {
    let env = Env::new();
    let ro = env.dir.path().join("ro");
    fs::create_dir(&ro).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
        .arg(&ro)
        .status()
        .unwrap();
    assert!(st.success(), "cannot mount a read-only tmpfs (need root)");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(ro.clone());
    let b = env.bundle("b", &["true"]);
    let out = Command::new(NVBIND)
        .args([
            "--root",
            ro.join("state").to_str().unwrap(),
            "create",
            "-b",
            b.to_str().unwrap(),
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--root"), "{err}");
}

#[test]
fn a_failing_create_leaves_nothing_behind() {
    // The console socket is checked by libcontainer after it made the state dir.
    let env = Env::new();
    let b = env.bundle("b", &["sh"]);
    env.edit(&b, |c| c["process"]["terminal"] = json!(true));
    let err = env.fails(&[
        "create",
        "-b",
        b.to_str().unwrap(),
        "--console-socket",
        "/nonexistent.sock",
        "x",
    ]);
    assert!(err.contains("console-socket"), "{err}");
    // terminal: true without a console socket is refused too, and a console socket for a
    // process without a terminal; the messages say what to change and name no library.
    let err = env.fails(&["create", "-b", b.to_str().unwrap(), "y"]);
    assert!(err.contains("pass --console-socket"), "{err}");
    assert!(!err.contains("youki"), "{err}");
    let sock = env.dir.path().join("console.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    env.edit(&b, |c| c["process"]["terminal"] = json!(false));
    let err = env.fails(&[
        "create",
        "-b",
        b.to_str().unwrap(),
        "--console-socket",
        sock.to_str().unwrap(),
        "w",
    ]);
    assert!(err.contains("set process.terminal to true"), "{err}");
    assert!(!err.contains("youki"), "{err}");
    // An invalid mount makes libcontainer fail mid-way, after cgroup and state dir exist.
    let b2 = env.bundle("b2", &["true"]);
    env.edit(&b2, |c| {
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/x", "type": "bind", "source": "/nonexistent/source", "options": ["bind"]}))
    });
    let out = env.nvbind(&["create", "-b", b2.to_str().unwrap(), "z"]);
    assert!(!out.status.success());
    // The error names the source (it said "io error: No such file or directory").
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bind mount source \"/nonexistent/source\" (for \"/x\")")
            && err.contains("No such file or directory"),
        "{err}"
    );
    env.assert_clean();
}

#[test]
fn a_program_that_is_missing_or_not_executable_is_said_once() {
    // It was "exec process failed with error error in executing process : executable ..."
    // and "at path '\"/etc/passwd\"'".
    let env = Env::new();
    let b = env.bundle("b", &["/nonexistent-cmd"]);
    let err = env.fails(&["run", "-b", b.to_str().unwrap(), "m"]);
    assert!(
        err.contains("exec process failed: executable '/nonexistent-cmd' not found in $PATH"),
        "{err}"
    );
    let b = env.bundle("b2", &["/etc/passwd"]);
    let err = env.fails(&["run", "-b", b.to_str().unwrap(), "n"]);
    assert!(
        err.contains(
            "executable '/etc/passwd' at path '/etc/passwd' does not have correct permissions"
        ),
        "{err}"
    );
    assert_eq!(err.matches("error").count(), 0, "{err}");
    env.assert_clean();
}

#[test]
fn a_cgroup_that_is_not_the_containers_own_is_refused() {
    // delete --force of a half-made container kills what is in its recorded cgroup, so a
    // create may not take a cgroup that holds processes (runc 1.2 refuses it too), nor the
    // root cgroup, which libcgroups would list as every process on the host.
    let env = Env::new();
    let a = env.bundle("a", &["sleep", "60"]);
    env.ok(&["run", "-d", "-b", a.to_str().unwrap(), "a"]);
    let pid = env.state("a")["pid"].as_i64().unwrap();
    let shared = format!("/{}-a", env.cgroup_prefix);
    let b = env.bundle("b", &["true"]);
    env.edit(&b, |c| c["linux"]["cgroupsPath"] = json!(shared));
    let err = env.fails(&["create", "-b", b.to_str().unwrap(), "b"]);
    assert!(
        err.contains("container's cgroup is not empty: 1 process(es) found"),
        "{err}"
    );
    for bad in ["/", "/..", ""] {
        env.edit(&b, |c| c["linux"]["cgroupsPath"] = json!(bad));
        let err = env.fails(&["create", "-b", b.to_str().unwrap(), "b"]);
        assert!(err.contains("linux.cgroupsPath"), "{bad}: {err}");
    }
    assert!(
        process_alive(pid),
        "a refused create touched the other container"
    );
    assert_eq!(env.ids(), ["a"]);
    env.ok(&["delete", "--force", "a"]);
    env.assert_clean();
}

#[test]
fn a_frozen_cgroup_is_refused_at_once() {
    // runc's cgroups.bats "refuse pre-existing frozen cgroup": the init would stop in the
    // frozen cgroup before it could report, and create waited for it until a thaw.
    let env = Env::new();
    let b = env.bundle("f", &["true"]);
    let leaf = format!("{}-f", env.cgroup_prefix);
    let v1 = Path::new("/sys/fs/cgroup/freezer");
    let (dir, file, frozen) = if v1.is_dir() {
        (v1.join(&leaf), "freezer.state", "FROZEN")
    } else {
        (
            Path::new("/sys/fs/cgroup").join(&leaf),
            "cgroup.freeze",
            "1",
        )
    };
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join(file), frozen).unwrap();
    for verb in [&["create"][..], &["run", "-d"]] {
        let mut args = verb.to_vec();
        args.extend(["-b", b.to_str().unwrap(), "f"]);
        let err = env.fails(&args);
        assert!(
            err.contains("container's cgroup unexpectedly frozen"),
            "{err}"
        );
        assert!(err.contains(&leaf), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(env.ids().is_empty(), "{:?}", env.ids());
        // The cgroup was there before: it is not nvbind's to thaw or remove.
        assert_eq!(fs::read_to_string(dir.join(file)).unwrap().trim(), frozen);
    }
    // Thawed, the same cgroup takes the container.
    fs::write(dir.join(file), if v1.is_dir() { "THAWED" } else { "0" }).unwrap();
    env.ok(&["run", "-b", b.to_str().unwrap(), "f"]);
    let _ = fs::remove_dir(&dir);
    env.assert_clean();
}

#[test]
fn unified_resources_on_a_cgroup_v1_host_are_refused() {
    // runc's cgroups.bats "cgroup v1 + unified resources should fail": v1's manager would
    // ignore them, and the limit would silently not be applied.
    let env = Env::new();
    let b = env.bundle("u", &["true"]);
    env.edit(&b, |c| {
        c["linux"]["resources"]["unified"] = json!({"memory.min": "131072", "pids.max": "10"})
    });
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        env.ok(&["run", "-b", b.to_str().unwrap(), "u"]);
    } else {
        let err = env.fails(&["run", "-d", "-b", b.to_str().unwrap(), "u"]);
        assert!(err.contains("invalid configuration"), "{err}");
        assert!(
            err.contains("(memory.min, pids.max) needs cgroup v2"),
            "{err}"
        );
    }
    env.assert_clean();
}

#[test]
fn a_rootfs_whose_proc_is_a_symlink_says_so() {
    // runc's mask.bats "prohibit symlink /proc" (GHSA-fh74-hm69-rqjw): the init's error
    // reaches the user whole, not as "failed to prepare rootfs" alone.
    let env = Env::new();
    let b = env.bundle("p", &["true"]);
    let proc_dir = b.join("rootfs/proc");
    let _ = fs::remove_dir(&proc_dir);
    std::os::unix::fs::symlink("/symlink", &proc_dir).unwrap();
    let err = env.fails(&["run", "-d", "-b", b.to_str().unwrap(), "p"]);
    assert!(
        err.contains("failed to prepare rootfs")
            && err.contains("filesystem proc must be mounted on ordinary directory"),
        "{err}"
    );
    assert!(!err.contains("unexpected message"), "{err}");
    env.assert_clean();
}

#[test]
fn an_unknown_command_is_one_line_and_help_for_it_says_so_as_runc() {
    let run = |args: &[&str]| Command::new(NVBIND).args(args).output().unwrap();
    let out = run(&["foo"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("'foo'"), "{err}");
    // runc's help.bats: `runc foo -h` fails with "No help topic for 'foo'".
    let out = run(&["foo", "-h"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("No help topic for 'foo'"), "{err}");
    // runc's version.bats shape: `-v`, three lines, the last two `commit:` and `spec: X.Y.Z`.
    for flag in ["-v", "-V", "--version"] {
        let out = run(&[flag]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("nvbind version "), "{text}");
        assert!(lines[1].starts_with("commit: "), "{text}");
        let spec = lines[2].strip_prefix("spec: ").unwrap();
        assert_eq!(spec.split('.').count(), 3, "{text}");
    }
}

#[test]
fn seccomp_notify_that_cannot_work_is_refused_up_front() {
    // runc's wording (seccomp-notify.bats matches it); libcontainer noticed write only in the
    // init, after the container was half made, and said "failed seccomp listener".
    let env = Env::new();
    let b = env.bundle("b", &["true"]);
    let bs = b.to_str().unwrap();
    let notify = |names: serde_json::Value, default: &str| {
        json!({
            "defaultAction": default,
            "listenerPath": "/nonexistent/agent.sock",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{ "names": names, "action": "SCMP_ACT_NOTIFY" }]
        })
    };
    env.edit(&b, |c| {
        c["linux"]["seccomp"] = notify(json!(["mkdir", "write"]), "SCMP_ACT_ALLOW")
    });
    let err = env.fails(&["run", "-b", bs, "x"]);
    assert!(
        err.contains("syscalls[0]: SCMP_ACT_NOTIFY cannot be used for the write syscall"),
        "{err}"
    );
    env.edit(&b, |c| {
        c["linux"]["seccomp"] = notify(json!(["mkdir"]), "SCMP_ACT_NOTIFY")
    });
    let err = env.fails(&["run", "-b", bs, "x"]);
    assert!(err.contains("cannot be used as default action"), "{err}");
    // A valid profile whose agent is not there: the create fails when the init hands over
    // its listener, naming the agent's socket, and leaves nothing.
    env.edit(&b, |c| {
        c["linux"]["seccomp"] = notify(json!(["mkdir"]), "SCMP_ACT_ALLOW")
    });
    let err = env.fails(&["run", "-b", bs, "x"]);
    assert!(
        err.contains("failed to connect with seccomp agent specified in the seccomp profile")
            && err.contains("/nonexistent/agent.sock"),
        "{err}"
    );
    env.assert_clean();
}

#[test]
fn a_hook_killed_by_a_signal_names_it() {
    // runc's seccomp.bats: a hook the container's filter kills says "signal: bad system call".
    let env = Env::new();
    let b = env.bundle("b", &["true"]);
    env.edit(&b, |c| {
        c["hooks"] = json!({"createRuntime": [
            {"path": "/bin/sh", "args": ["sh", "-c", "cat >/dev/null; kill -SYS $$"]}
        ]})
    });
    let err = env.fails(&["run", "-b", b.to_str().unwrap(), "x"]);
    assert!(
        err.contains("error running hook: signal: bad system call"),
        "{err}"
    );
    env.assert_clean();
}

#[test]
fn a_hugetlb_limit_without_a_page_size_is_refused_naming_the_field() {
    // A key of another case is the field (runc's Go decoder matches it), so only a limit that
    // has no page size at all gets here; libcgroups said "malformed page size : cannot parse
    // integer from empty string" once the container was half made.
    let env = Env::new();
    let b = env.bundle("b", &["true"]);
    env.edit(
        &b,
        |c| {
            c["linux"]["resources"]["hugepageLimits"] =
                json!([{ "pageSize": "2MB", "limit": 2097152 }, { "limit": 2097152 }])
        },
    );
    let err = env.fails(&["run", "-b", b.to_str().unwrap(), "x"]);
    assert!(
        err.contains("linux.resources.hugepageLimits[1] has no pageSize"),
        "{err}"
    );
    env.assert_clean();
}

/// The benchmark scripts check their counts before they install, build or start anything.
#[test]
fn bench_scripts_refuse_a_count_that_is_not_a_positive_whole_number() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (script, args, named) in [
        ("scripts/bench", &["--runs", "0"][..], "--runs"),
        ("scripts/bench", &["--seq", "ten"][..], "--seq"),
        ("scripts/bench", &["--par"][..], "--par"),
        ("scripts/bench-gpu", &["--rounds", "-3"][..], "--rounds"),
        ("scripts/bench-gpu", &["--rounds"][..], "--rounds"),
    ] {
        let out = Command::new(repo.join(script)).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{script} {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{script} {args:?}: {err}");
        assert!(
            err.contains(named) && err.contains("positive whole number"),
            "{err}"
        );
    }
}
