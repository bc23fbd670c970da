//! btrfs: the rootfs is a subvolume. A snapshot is a read-only subvolume snapshot; a rollback
//! of a stopped container makes a writable snapshot of the snapshot and swaps it in with two
//! renames, so both are O(1) in the size of the tree. A paused container's rollback
//! (`--force`) has to keep the rootfs inode its processes hold, so it rewrites the tree in
//! place with reflinked copies instead.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::copy::{self, swap_in};
use super::{fs_magic, Backend, Kind, Result, Runner, SnapshotError, BTRFS_MAGIC};

/// The inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID).
const SUBVOLUME_ROOT_INO: u64 = 256;

pub struct Btrfs<R: Runner> {
    runner: R,
}

impl<R: Runner> Btrfs<R> {
    pub fn new(runner: R) -> Self {
        Self { runner }
    }

    fn run(&self, argv: &[&str]) -> Result<()> {
        self.runner.run(argv).map(drop)
    }
}

pub fn is_subvolume(path: &Path) -> bool {
    fs_magic(path).ok() == Some(BTRFS_MAGIC)
        && std::fs::symlink_metadata(path)
            .is_ok_and(|m| m.is_dir() && m.ino() == SUBVOLUME_ROOT_INO)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

impl<R: Runner> Backend for Btrfs<R> {
    fn kind(&self) -> Kind {
        Kind::Btrfs
    }

    fn snapshot(&self, rootfs: &Path, snap: &Path, _name: &str) -> Result<Option<String>> {
        if !is_subvolume(rootfs) {
            return Err(SnapshotError::NotSubvolume {
                rootfs: rootfs.to_path_buf(),
            });
        }
        self.run(&[
            "btrfs",
            "-q",
            "subvolume",
            "snapshot",
            "-r",
            s(rootfs),
            s(snap),
        ])?;
        Ok(None)
    }

    fn rollback(
        &self,
        snap: &Path,
        _reference: Option<&str>,
        rootfs: &Path,
        in_place: bool,
    ) -> Result<()> {
        if in_place || super::is_mount_point(rootfs) {
            return copy::Copy.rollback(snap, None, rootfs, true);
        }
        swap_in(
            rootfs,
            |staged| self.run(&["btrfs", "-q", "subvolume", "snapshot", s(snap), s(staged)]),
            |old| {
                if is_subvolume(old) {
                    self.run(&["btrfs", "-q", "subvolume", "delete", s(old)])
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
            self.run(&["btrfs", "-q", "subvolume", "delete", s(snap)])
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
        self.run(&["btrfs", "-q", "subvolume", "snapshot", s(base), s(&rootfs)])?;
        Ok(rootfs)
    }

    fn remove_clone(&self, dir: &Path) -> Result<()> {
        let rootfs = dir.join("rootfs");
        if is_subvolume(&rootfs) {
            self.run(&["btrfs", "-q", "subvolume", "delete", s(&rootfs)])?;
        }
        copy::remove_tree(dir)
    }
}
