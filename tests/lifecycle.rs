//! Real containers through the nvbind binary: lifecycle, exit codes, signals, exec, ps, list,
//! pause/resume, update, console socket, features. Needs root (CI runs as root).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
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
fn the_cgroups_are_joined_everywhere_and_delete_force_removes_sub_cgroups() {
    // runc's cgroups.bats "cgroup v1+hybrid joins correct cgroup", exec.bats "runc exec
    // --cgroup sub-cgroups [v1]" (its implicit join) and delete.bats "delete --force in
    // cgroupv1 with subcgroups".
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "1000"]);
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "s1"]);
    let pid = env.state("s1")["pid"].as_i64().unwrap();
    let leaf = format!("{}-b", env.cgroup_prefix);
    let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
    // Every hierarchy, the controller-less ones too: the cgroup2 one of a hybrid host (the
    // "0::" line) and the named v1 `name=systemd` one hybrid and legacy hosts mount, systemd
    // running or not. runc's fs manager joins both; an exec joins them as the init did.
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mut tables = vec![own.clone()];
    if Path::new("/sys/fs/cgroup/memory").is_dir() {
        // No cgroup namespace in a v1 spec (as runc's): the exec reads the host's paths too.
        tables.push(env.ok(&["exec", "s1", "cat", "/proc/self/cgroup"]));
    }
    for table in &tables {
        for line in table.lines() {
            assert!(line.ends_with(&format!(":/{leaf}")), "{line} in\n{table}");
        }
    }
    if hybrid {
        assert!(own.lines().any(|l| l == format!("0::/{leaf}")), "{own}");
    }
    if is_named_v1_mount("systemd") {
        let named = format!(":name=systemd:/{leaf}");
        assert!(own.lines().any(|l| l.ends_with(&named)), "{own}");
        assert!(Path::new("/sys/fs/cgroup/systemd").join(&leaf).is_dir());
    }
    // A sub-cgroup holding the init, in two v1 controllers (or the v2 tree), as a container
    // with a cgroup namespace and a writable /sys/fs/cgroup can make one.
    let v1 = ["memory", "freezer"].map(|c| Path::new("/sys/fs/cgroup").join(c).join(&leaf));
    let dirs: Vec<PathBuf> = if v1.iter().all(|d| d.is_dir()) {
        v1.to_vec()
    } else {
        vec![Path::new("/sys/fs/cgroup").join(&leaf)]
    };
    for d in &dirs {
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("sub/cgroup.procs"), pid.to_string()).unwrap();
    }
    env.ok(&["delete", "--force", "s1"]);
    assert!(wait_for(|| !process_alive(pid)));
    env.assert_clean();
}

/// Whether this mount namespace has the named cgroup v1 hierarchy NAME (`-o none,name=NAME`).
fn is_named_v1_mount(name: &str) -> bool {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo.lines().any(|l| {
        let mut halves = l.splitn(2, " - ");
        let (_, fs_part) = (halves.next(), halves.next().unwrap_or(""));
        let mut f = fs_part.split(' ');
        f.next() == Some("cgroup")
            && f.nth(1)
                .is_some_and(|opts| opts.split(',').any(|o| o == format!("name={name}")))
    })
}

#[test]
fn exec_cgroup_joins_existing_sub_cgroups_and_refuses_bad_ones() {
    // runc's exec.bats "runc exec --cgroup sub-cgroups [v1]" and "[v2]".
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "1000"]);
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "g1"]);
    let leaf = format!("{}-b", env.cgroup_prefix);
    let root = Path::new("/sys/fs/cgroup");
    let v1 = root.join("memory").join(&leaf).is_dir();
    let cat = ["g1", "cat", "/proc/self/cgroup"];
    let exec = |cgroups: &[&str], cmd: &[&str]| -> Vec<String> {
        let mut a = vec!["exec".to_string()];
        for c in cgroups {
            a.extend(["--cgroup".to_string(), c.to_string()]);
        }
        a.extend(cmd.iter().map(|s| s.to_string()));
        a
    };
    let mut bad = vec![
        (vec![".."], ".. is not a sub cgroup path"),
        (
            vec!["nonexistent"],
            "/nonexistent/cgroup.procs: no such file or directory",
        ),
        (
            vec!["a", "b"],
            "invalid --cgroup argument: a (missing <controller>: prefix",
        ),
        (vec!["memory:x:y"], "invalid --cgroup argument: memory:x:y"),
    ];
    if v1 {
        bad.push((
            vec!["cpu:nonexistent"],
            "/nonexistent/cgroup.procs: no such file",
        ));
        bad.push((vec!["whaaat:/"], "unknown controller whaaat"));
    } else {
        bad.push((vec!["memory:/"], "unknown controller memory"));
    }
    for (cgroups, want) in &bad {
        let args = exec(cgroups, &cat);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = env.fails_with(&args, 255);
        assert!(err.contains(want), "{cgroups:?}: {err}");
    }
    // Nothing was made for the bad ones: an exec never creates a sub-cgroup.
    let hierarchies: Vec<PathBuf> = fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .chain([root.to_path_buf()])
        .collect();
    for h in &hierarchies {
        assert!(
            !h.join(&leaf).join("nonexistent").exists(),
            "a failed exec made {h:?}/..."
        );
    }

    // The container's own cgroup, explicitly.
    let own = env.ok(&exec(&["/"], &cat)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    // Named hierarchies (name=systemd on a host without systemd) are not joined yet; runc
    // joins them (expected-failures.tsv).
    let mut joined = own.lines().filter(|l| !l.contains(":name="));
    assert!(joined.all(|l| l.ends_with(&format!("/{leaf}"))), "{own}");
    if v1 {
        let cpu = root.join("cpu").join(&leaf).join("subcpu");
        let mem = root.join("memory").join(&leaf).join("submem");
        fs::create_dir(&mem).unwrap();
        fs::create_dir_all(&cpu).unwrap();
        // cpuacct shares cpu's hierarchy on most hosts; where it does not, it needs its own.
        let _ = fs::create_dir(root.join("cpuacct").join(&leaf).join("subcpu"));
        let out = env.ok(&exec(&["memory:submem", "cpu,cpuacct:subcpu"], &cat)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>());
        assert!(out.contains(&format!(":memory:/{leaf}/submem\n")), "{out}");
        assert!(
            out.lines()
                .any(|l| l.contains(":cpu") && l.ends_with(&format!(":/{leaf}/subcpu"))),
            "{out}"
        );
        // Every other hierarchy keeps the container's cgroup.
        assert!(
            out.lines().any(|l| l.ends_with(&format!(":pids:/{leaf}"))),
            "{out}"
        );
    } else {
        fs::create_dir(root.join(&leaf).join("sub")).unwrap();
        let out = env.ok(&exec(&["sub"], &cat)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>());
        assert_eq!(out.trim(), format!("0::/{leaf}/sub"));
    }
    // delete --force removes the sub-cgroups with the container's.
    env.ok(&["delete", "--force", "g1"]);
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
fn pause_and_resume_freeze_the_cgroup() {
    let env = Env::new();
    let b = env.bundle("fz", &["sleep", "1000"]);
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "z1"]);
    env.ok(&["pause", "z1"]);
    assert_eq!(env.state("z1")["status"], "paused");
    let freezer = cgroup_file(&env, "fz", "freezer", "freezer.state");
    if freezer.exists() {
        assert_eq!(fs::read_to_string(&freezer).unwrap().trim(), "FROZEN");
    }
    assert!(env.fails(&["pause", "z1"]).contains("not running"));
    env.ok(&["resume", "z1"]);
    assert_eq!(env.state("z1")["status"], "running");
    if freezer.exists() {
        assert_eq!(fs::read_to_string(&freezer).unwrap().trim(), "THAWED");
    }
    assert!(env.fails(&["resume", "z1"]).contains("not paused"));
    env.ok(&["delete", "-f", "z1"]);
    env.assert_clean();
}

#[test]
fn update_changes_memory_and_pids_limits() {
    let env = Env::new();
    let b = env.bundle("up", &["sleep", "1000"]);
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "u1"]);
    env.ok(&["update", "--memory", "64m", "--pids-limit", "42", "u1"]);
    let mem =
        fs::read_to_string(cgroup_file(&env, "up", "memory", "memory.limit_in_bytes")).unwrap();
    assert_eq!(mem.trim(), (64u64 << 20).to_string());
    let pids = fs::read_to_string(cgroup_file(&env, "up", "pids", "pids.max")).unwrap();
    assert_eq!(pids.trim(), "42");

    let res = env.dir.path().join("res.json");
    fs::write(&res, r#"{"pids":{"limit":7}}"#).unwrap();
    env.ok(&["update", "-r", res.to_str().unwrap(), "u1"]);
    let pids = fs::read_to_string(cgroup_file(&env, "up", "pids", "pids.max")).unwrap();
    assert_eq!(pids.trim(), "7");

    fs::write(&res, r#"{"pids":{"limit":"many"}}"#).unwrap();
    let err = env.fails(&["update", "-r", res.to_str().unwrap(), "u1"]);
    assert!(err.contains("linux.resources"), "{err}");
    let err = env.fails(&["update", "--memory", "lots", "u1"]);
    assert!(err.contains("lots"), "{err}");
    env.ok(&["delete", "-f", "u1"]);
    env.assert_clean();
}

#[test]
fn update_to_a_smaller_cpu_period_under_a_parent_quota() {
    // runc's update.bats "update cpu period in a pod cgroup with pod limit set": the new
    // period with the old quota exceeds the pod's limit, so the period is refused until the
    // new quota is written (runc writes it again after the quota). cgroup v1's cpu files.
    let cpu = Path::new("/sys/fs/cgroup/cpu");
    if !cpu.join("cpu.cfs_period_us").exists() {
        return;
    }
    let env = Env::new();
    let pod = cpu.join(format!("{}-pod", env.cgroup_prefix));
    fs::create_dir(&pod).unwrap();
    fs::write(pod.join("cpu.cfs_quota_us"), "50000").unwrap();
    let b = env.bundle("c", &["sleep", "1000"]);
    env.edit(&b, |c| {
        c["linux"]["cgroupsPath"] = json!(format!("/{}-pod/c", env.cgroup_prefix));
        c["linux"]["resources"]["cpu"] = json!({"quota": 500000, "period": 1000000});
    });
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "u1"]);
    // More than the pod allows: refused, and nothing changes.
    env.fails(&["update", "--cpu-quota", "600000", "u1"]);
    env.ok(&[
        "update",
        "--cpu-period",
        "10000",
        "--cpu-quota",
        "3000",
        "u1",
    ]);
    let read = |f: &str| fs::read_to_string(pod.join("c").join(f)).unwrap();
    assert_eq!(
        (
            read("cpu.cfs_quota_us").trim(),
            read("cpu.cfs_period_us").trim()
        ),
        ("3000", "10000")
    );
    env.ok(&["delete", "-f", "u1"]);
    // The pod's cgroup in every hierarchy: made by the create as the container's parent and
    // left by delete, as runc leaves a parent.
    for dir in leaked_cgroups(&env.cgroup_prefix) {
        fs::remove_dir(&dir).unwrap();
    }
    env.assert_clean();
}

#[test]
fn per_device_blkio_weight_goes_to_the_bfq_file() {
    // runc's cgroups.bats "per-device io weight for bfq": on cgroup v1 without CFQ's
    // blkio.weight, the weight and weightDevice go to blkio.bfq.weight(_device).
    if !Path::new("/sys/fs/cgroup/blkio").is_dir() {
        return;
    }
    let env = Env::new();
    let img = env.dir.path().join("backing.img");
    fs::write(&img, vec![0u8; 4096]).unwrap();
    let out = std::process::Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&img)
        .output()
        .unwrap();
    if !out.status.success() {
        return; // no loop device here
    }
    let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }
    let _detach = Detach(dev.clone());
    let name = dev.trim_start_matches("/dev/");
    if fs::write(format!("/sys/block/{name}/queue/scheduler"), "bfq").is_err() {
        return; // no BFQ
    }
    let rdev = fs::metadata(&dev)
        .map(|m| std::os::unix::fs::MetadataExt::rdev(&m))
        .unwrap();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let b = env.bundle("w", &["sleep", "1000"]);
    env.edit(&b, |c| {
        c["linux"]["resources"]["blockIO"] = json!({
            "weight": 333, "weightDevice": [{"major": major, "minor": minor, "weight": 444}]
        });
    });
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "w1"]);
    let cfq = cgroup_file(&env, "w", "blkio", "blkio.weight").exists();
    let file = if cfq {
        "blkio.weight_device"
    } else {
        "blkio.bfq.weight_device"
    };
    let weights = fs::read_to_string(cgroup_file(&env, "w", "blkio", file)).unwrap();
    assert!(cfq || weights.contains("default 333"), "{weights}");
    assert!(
        weights.contains(&format!("{major}:{minor} 444")),
        "{weights}"
    );
    env.ok(&["delete", "-f", "w1"]);
    env.assert_clean();
}

#[test]
fn resources_in_config_are_applied() {
    let env = Env::new();
    let b = env.bundle("lim", &["sleep", "1000"]);
    env.edit(&b, |c| {
        c["linux"]["resources"]["memory"] = json!({"limit": 33554432});
        c["linux"]["resources"]["pids"] = json!({"limit": 20});
    });
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "l1"]);
    let out = env.ok(&[
        "exec",
        "l1",
        "--",
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/pids/pids.max",
    ]);
    assert_eq!(out, "33554432\n20\n");
    env.ok(&["delete", "-f", "l1"]);
    env.assert_clean();
}

/// One message on a connected unix stream into `buf`: its length and the fd it carried with
/// SCM_RIGHTS, if any.
fn recv_with_fd(
    stream: &std::os::unix::net::UnixStream,
    buf: &mut [u8],
) -> (usize, Option<OwnedFd>) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .unwrap();
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed this descriptor for us.
            fd = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        }
    }
    (msg.bytes, fd)
}

/// Receives one fd sent with SCM_RIGHTS on a connected unix stream.
fn recv_fd(stream: &std::os::unix::net::UnixStream) -> OwnedFd {
    let mut buf = [0u8; 4096];
    recv_with_fd(stream, &mut buf)
        .1
        .expect("no fd received on the console socket")
}

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

#[test]
fn console_socket_receives_a_working_pty() {
    let env = Env::new();
    let b = env.bundle("tty", &["sh"]);
    env.edit(&b, |c| c["process"]["terminal"] = json!(true));
    let sock = env.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let accept = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        recv_fd(&stream)
    });
    env.ok(&[
        "create",
        "-b",
        b.to_str().unwrap(),
        "--console-socket",
        sock.to_str().unwrap(),
        "t1",
    ]);
    let master: fs::File = accept.join().unwrap().into();
    env.ok(&["start", "t1"]);
    let mut w = master.try_clone().unwrap();
    w.write_all(b"echo pty-$((6*7))\n").unwrap();
    let reader = std::thread::spawn(move || {
        let mut m = master;
        let mut seen = String::new();
        let mut buf = [0u8; 1024];
        while !seen.contains("pty-42\r\n") {
            match m.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        seen
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = w.write_all(b"exit\n");
    assert!(reader.is_finished(), "no answer through the pty");
    let seen = reader.join().unwrap();
    assert!(seen.contains("pty-42"), "pty said {seen:?}");
    env.ok(&["delete", "-f", "t1"]);
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

/// A foreground `run` (terminal true) or `exec -t` without --console-socket: nvbind takes the
/// pty the process got and relays it to its own stdio, as runc does (tty.bats). Here nvbind's
/// stdin is /dev/null and its stdout a pipe: the process still has the pty on fds 0-2, owned
/// by its user, and what it writes comes out (pty line endings). A --console-socket is for a
/// detached container only. exec's process is the container's user's unless --user is given.
#[test]
fn foreground_terminal_is_relayed_through_a_new_pty() {
    let env = Env::new();
    let script = "for f in /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2; do readlink $f; \
                  done; stat -c %u $(tty); stty size >/dev/null 2>&1 && echo sized";
    let b = env.bundle("b", &["sh", "-c", script]);
    for applet in ["tty", "stty"] {
        std::os::unix::fs::symlink("busybox", b.join("rootfs/bin").join(applet)).unwrap();
    }
    env.edit(&b, |c| c["process"]["terminal"] = json!(true));
    let check = |out: &str, uid: &str| {
        let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
        assert_eq!(lines.len(), 5, "{out:?}");
        for l in &lines[..3] {
            assert!(l.starts_with("/dev/pts/"), "{out:?}");
        }
        assert_eq!(lines[3], uid, "{out:?}");
        assert_eq!(lines[4], "sized", "{out:?}");
    };
    // Byte for byte, as runc relays it: ONLCR is off on the pty ("\n", not "\r\n"). Only
    // for run: its process waits for start, after nvbind took the pty; an exec'd process can
    // write before that (with runc too).
    let out = env.ok(&["run", "-b", b.to_str().unwrap(), "t1"]);
    assert!(!out.contains('\r'), "{out:?}");
    check(&out, "0");
    env.edit(&b, |c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 100})
    });
    check(&env.ok(&["run", "-b", b.to_str().unwrap(), "t2"]), "1000");

    let sock = env.dir.path().join("unused.sock");
    let _listener = UnixListener::bind(&sock).unwrap();
    let s = sock.to_str().unwrap();
    let err = env.fails(&[
        "run",
        "--console-socket",
        s,
        "-b",
        b.to_str().unwrap(),
        "t3",
    ]);
    assert!(
        err.contains("--console-socket is for a container that detaches"),
        "{err}"
    );

    // exec runs as the container's user unless --user says otherwise (runc)
    env.edit(&b, |c| {
        c["process"]["terminal"] = json!(false);
        c["process"]["args"] = json!(["sleep", "1000"]);
    });
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "t4"]);
    assert_eq!(env.ok(&["exec", "t4", "--", "id", "-u"]).trim(), "1000");
    assert_eq!(env.ok(&["exec", "t4", "--", "id", "-g"]).trim(), "100");
    check(
        &env.ok(&["exec", "-t", "t4", "--", "sh", "-c", script]),
        "1000",
    );
    check(
        &env.ok(&["exec", "-t", "-u", "0:0", "t4", "--", "sh", "-c", script]),
        "0",
    );
    let out = env.nvbind(&["exec", "-t", "t4", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    // A --process object says itself whether it wants a terminal (runc ignores -t with it:
    // tty.bats "exec [tty consolesize]"), and one without PATH runs a program given by its
    // path, as runc's does.
    let process = env.dir.path().join("process.json");
    fs::write(
        &process,
        json!({"args": ["/bin/sh", "-c", "readlink /proc/self/fd/1"], "cwd": "/"}).to_string(),
    )
    .unwrap();
    let p = process.to_str().unwrap();
    let out = env.ok(&["exec", "-t", "-p", p, "t4"]);
    assert!(!out.starts_with("/dev/pts/"), "{out:?}");
    fs::write(
        &process,
        json!({"args": ["sh", "-c", "true"], "cwd": "/"}).to_string(),
    )
    .unwrap();
    let err = env.fails_with(&["exec", "-p", p, "t4"], 255);
    assert!(err.contains("PATH is not set"), "{err}");
    let err = env.fails_with(
        &["exec", "-t", "--console-socket", s, "t4", "--", "true"],
        255,
    );
    assert!(
        err.contains("--console-socket is for a container that detaches"),
        "{err}"
    );
    env.ok(&["delete", "--force", "t4"]);
    env.assert_clean();
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
