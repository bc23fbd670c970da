//! btrfs: the rootfs is a subvolume (ioctls, no btrfs-progs needed). A snapshot is a read-only subvolume snapshot; a rollback
//! of a stopped container makes a writable snapshot of the snapshot and swaps it in with two
//! renames, so both are O(1) in the size of the tree. A paused container's rollback
//! (`--force`) has to keep the rootfs inode its processes hold, so it rewrites the tree in
//! place with reflinked copies instead.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::backend::{
    fs_magic, io_err, is_mount_point, Backend, Kind, Result, SnapshotError, BTRFS_MAGIC,
};
use super::copy::{self, swap_in};

/// The inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID).
const SUBVOLUME_ROOT_INO: u64 = 256;

pub struct Btrfs;

const BTRFS_IOCTL_MAGIC: u64 = 0x94;
/// `_IOW(BTRFS_IOCTL_MAGIC, nr, 4096-byte args)`.
const fn iow(nr: u64) -> libc::c_ulong {
    ((1u64 << 30) | (4096 << 16) | (BTRFS_IOCTL_MAGIC << 8) | nr) as libc::c_ulong
}
const BTRFS_IOC_SNAP_DESTROY: libc::c_ulong = iow(15);
const BTRFS_IOC_SNAP_CREATE_V2: libc::c_ulong = iow(23);
const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;

/// `struct btrfs_ioctl_vol_args_v2` (4096 bytes).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

/// `struct btrfs_ioctl_vol_args` (4096 bytes).
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

fn split(path: &Path) -> Result<(File, Vec<u8>)> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| io_err("no name in", path)(std::io::ErrorKind::InvalidInput.into()))?
        .as_bytes()
        .to_vec();
    let dir = File::open(parent).map_err(io_err("cannot open", parent))?;
    Ok((dir, name))
}

/// A snapshot of subvolume `src` at `dest` (which must not exist), in one ioctl.
pub fn snapshot_subvolume(src: &Path, dest: &Path, readonly: bool) -> Result<()> {
    let source = File::open(src).map_err(io_err("cannot open", src))?;
    let (dir, name) = split(dest)?;
    let mut args = VolArgsV2 {
        fd: source.as_raw_fd() as i64,
        transid: 0,
        flags: if readonly { BTRFS_SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; 4040],
    };
    if name.len() >= args.name.len() {
        return Err(io_err("name too long:", dest)(
            std::io::ErrorKind::InvalidInput.into(),
        ));
    }
    args.name[..name.len()].copy_from_slice(&name);
    // SAFETY: a valid directory descriptor and a fully initialised 4096-byte argument.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), BTRFS_IOC_SNAP_CREATE_V2, &args) };
    if rc != 0 {
        return Err(io_err("cannot snapshot into", dest)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Deletes subvolume `path` (the kernel reclaims its space in the background).
pub fn delete_subvolume(path: &Path) -> Result<()> {
    let (dir, name) = split(path)?;
    let mut args = VolArgs {
        fd: 0,
        name: [0; 4088],
    };
    args.name[..name.len().min(4087)].copy_from_slice(&name[..name.len().min(4087)]);
    // SAFETY: as above.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), BTRFS_IOC_SNAP_DESTROY, &args) };
    if rc != 0 {
        return Err(io_err("cannot delete subvolume", path)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

pub fn is_subvolume(path: &Path) -> bool {
    fs_magic(path).ok() == Some(BTRFS_MAGIC)
        && std::fs::symlink_metadata(path)
            .is_ok_and(|m| m.is_dir() && m.ino() == SUBVOLUME_ROOT_INO)
}

impl Backend for Btrfs {
    fn kind(&self) -> Kind {
        Kind::Btrfs
    }

    fn snapshot(&self, rootfs: &Path, snap: &Path, _name: &str) -> Result<Option<String>> {
        if !is_subvolume(rootfs) {
            return Err(SnapshotError::NotSubvolume {
                rootfs: rootfs.to_path_buf(),
            });
        }
        snapshot_subvolume(rootfs, snap, true)?;
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
            return copy::Copy.rollback(snap, None, rootfs, true);
        }
        swap_in(
            rootfs,
            |staged| snapshot_subvolume(snap, staged, false),
            |old| {
                if is_subvolume(old) {
                    delete_subvolume(old)
                } else {
                    copy::remove_tree(old)
                }
            },
        )
    }

    fn remove_snapshot(&self, snap: &Path, _reference: Option<&str>) -> Result<()> {
        if !snap.exists() {
            return Ok(());
        }
        if is_subvolume(snap) {
            delete_subvolume(snap)
        } else {
            copy::remove_tree(snap)
        }
    }

    fn clone_into(&self, base: &Path, dir: &Path) -> Result<PathBuf> {
        if !is_subvolume(base) {
            return Err(SnapshotError::NotSubvolume {
                rootfs: base.to_path_buf(),
            });
        }
        let rootfs = dir.join("rootfs");
        snapshot_subvolume(base, &rootfs, false)?;
        Ok(rootfs)
    }

    fn remove_clone(&self, dir: &Path) -> Result<()> {
        let rootfs = dir.join("rootfs");
        if is_subvolume(&rootfs) {
            delete_subvolume(&rootfs)?;
        }
        copy::remove_tree(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_and_argument_sizes_match_the_kernel_abi() {
        // linux/btrfs.h: _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2) and
        // _IOW(0x94, 15, struct btrfs_ioctl_vol_args), both 4096 bytes.
        assert_eq!(BTRFS_IOC_SNAP_CREATE_V2, 0x5000_9417);
        assert_eq!(BTRFS_IOC_SNAP_DESTROY, 0x5000_940f);
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
    }

    #[test]
    fn a_plain_directory_is_no_subvolume() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_subvolume(dir.path()));
        let e = Btrfs
            .snapshot(dir.path(), &dir.path().join("s"), "s")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a subvolume"), "{e}");
    }
}
