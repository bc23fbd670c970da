//! The copy backend, and the tree copy other backends reuse: reflink (FICLONE) per file where
//! the filesystem shares extents (btrfs, xfs), else a kernel-side copy; modes, owners,
//! timestamps, xattrs, symlinks, hard links, device nodes, fifos and sockets are kept.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::backend::{io_err, is_mount_point, Backend, Kind, Result};

pub struct Copy;

impl Backend for Copy {
    fn kind(&self) -> Kind {
        Kind::Copy
    }

    fn snapshot(&self, rootfs: &Path, snap: &Path, _name: &str) -> Result<Option<String>> {
        copy_tree(rootfs, snap)?;
        Ok(None)
    }

    fn rollback(
        &self,
        snap: &Path,
        _reference: Option<&str>,
        rootfs: &Path,
        in_place: bool,
    ) -> Result<()> {
        if in_place || is_mount_point(rootfs) {
            clear_dir(rootfs)?;
            copy_contents(snap, rootfs)?;
            return copy_attrs(
                snap,
                rootfs,
                &fs::symlink_metadata(snap).map_err(io_err("cannot stat", snap))?,
            );
        }
        swap_in(
            rootfs,
            |staged| copy_tree(snap, staged),
            |old| fs::remove_dir_all(old).map_err(io_err("cannot remove", old)),
        )
    }

    fn remove_snapshot(&self, snap: &Path, _reference: Option<&str>) -> Result<()> {
        remove_tree(snap)
    }

    fn clone_into(&self, base: &Path, dir: &Path) -> Result<PathBuf> {
        let rootfs = dir.join("rootfs");
        copy_tree(base, &rootfs)?;
        Ok(rootfs)
    }

    fn remove_clone(&self, dir: &Path) -> Result<()> {
        remove_tree(dir)
    }
}

pub(crate) fn remove_tree(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot remove", p)(e)),
    }
}

/// Replaces the directory `target` by a new tree built by `build` next to it (same
/// filesystem), with two renames; `drop_old` disposes of the previous tree. If building
/// fails, `target` is untouched.
pub(crate) fn swap_in(
    target: &Path,
    build: impl FnOnce(&Path) -> Result<()>,
    drop_old: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = target.parent().unwrap_or(Path::new("/"));
    let staged = parent.join(format!(".{name}.nvbind-rollback-{}", std::process::id()));
    let old = parent.join(format!(".{name}.nvbind-old-{}", std::process::id()));
    if let Err(e) = build(&staged) {
        let _ = drop_old(&staged);
        return Err(e);
    }
    fs::rename(target, &old).map_err(io_err("cannot move aside", target))?;
    if let Err(e) = fs::rename(&staged, target) {
        let _ = fs::rename(&old, target);
        return Err(io_err("cannot move into place", target)(e));
    }
    drop_old(&old)
}

/// Removes everything inside `dir`, keeping `dir` itself.
pub fn clear_dir(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io_err("cannot read", dir))? {
        let entry = entry.map_err(io_err("cannot read", dir))?;
        let p = entry.path();
        let ft = entry.file_type().map_err(io_err("cannot stat", &p))?;
        if ft.is_dir() {
            fs::remove_dir_all(&p).map_err(io_err("cannot remove", &p))?;
        } else {
            fs::remove_file(&p).map_err(io_err("cannot remove", &p))?;
        }
    }
    Ok(())
}

/// Copies the tree `src` to `dst`, which must not exist.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(src).map_err(io_err("cannot stat", src))?;
    fs::create_dir(dst).map_err(io_err("cannot create", dst))?;
    let mut links = HashMap::new();
    copy_dir_entries(src, dst, &mut links)?;
    copy_attrs(src, dst, &meta)
}

/// Copies what is inside `src` into the existing directory `dst`.
pub fn copy_contents(src: &Path, dst: &Path) -> Result<()> {
    let mut links = HashMap::new();
    copy_dir_entries(src, dst, &mut links)
}

fn copy_dir_entries(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)
        .map_err(io_err("cannot read", src))?
        .collect::<std::io::Result<_>>()
        .map_err(io_err("cannot read", src))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let from = entry.path();
        let to = dst.join(entry.file_name());
        copy_entry(&from, &to, links)?;
    }
    Ok(())
}

fn copy_entry(from: &Path, to: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> Result<()> {
    let meta = fs::symlink_metadata(from).map_err(io_err("cannot stat", from))?;
    let ft = meta.file_type();
    if !ft.is_dir() && meta.nlink() > 1 {
        let key = (meta.dev(), meta.ino());
        if let Some(first) = links.get(&key) {
            return fs::hard_link(first, to).map_err(io_err("cannot link", to));
        }
        links.insert(key, to.to_path_buf());
    }
    if ft.is_dir() {
        fs::create_dir(to).map_err(io_err("cannot create", to))?;
        copy_dir_entries(from, to, links)?;
    } else if ft.is_symlink() {
        let target = fs::read_link(from).map_err(io_err("cannot read link", from))?;
        std::os::unix::fs::symlink(&target, to).map_err(io_err("cannot create", to))?;
    } else if ft.is_file() {
        copy_file(from, to)?;
    } else {
        // Device nodes, fifos, sockets.
        let c = cstr(to);
        // SAFETY: valid NUL-terminated path.
        let rc = unsafe {
            libc::mknod(
                c.as_ptr(),
                meta.mode() as libc::mode_t,
                meta.rdev() as libc::dev_t,
            )
        };
        if rc != 0 {
            return Err(io_err("cannot mknod", to)(std::io::Error::last_os_error()));
        }
    }
    copy_attrs(from, to, &meta)
}

const FICLONE: libc::c_ulong = 0x4004_9409;

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let src = File::open(from).map_err(io_err("cannot open", from))?;
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io_err("cannot create", to))?;
    // SAFETY: two valid descriptors; FICLONE shares the extents or fails without writing.
    let cloned = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) } == 0;
    if !cloned {
        let mut s = &src;
        let mut d = &dst;
        std::io::copy(&mut s, &mut d).map_err(io_err("cannot copy to", to))?;
    }
    Ok(())
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL bytes")
}

/// Owner, mode, xattrs and timestamps of `from` onto `to` (not following symlinks).
pub(crate) fn copy_attrs(from: &Path, to: &Path, meta: &fs::Metadata) -> Result<()> {
    let is_link = meta.file_type().is_symlink();
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(io_err("cannot chown", to))?;
    copy_xattrs(from, to)?;
    if !is_link {
        // After chown, which clears setuid bits.
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err("cannot chmod", to))?;
    }
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    let c = cstr(to);
    // SAFETY: valid path and a two-element timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io_err("cannot set times of", to)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn copy_xattrs(from: &Path, to: &Path) -> Result<()> {
    let src = cstr(from);
    let dst = cstr(to);
    // SAFETY: a NULL buffer of size 0 asks for the needed size.
    let size = unsafe { libc::llistxattr(src.as_ptr(), std::ptr::null_mut(), 0) };
    if size <= 0 {
        return Ok(());
    }
    let mut names = vec![0u8; size as usize];
    // SAFETY: buffer of the size just reported.
    let size = unsafe { libc::llistxattr(src.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if size <= 0 {
        return Ok(());
    }
    for name in names[..size as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        let cname = CString::new(name).expect("split on NUL");
        // SAFETY: as above, size query then read.
        let len = unsafe { libc::lgetxattr(src.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            continue;
        }
        let mut value = vec![0u8; len as usize];
        let len = unsafe {
            libc::lgetxattr(
                src.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len < 0 {
            continue;
        }
        // SAFETY: valid name and value buffers.
        let rc = unsafe {
            libc::lsetxattr(
                dst.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                len as usize,
                0,
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            // A target filesystem without xattr support (or a namespace it refuses) is not
            // worth failing a snapshot for, except for security.capability bits.
            if name.starts_with(b"security.capability") {
                return Err(io_err("cannot set xattrs of", to)(err));
            }
            tracing::warn!("cannot copy xattr {:?} to {}: {err}", cname, to.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn copy_keeps_modes_links_times_and_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("etc/sub")).unwrap();
        fs::write(src.join("etc/passwd"), "root:x:0:0\n").unwrap();
        fs::set_permissions(src.join("etc/passwd"), fs::Permissions::from_mode(0o640)).unwrap();
        symlink("etc/passwd", src.join("link")).unwrap();
        fs::hard_link(src.join("etc/passwd"), src.join("hard")).unwrap();
        let fifo = cstr(&src.join("fifo"));
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        fs::set_permissions(src.join("etc/sub"), fs::Permissions::from_mode(0o700)).unwrap();
        let dst = dir.path().join("dst");
        copy_tree(&src, &dst).unwrap();
        assert_eq!(
            fs::read_to_string(dst.join("etc/passwd")).unwrap(),
            "root:x:0:0\n"
        );
        let m = fs::metadata(dst.join("etc/passwd")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o640);
        assert_eq!(
            m.mtime(),
            fs::metadata(src.join("etc/passwd")).unwrap().mtime()
        );
        assert_eq!(
            fs::read_link(dst.join("link")).unwrap(),
            Path::new("etc/passwd")
        );
        assert_eq!(m.ino(), fs::metadata(dst.join("hard")).unwrap().ino());
        assert!(fs::symlink_metadata(dst.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo_like());
        assert_eq!(
            fs::metadata(dst.join("etc/sub")).unwrap().mode() & 0o777,
            0o700
        );
    }

    trait FifoLike {
        fn is_fifo_like(&self) -> bool;
    }
    impl FifoLike for fs::FileType {
        fn is_fifo_like(&self) -> bool {
            use std::os::unix::fs::FileTypeExt;
            self.is_fifo()
        }
    }

    #[test]
    fn rollback_swaps_the_tree_back_and_a_failed_build_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        fs::create_dir(&rootfs).unwrap();
        fs::write(rootfs.join("a"), "1").unwrap();
        let snap = dir.path().join("snap");
        Copy.snapshot(&rootfs, &snap, "s").unwrap();
        fs::write(rootfs.join("a"), "2").unwrap();
        fs::write(rootfs.join("b"), "new").unwrap();
        Copy.rollback(&snap, None, &rootfs, false).unwrap();
        assert_eq!(fs::read_to_string(rootfs.join("a")).unwrap(), "1");
        assert!(!rootfs.join("b").exists());
        fs::write(rootfs.join("b"), "new").unwrap();
        Copy.rollback(&snap, None, &rootfs, true).unwrap();
        assert!(!rootfs.join("b").exists());
        let err = swap_in(
            &rootfs,
            |_| {
                Err(io_err("x", Path::new("/"))(
                    std::io::ErrorKind::Other.into(),
                ))
            },
            |_| Ok(()),
        );
        assert!(err.is_err());
        assert_eq!(fs::read_to_string(rootfs.join("a")).unwrap(), "1");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    }
}
