//! Unit tests of src/lifecycle/halfmade.rs.

use std::os::fd::AsRawFd;

use super::*;
use crate::state_root::lock::{root_lock_path, FileLock};

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

/// Whether another process finds `path` locked: a POSIX lock is invisible to its holder.
fn locked_for_others(path: &Path) -> bool {
    use nix::unistd::{fork, ForkResult};
    // SAFETY: the child only makes syscalls (open, fcntl) and _exits.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let code = match fs::File::open(path) {
                Ok(f) => {
                    // SAFETY: zeroed flock is a valid whole-file range for F_GETLK.
                    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
                    fl.l_type = libc::F_WRLCK as libc::c_short;
                    fl.l_whence = libc::SEEK_SET as libc::c_short;
                    // SAFETY: valid descriptor and flock struct.
                    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
                    i32::from(!(rc == 0 && fl.l_type != libc::F_UNLCK as libc::c_short))
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

/// Review finding: delete inspects a half-made container under the root lock, and
/// inspecting opened and closed the lock file to ask who held it, which released our own
/// POSIX lock, so the removal ran unlocked beside a new create.
#[test]
fn inspecting_under_the_root_lock_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    Intent::new(&ctx, "c", Path::new("/b"), &Spec::default())
        .record(&ctx)
        .unwrap();
    let lock_path = root_lock_path(dir.path());
    let lock = ctx.lock_root().unwrap();
    assert!(locked_for_others(&lock_path));
    let Entry::HalfMade(h) = inspect(&ctx, "c").unwrap() else {
        panic!("not half-made")
    };
    // Recorded by this process, which holds the lock: its create is running.
    assert!(h.in_progress());
    assert!(
        locked_for_others(&lock_path),
        "inspect released the root lock"
    );
    // A nested guard's drop does not release the lock either.
    drop(ctx.lock_root().unwrap());
    assert!(
        locked_for_others(&lock_path),
        "a nested guard released the root lock"
    );
    drop(lock);
    assert!(!locked_for_others(&lock_path));
    assert!(!FileLock::held_here(&lock_path));
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
