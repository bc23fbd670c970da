//! Unit tests of src/lifecycle/halfmade.rs.

use std::os::fd::AsRawFd;

use super::*;
use crate::state_root::lock::{id_key, root_lock_path};

fn ctx(root: &Path) -> Ctx {
    Ctx {
        root: root.to_path_buf(),
        systemd_cgroup: false,
        cdi_spec_dirs: vec![],
    }
}

#[test]
fn a_directory_without_state_is_half_made_and_garbage_state_too() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    assert!(matches!(inspect(&ctx, "c").unwrap(), Entry::Missing));
    fs::create_dir(dir.path().join("c")).unwrap();
    // Without nvbind's record it is not nvbind's to call half-made (or to remove).
    assert!(matches!(inspect(&ctx, "c").unwrap(), Entry::Foreign(_)));
    Intent::new(&ctx, "c", Path::new("/b"), &Spec::default())
        .record(&ctx)
        .unwrap();
    let Entry::HalfMade(h) = inspect(&ctx, "c").unwrap() else {
        panic!("not half-made")
    };
    assert!(h.why.contains("no state.json"), "{}", h.why);
    assert_eq!(h.doc().status, ContainerStatus::Stopped);
    fs::write(dir.path().join("c/state.json"), "{\"id\":").unwrap();
    let Entry::HalfMade(h) = inspect(&ctx, "c").unwrap() else {
        panic!("not half-made")
    };
    assert!(h.why.contains("unreadable"), "{}", h.why);
}

/// Whether another process finds the lock of `id` under `root` taken by this one: a POSIX lock
/// is invisible to its holder. The child asks the kernel on a descriptor of its own (not
/// through `id_lock_holder`: it inherited this process's bookkeeping, not its locks).
fn id_locked_for_others(root: &Path, id: &str) -> bool {
    use nix::unistd::{fork, ForkResult};
    let parent = std::process::id() as i32;
    let path = root_lock_path(root);
    let key = id_key(id);
    // SAFETY: the child only makes syscalls (open, fcntl) and _exits.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let code = match fs::File::open(&path) {
                Ok(f) => {
                    // SAFETY: zeroed flock is valid; the one-byte range is set below.
                    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
                    fl.l_type = libc::F_WRLCK as libc::c_short;
                    fl.l_whence = libc::SEEK_SET as libc::c_short;
                    fl.l_start = key;
                    fl.l_len = 1;
                    // SAFETY: valid descriptor and flock struct.
                    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
                    match (rc, fl.l_type == libc::F_UNLCK as libc::c_short, fl.l_pid) {
                        (0, false, pid) if pid == parent => 0,
                        _ => 1,
                    }
                }
                Err(_) => 2,
            };
            // SAFETY: leave the forked test process without running its destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => matches!(
            nix::sys::wait::waitpid(child, None).unwrap(),
            nix::sys::wait::WaitStatus::Exited(_, 0)
        ),
    }
}

#[test]
fn a_killed_creates_config_temp_file_goes_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = tempfile::tempdir().unwrap();
    let intent = Intent::new(&ctx(dir.path()), "c", bundle.path(), &Spec::default());
    let pid = intent.pid;
    let ours = format!(".config.json.tmp-{pid}-00000000deadbeef");
    let another_root = format!(".config.json.tmp-{}-00000000deadbeef", pid + 1);
    for name in [ours.as_str(), &another_root, "config.json"] {
        fs::write(bundle.path().join(name), "{").unwrap();
    }
    remove_config_temp(&intent);
    let mut left: Vec<_> = fs::read_dir(bundle.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, [another_root.as_str(), "config.json"]);
}

#[test]
fn only_a_child_cgroup_is_ever_emptied() {
    for good in ["/nvbind/c", "c", ":youki:c", "system.slice:nvbind:c"] {
        assert!(names_a_child_cgroup(Path::new(good)), "{good}");
    }
    for bad in ["/", "", ".", "/..", "/a/../..", "a/../b"] {
        // (destroy_cgroup itself is not called here: if this broke, it would kill the
        // host's processes, the test runner's among them.)
        assert!(!names_a_child_cgroup(Path::new(bad)), "{bad}");
    }
}

/// Review finding: delete inspects a half-made container under the create lock, and
/// inspecting opened and closed the lock file to ask who held it, which released our own
/// POSIX lock, so the removal ran unlocked beside a new create. Since the lock is per ID, the
/// file holds other IDs' locks too: asking about another ID must not release this one either.
#[test]
fn inspecting_under_the_id_lock_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    for id in ["c", "other"] {
        Intent::new(&ctx, id, Path::new("/b"), &Spec::default())
            .record(&ctx)
            .unwrap();
    }
    let lock = ctx.lock_id("c").unwrap();
    assert!(id_locked_for_others(dir.path(), "c"));
    let Entry::HalfMade(h) = inspect(&ctx, "c").unwrap() else {
        panic!("not half-made")
    };
    // Recorded by this process, which holds the lock: its create is running.
    assert!(h.in_progress());
    assert!(
        id_locked_for_others(dir.path(), "c"),
        "inspect released the ID's lock"
    );
    // Another ID: not held, so its record is what a killed create left.
    let Entry::HalfMade(h) = inspect(&ctx, "other").unwrap() else {
        panic!("not half-made")
    };
    assert!(!h.in_progress());
    assert!(!id_locked_for_others(dir.path(), "other"));
    assert!(
        id_locked_for_others(dir.path(), "c"),
        "asking about another ID released this one's lock"
    );
    // A nested guard's drop does not release the lock either, nor does another ID's.
    drop(ctx.lock_id("c").unwrap());
    drop(ctx.lock_id("other").unwrap());
    assert!(
        id_locked_for_others(dir.path(), "c"),
        "a nested or another ID's guard released the lock"
    );
    drop(lock);
    assert!(!id_locked_for_others(dir.path(), "c"));
    assert!(!id_lock_held_here(dir.path(), "c"));
}

/// The lock of one ID does not hold up another's: while this process holds "a", another takes
/// "b" at once and is refused "a". The child asks the kernel directly (F_SETLK, which does not
/// wait) on a descriptor of its own: it inherited this process's bookkeeping, not its locks.
#[test]
fn one_ids_lock_does_not_hold_up_anothers() {
    use nix::unistd::{fork, ForkResult};
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let a = ctx.lock_id("a").unwrap();
    let path = root_lock_path(dir.path());
    let (key_a, key_b) = (id_key("a"), id_key("b"));
    assert_ne!(key_a, key_b);
    // SAFETY: the child only makes syscalls (open, fcntl) and _exits.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let try_lock = |fd, key| {
                // SAFETY: zeroed flock is valid; the one-byte range is set below.
                let mut fl: libc::flock = unsafe { std::mem::zeroed() };
                fl.l_type = libc::F_WRLCK as libc::c_short;
                fl.l_whence = libc::SEEK_SET as libc::c_short;
                fl.l_start = key;
                fl.l_len = 1;
                // SAFETY: valid descriptor and flock struct.
                unsafe { libc::fcntl(fd, libc::F_SETLK, &fl) == 0 }
            };
            let code = match fs::OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) if !try_lock(f.as_raw_fd(), key_b) => 2,
                Ok(f) if try_lock(f.as_raw_fd(), key_a) => 3,
                Ok(_) => 0,
                Err(_) => 4,
            };
            // SAFETY: leave the forked test process without running its destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            drop(a);
            assert!(
                matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
                "another process and a's lock held here: {status:?} (2: b refused, 3: a taken)"
            );
        }
    }
}

#[test]
fn a_record_alone_is_half_made_and_forget_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let spec = Spec::default();
    let intent = Intent::new(&ctx, "c", Path::new("/b"), &spec);
    intent.record(&ctx).unwrap();
    let Entry::HalfMade(h) = inspect(&ctx, "c").unwrap() else {
        panic!("not half-made")
    };
    assert_eq!(h.intent.as_ref().unwrap().bundle, Path::new("/b"));
    assert_eq!(h.doc().bundle, Path::new("/b"));
    // What a create killed in the middle of writing its record leaves, and what one of
    // ID "c.json" left, which is not c's.
    let temp = "..nvbind-container-c.json.tmp-12345-00000000deadbeef";
    let others = "..nvbind-container-c.json.json.tmp-12345-00000000deadbeef";
    fs::write(dir.path().join(temp), "{\"i").unwrap();
    fs::write(dir.path().join(others), "{\"i").unwrap();
    assert!(Intent::left_by_a_create(&ctx, "c"));
    Intent::forget_all(&ctx, "c");
    assert!(matches!(inspect(&ctx, "c").unwrap(), Entry::Missing));
    assert!(!Intent::left_by_a_create(&ctx, "c"));
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [others]);
}

#[test]
fn a_freezer_frozen_by_itself_is_frozen_and_one_frozen_by_an_ancestor_is_not() {
    assert!(v1_frozen("FROZEN\n", Some("1\n")));
    assert!(v1_frozen("FREEZING\n", Some("1\n")));
    // A kernel without freezer.self_freezing: runc counts it as frozen too.
    assert!(v1_frozen("FROZEN\n", None));
    assert!(!v1_frozen("FROZEN\n", Some("0\n")));
    assert!(!v1_frozen("THAWED\n", Some("0\n")));
    assert!(!v1_frozen("THAWED\n", None));
}

/// A `delete --force` of a half-made container holds the ID's lock; another delete that
/// removed the directory holds the record (`Intent::hold`) and waits for that lock to remove
/// it. Our inspect must take the container for gone, not wait for the record (which would
/// never be released while we hold the lock) nor call it half-made (tests/load.rs saw
/// "half-made: it has a record but no directory" after 50 looks, 1 run in 4, before ef9d78d).
#[test]
fn a_record_held_by_another_delete_under_our_id_lock_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let mut intent = Intent::new(&ctx, "c", Path::new("/b"), &Spec::default());
    // Made by a create that has ended: no process holds the ID's lock for it.
    intent.pid = u32::MAX / 2;
    intent.record(&ctx).unwrap();
    let _id_lock = ctx.lock_id("c").unwrap();
    // The other delete: a process of its own holding a flock on the record.
    struct Holder(std::process::Child);
    impl Drop for Holder {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _holder = Holder(
        std::process::Command::new("flock")
            .arg("-x")
            .arg(Intent::path(&ctx, "c"))
            .args(["sleep", "60"])
            .spawn()
            .expect("util-linux flock"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !Intent::held_elsewhere(&ctx, "c") {
        assert!(
            std::time::Instant::now() < deadline,
            "flock never took the record"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    match inspect(&ctx, "c").unwrap() {
        Entry::Missing => {}
        Entry::HalfMade(h) => panic!("held by another delete, taken for half-made: {}", h.why),
        _ => panic!("held by another delete, taken for a container"),
    }
}
