//! Which backend serves a rootfs: by its filesystem, by name, or the one that made a snapshot.

use std::path::Path;

use super::backend::{
    fs_magic, fs_name, Backend, HostRunner, Kind, Result, SnapshotError, BTRFS_MAGIC,
    OVERLAY_MAGIC, ZFS_MAGIC,
};
use super::{btrfs, copy, overlay, zfs};

/// The backend for a live rootfs: its filesystem decides, copy is the fallback.
pub fn backend_for(rootfs: &Path) -> Result<Box<dyn Backend>> {
    Ok(match fs_magic(rootfs)? {
        BTRFS_MAGIC => Box::new(btrfs::Btrfs),
        ZFS_MAGIC => Box::new(zfs::Zfs::new(HostRunner)),
        OVERLAY_MAGIC if overlay::is_nvbind_overlay(rootfs) => Box::new(overlay::Overlay),
        _ => Box::new(copy::Copy),
    })
}

/// A backend asked for by name; refuses a filesystem that cannot do it.
pub fn backend_named(kind: Kind, rootfs: &Path) -> Result<Box<dyn Backend>> {
    let magic = fs_magic(rootfs)?;
    let unsupported = || SnapshotError::Unsupported {
        rootfs: rootfs.to_path_buf(),
        fs: fs_name(magic),
        backend: kind,
    };
    Ok(match kind {
        Kind::Btrfs if magic == BTRFS_MAGIC => Box::new(btrfs::Btrfs),
        Kind::Zfs if magic == ZFS_MAGIC => Box::new(zfs::Zfs::new(HostRunner)),
        Kind::Overlay if overlay::is_nvbind_overlay(rootfs) => Box::new(overlay::Overlay),
        Kind::Copy => Box::new(copy::Copy),
        _ => return Err(unsupported()),
    })
}

/// The backend that made an existing snapshot.
pub fn backend_of(kind: Kind) -> Box<dyn Backend> {
    match kind {
        Kind::Btrfs => Box::new(btrfs::Btrfs),
        Kind::Zfs => Box::new(zfs::Zfs::new(HostRunner)),
        Kind::Overlay => Box::new(overlay::Overlay),
        Kind::Copy => Box::new(copy::Copy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_named_refuses_btrfs_on_other_filesystems() {
        let dir = tempfile::tempdir().unwrap();
        if fs_magic(dir.path()).unwrap() == BTRFS_MAGIC {
            return;
        }
        let e = match backend_named(Kind::Btrfs, dir.path()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("btrfs accepted on a non-btrfs dir"),
        };
        assert!(e.contains("has no btrfs snapshots"), "{e}");
    }
}
