//! Real containers through the nvbind binary: lifecycle, exit codes, signals, exec, ps, list,
//! features, spec, events, logs. Needs root (CI runs as root). Cgroups are in cgroups.rs,
//! terminals in terminal.rs, seccomp in seccomp.rs.

mod common;

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[test]
fn run_passes_stdout_and_exit_code_through() {
    let env = Env::new();
    let b = env.bundle("b", &["sh", "-c", "echo out-$(hostname); exit 3"]);
    let out = env.nvbind(&["run", "--bundle", b.to_str().unwrap(), "r1"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out-runc\n");
    env.assert_clean();
}

#[test]
fn run_reports_death_by_signal_as_128_plus_signal() {
    let env = Env::new();
    let env = std::sync::Arc::new(env);
    let b = env.bundle("b", &["sleep", "1000"]);
    let bg = {
        let (env, b) = (env.clone(), b.clone());
        std::thread::spawn(move || env.nvbind(&["run", "-b", b.to_str().unwrap(), "r2"]))
    };
    assert!(wait_for(|| env
        .nvbind(&["state", "r2"])
        .stdout
        .windows(7)
        .any(|w| w == b"running")));
    env.ok(&["kill", "r2", "KILL"]);
    let out = bg.join().unwrap();
    assert_eq!(out.status.code(), Some(137));
    env.assert_clean();
}

#[test]
fn run_keep_leaves_a_stopped_container() {
    let env = Env::new();
    let b = env.bundle("b", &["true"]);
    env.ok(&["run", "--keep", "-b", b.to_str().unwrap(), "k1"]);
    assert_eq!(env.state("k1")["status"], "stopped");
    env.ok(&["delete", "k1"]);
    env.assert_clean();
}

#[test]
fn create_start_state_kill_delete() {
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "1000"]);
    let pid_file = env.dir.path().join("pid");
    env.ok(&[
        "create",
        "-b",
        b.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "c1",
    ]);

    let st = env.state("c1");
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], "c1");
    assert_eq!(st["bundle"], b.to_str().unwrap());
    assert_eq!(st["rootfs"], b.join("rootfs").to_str().unwrap());
    assert!(st["ociVersion"].as_str().unwrap().starts_with("1."));
    assert!(st["created"].as_str().unwrap().ends_with('Z'));
    let pid = st["pid"].as_i64().unwrap();
    assert_eq!(
        fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );
    assert!(process_alive(pid));

    env.ok(&["start", "c1"]);
    assert_eq!(env.state("c1")["status"], "running");
    let err = env.fails(&["start", "c1"]);
    assert!(err.contains("not created"), "{err}");

    let err = env.fails(&["delete", "c1"]);
    assert!(err.contains("--force"), "{err}");

    env.ok(&["kill", "c1", "KILL"]);
    assert!(wait_for(|| env.state("c1")["status"] == "stopped"));
    assert_eq!(env.state("c1")["pid"], 0);
    let err = env.fails(&["kill", "c1"]);
    assert!(err.contains("not running"), "{err}");
    env.ok(&["delete", "c1"]);
    assert!(!process_alive(pid));
    let err = env.fails(&["state", "c1"]);
    assert!(err.contains("does not exist"), "{err}");
    env.assert_clean();
}

#[test]
fn delete_of_a_created_container_kills_its_init() {
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "1000"]);
    env.ok(&["create", "-b", b.to_str().unwrap(), "dc"]);
    let pid = env.state("dc")["pid"].as_i64().unwrap();
    env.ok(&["delete", "dc"]);
    assert!(wait_for(|| !process_alive(pid)));
    env.assert_clean();
}

/// Whether PID has a handler for signal SIG (the SigCgt mask in /proc/PID/status).
fn catches_signal(pid: i64, sig: u32) -> bool {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

#[test]
fn kill_takes_names_and_numbers_and_all() {
    let env = Env::new();
    // The signal must not arrive before the trap exists: PID 1 ignores default-action signals.
    let b = env.bundle(
        "b",
        &[
            "sh",
            "-c",
            "trap 'exit 7' USR1; while true; do sleep 0.05; done",
        ],
    );
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "s1"]);
    let pid = env.state("s1")["pid"].as_i64().unwrap();
    assert!(
        wait_for(|| catches_signal(pid, 10)),
        "the trap was never installed"
    );
    let err = env.fails(&["kill", "s1", "SIGNOPE"]);
    assert!(err.contains("SIGNOPE"), "{err}");
    // Signal 0 only checks the process exists (runc's kill.bats): nothing is delivered.
    env.ok(&["kill", "s1", "0"]);
    env.ok(&["kill", "--all", "s1", "0"]);
    assert_eq!(env.state("s1")["status"], "running");
    env.ok(&["kill", "s1", "10"]);
    assert!(wait_for(|| env.state("s1")["status"] == "stopped"));
    // A stopped container: `kill -a ID 0` succeeds as runc's does, `kill ID 0` is refused.
    env.ok(&["kill", "-a", "s1", "0"]);
    env.fails(&["kill", "s1", "0"]);
    env.ok(&["delete", "s1"]);

    // busybox sh execs the last command: two sleeps, no shell.
    let b2 = env.bundle("b2", &["sh", "-c", "sleep 1000 & sleep 1000"]);
    env.ok(&["run", "-d", "-b", b2.to_str().unwrap(), "s2"]);
    assert!(wait_for(|| {
        let pids: Vec<i64> =
            serde_json::from_str(&env.ok(&["ps", "--format", "json", "s2"])).unwrap();
        pids.len() == 2
    }));
    env.ok(&["kill", "--all", "s2", "KILL"]);
    assert!(wait_for(|| env.state("s2")["status"] == "stopped"));
    env.ok(&["delete", "s2"]);
    env.assert_clean();
}

/// Runs as PID 1 of a PID namespace of its own (no other process takes pids there): makes
/// and starts container p1, SIGKILLs its init (pid P) and waits until it is reaped, sets
/// ns_last_pid to P-1 and forks a `sleep`, which gets pid P. Then each nvbind command that
/// acts on the init. Last, it sends the sleep SIGTERM and waits for it: its wait status says
/// whether it was still alive (143) or had been SIGKILLed by nvbind (137).
const RECYCLE_INIT_PID: &str = r#"
n() { "$NVBIND" --root "$ROOT" "$@" </dev/null 2>>"$OUT/log"; }
n create -b "$BUNDLE" --pid-file "$OUT/pid" p1 >>"$OUT/log" || exit 10
n start p1 >>"$OUT/log" || exit 11
P=$(cat "$OUT/pid")
kill -KILL "$P"
i=0
while [ -e "/proc/$P" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i + 1)); done
[ -e "/proc/$P" ] && exit 12
echo $((P - 1)) >/proc/sys/kernel/ns_last_pid
sleep 1000 &
S=$!
echo "$P $S" >"$OUT/pids"
n state p1 >"$OUT/state"; echo "state $?" >>"$OUT/rc"
n exec p1 true >>"$OUT/log"; echo "exec $?" >>"$OUT/rc"
n pause p1 >>"$OUT/log"; echo "pause $?" >>"$OUT/rc"
n kill p1 KILL >>"$OUT/log"; echo "kill $?" >>"$OUT/rc"
n delete --force p1 >>"$OUT/log"; echo "delete $?" >>"$OUT/rc"
kill -TERM "$S"
wait "$S"
echo "sleep $?" >>"$OUT/rc"
"#;

/// Issue 15: the kernel gives a reaped init's pid to the next process; nvbind tells that
/// process from the init by the start time it recorded (as runc does). `state` says stopped,
/// and exec, pause, kill and `delete --force` touch nothing but the container's record.
#[test]
fn a_process_given_a_dead_inits_pid_is_not_the_container() {
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "1000"]);
    let out = env.dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let status = std::process::Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "bash",
            "-c",
            RECYCLE_INIT_PID,
        ])
        .env("NVBIND", NVBIND)
        .env("ROOT", &env.root)
        .env("BUNDLE", &b)
        .env("OUT", &out)
        .stdin(std::process::Stdio::null())
        .status()
        .expect("cannot run unshare");
    let log = fs::read_to_string(out.join("log")).unwrap_or_default();
    assert!(status.success(), "the script failed ({status}): {log}");
    let pids = fs::read_to_string(out.join("pids")).unwrap();
    let (p, s) = pids.trim().split_once(' ').unwrap();
    assert_eq!(p, s, "the sleep did not get the init's pid");

    let state: Value = serde_json::from_slice(&fs::read(out.join("state")).unwrap()).unwrap();
    assert_eq!(state["status"], "stopped", "{state}");
    assert_eq!(state["pid"], 0, "{state}");
    let rc = fs::read_to_string(out.join("rc")).unwrap();
    assert_eq!(
        rc,
        // exec, pause and kill are refused, as for any stopped container (runc: 255 and 1).
        "state 0\nexec 255\npause 1\nkill 1\ndelete 0\n\
         sleep 143\n",
        "{log}"
    );
    for refusal in [
        "cannot exec in container \"p1\": it is stopped",
        "cannot pause container \"p1\": it is stopped",
        "cannot kill container \"p1\": container not running",
    ] {
        assert!(log.contains(refusal), "{refusal:?} not in {log}");
    }
    env.assert_clean();
}

#[test]
fn delete_force_stops_a_running_container() {
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "1000"]);
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "f1"]);
    let pid = env.state("f1")["pid"].as_i64().unwrap();
    env.ok(&["delete", "--force", "f1"]);
    assert!(wait_for(|| !process_alive(pid)));
    // Deleting what is gone is fine with --force, an error without.
    env.ok(&["delete", "--force", "f1"]);
    assert!(env.fails(&["delete", "f1"]).contains("does not exist"));
    env.assert_clean();
}

#[test]
fn exec_runs_in_the_container_and_returns_its_code() {
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "1000"]);
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "e1"]);
    let out = env.nvbind(&[
        "exec",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        "e1",
        "--",
        "sh",
        "-c",
        "echo $FOO $(pwd) $(hostname); exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bar /tmp runc\n");

    let out = env.ok(&["exec", "--user", "1000:1000", "e1", "--", "id", "-u"]);
    assert_eq!(out.trim(), "1000");

    let process = env.dir.path().join("process.json");
    fs::write(&process, json!({"args": ["sh", "-c", "echo from-process-json"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}).to_string()).unwrap();
    let out = env.ok(&["exec", "--process", process.to_str().unwrap(), "e1"]);
    assert_eq!(out.trim(), "from-process-json");
    // --process as an inherited descriptor, as bash's `-p <(...)` passes it (runc's
    // tty.bats): main closes inherited descriptors, but not before it read this one. Without
    // `user` the process runs as root, as runc reads it.
    let no_user = env.dir.path().join("no-user.json");
    fs::write(
        &no_user,
        json!({"args": ["sh", "-c", "echo from-fd-$(id -u)"], "cwd": "/", "env": ["PATH=/bin"]})
            .to_string(),
    )
    .unwrap();
    let file = fs::File::open(&no_user).unwrap();
    // SAFETY: dup of a descriptor this test owns; the copy has no close-on-exec flag, so the
    // nvbind child inherits it, and it is closed below.
    let inherited =
        unsafe { OwnedFd::from_raw_fd(libc::dup(std::os::fd::AsRawFd::as_raw_fd(&file))) };
    let fd_path = format!("/dev/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&inherited));
    let out = env.ok(&["exec", "-p", &fd_path, "e1"]);
    drop(inherited);
    assert_eq!(out.trim(), "from-fd-0");

    // A paused container: exec is refused, and with --ignore-paused the process runs once
    // the container is resumed (runc's cgroups.bats).
    env.ok(&["pause", "e1"]);
    env.fails_with(&["exec", "e1", "--", "echo", "x"], 255);
    let out = std::thread::scope(|s| {
        let exec = s.spawn(|| env.ok(&["exec", "--ignore-paused", "e1", "--", "echo", "thawed"]));
        std::thread::sleep(Duration::from_millis(500));
        env.ok(&["resume", "e1"]);
        exec.join().unwrap()
    });
    assert_eq!(out.trim(), "thawed");

    let err = env.fails_with(&["exec", "e1"], 255);
    assert!(err.contains("no command"), "{err}");
    let err = env.fails(&["exec", "--env", "NOEQUALS", "e1", "--", "true"]);
    assert!(err.contains("K=V"), "{err}");

    env.ok(&["kill", "e1", "KILL"]);
    assert!(wait_for(|| env.state("e1")["status"] == "stopped"));
    let err = env.fails_with(&["exec", "e1", "--", "true"], 255);
    assert!(err.contains("not running"), "{err}");
    env.ok(&["delete", "e1"]);
    env.assert_clean();
}

/// runc's exec: allowed into a created container (the init waits in its namespaces; it stays
/// created), refused for a paused one, and a failure to run the process (a pid file that
/// cannot be written, a container that does not exist) exits 255, apart from the process's
/// own statuses (exec.bats "exit codes", create.bats "create exec", cgroups.bats).
#[test]
fn exec_states_and_exit_codes_are_runcs() {
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "1000"]);
    env.ok(&["create", "-b", b.to_str().unwrap(), "x1"]);
    let out = env.ok(&["exec", "x1", "--", "sh", "-c", "echo in-created"]);
    assert_eq!(out.trim(), "in-created");
    assert_eq!(env.state("x1")["status"], "created");
    env.ok(&["start", "x1"]);

    env.ok(&["pause", "x1"]);
    let err = env.fails_with(&["exec", "x1", "--", "true"], 255);
    assert!(err.contains("cannot exec in a paused container"), "{err}");
    env.ok(&["resume", "x1"]);

    // Its pids, not ps's table: the table's C column (CPU time over elapsed time) of a
    // freshly started init drops as it sleeps, so two tables a second apart can differ.
    let pids = || env.ok(&["ps", "--format", "json", "x1"]);
    let before = pids();
    let err = env.fails_with(
        &[
            "exec",
            "--pid-file",
            "/nonexistent/dir/pid",
            "x1",
            "--",
            "sleep",
            "1000",
        ],
        255,
    );
    assert!(err.contains("/nonexistent/dir/pid"), "{err}");
    // the process it forked was killed: the container holds what it held before
    assert!(wait_for(|| pids() == before), "{before} then {}", pids());
    let err = env.fails_with(&["exec", "no-such-container", "--", "true"], 255);
    assert!(err.contains("no-such-container"), "{err}");
    let out = env.nvbind(&["exec", "x1", "--", "sh", "-c", "exit 42"]);
    assert_eq!(out.status.code(), Some(42));

    env.ok(&["delete", "--force", "x1"]);
    env.assert_clean();
}

#[test]
fn ps_and_list_show_the_container() {
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "1000"]);
    let b2 = env.bundle("b2", &["sleep", "1000"]);
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "p1"]);
    env.ok(&["create", "-b", b2.to_str().unwrap(), "p2"]);
    let pid = env.state("p1")["pid"].as_i64().unwrap();

    let pids: Vec<i64> = serde_json::from_str(&env.ok(&["ps", "--format", "json", "p1"])).unwrap();
    assert_eq!(pids, vec![pid]);
    let table = env.ok(&["ps", "p1"]);
    assert!(table.lines().next().unwrap().contains("PID"));
    assert!(table.lines().any(|l| l.contains("sleep 1000")), "{table}");

    assert_eq!(env.ok(&["list", "-q"]), "p1\np2\n");
    let list: Vec<Value> = serde_json::from_str(&env.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["status"], "running");
    assert_eq!(list[1]["status"], "created");
    let table = env.ok(&["list"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("p1 ") && l.contains("running")),
        "{table}"
    );

    env.ok(&["delete", "-f", "p1"]);
    env.ok(&["delete", "-f", "p2"]);
    assert_eq!(env.ok(&["list", "-q"]), "");
    env.assert_clean();
}

#[test]
fn features_is_valid_oci_features_json() {
    let out = std::process::Command::new(NVBIND)
        .arg("features")
        .output()
        .unwrap();
    assert!(out.status.success());
    let f: oci_spec::runtime::Features = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(f.oci_version_min(), "1.0.0");
    assert!(f
        .hooks()
        .as_ref()
        .unwrap()
        .contains(&"createContainer".to_string()));
}

/// `--debug` as runc's (issue 15, debug.bats and exec.bats): without --log the debug lines go
/// to stderr, with it to the log only, and both carry the lines runc's init logs.
#[test]
fn debug_logs_runcs_init_lines() {
    let env = Env::new();
    let b = env.bundle("b", &["echo", "hello"]);
    let out = env.nvbind(&["--debug", "run", "-b", b.to_str().unwrap(), "d1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    for line in [
        "level=debug",
        "nsexec container setup",
        "child process in init()",
        "init: closing the pipe to signal completion",
    ] {
        assert!(err.contains(line), "{line:?} not in {err}");
    }

    let b = env.bundle("s", &["sleep", "1000"]);
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "d2"]);
    let log = env.dir.path().join("log.json");
    let out = env.nvbind(&[
        "--debug",
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "exec",
        "d2",
        "true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("debug"), "{err}");
    let log = fs::read_to_string(&log).unwrap();
    for line in [
        r#""level":"debug""#,
        "nsexec container setup",
        "child process in init()",
        "setns_init: about to exec",
    ] {
        assert!(log.contains(line), "{line:?} not in {log}");
    }
    env.ok(&["delete", "--force", "d2"]);
    env.assert_clean();
}

/// `events` as runc's (issue 15, events.bats): one `{"type":"stats","id":..,"data":..}` line
/// per --interval (a Go duration), `{"type":"oom","id":..}` when the OOM killer acts in the
/// container, and the stream ends when the container is deleted.
#[test]
fn events_stream_stats_and_oom_until_the_container_goes() {
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "1000"]);
    env.edit(&b, |c| {
        c["linux"]["resources"]["memory"] = json!({"limit": 33554432, "swap": 33554432})
    });
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "ev1"]);
    let out = env.ok(&["events", "--stats", "ev1"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with(r#"{"type":"stats","id":"ev1","data":{"#),
        "{out}"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((&v["type"], &v["id"]), (&json!("stats"), &json!("ev1")));
    assert!(v["data"].is_object(), "{v}");
    let err = env.fails(&["events", "--interval", "5x", "ev1"]);
    assert!(err.contains("not a duration"), "{err}");

    let log = env.dir.path().join("events.log");
    let mut events = std::process::Command::new(NVBIND)
        .arg("--root")
        .arg(&env.root)
        .args(["events", "--interval", "100ms", "ev1"])
        .stdout(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let lines = || -> Vec<Value> {
        fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    assert!(
        wait_for(|| lines().iter().filter(|l| l["type"] == "stats").count() >= 2),
        "not two stats lines in {} lines",
        lines().len()
    );
    // A process that eats memory until the OOM killer ends it (the shell drops NUL bytes, so
    // /dev/zero would not do).
    env.ok(&[
        "exec",
        "-d",
        "ev1",
        "--",
        "sh",
        "-c",
        "x=$(cat /dev/urandom)",
    ]);
    let oom = r#"{"type":"oom","id":"ev1"}"#;
    let has_oom = || fs::read_to_string(&log).unwrap().lines().any(|l| l == oom);
    assert!(
        (0..6).any(|_| wait_for(has_oom)),
        "no oom line in {} lines",
        lines().len()
    );
    env.ok(&["delete", "--force", "ev1"]);
    let ended = wait_for(|| events.try_wait().unwrap().is_some());
    if !ended {
        let _ = events.kill();
    }
    let status = events.wait().unwrap();
    assert!(
        ended && status.success(),
        "events did not end with the container: {status}"
    );
    env.assert_clean();
}

/// `nvbind spec` writes what `runc spec` writes (issue 15: runc's integration tests and
/// engines make bundles with `spec` and run them with `--console-socket`, which needs
/// `terminal: true`); `--hardened` adds only the seccomp profile.
#[test]
fn spec_is_what_runc_spec_writes() {
    let env = Env::new();
    let write = |cmd: &str, dir: &str, extra: &[&str]| -> Value {
        let b = env.dir.path().join(dir);
        fs::create_dir(&b).unwrap();
        let out = std::process::Command::new(cmd)
            .arg("spec")
            .args(extra)
            .args(["--bundle", b.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd} spec: {out:?}");
        serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap()
    };
    let ours = write(NVBIND, "n", &[]);
    assert_eq!(ours["process"]["terminal"], json!(true));
    assert!(ours["linux"].get("seccomp").is_none(), "{}", ours["linux"]);
    let mut hardened = write(NVBIND, "h", &["--hardened"]);
    assert_eq!(
        hardened["linux"]["seccomp"]["defaultAction"],
        json!("SCMP_ACT_ALLOW")
    );
    hardened["linux"].as_object_mut().unwrap().remove("seccomp");
    assert_eq!(hardened, ours);
    if std::process::Command::new("runc")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("runc is not installed: comparison with runc spec skipped");
        return;
    }
    let runc = write("runc", "r", &[]);
    assert_eq!(spec_order_free(&ours), spec_order_free(&runc));
}

#[test]
fn spec_writes_a_config_that_runs_and_refuses_to_overwrite() {
    let env = Env::new();
    let b = env.bundle("sp", &["true"]);
    let out = std::process::Command::new(NVBIND)
        .args(["spec", "--bundle", b.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let spec: oci_spec::runtime::Spec =
        serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap();
    assert!(spec.linux().is_some());
}

#[test]
fn json_log_carries_the_error_for_the_engine() {
    let env = Env::new();
    let log = env.dir.path().join("log.json");
    let out = std::process::Command::new(NVBIND)
        .args([
            "--root",
            env.root.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "start",
            "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let last = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let v: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["level"], "error");
    assert!(v["msg"].as_str().unwrap().contains("does not exist"), "{v}");
    assert!(v["time"].as_str().is_some());
}

/// A program only its owner (root) may execute runs for another user who has
/// CAP_DAC_OVERRIDE, and not without it: execve decides, as with runc (start_hello.bats);
/// libcontainer looked at the others' execute bit alone.
#[test]
fn execute_permission_is_left_to_execve() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let b = env.bundle("b", &["/bin/echo", "ran"]);
    let busybox = b.join("rootfs/bin/busybox");
    fs::set_permissions(&busybox, fs::Permissions::from_mode(0o744)).unwrap();
    env.edit(&b, |c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 100})
    });
    let out = env.nvbind(&["run", "-b", b.to_str().unwrap(), "x1"]);
    assert!(!out.status.success(), "ran without CAP_DAC_OVERRIDE");
    let _ = env.nvbind(&["delete", "--force", "x1"]);
    env.edit(&b, |c| {
        for set in ["bounding", "effective", "permitted"] {
            let caps = c["process"]["capabilities"][set].as_array_mut().unwrap();
            caps.push(json!("CAP_DAC_OVERRIDE"));
        }
    });
    assert_eq!(
        env.ok(&["run", "-b", b.to_str().unwrap(), "x2"]).trim(),
        "ran"
    );
    env.assert_clean();
}
