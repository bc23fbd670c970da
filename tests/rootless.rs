//! Rootless containers (issue #9): nvbind run by an unprivileged user, with a user namespace
//! mapping uid 0 inside to that user outside. Needs root (CI runs as root): each test makes a
//! throw-away user (useradd, which also grants it a subordinate ID range), a directory it owns
//! with a busybox bundle and its state root, and runs nvbind as that user through setpriv.
//! The `User` guard deletes its containers, kills whatever still runs under its uid, removes
//! the user and the directory, also when the test fails. Rootful controls use `Env`.

mod common;
#[path = "common/rootless_user.rs"]
mod rootless_user;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{wait_for, Env, NVBIND};
use rootless_user::{text, User};
use serde_json::{json, Value};

type Edit<'a> = &'a dyn Fn(&mut Value);

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn spec_rootless_is_what_runc_writes() {
    let user = User::new();
    let b = user.dir.join("s");
    fs::create_dir(&b).unwrap();
    user.chown(&b);
    user.ok(&["spec", "--rootless", "--bundle", b.to_str().unwrap()]);
    let ours: Value = serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap();
    let linux = &ours["linux"];
    let mapping = |id| json!([{"containerID": 0, "hostID": id, "size": 1}]);
    assert_eq!(linux["uidMappings"], mapping(user.uid));
    assert_eq!(linux["gidMappings"], mapping(user.gid));
    let ns: Vec<&str> = linux["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert!(ns.contains(&"user") && !ns.contains(&"network"), "{ns:?}");
    assert!(linux.get("resources").is_none(), "{}", linux["resources"]);
    let mounts = ours["mounts"].as_array().unwrap();
    let sys = mounts.iter().find(|m| m["destination"] == "/sys").unwrap();
    for opt in ["rbind", "ro", "nosuid", "noexec", "nodev"] {
        assert!(
            sys["options"].as_array().unwrap().contains(&json!(opt)),
            "{sys}"
        );
    }
    let gid_opts: Vec<&Value> = mounts
        .iter()
        .flat_map(|m| m["options"].as_array().into_iter().flatten())
        .filter(|o| o.as_str().unwrap().starts_with("gid="))
        .collect();
    assert!(gid_opts.is_empty(), "unmapped gid options: {gid_opts:?}");

    // Field for field what runc writes (issue 15: terminal, hostname, no seccomp profile,
    // no annotations); capabilities included: no inheritable set.
    if Command::new("runc").arg("--version").output().is_err() {
        println!("runc is not installed: comparison with runc spec --rootless skipped");
        return;
    }
    let r = user.dir.join("r");
    fs::create_dir(&r).unwrap();
    user.chown(&r);
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            &user.uid.to_string(),
            "--regid",
            &user.gid.to_string(),
            "--clear-groups",
            "--",
        ])
        .args([
            "runc",
            "spec",
            "--rootless",
            "--bundle",
            r.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runc: Value = serde_json::from_slice(&fs::read(r.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        common::spec_order_free(&ours),
        common::spec_order_free(&runc)
    );
}

#[test]
fn runs_as_root_in_its_own_user_namespace() {
    let user = User::new();
    let script = "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; grep NoNewPrivs /proc/self/status";
    let b = user.bundle("b", &["sh", "-c", script], |_| {});
    let out = user.ok(&["run", "--bundle", &b, "r1"]);
    let want = [
        "0".to_string(),
        "0".to_string(),
        format!("0 {} 1", user.uid),
        format!("0 {} 1", user.gid),
        "NoNewPrivs: 1".to_string(),
    ];
    assert_eq!(lines(&out), want);
    user.assert_clean();
}

/// A root-owned directory to bind into containers: a root-only file (0600), a root-owned
/// subdirectory, and a setuid-root static program that prints its euid and the file it is
/// given (a setuid busybox would drop the privilege itself, proving nothing).
fn host_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("nvbind-rl-host-")
        .tempdir()
        .unwrap();
    let p = dir.path();
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(p.join("secret"), "host-secret\n").unwrap();
    fs::set_permissions(p.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(p.join("rw")).unwrap();
    fs::set_permissions(p.join("rw"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        p.join("suidcat.c"),
        r#"#include <stdio.h>
#include <unistd.h>
#include <fcntl.h>
int main(int argc, char **argv) {
    char buf[64] = {0};
    printf("euid=%d\n", (int)geteuid());
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror("open"); return 1; }
    if (read(fd, buf, sizeof buf - 1) < 0) return 2;
    printf("read=%s", buf);
    return 0;
}
"#,
    )
    .unwrap();
    let cc = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(p.join("suidcat"))
        .arg(p.join("suidcat.c"))
        .output()
        .expect("cc is needed to build the setuid test program (gcc, libc6-dev)");
    assert!(
        cc.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    fs::set_permissions(p.join("suidcat"), fs::Permissions::from_mode(0o4755)).unwrap();
    dir
}

const ATTEMPTS: &str = "touch /host/rw/pwned 2>&1; echo touch=$?; cat /host/secret 2>&1; \
    echo cat=$?; /host/suidcat /host/secret 2>&1; echo suid=$?; stat -c owner=%u /host/secret";

fn bind_host(config: &mut Value, host: &Path) {
    let m =
        json!({"destination": "/host", "type": "bind", "source": host, "options": ["rbind", "rw"]});
    config["mounts"].as_array_mut().unwrap().push(m);
}

#[test]
fn cannot_gain_host_root() {
    let host = host_dir();
    let user = User::new();
    let b = user.bundle("b", &["sh", "-c", ATTEMPTS], |c| bind_host(c, host.path()));
    let out = user.ok(&["run", "--bundle", &b, "r1"]);
    println!("rootless:\n{out}");
    let out = lines(&out);
    let has = |s: &str| out.iter().any(|l| l == s);
    assert!(has("touch: /host/rw/pwned: Permission denied"), "{out:?}");
    assert!(!host.path().join("rw/pwned").exists());
    assert!(
        has("cat: can't open '/host/secret': Permission denied"),
        "{out:?}"
    );
    // root inside already; the setuid bit of a file whose owner is unmapped gives nothing more
    assert!(
        has("euid=0") && has("open: Permission denied") && has("suid=1"),
        "{out:?}"
    );
    assert!(!out.iter().any(|l| l.contains("host-secret")), "{out:?}");
    // host root is nobody (the overflow uid) from inside
    assert!(has("owner=65534"), "{out:?}");
    user.assert_clean();

    // Control: the same attempts from a rootful container succeed, so the checks above can
    // fail. As container root: write, read, host root is 0.
    let env = Env::new();
    let rb = env.bundle("rb", &["sh", "-c", ATTEMPTS]);
    env.edit(&rb, |c| bind_host(c, host.path()));
    let out = lines(&env.ok(&["run", "--bundle", rb.to_str().unwrap(), "c1"]));
    assert!(
        out.contains(&"touch=0".into()) && out.contains(&"host-secret".into()),
        "{out:?}"
    );
    assert!(out.contains(&"owner=0".into()), "{out:?}");
    assert!(host.path().join("rw/pwned").exists());
    // As uid 1000 without no_new_privs, the setuid program becomes root and reads the file;
    // with no_new_privs (the rootless spec's default) it does not.
    for (nnp, euid, read) in [(false, "euid=0", true), (true, "euid=1000", false)] {
        let name = format!("u{nnp}");
        let ub = env.bundle(&name, &["/host/suidcat", "/host/secret"]);
        env.edit(&ub, |c| {
            bind_host(c, host.path());
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
            c["process"]["noNewPrivileges"] = json!(nnp);
        });
        let out = env.nvbind(&["run", "--bundle", ub.to_str().unwrap(), &name]);
        let stdout = lines(&text(&out));
        assert!(stdout.contains(&euid.into()), "nnp={nnp}: {stdout:?}");
        assert_eq!(
            stdout.contains(&"read=host-secret".into()),
            read,
            "nnp={nnp}: {stdout:?}"
        );
    }
    env.assert_clean();
}

#[test]
fn lifecycle_verbs_as_the_user() {
    let user = User::new();
    let loop_ = "trap 'exit 0' TERM; while :; do sleep 0.1; done";
    let b = user.bundle("b", &["sh", "-c", loop_], |_| {});
    user.ok(&["create", "--bundle", &b, "c1"]);
    assert_eq!(user.status("c1"), "created");
    assert!(user
        .ok(&["list"])
        .lines()
        .any(|l| l.starts_with("c1 ") && l.contains("created")));
    user.ok(&["start", "c1"]);
    assert_eq!(user.status("c1"), "running");
    // exec joins the container's user namespace (NVBIND-PATCHES.md #14)
    let out = user.ok(&["exec", "c1", "sh", "-c", "id -u; cat /proc/self/uid_map"]);
    assert_eq!(lines(&out), ["0".to_string(), format!("0 {} 1", user.uid)]);
    user.ok(&["exec", "-d", "c1", "sleep", "1000"]);
    // no cgroup was delegated: the verbs that need one say so
    for verb in ["ps", "pause", "events"] {
        let err = user.fails(&[verb, "c1"]);
        assert!(err.contains("runs without a cgroup"), "{verb}: {err}");
    }
    user.ok(&["kill", "c1", "TERM"]);
    assert!(wait_for(|| user.status("c1") == "stopped"));
    user.ok(&["delete", "c1"]);
    assert!(!user.ok(&["list"]).contains("c1"));

    // Without a cgroup, kill --all and delete find the processes through the PID namespace
    // (NVBIND-PATCHES.md #16): a created container, and a running one with an exec'd process.
    user.ok(&["create", "--bundle", &b, "c2"]);
    user.ok(&["delete", "c2"]);
    user.ok(&["run", "-d", "--bundle", &b, "c3"]);
    user.ok(&["exec", "-d", "c3", "sleep", "1000"]);
    user.ok(&["kill", "--all", "c3", "KILL"]);
    assert!(wait_for(|| user.status("c3") == "stopped"));
    user.ok(&["delete", "c3"]);
    user.ok(&["run", "-d", "--bundle", &b, "c4"]);
    user.ok(&["exec", "-d", "c4", "sleep", "1000"]);
    user.ok(&["delete", "--force", "c4"]);
    assert!(user.fails(&["state", "c4"]).contains("does not exist"));
    user.assert_clean();
}

#[test]
fn state_root_defaults_to_xdg_runtime_dir_and_must_be_the_users() {
    let user = User::new();
    let b = user.bundle("b", &["sleep", "1000"], |_| {});
    let xdg = user.dir.join("xdg");
    fs::create_dir(&xdg).unwrap();
    user.chown(&xdg);
    let out = user.run_as(None, None, &["run", "-d", "--bundle", &b, "x1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(xdg.join("nvbind/x1/state.json").exists());
    assert!(text(&user.run_as(None, None, &["list"])).contains("x1"));
    assert!(user
        .run_as(None, None, &["delete", "--force", "x1"])
        .status
        .success());

    // A root another user made (and left writable) is refused: state.json names the PIDs
    // that kill and delete signal.
    let foreign = tempfile::tempdir().unwrap();
    fs::set_permissions(foreign.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let out = user.run_as(Some(foreign.path()), None, &["list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("belongs to uid 0"), "{err}");
    user.assert_clean();
}

#[test]
fn stdout_on_dev_null_is_writable() {
    // NVBIND-PATCHES.md #17: the container's /dev/null replaced stdout read-only.
    let script = ["sh", "-c", "echo x; echo rc=$? >&2"];
    let user = User::new();
    let b = user.bundle("b", &script, |_| {});
    let out = user.run_as(
        Some(&user.root),
        Some(Stdio::null()),
        &["run", "--bundle", &b, "n1"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "rc=0\n");
    user.assert_clean();
    let env = Env::new();
    let rb = env.bundle("rb", &script);
    let err = env.dir.path().join("err");
    let status = Command::new(NVBIND)
        .arg("--root")
        .arg(&env.root)
        .args(["run", "--bundle", rb.to_str().unwrap(), "n2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(fs::read_to_string(&err).unwrap(), "rc=0\n");
    env.assert_clean();
}

/// The first subordinate uid granted to the user, if useradd granted any.
fn subordinate_start(user: &User, file: &str) -> Option<u32> {
    fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user.name)
            .then(|| f.next()?.parse().ok())
            .flatten()
    })
}

#[test]
fn several_ids_through_newuidmap() {
    let user = User::new();
    let (Some(uid0), Some(gid0)) = (
        subordinate_start(&user, "/etc/subuid"),
        subordinate_start(&user, "/etc/subgid"),
    ) else {
        println!("useradd granted no subordinate IDs (SUB_UID_COUNT=0?): skipped");
        return;
    };
    let b = user.bundle("b", &["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map"], |c| {
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": user.uid, "size": 1}, {"containerID": 1, "hostID": uid0, "size": 1000}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": user.gid, "size": 1}, {"containerID": 1, "hostID": gid0, "size": 1000}]);
    });
    let out = user.ok(&["run", "--bundle", &b, "m1"]);
    let want = [
        format!("0 {} 1", user.uid),
        format!("1 {uid0} 1000"),
        format!("0 {} 1", user.gid),
        format!("1 {gid0} 1000"),
    ];
    assert_eq!(lines(&out), want);
    user.assert_clean();
}

#[test]
fn bad_inputs_fail_cleanly() {
    let user = User::new();
    let no_userns = |c: &mut Value| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "user");
    };
    let other_uid = |c: &mut Value| c["linux"]["uidMappings"][0]["hostID"] = json!(0);
    let other_gid = |c: &mut Value| c["linux"]["gidMappings"][0]["hostID"] = json!(0);
    let unsubordinate = |c: &mut Value| {
        let extra = json!({"containerID": 1, "hostID": 3_000_000_000u32, "size": 10});
        c["linux"]["uidMappings"]
            .as_array_mut()
            .unwrap()
            .push(extra);
    };
    let memory = |c: &mut Value| c["linux"]["resources"] = json!({"memory": {"limit": 1 << 26}});
    let pids = |c: &mut Value| c["linux"]["resources"] = json!({"pids": {"limit": 10}});
    let groups = |c: &mut Value| c["process"]["user"]["additionalGids"] = json!([5]);
    let cases: [(&str, Edit, &str); 7] = [
        ("no-userns", &no_userns, "needs a user namespace"),
        (
            "other-uid",
            &other_uid,
            "linux.uidMappings maps host uids 0..1",
        ),
        (
            "other-gid",
            &other_gid,
            "linux.gidMappings maps host gids 0..1",
        ),
        ("unsubordinate", &unsubordinate, "newuidmap"),
        ("memory", &memory, "linux.resources.memory"),
        ("pids", &pids, "linux.resources.pids"),
        ("groups", &groups, "additionalGids"),
    ];
    for (name, edit, want) in cases {
        let b = user.bundle(name, &["true"], edit);
        let err = user.fails(&["create", "--bundle", &b, name]);
        println!("{name}: {}", err.trim_end());
        assert!(err.contains(want), "{name}: {err}");
        assert!(
            user.containers().is_empty(),
            "{name}: state left: {:?}",
            user.containers()
        );
        assert!(
            wait_for(|| user.processes().is_empty()),
            "{name}: {:?}",
            user.processes()
        );
    }
    user.assert_clean();
}

#[test]
fn exec_joins_the_user_namespace() {
    // NVBIND-PATCHES.md #14, as root: a container with a user namespace mapping 0 to 100000;
    // an exec'd process ran outside it, as real host root (uid_map "0 0 4294967295").
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "1000"]);
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    env.edit(&b, |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = map.clone();
        c["linux"]["gidMappings"] = map.clone();
    });
    rootless_user::sh("chown", &["-R", "100000:100000", b.to_str().unwrap()]);
    env.ok(&["run", "-d", "--bundle", b.to_str().unwrap(), "u1"]);
    let out = env.ok(&["exec", "u1", "sh", "-c", "cat /proc/self/uid_map"]);
    assert_eq!(lines(&out), ["0 100000 65536"]);
    env.ok(&["exec", "-d", "u1", "sleep", "999"]);
    // seen from the host, the exec'd process is the mapped uid, not root
    let host_uid = |pid: &str| {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"));
        uid.and_then(|u| u.split_whitespace().next().map(String::from))
    };
    let sleeper = fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
        let pid = e.file_name().to_string_lossy().into_owned();
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        (cmd == b"sleep\0999\0").then_some(pid)
    });
    let pid = sleeper.expect("the exec'd sleep is not running");
    assert_eq!(host_uid(&pid).as_deref(), Some("100000"));
    env.ok(&["delete", "--force", "u1"]);
    env.assert_clean();
}

/// A cgroup delegated to a user: `/sys/fs/cgroup/<controller>/<name>` for every v1
/// controller libcgroups uses that is mounted, chowned to the user; removed on drop
/// (with any child a container left).
struct Delegated {
    dirs: Vec<std::path::PathBuf>,
}

impl Delegated {
    fn new(user: &User, name: &str) -> Self {
        let mut d = Self { dirs: vec![] };
        let controllers = [
            "cpu", "cpuacct", "cpuset", "devices", "pids", "memory", "blkio",
        ];
        for c in controllers
            .into_iter()
            .chain(["freezer", "hugetlb", "perf_event", "net_prio"])
        {
            let root = Path::new("/sys/fs/cgroup").join(c);
            if !root.join("cgroup.procs").exists() {
                continue;
            }
            let dir = root.join(name);
            fs::create_dir(&dir).unwrap();
            d.dirs.push(dir.clone());
            if c == "cpuset" {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    fs::write(dir.join(f), fs::read(root.join(f)).unwrap()).unwrap();
                }
            }
            user.chown(&dir);
        }
        d
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        // A failed test can leave a container in it: kill its processes first (this runs
        // before the User's drop, which would).
        for dir in &self.dirs {
            let children = fs::read_dir(dir).into_iter().flatten().flatten();
            for child in children.filter(|c| c.path().is_dir()) {
                let procs = fs::read_to_string(child.path().join("cgroup.procs"));
                for pid in procs
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|p| p.parse().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::SIGKILL,
                    );
                }
                wait_for(|| fs::remove_dir(child.path()).is_ok());
            }
            let _ = fs::remove_dir(dir);
        }
    }
}

#[test]
fn a_delegated_cgroup_is_joined() {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        println!("cgroup v2 host: delegation is set up differently there; skipped");
        return;
    }
    let user = User::new();
    let name = format!("nvbind-rl-{}", user.name);
    let delegated = Delegated::new(&user, &name);
    let path = format!("/{name}/d1");
    let b = user.bundle("b", &["sleep", "1000"], |c| {
        c["linux"]["cgroupsPath"] = json!(path)
    });
    user.ok(&["run", "-d", "--bundle", &b, "d1"]);
    let state: Value = serde_json::from_str(&user.ok(&["state", "d1"])).unwrap();
    let pid = state["pid"].as_i64().unwrap();
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroups.contains(&format!("pids:{path}\n")), "{cgroups}");
    assert!(user
        .ok(&["ps", "--format", "json", "d1"])
        .contains(&pid.to_string()));
    user.ok(&["pause", "d1"]);
    assert_eq!(user.status("d1"), "paused");
    user.ok(&["resume", "d1"]);
    assert_eq!(user.status("d1"), "running");
    // limits stay refused on v1, even here
    let limited = user.bundle("l", &["true"], |c| {
        c["linux"]["cgroupsPath"] = json!(format!("/{name}/l1"));
        c["linux"]["resources"] = json!({"pids": {"limit": 10}});
    });
    let err = user.fails(&["create", "--bundle", &limited, "l1"]);
    assert!(err.contains("cgroup v1"), "{err}");
    user.ok(&["delete", "--force", "d1"]);
    for dir in &delegated.dirs {
        assert!(
            !dir.join("d1").exists(),
            "{} left",
            dir.join("d1").display()
        );
    }
    user.assert_clean();
}
