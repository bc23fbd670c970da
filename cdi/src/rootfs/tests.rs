//! Unit tests of cdi/src/rootfs.rs.

use super::*;
use std::os::unix::fs::symlink;

fn tree() -> (tempfile::TempDir, Root) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    let r = Root::open(&root).unwrap();
    (dir, r)
}

/// A listing longer than one getdents64 buffer (32 KiB) is read whole, each entry with
/// its kind; `.` and `..` are left out.
#[test]
fn read_dir_lists_every_entry_with_its_kind() {
    let (_d, r) = tree();
    let dir = r.path().join("usr/lib");
    let mut want = Vec::new();
    for i in 0..1500 {
        let name = format!("lib{i:04}-{}.so", "x".repeat(40));
        std::fs::write(dir.join(&name), b"").unwrap();
        want.push((name, Kind::File));
    }
    std::os::unix::fs::symlink("lib0000", dir.join("link")).unwrap();
    want.push(("link".into(), Kind::Symlink));
    std::fs::create_dir(dir.join("sub")).unwrap();
    want.push(("sub".into(), Kind::Dir));
    let mut got: Vec<(String, Kind)> = r
        .read_dir(Path::new("/usr/lib"))
        .unwrap()
        .into_iter()
        .map(|(n, k)| (n.into_string().unwrap(), k))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want);
    assert!(matches!(
        r.read_dir(Path::new("/usr/lib/lib0000-x")),
        Err(RootError::Io { .. })
    ));
}

#[test]
fn creates_inside() {
    let (_d, r) = tree();
    assert!(r
        .symlink(
            Path::new("libcuda.so.1"),
            Path::new("/usr/lib/x/libcuda.so")
        )
        .unwrap());
    assert_eq!(
        std::fs::read_link(r.path().join("usr/lib/x/libcuda.so")).unwrap(),
        Path::new("libcuda.so.1")
    );
    // Again: exists, left alone.
    assert!(!r
        .symlink(Path::new("other"), Path::new("/usr/lib/x/libcuda.so"))
        .unwrap());
    assert_eq!(
        r.read_link(Path::new("/usr/lib/x/libcuda.so")).unwrap(),
        Some(PathBuf::from("libcuda.so.1"))
    );
    r.write_file(Path::new("/etc/ld.so.conf.d/a.conf"), b"/x\n")
        .unwrap();
    assert_eq!(
        r.read_file(Path::new("etc/ld.so.conf.d/a.conf")).unwrap(),
        Some(b"/x\n".to_vec())
    );
    let fd = r.open_at(Path::new("/usr"), OFlag::O_PATH).unwrap();
    assert_eq!(fd_kind(&fd, Path::new("/usr")).unwrap(), Kind::Dir);
}

#[test]
fn read_file_takes_only_a_regular_file_and_at_most_max_read() {
    let (d, r) = tree();
    let root = d.path().join("rootfs");
    nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    // Opened without O_NONBLOCK, this open would wait for a writer forever.
    assert!(matches!(
        r.read_file(Path::new("/fifo")),
        Err(RootError::WrongType { .. })
    ));
    assert!(matches!(
        r.read_file(Path::new("/usr")),
        Err(RootError::WrongType { .. })
    ));
    std::fs::write(root.join("big"), vec![b'x'; MAX_READ as usize + 10]).unwrap();
    assert_eq!(
        r.read_file(Path::new("/big")).unwrap().unwrap().len(),
        MAX_READ as usize
    );
    assert_eq!(r.read_file(Path::new("/none")).unwrap(), None);
}

#[test]
fn dotdot_stops_at_the_rootfs() {
    let (d, r) = tree();
    for (p, lands) in [
        ("../../etc/x", "etc/x"),
        ("/usr/../../y", "y"),
        ("../z", "z"),
    ] {
        assert!(r.symlink(Path::new("t"), Path::new(p)).unwrap(), "{p}");
        assert!(r.path().join(lands).is_symlink(), "{p}");
    }
    assert!(!d.path().join("y").exists() && !d.path().join("z").exists());
}

#[test]
fn absolute_and_escaping_symlinks_resolve_inside_the_rootfs() {
    let (d, r) = tree();
    let outside = d.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    symlink(&outside, r.path().join("usr/abs")).unwrap();
    symlink("../../../../../../outside", r.path().join("usr/rel")).unwrap();
    symlink("/usr/lib", r.path().join("usr/abs_inside")).unwrap();
    // Followed as the container would: `outside` is a path inside the rootfs, missing
    // there for now (a dangling link is not created through)...
    let inside_outside = r.path().join(outside.strip_prefix("/").unwrap());
    assert!(r.mount_target(Path::new("/usr/abs/x"), false).is_err());
    std::fs::create_dir_all(&inside_outside).unwrap();
    r.mount_target(Path::new("/usr/abs/x"), false).unwrap();
    assert!(inside_outside.join("x").is_file());
    std::fs::create_dir(r.path().join("outside")).unwrap();
    r.symlink(Path::new("t"), Path::new("/usr/rel/x")).unwrap();
    assert!(r.path().join("outside/x").is_symlink());
    r.mount_target(Path::new("/usr/abs_inside/f"), false)
        .unwrap();
    assert!(r.path().join("usr/lib/f").is_file());
    r.replace_file(Path::new("/usr/abs/new/dir/c"), b"c", 0o644)
        .unwrap();
    assert_eq!(
        std::fs::read(inside_outside.join("new/dir/c")).unwrap(),
        b"c"
    );
    // Nothing reached the host's `outside`.
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn magic_links_are_refused() {
    // The host's own /proc as the "rootfs": /proc/self/root is a magic link.
    let r = Root::open(Path::new("/")).unwrap();
    let err = r.stat(Path::new("/proc/self/root/etc")).unwrap_err();
    assert!(matches!(err, RootError::Escapes { .. }), "{err}");
    let err = r.open_read(Path::new("/proc/self/cwd/x")).unwrap_err();
    assert!(matches!(err, RootError::Escapes { .. }), "{err}");
}

#[test]
fn a_file_holding_the_same_is_left_alone() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (_d, r) = tree();
    let p = Path::new("/etc/ld.so.cache");
    let host = r.path().join("etc/ld.so.cache");
    let ino = || std::fs::metadata(&host).unwrap().ino();
    r.replace_file(p, b"same", 0o644).unwrap();
    let first = ino();
    r.replace_file(p, b"same", 0o644).unwrap();
    assert_eq!(ino(), first, "identical contents and mode: not rewritten");
    r.replace_file(p, b"samE", 0o644).unwrap();
    assert_ne!(ino(), first, "other contents of the same size: replaced");
    let second = ino();
    r.replace_file(p, b"samE", 0o600).unwrap();
    assert_ne!(ino(), second, "another mode: replaced");
    assert_eq!(
        std::fs::metadata(&host).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    // A link to a file holding the same is replaced by the file.
    std::fs::remove_file(&host).unwrap();
    std::fs::write(r.path().join("etc/real"), b"same").unwrap();
    std::fs::set_permissions(
        r.path().join("etc/real"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    symlink("real", &host).unwrap();
    r.replace_file(p, b"same", 0o644).unwrap();
    assert!(std::fs::symlink_metadata(&host).unwrap().is_file());
}

#[test]
fn replacing_files_and_links() {
    let (_d, r) = tree();
    r.replace_file(Path::new("/etc/ld.so.cache"), b"one", 0o644)
        .unwrap();
    r.replace_file(Path::new("/etc/ld.so.cache"), b"two", 0o644)
        .unwrap();
    assert_eq!(
        std::fs::read(r.path().join("etc/ld.so.cache")).unwrap(),
        b"two"
    );
    let names: Vec<_> = r
        .read_dir(Path::new("/etc"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["ld.so.cache"], "no temp file left");
    assert!(r
        .replace_symlink(Path::new("a.so.1.0"), Path::new("/usr/lib/a.so.1"))
        .unwrap());
    assert!(r
        .replace_symlink(Path::new("a.so.1.1"), Path::new("/usr/lib/a.so.1"))
        .unwrap());
    assert_eq!(
        r.read_link(Path::new("/usr/lib/a.so.1")).unwrap(),
        Some(PathBuf::from("a.so.1.1"))
    );
    // A file is never replaced by a link.
    std::fs::write(r.path().join("usr/lib/b.so.1"), "").unwrap();
    assert!(!r
        .replace_symlink(Path::new("b.so.1.0"), Path::new("/usr/lib/b.so.1"))
        .unwrap());
    assert!(r.path().join("usr/lib/b.so.1").is_file());
    let kinds: std::collections::HashMap<_, _> = r
        .read_dir(Path::new("/usr/lib"))
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(kinds[std::ffi::OsStr::new("a.so.1")], Kind::Symlink);
    assert_eq!(kinds[std::ffi::OsStr::new("b.so.1")], Kind::File);
}

#[test]
fn names_are_required() {
    let (_d, r) = tree();
    for p in ["/", "/usr/..", "."] {
        assert!(matches!(
            r.symlink(Path::new("t"), Path::new(p)),
            Err(RootError::NoName { .. })
        ));
    }
}
