//! Checkpoint/restore with CRIU and real busybox containers. Needs root and a CRIU that works
//! on this kernel (`scripts/setup-criu` installs one); without it each test prints why it
//! skips and passes.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::criu::*;
use common::{process_alive, start_time, wait_for, Env};
use serde_json::json;

#[test]
fn counter_keeps_increasing_across_two_checkpoint_restore_cycles() {
    let _turn = take_turn();
    let Some(criu) = working_criu() else { return };
    let env = Env::new();
    let b = counter_bundle(&env, "b", COUNTER);
    let bs = b.to_str().unwrap();
    let mut keep = Vec::new();
    detached(&env, &criu, &["run", "-d", "-b", bs, "c1"], &mut keep);
    assert!(wait_for(|| count(&b) > 3));
    for round in 1..=2 {
        let img = env.dir.path().join(format!("img{round}"));
        let imgs = img.to_str().unwrap();
        env.ok(&with_criu(
            &criu,
            &["checkpoint", "--image-path", imgs, "c1"],
        ));
        // runc semantics: the checkpointed container is gone.
        assert!(env.fails(&["state", "c1"]).contains("does not exist"));
        let frozen = count(&b);
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(
            count(&b),
            frozen,
            "round {round}: processes still ran after checkpoint"
        );
        let pid_file = env.dir.path().join(format!("pid{round}"));
        detached(
            &env,
            &criu,
            &[
                "restore",
                "-d",
                "-b",
                bs,
                "--image-path",
                imgs,
                "--pid-file",
                pid_file.to_str().unwrap(),
                "c1",
            ],
            &mut keep,
        );
        let st = env.state("c1");
        assert_eq!(st["status"], "running", "{st}");
        let pid: i64 = fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(st["pid"], pid);
        // The restored init is recorded with its own start time, which tells it from a later
        // process given its pid (issue 15).
        let saved: serde_json::Value =
            serde_json::from_slice(&fs::read(env.root.join("c1/state.json")).unwrap()).unwrap();
        assert_eq!(saved["initProcessStart"], start_time(pid), "{saved}");
        assert!(
            wait_for(|| count(&b) > frozen + 3),
            "round {round}: counter did not continue from {frozen}"
        );
        // It continued from where it was, it did not start over.
        assert!(count(&b) > frozen);
        // exec and ps work on the restored container.
        assert!(
            env.ok(&["exec", "c1", "cat", "/tmp/count"])
                .trim()
                .parse::<u64>()
                .unwrap()
                > frozen
        );
    }
    env.ok(&["kill", "c1", "KILL"]);
    assert!(wait_for(|| env.state("c1")["status"] == "stopped"));
    env.ok(&["delete", "c1"]);
    env.assert_clean();
}

#[test]
fn leave_running_and_restore_into_an_existing_id() {
    let _turn = take_turn();
    let Some(criu) = working_criu() else { return };
    let env = Env::new();
    let mut keep = Vec::new();
    let b = start_counter(&env, &criu, &mut keep);
    let bs = b.to_str().unwrap();
    let img = env.dir.path().join("img");
    let imgs = img.to_str().unwrap();
    env.ok(&with_criu(
        &criu,
        &["checkpoint", "--leave-running", "--image-path", imgs, "c1"],
    ));
    let before = env.state("c1");
    assert_eq!(before["status"], "running");
    let c = count(&b);
    assert!(
        wait_for(|| count(&b) > c + 2),
        "the container stopped despite --leave-running"
    );

    let err = env.fails(&with_criu(
        &criu,
        &["restore", "-d", "-b", bs, "--image-path", imgs, "c1"],
    ));
    assert!(err.contains("already exists (running)"), "{err}");
    assert_eq!(
        env.state("c1")["pid"],
        before["pid"],
        "a refused restore changed the container"
    );

    // Stop it and restore from the image taken while it ran on.
    env.ok(&["delete", "--force", "c1"]);
    detached(
        &env,
        &criu,
        &["restore", "-d", "-b", bs, "--image-path", imgs, "c1"],
        &mut keep,
    );
    let c = count(&b);
    assert!(wait_for(|| count(&b) > c + 2));
    env.ok(&["delete", "--force", "c1"]);
    env.assert_clean();
}

#[test]
fn foreground_restore_waits_and_returns_the_exit_code() {
    let _turn = take_turn();
    let Some(criu) = working_criu() else { return };
    let env = Env::new();
    let script =
        "i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done; exit 7";
    let b = counter_bundle(&env, "b", script);
    let bs = b.to_str().unwrap();
    let mut keep = Vec::new();
    detached(&env, &criu, &["run", "-d", "-b", bs, "c1"], &mut keep);
    assert!(wait_for(|| count(&b) > 2));
    let img = env.dir.path().join("img");
    env.ok(&with_criu(
        &criu,
        &["checkpoint", "--image-path", img.to_str().unwrap(), "c1"],
    ));
    let out = env.nvbind(&with_criu(
        &criu,
        &[
            "restore",
            "-b",
            bs,
            "--image-path",
            img.to_str().unwrap(),
            "c1",
        ],
    ));
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(&b), 40);
    env.assert_clean();
}

#[test]
fn runcs_mount_layouts_and_criu_config_file_across_checkpoint_and_restore() {
    // runc's checkpoint.bats "bind mount, destination is symlink", "nested bind mounts" and
    // "with container specific CRIU config", in one container.
    let _turn = take_turn();
    let Some(criu) = working_criu() else { return };
    let env = Env::new();
    let b = counter_bundle(&env, "b", COUNTER);
    let rootfs = b.join("rootfs");
    fs::create_dir_all(rootfs.join("real/conf")).unwrap();
    std::os::unix::fs::symlink("/real/conf", rootfs.join("conf")).unwrap();
    let (outer, inner) = (env.dir.path().join("outer"), env.dir.path().join("inner"));
    fs::create_dir(&outer).unwrap();
    fs::create_dir(&inner).unwrap();
    fs::write(inner.join("mark"), "inner").unwrap();
    // What CRIU reads from the annotation's file overrides the request: its own log file.
    let conf = env.dir.path().join("criu.conf");
    fs::write(&conf, "log-file=from-config.log\n").unwrap();
    env.edit(&b, |c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.push(json!({"destination": "/conf", "source": ".", "options": ["bind"]}));
        mounts.push(
            json!({"destination": "/test", "type": "bind", "source": outer,
            "options": ["rw", "bind"]}),
        );
        mounts.push(
            json!({"destination": "/test/for/nested", "type": "bind", "source": inner,
            "options": ["rw", "bind"]}),
        );
        c["annotations"] = json!({"org.criu.config": conf});
    });
    let bs = b.to_str().unwrap();
    let mut keep = Vec::new();
    detached(&env, &criu, &["run", "-d", "-b", bs, "c1"], &mut keep);
    assert!(wait_for(|| count(&b) > 2));
    assert!(
        outer.join("for/nested").is_dir(),
        "the create made the nested mountpoint"
    );
    let img = env.dir.path().join("img");
    let work = env.dir.path().join("work");
    let (imgs, works) = (img.to_str().unwrap(), work.to_str().unwrap());
    env.ok(&with_criu(
        &criu,
        &[
            "checkpoint",
            "--image-path",
            imgs,
            "--work-path",
            works,
            "c1",
        ],
    ));
    assert!(work.join("from-config.log").is_file());
    assert!(!work.join("dump.log").exists());
    let frozen = count(&b);
    // The restore makes the nested mountpoint again, in /test's source.
    fs::remove_dir_all(outer.join("for")).unwrap();
    let work2 = env.dir.path().join("work2");
    detached(
        &env,
        &criu,
        &[
            "restore",
            "-d",
            "-b",
            bs,
            "--image-path",
            imgs,
            "--work-path",
            work2.to_str().unwrap(),
            "c1",
        ],
        &mut keep,
    );
    assert!(work2.join("from-config.log").is_file());
    assert!(wait_for(|| count(&b) > frozen + 2));
    assert_eq!(
        env.ok(&["exec", "c1", "cat", "/test/for/nested/mark"])
            .trim(),
        "inner"
    );
    assert!(env
        .ok(&["exec", "c1", "ls", "/conf"])
        .lines()
        .any(|l| l == "config.json"));
    env.ok(&["kill", "c1", "KILL"]);
    assert!(wait_for(|| env.state("c1")["status"] == "stopped"));
    env.ok(&["delete", "c1"]);
    env.assert_clean();
}

#[test]
fn disk_full_during_checkpoint_changes_nothing() {
    let _turn = take_turn();
    let Some(criu) = working_criu() else { return };
    let env = Env::new();
    let mut keep = Vec::new();
    let b = start_counter(&env, &criu, &mut keep);
    let img = env.dir.path().join("tiny");
    fs::create_dir(&img).unwrap();
    assert!(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48k", "tmpfs"])
        .arg(&img)
        .status()
        .unwrap()
        .success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(img.clone());
    fs::write(img.join("earlier-checkpoint.img"), "previous").unwrap();
    let pid = env.state("c1")["pid"].clone();
    let err = env.fails(&with_criu(
        &criu,
        &["checkpoint", "--image-path", img.to_str().unwrap(), "c1"],
    ));
    assert!(
        err.contains("criu dump failed") && err.contains("dump.log"),
        "{err}"
    );
    // The container runs on, unchanged, and the directory holds what it held (plus the log).
    let st = env.state("c1");
    assert_eq!(st["status"], "running");
    assert_eq!(st["pid"], pid);
    assert!(process_alive(pid.as_i64().unwrap()));
    let c = count(&b);
    assert!(
        wait_for(|| count(&b) > c + 2),
        "the container is frozen after a failed checkpoint"
    );
    let mut left: Vec<String> = fs::read_dir(&img)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["dump.log", "earlier-checkpoint.img"]);
    assert_eq!(
        fs::read_to_string(img.join("earlier-checkpoint.img")).unwrap(),
        "previous"
    );
    env.ok(&["delete", "--force", "c1"]);
    drop(_guard);
    env.assert_clean();
}

#[test]
fn no_criu_and_bad_inputs_are_one_line_errors() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root");
        return;
    }
    let env = Env::new();
    let b = counter_bundle(&env, "b", COUNTER);
    let bs = b.to_str().unwrap();
    env.ok(&["run", "-d", "-b", bs, "c1"]);
    let pid = env.state("c1")["pid"].clone();
    let img = env.dir.path().join("img");
    let imgs = img.to_str().unwrap();

    let err = env.fails(&[
        "--criu",
        "/nonexistent/criu",
        "checkpoint",
        "--image-path",
        imgs,
        "c1",
    ]);
    assert!(
        err.contains("criu not found") && err.contains("scripts/setup-criu"),
        "{err}"
    );
    let err = env.fails(&[
        "--criu",
        "/nonexistent/criu",
        "restore",
        "-b",
        bs,
        "--image-path",
        imgs,
        "c2",
    ]);
    assert!(err.contains("criu not found"), "{err}");
    assert!(
        !img.exists(),
        "a refused checkpoint created the image directory"
    );
    assert_eq!(env.state("c1")["pid"], pid);

    // Debian 12's criu 3.17 on a kernel with a vvar_vclock vDSO mapping.
    let old = Path::new("/usr/sbin/criu");
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    let old_version = Command::new(old)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if maps.contains("[vvar_vclock]")
        && old_version
            .as_deref()
            .is_some_and(|v| v.contains("Version: 3."))
    {
        let err = env.fails(&[
            "--criu",
            "/usr/sbin/criu",
            "checkpoint",
            "--image-path",
            imgs,
            "c1",
        ]);
        assert!(
            err.contains("is too old") && err.contains("need >= 4.1"),
            "{err}"
        );
        assert_eq!(env.state("c1")["status"], "running");
    } else {
        eprintln!(
            "skipping the too-old case: no criu 3.x at /usr/sbin/criu or no vvar_vclock here"
        );
    }

    let _turn = take_turn();
    if let Some(criu) = working_criu() {
        let err = env.fails(&with_criu(
            &criu,
            &["restore", "-b", bs, "--image-path", "/nonexistent", "c2"],
        ));
        assert!(err.contains("holds no checkpoint"), "{err}");
        let err = env.fails(&with_criu(
            &criu,
            &[
                "checkpoint",
                "--snapshot",
                "../x",
                "--image-path",
                imgs,
                "c1",
            ],
        ));
        assert!(err.contains("invalid snapshot name"), "{err}");
        env.ok(&["kill", "c1", "KILL"]);
        assert!(wait_for(|| env.state("c1")["status"] == "stopped"));
        let err = env.fails(&with_criu(
            &criu,
            &["checkpoint", "--image-path", imgs, "c1"],
        ));
        assert!(err.contains("it is stopped"), "{err}");
    }
    env.ok(&["delete", "--force", "c1"]);
    assert!(env.ids().is_empty());
    env.assert_clean();
}

#[test]
fn checkpoint_with_a_snapshot_and_restore_rolls_the_rootfs_back() {
    let _turn = take_turn();
    let Some(criu) = working_criu() else { return };
    let env = Env::new();
    let mut keep = Vec::new();
    let b = start_counter(&env, &criu, &mut keep);
    let bs = b.to_str().unwrap();
    let img = env.dir.path().join("img");
    let imgs = img.to_str().unwrap();
    env.ok(&with_criu(
        &criu,
        &["checkpoint", "--snapshot", "ck", "--image-path", imgs, "c1"],
    ));
    let at_dump = count(&b);
    // Damage the rootfs: the restore must bring back the files of the checkpoint instant.
    fs::write(b.join("rootfs/tmp/count"), "999999\n").unwrap();
    fs::remove_file(b.join("rootfs/bin/cat")).unwrap();
    detached(
        &env,
        &criu,
        &[
            "restore",
            "-d",
            "-b",
            bs,
            "--image-path",
            imgs,
            "--snapshot",
            "ck",
            "c1",
        ],
        &mut keep,
    );
    assert!(fs::symlink_metadata(b.join("rootfs/bin/cat")).is_ok());
    assert!(
        wait_for(|| (at_dump + 2..999_999).contains(&count(&b))),
        "count {}",
        count(&b)
    );
    let list = env.ok(&["snapshot", "list", "c1", "--format", "json"]);
    assert!(list.contains(imgs), "{list}");
    env.ok(&["delete", "--force", "c1"]);
    env.assert_clean();
}

/// `podman container checkpoint/restore --runtime nvbind` (podman 4.3 with conmon), private
/// storage under a temp dir: checkpoint, restore, export/import, --leave-running.
/// A container started from a snapshot keeps its rootfs clone across checkpoint (which
/// removes the container) and gets it back on restore; delete then removes the clone.
#[test]
fn a_container_from_a_snapshot_keeps_its_clone_across_checkpoint_and_restore() {
    let _turn = take_turn();
    let Some(criu) = working_criu() else { return };
    let env = Env::new();
    let b = counter_bundle(&env, "b", "sleep 1000");
    let bs = b.to_str().unwrap();
    let mut keep = Vec::new();
    detached(&env, &criu, &["run", "-d", "-b", bs, "base"], &mut keep);
    env.ok(&["snapshot", "create", "base", "gold"]);
    env.edit(&b, |c| {
        c["annotations"] = json!({"org.nvbind.snapshot.from": "gold"});
        c["process"]["args"] = json!(["sh", "-c", COUNTER]);
    });
    env.own_cgroup(&b, "c1");
    detached(&env, &criu, &["run", "-d", "-b", bs, "c1"], &mut keep);
    let rootfs = PathBuf::from(env.state("c1")["rootfs"].as_str().unwrap());
    // `echo > f` truncates first: an empty read is "not now", not 0.
    let count = || -> u64 {
        for _ in 0..20 {
            let read = fs::read_to_string(rootfs.join("tmp/count"));
            if let Some(n) = read.ok().and_then(|s| s.trim().parse().ok()) {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        0
    };
    assert!(wait_for(|| count() > 2));
    let img = env.dir.path().join("img");
    env.ok(&with_criu(
        &criu,
        &["checkpoint", "--image-path", img.to_str().unwrap(), "c1"],
    ));
    assert!(
        rootfs.join("tmp/count").exists(),
        "checkpoint removed the clone"
    );
    let at_dump = count();
    detached(
        &env,
        &criu,
        &[
            "restore",
            "-d",
            "-b",
            bs,
            "--image-path",
            img.to_str().unwrap(),
            "c1",
        ],
        &mut keep,
    );
    assert_eq!(
        PathBuf::from(env.state("c1")["rootfs"].as_str().unwrap()),
        rootfs
    );
    assert!(wait_for(|| count() > at_dump + 2));
    assert!(
        !b.join("rootfs/tmp/count").exists(),
        "the bundle's own rootfs was written"
    );
    env.ok(&["delete", "--force", "c1"]);
    assert!(!rootfs.exists(), "delete did not remove the clone");
    env.ok(&["delete", "--force", "base"]);
    env.assert_clean();
}
