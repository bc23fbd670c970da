//! A state root shared with runc (issue 21): Docker hands runc and every runtime of daemon.json
//! /run/docker/runtime-runc/moby, and containerd's runc shims share one root per namespace.
//! Real runc containers beside real nvbind containers in one --root: every nvbind verb on
//! runc's ID fails with one line naming runc and changes nothing of runc's (state bytes,
//! process, cgroup), and runc's verbs on nvbind's ID change nothing of nvbind's. Needs root
//! and Debian's runc (scripts/test installs it).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;

/// runc on the test's root. Its output goes through files: a detached container inherits the
/// runtime's stdio and would hold a pipe open.
fn runc(env: &Env, args: &[&str]) -> Output {
    let out = env.dir.path().join(".runc-out");
    let err = env.dir.path().join(".runc-err");
    let status = Command::new("runc")
        .arg("--root")
        .arg(&env.root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .status()
        .expect("cannot run runc: apt-get install runc (scripts/test does)");
    Output {
        status,
        stdout: fs::read(&out).unwrap_or_default(),
        stderr: fs::read(&err).unwrap_or_default(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Deletes, through runc and by name, the runc containers a test made, and removes the state
/// directories it fabricated, even when the test fails. Declared after the `Env`, so it runs
/// first: the `Env`'s own cleanup goes through nvbind, which leaves runc's containers alone.
struct RuncCleanup<'a> {
    env: &'a Env,
    ids: Vec<&'static str>,
    fabricated: Vec<PathBuf>,
}

impl Drop for RuncCleanup<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = runc(self.env, &["delete", "--force", id]);
        }
        for dir in &self.fabricated {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Everything of a container that the other runtime must not change: its state directory's
/// files byte for byte, whether its init lives, whether its cgroup exists.
#[derive(Debug, PartialEq)]
struct Footprint {
    files: BTreeMap<String, Vec<u8>>,
    init_alive: bool,
    cgroups: Vec<PathBuf>,
}

fn footprint(env: &Env, id: &str, pid: i64, bundle_name: &str) -> Footprint {
    let dir = env.root.join(id);
    // Env::bundle gives each bundle the cgroupsPath /PREFIX-NAME.
    let leaf = format!("{}-{bundle_name}", env.cgroup_prefix);
    let mut files = BTreeMap::new();
    for e in fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ty = e.file_type().unwrap();
        // A fifo's bytes cannot be read without taking them; its presence is what counts.
        let bytes = if ty.is_file() {
            fs::read(e.path()).unwrap()
        } else if ty.is_fifo() {
            b"<fifo>".to_vec()
        } else {
            b"<other>".to_vec()
        };
        files.insert(name, bytes);
    }
    Footprint {
        files,
        init_alive: process_alive(pid),
        cgroups: leaked_cgroups(&env.cgroup_prefix)
            .into_iter()
            .filter(|p| p.file_name() == Some(leaf.as_ref()))
            .collect(),
    }
}

/// A root with runc's `rc1` and nvbind's `nv1`, both running `sleep`.
fn both_running(env: &Env) -> (i64, i64) {
    let rb = env.bundle("rc", &["sleep", "1000"]);
    let out = runc(env, &["run", "-d", "--bundle", rb.to_str().unwrap(), "rc1"]);
    assert!(out.status.success(), "runc run: {}", text(&out.stderr));
    let nb = env.bundle("nv", &["sleep", "1000"]);
    env.ok(&["run", "-d", "-b", nb.to_str().unwrap(), "nv1"]);
    (
        runc_state(env, "rc1")["pid"].as_i64().unwrap(),
        env.state("nv1")["pid"].as_i64().unwrap(),
    )
}

fn runc_state(env: &Env, id: &str) -> Value {
    let out = runc(env, &["state", id]);
    assert!(
        out.status.success(),
        "runc state {id}: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn nvbind_verbs_on_runcs_container_fail_and_change_nothing() {
    let env = Env::new();
    let _runc = RuncCleanup {
        env: &env,
        ids: vec!["rc1"],
        fabricated: vec![],
    };
    let (rc_pid, nv_pid) = both_running(&env);
    let before = footprint(&env, "rc1", rc_pid, "rc");
    assert!(
        before.init_alive && !before.cgroups.is_empty(),
        "{before:?}"
    );

    // list: nvbind's own only, and no warning about runc's.
    let out = env.nvbind(&["list"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stderr), "", "list warned");
    let table = text(&out.stdout);
    assert!(table.contains("nv1") && !table.contains("rc1"), "{table}");
    assert_eq!(env.ok(&["list", "-q"]), "nv1\n");
    let json: Value = serde_json::from_str(&env.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");

    let b = env.bundle("other", &["true"]);
    let b = b.to_str().unwrap();
    let verbs: &[&[&str]] = &[
        &["state", "rc1"],
        &["kill", "rc1"],
        &["kill", "rc1", "KILL"],
        &["kill", "--all", "rc1", "KILL"],
        &["delete", "rc1"],
        &["delete", "--force", "rc1"],
        &["exec", "rc1", "--", "true"],
        &["exec", "-d", "rc1", "--", "sleep", "1"],
        &["pause", "rc1"],
        &["resume", "rc1"],
        &["start", "rc1"],
        &["ps", "rc1"],
        &["events", "--stats", "rc1"],
        &["update", "--memory", "64m", "rc1"],
        &["create", "-b", b, "rc1"],
        &["run", "-d", "-b", b, "rc1"],
    ];
    let root = env.root.to_str().unwrap();
    for args in verbs {
        // exec fails with 255 as runc's exec does; every other verb with 1.
        let err = env.fails_with(args, if args[0] == "exec" { 255 } else { 1 });
        assert!(
            err.contains("\"rc1\"")
                && err.contains("runc's, not nvbind's")
                && err.contains(&format!("`runc --root {root}`")),
            "{args:?}: {err}"
        );
        assert_eq!(
            footprint(&env, "rc1", rc_pid, "rc"),
            before,
            "{args:?} changed runc's"
        );
    }
    assert_eq!(runc_state(&env, "rc1")["status"], "running");

    // runc still manages its own container: kill, then delete, by runc.
    let out = runc(&env, &["delete", "--force", "rc1"]);
    assert!(out.status.success(), "runc delete: {}", text(&out.stderr));
    assert!(!env.root.join("rc1").exists());
    assert!(wait_for(|| !process_alive(rc_pid)));
    // nvbind's container went through all of it untouched.
    assert_eq!(env.state("nv1")["pid"].as_i64(), Some(nv_pid));
    assert_eq!(env.state("nv1")["status"], "running");
    env.ok(&["delete", "--force", "nv1"]);
    env.assert_clean();
}

#[test]
fn runc_verbs_on_nvbinds_container_fail_and_change_nothing() {
    let env = Env::new();
    let _runc = RuncCleanup {
        env: &env,
        ids: vec!["rc1"],
        fabricated: vec![],
    };
    let (rc_pid, nv_pid) = both_running(&env);
    let before = footprint(&env, "nv1", nv_pid, "nv");
    let record = fs::read(env.root.join(".nvbind-container-nv1.json")).unwrap();

    // runc lists its own and says, on stderr, that it cannot load nvbind's: it reads the
    // state.json of every directory and nvbind's is youki's format. Harmless: exit 0, and
    // engines ask runc about their own IDs only (state, kill, delete), never list.
    let out = runc(&env, &["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("rc1") && !table.contains("nv1"), "{table}");
    assert!(
        text(&out.stderr).contains("load container nv1"),
        "{}",
        text(&out.stderr)
    );
    for args in [
        &["state", "nv1"][..],
        &["kill", "nv1", "KILL"],
        &["kill", "--all", "nv1", "KILL"],
        &["delete", "nv1"],
        &["delete", "--force", "nv1"],
        &["exec", "nv1", "true"],
        &["pause", "nv1"],
        &["ps", "nv1"],
    ] {
        let out = runc(&env, args);
        assert!(!out.status.success(), "runc {args:?} succeeded");
        assert_eq!(
            footprint(&env, "nv1", nv_pid, "nv"),
            before,
            "runc {args:?}"
        );
    }
    assert_eq!(
        fs::read(env.root.join(".nvbind-container-nv1.json")).unwrap(),
        record
    );
    assert_eq!(env.state("nv1")["status"], "running");
    env.ok(&["delete", "--force", "nv1"]);
    assert!(!env.root.join(".nvbind-container-nv1.json").exists());
    assert_eq!(runc_state(&env, "rc1")["pid"].as_i64(), Some(rc_pid));
    let out = runc(&env, &["delete", "--force", "rc1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    env.assert_clean();
}

/// Files of a state directory, by name.
fn files_of(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What a killed `runc create` leaves (its directory and exec fifo, no state.json yet) and
/// directories no runtime nvbind knows wrote are not nvbind's half-made containers: refused,
/// left out of `list`, untouched. nvbind's own half-made container, beside them, is still
/// found by its record and removed by `delete --force`.
#[test]
fn only_nvbinds_own_half_made_containers_are_cleaned() {
    let env = Env::new();
    fs::create_dir_all(&env.root).unwrap();
    let runc_half = env.root.join("rchalf");
    let junk = env.root.join("junk");
    let _runc = RuncCleanup {
        env: &env,
        ids: vec!["rchalf"],
        fabricated: vec![runc_half.clone(), junk.clone()],
    };
    fs::create_dir(&runc_half).unwrap();
    nix::unistd::mkfifo(
        &runc_half.join("exec.fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o622),
    )
    .unwrap();
    fs::create_dir(&junk).unwrap();
    fs::write(junk.join("state.json"), "{\"id\":").unwrap();
    // A plain file named like a container, and a link to a directory elsewhere.
    let file = env.root.join("afile");
    fs::write(&file, "not a container").unwrap();
    let elsewhere = env.dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.root.join("alink")).unwrap();

    // nvbind's own, made half-made as a create killed before state.json would leave it.
    let b = env.bundle("mine", &["sleep", "1000"]);
    env.ok(&["create", "-b", b.to_str().unwrap(), "mine"]);
    let init = env.state("mine")["pid"].as_i64().unwrap();
    fs::remove_file(env.root.join("mine/state.json")).unwrap();

    for id in ["rchalf", "junk", "afile", "alink"] {
        for args in [
            &["state", id][..],
            &["delete", "--force", id],
            &["kill", id, "KILL"],
        ] {
            let err = env.fails(args);
            assert!(err.contains("not made by nvbind"), "{args:?}: {err}");
        }
    }
    assert_eq!(files_of(&runc_half), ["exec.fifo"]);
    assert_eq!(fs::read(junk.join("state.json")).unwrap(), b"{\"id\":");
    assert_eq!(fs::read(&file).unwrap(), b"not a container");
    assert!(elsewhere.exists() && env.root.join("alink").exists());

    let out = env.nvbind(&["list", "-q"]);
    assert_eq!(text(&out.stdout), "mine\n");
    assert!(
        text(&out.stderr).contains("\"mine\" is half-made"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("rchalf"),
        "{}",
        text(&out.stderr)
    );
    env.ok(&["delete", "--force", "mine"]);
    assert!(wait_for(|| !process_alive(init)), "init {init} survived");
    assert!(!env.root.join("mine").exists());

    // runc's delete is what removes its own leftover (delete.go removes a directory without
    // state.json; without --force it still exits 1, "container does not exist").
    let out = runc(&env, &["delete", "--force", "rchalf"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!runc_half.exists());
    fs::remove_dir_all(&junk).unwrap();
    fs::remove_file(&file).unwrap();
    fs::remove_file(env.root.join("alink")).unwrap();
    env.assert_clean();
}
