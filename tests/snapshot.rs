//! Rootfs snapshots with real containers: btrfs on a loop device made here, overlay clones on
//! tmpfs, the copy backend on the test machine's /tmp, and the bad inputs. Root only (the
//! tests say so and pass vacuously otherwise).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{wait_for, Env};
use serde_json::{json, Value};

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipping: snapshot tests need root (mounts, containers)");
    }
    root
}

fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A btrfs filesystem on a loop device, made by the test; unmounted (and its loop device
/// released, `-o loop` sets autoclear) and removed on drop, even when the test fails.
struct LoopBtrfs {
    dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl LoopBtrfs {
    fn new() -> Option<Self> {
        if !sh("command -v mkfs.btrfs >/dev/null") {
            eprintln!("skipping: mkfs.btrfs is not installed (apt-get install btrfs-progs)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("nvbind-btrfs-")
            .tempdir()
            .unwrap();
        let img = dir.path().join("img");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let made = sh(&format!(
            "truncate -s 512M {0} && mkfs.btrfs -q {0} >/dev/null 2>&1 && mount -o loop {0} {1}",
            img.display(),
            mnt.display()
        ));
        assert!(made, "cannot make a loop-mounted btrfs");
        Some(Self { dir, mnt })
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        if !sh(&format!("umount {}", self.mnt.display())) {
            sh(&format!("umount -l {}", self.mnt.display()));
        }
        let _ = fs::remove_file(self.dir.path().join("img"));
    }
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl Tmpfs {
    fn new(size: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nvbind-tmpfs-")
            .tempdir()
            .unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        assert!(sh(&format!(
            "mount -t tmpfs -o size={size} tmpfs {}",
            mnt.display()
        )));
        Self { _dir: dir, mnt }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if !sh(&format!("umount {}", self.mnt.display())) {
            sh(&format!("umount -l {}", self.mnt.display()));
        }
    }
}

/// A writable-rootfs bundle made by the harness, moved to `parent/name` (its rootfs a btrfs
/// subvolume when `subvolume`).
fn bundle_in(env: &Env, parent: &Path, name: &str, args: &[&str], subvolume: bool) -> PathBuf {
    let made = env.bundle(&format!("{name}-src"), args);
    env.edit(&made, |c| c["root"]["readonly"] = json!(false));
    let b = parent.join(name);
    fs::create_dir_all(&b).unwrap();
    let rootfs = b.join("rootfs");
    if subvolume {
        assert!(sh(&format!(
            "btrfs -q subvolume create {} >/dev/null",
            rootfs.display()
        )));
    } else {
        fs::create_dir(&rootfs).unwrap();
    }
    assert!(sh(&format!(
        "cp -a {}/rootfs/. {}/",
        made.display(),
        rootfs.display()
    )));
    fs::copy(made.join("config.json"), b.join("config.json")).unwrap();
    b
}

fn run_detached(env: &Env, bundle: &Path, id: &str) {
    env.own_cgroup(bundle, id);
    env.ok(&["run", "-d", "-b", bundle.to_str().unwrap(), id]);
}

/// [`run_detached`], checking that the bundle is as the engine left it: the clone's
/// root.path goes to libcontainer in memory, nothing is written in or beside config.json.
fn run_detached_bundle_untouched(env: &Env, bundle: &Path, id: &str) {
    env.own_cgroup(bundle, id);
    let config = fs::read(bundle.join("config.json")).unwrap();
    let entries = bundle_entries(bundle);
    env.ok(&["run", "-d", "-b", bundle.to_str().unwrap(), id]);
    assert!(
        fs::read(bundle.join("config.json")).unwrap() == config,
        "{id}: config.json was rewritten"
    );
    assert_eq!(bundle_entries(bundle), entries, "{id}: the bundle changed");
}

fn stop(env: &Env, id: &str) {
    env.ok(&["kill", id, "KILL"]);
    assert!(wait_for(|| env.state(id)["status"] == "stopped"));
}

fn names(env: &Env, id: &str) -> Vec<String> {
    let v: Value =
        serde_json::from_str(&env.ok(&["snapshot", "list", id, "--format", "json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

/// snapshot -> change files -> restore -> files back, on the backend `rootfs` calls for.
fn change_and_roll_back(env: &Env, id: &str, rootfs: &Path, backend: &str) {
    let out = env.ok(&["snapshot", "create", id, "s1"]);
    assert_eq!(out.trim(), "s1");
    let list: Value =
        serde_json::from_str(&env.ok(&["snapshot", "list", id, "--format", "json"])).unwrap();
    assert_eq!(list[0]["backend"], backend, "{list}");
    // Change the tree: a new file, a removed file, new content, a mode.
    fs::write(rootfs.join("etc/new"), "x").unwrap();
    fs::remove_file(rootfs.join("bin/ls")).unwrap();
    fs::write(rootfs.join("etc/passwd"), "changed\n").unwrap();
    fs::set_permissions(rootfs.join("etc/group"), fs::Permissions::from_mode(0o600)).unwrap();
    stop(env, id);
    let t = Instant::now();
    env.ok(&["snapshot", "restore", id, "s1"]);
    eprintln!("{backend} rollback took {:?}", t.elapsed());
    assert!(!rootfs.join("etc/new").exists());
    assert!(fs::symlink_metadata(rootfs.join("bin/ls")).is_ok());
    assert!(fs::read_to_string(rootfs.join("etc/passwd"))
        .unwrap()
        .starts_with("root:"));
    assert_eq!(
        fs::metadata(rootfs.join("etc/group"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    // The container starts again from the rolled-back tree.
    env.ok(&["delete", id]);
}

#[test]
fn btrfs_snapshot_change_restore_files_back() {
    if !is_root() {
        return;
    }
    let Some(fs_) = LoopBtrfs::new() else { return };
    let env = Env::new();
    let b = bundle_in(&env, &fs_.mnt, "b", &["sleep", "1000"], true);
    run_detached(&env, &b, "c1");
    change_and_roll_back(&env, "c1", &b.join("rootfs"), "btrfs");
    // The rolled-back rootfs is still a subvolume, so the next snapshot is O(1) again.
    run_detached(&env, &b, "c1");
    env.ok(&["snapshot", "create", "c1", "s2"]);
    assert_eq!(names(&env, "c1"), ["s1", "s2"]);
    env.ok(&["delete", "--force", "c1"]);
    env.assert_clean();
}

#[test]
fn btrfs_rootfs_that_is_not_a_subvolume_is_explained() {
    if !is_root() {
        return;
    }
    let Some(fs_) = LoopBtrfs::new() else { return };
    let env = Env::new();
    let b = bundle_in(&env, &fs_.mnt, "b", &["sleep", "1000"], false);
    run_detached(&env, &b, "c1");
    let err = env.fails(&["snapshot", "create", "c1", "s1"]);
    assert!(
        err.contains("not a subvolume") && err.contains("btrfs subvolume create"),
        "{err}"
    );
    assert!(names(&env, "c1").is_empty());
    assert_eq!(
        env.state("c1")["status"],
        "running",
        "a failed snapshot must thaw the container"
    );
    env.ok(&["delete", "--force", "c1"]);
    env.assert_clean();
}

#[test]
fn copy_backend_snapshot_change_restore_and_paused_force() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let b = bundle_in(&env, env.dir.path(), "b", &["sleep", "1000"], false);
    run_detached(&env, &b, "c1");
    change_and_roll_back(&env, "c1", &b.join("rootfs"), "copy");

    // A paused container is rolled back in place with --force, and only then.
    run_detached(&env, &b, "c1");
    fs::write(b.join("rootfs/etc/new"), "x").unwrap();
    let err = env.fails(&["snapshot", "restore", "c1", "s1"]);
    assert!(
        err.contains("it is running") && err.contains("pause it and pass --force"),
        "{err}"
    );
    assert!(
        b.join("rootfs/etc/new").exists(),
        "a refused rollback changed files"
    );
    env.ok(&["pause", "c1"]);
    let err = env.fails(&["snapshot", "restore", "c1", "s1"]);
    assert!(err.contains("paused"), "{err}");
    env.ok(&["snapshot", "restore", "--force", "c1", "s1"]);
    assert!(!b.join("rootfs/etc/new").exists());
    env.ok(&["resume", "c1"]);
    assert_eq!(env.state("c1")["status"], "running");
    env.ok(&["delete", "--force", "c1"]);
    env.assert_clean();
}

#[test]
fn btrfs_only_backend_on_tmpfs_and_bad_names_change_nothing() {
    if !is_root() {
        return;
    }
    let t = Tmpfs::new("64m");
    let env = Env::new();
    let b = bundle_in(&env, &t.mnt, "b", &["sleep", "1000"], false);
    run_detached(&env, &b, "c1");
    let err = env.fails(&["snapshot", "create", "--backend", "btrfs", "c1", "s1"]);
    assert!(err.contains("tmpfs, which has no btrfs snapshots"), "{err}");
    env.ok(&["snapshot", "create", "c1", "good"]);
    for bad in ["../escape", "a/b", ".hidden", ""] {
        let err = env.fails(&["snapshot", "create", "c1", bad]);
        assert!(err.contains("invalid snapshot name"), "{err}");
        let err = env.fails(&["snapshot", "delete", "c1", bad]);
        assert!(err.contains("invalid snapshot name"), "{err}");
    }
    let err = env.fails(&["snapshot", "create", "c1", "good"]);
    assert!(err.contains("already exists"), "{err}");
    stop(&env, "c1");
    let err = env.fails(&["snapshot", "restore", "c1", "nope"]);
    assert!(
        err.contains("\"nope\" does not exist") && err.contains("good"),
        "{err}"
    );
    let err = env.fails(&["snapshot", "delete", "c1", "nope"]);
    assert!(err.contains("does not exist"), "{err}");
    let err = env.fails(&["snapshot", "list", "nosuch"]);
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(names(&env, "c1"), ["good"]);
    let store = t.mnt.join("b/.nvbind-snapshots/rootfs");
    let entries: Vec<_> = fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, ["good"], "temporary or partial snapshots left");
    env.ok(&["delete", "c1"]);
    env.assert_clean();
}

#[test]
fn retention_keeps_the_newest() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let b = bundle_in(&env, env.dir.path(), "b", &["sleep", "1000"], false);
    run_detached(&env, &b, "c1");
    for n in ["a", "b", "c", "d"] {
        env.ok(&["snapshot", "create", "--keep", "2", "c1", n]);
    }
    assert_eq!(names(&env, "c1"), ["c", "d"]);
    env.ok(&["snapshot", "delete", "c1", "c"]);
    assert_eq!(names(&env, "c1"), ["d"]);
    env.ok(&["delete", "--force", "c1"]);
    env.assert_clean();
}

/// Bundles that start from a snapshot: the clone is the container's, the base is untouched,
/// delete removes the clone, and a snapshot with clones cannot be deleted.
fn from_snapshot(env: &Env, parent: &Path, subvolume: bool, want_backend: &str) {
    let b = bundle_in(env, parent, "b", &["sleep", "1000"], subvolume);
    // (run, not create: a created container's init holds the state root's lock until start)
    run_detached(env, &b, "base");
    env.ok(&["snapshot", "create", "base", "golden"]);
    let golden = b.join(".nvbind-snapshots/rootfs/golden/rootfs");
    let before = tree_listing(&golden);

    env.edit(&b, |c| {
        c["annotations"] = json!({"org.nvbind.snapshot.from": "golden"});
        c["process"]["args"] = json!(["sh", "-c", "echo mine > /etc/motd; sleep 1000"]);
    });
    run_detached_bundle_untouched(env, &b, "c1");
    run_detached_bundle_untouched(env, &b, "c2");
    let s1 = env.state("c1");
    let rootfs = PathBuf::from(s1["rootfs"].as_str().unwrap());
    assert_ne!(rootfs, b.join("rootfs"), "{s1}");
    assert!(wait_for(|| rootfs.join("etc/motd").exists()));
    assert!(
        !golden.join("etc/motd").exists(),
        "the container wrote into the base"
    );
    assert!(
        !b.join("rootfs/etc/motd").exists(),
        "the container wrote into the bundle's rootfs"
    );
    let clones = b.join(".nvbind-snapshots/rootfs/golden/.nvbind-clones");
    let meta: Value =
        serde_json::from_slice(&fs::read(env.root.join(".nvbind-clones/c1.json")).unwrap())
            .unwrap();
    assert_eq!(meta["backend"], want_backend, "{meta}");
    // Deleting the base while containers use it is refused ("base" still has the bundle's
    // own rootfs).
    let err = env.fails(&["snapshot", "delete", "base", "golden"]);
    assert!(
        err.contains("is the base of container(s)") && err.contains("c1"),
        "{err}"
    );
    env.ok(&["delete", "--force", "c1"]);
    env.ok(&["delete", "--force", "c2"]);
    env.ok(&["delete", "--force", "base"]);
    assert!(!rootfs.exists(), "the clone was not removed on delete");
    assert!(!clones.exists() || fs::read_dir(&clones).unwrap().next().is_none());
    assert_eq!(tree_listing(&golden), before, "the base changed");

    // keep=true keeps the clone after delete.
    env.edit(
        &b,
        |c| {
            c["annotations"] =
                json!({"org.nvbind.snapshot.from": "golden", "org.nvbind.snapshot.keep": "true"})
        },
    );
    run_detached(env, &b, "k1");
    let kept = PathBuf::from(env.state("k1")["rootfs"].as_str().unwrap());
    env.ok(&["delete", "--force", "k1"]);
    assert!(
        kept.join("bin/sh").exists() || fs::symlink_metadata(kept.join("bin/sh")).is_ok(),
        "clone not kept"
    );
    // Clean up the kept clone by hand, as its owner would.
    let dir = kept.parent().unwrap().to_path_buf();
    sh(&format!("umount {0}/merged 2>/dev/null; btrfs -q subvolume delete {0}/rootfs >/dev/null 2>&1; rm -rf {0}", dir.display()));
}

/// The names in a bundle directory, sorted.
fn bundle_entries(b: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(b)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn tree_listing(p: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . -printf '%p %m %s %T@\\n' | sort",
            p.display()
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bundle_from_snapshot_on_tmpfs_uses_an_overlay() {
    if !is_root() {
        return;
    }
    let t = Tmpfs::new("256m");
    let env = Env::new();
    from_snapshot(&env, &t.mnt, false, "overlay");
    env.assert_clean();
}

#[test]
fn bundle_from_snapshot_on_btrfs_uses_a_subvolume_snapshot() {
    if !is_root() {
        return;
    }
    let Some(fs_) = LoopBtrfs::new() else { return };
    let env = Env::new();
    from_snapshot(&env, &fs_.mnt, true, "btrfs");
    env.assert_clean();
}

#[test]
fn bundle_from_a_path_and_from_an_unknown_name() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let base = bundle_in(&env, env.dir.path(), "base", &["true"], false);
    let b = bundle_in(
        &env,
        env.dir.path(),
        "b",
        &["sh", "-c", "touch /made; sleep 1000"],
        false,
    );
    let base_rootfs = base.join("rootfs").display().to_string();
    env.edit(&b, |c| {
        c["annotations"] = json!({"org.nvbind.snapshot.from": base_rootfs})
    });
    run_detached_bundle_untouched(&env, &b, "c1");
    let rootfs = PathBuf::from(env.state("c1")["rootfs"].as_str().unwrap());
    assert!(wait_for(|| rootfs.join("made").exists()));
    assert!(!base.join("rootfs/made").exists());
    env.ok(&["delete", "--force", "c1"]);
    assert!(!rootfs.exists());

    env.edit(&b, |c| {
        c["annotations"] = json!({"org.nvbind.snapshot.from": "nosuch"})
    });
    let err = env.fails(&["run", "-d", "-b", b.to_str().unwrap(), "c2"]);
    assert!(err.contains("\"nosuch\" does not exist"), "{err}");
    assert!(
        env.ids().iter().all(|i| i.starts_with('.')),
        "{:?}",
        env.ids()
    );
    let _ = fs::remove_dir(env.root.join(".nvbind-clones"));
    env.assert_clean();
}
