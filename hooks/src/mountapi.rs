//! The new mount API (Linux >= 5.12): a bind mount is cloned on the host as a detached tree
//! (`open_tree`), made read-only and private before anyone can see it (`mount_setattr`), and
//! attached inside the container by fd (`move_mount`). No step mounts anything in the host's
//! namespace, a tree never attached disappears with its fd, and the target is an fd resolved
//! beneath the rootfs, so no path is looked up twice.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

fn cpath(p: &Path) -> Result<CString, Errno> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// Clones the mount at `source` (a trusted host path) as a detached tree; `recursive`
/// includes the mounts below it (`rbind`).
pub fn clone_tree(source: &Path, recursive: bool) -> Result<OwnedFd, Errno> {
    let c = cpath(source)?;
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: plain syscall with a valid NUL-terminated path.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    let fd = Errno::result(fd)?;
    // SAFETY: the kernel just returned this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sets attributes (and private propagation) on a detached tree.
pub fn set_attr(tree: &OwnedFd, attr: &MountAttr, recursive: bool) -> Result<(), Errno> {
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    let empty = c"";
    // SAFETY: fd is valid, the attr struct matches MOUNT_ATTR_SIZE_VER0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(r).map(drop)
}

/// Attaches detached `tree` on top of `target` (an fd of the mount point). The calling
/// thread must be in the mount namespace that holds `target`.
pub fn attach(tree: &OwnedFd, target: BorrowedFd<'_>) -> Result<(), Errno> {
    let empty = c"";
    // SAFETY: both fds are valid; empty paths with the EMPTY_PATH flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    Errno::result(r).map(drop)
}

/// Mount attribute bits for OCI/CDI mount options; unknown options are ignored (the
/// caller decides which it refuses).
pub fn attrs_for(options: &[String]) -> MountAttr {
    let mut a = MountAttr {
        propagation: libc::MS_PRIVATE,
        ..Default::default()
    };
    for o in options {
        match o.as_str() {
            "ro" => a.attr_set |= MOUNT_ATTR_RDONLY,
            "rw" => a.attr_set &= !MOUNT_ATTR_RDONLY,
            "nosuid" => a.attr_set |= MOUNT_ATTR_NOSUID,
            "nodev" => a.attr_set |= MOUNT_ATTR_NODEV,
            "noexec" => a.attr_set |= MOUNT_ATTR_NOEXEC,
            _ => {}
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_to_attrs() {
        let o = |v: &[&str]| attrs_for(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            o(&["ro", "nosuid", "nodev", "bind"]).attr_set,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
        );
        assert_eq!(o(&["ro", "rw"]).attr_set, 0);
        assert_eq!(o(&[]).propagation, libc::MS_PRIVATE);
    }
}
