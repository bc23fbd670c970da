//! What every snapshot backend is and shares: the trait, its kinds, its error, the command
//! runner, the filesystem a path is on, and the names snapshots may have.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("invalid snapshot name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("snapshot {name:?} does not exist for rootfs {rootfs} (existing: {existing})")]
    Unknown {
        name: String,
        rootfs: PathBuf,
        existing: String,
    },
    #[error("snapshot {name:?} already exists for rootfs {rootfs}")]
    Exists { name: String, rootfs: PathBuf },
    #[error("snapshot {name:?} is the base of container(s) {users}; delete them first")]
    InUse { name: String, users: String },
    #[error(
        "rootfs {rootfs} is a plain directory on btrfs, not a subvolume, so it cannot be \
         snapshotted in O(1); convert it once while the container is stopped: \
         btrfs subvolume create {rootfs}.new && cp -a --reflink=always {rootfs}/. {rootfs}.new/ \
         && mv {rootfs} {rootfs}.old && mv {rootfs}.new {rootfs} && rm -rf {rootfs}.old \
         (or use --backend copy)"
    )]
    NotSubvolume { rootfs: PathBuf },
    #[error("rootfs {rootfs} is on {fs}, which has no {backend} snapshots; use --backend copy or move the rootfs onto {backend}")]
    Unsupported {
        rootfs: PathBuf,
        fs: String,
        backend: Kind,
    },
    #[error("{} failed: {stderr}", argv.join(" "))]
    Command { argv: Vec<String>, stderr: String },
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {what} {}", path.display())]
    Mount {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("snapshot metadata {} is unreadable", path.display())]
    Meta {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

pub(crate) fn io_err(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io { what, path, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Btrfs,
    Zfs,
    Overlay,
    Copy,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Kind::Btrfs => "btrfs",
            Kind::Zfs => "zfs",
            Kind::Overlay => "overlay",
            Kind::Copy => "copy",
        })
    }
}

/// What every backend does. Paths: `rootfs` is the live tree, `snap` the snapshot's data
/// directory inside the store (backends that keep data elsewhere, ZFS, ignore it).
pub trait Backend {
    fn kind(&self) -> Kind;
    /// Takes a point-in-time copy of `rootfs` at `snap` (which does not exist yet). Returns a
    /// backend reference kept in the metadata (ZFS: `dataset@name`).
    fn snapshot(&self, rootfs: &Path, snap: &Path, name: &str) -> Result<Option<String>>;
    /// Makes `rootfs` equal to the snapshot again. `in_place`: the tree is in use (a paused
    /// container), so its directory must stay the same inode.
    fn rollback(
        &self,
        snap: &Path,
        reference: Option<&str>,
        rootfs: &Path,
        in_place: bool,
    ) -> Result<()>;
    /// Removes a snapshot.
    fn remove_snapshot(&self, snap: &Path, reference: Option<&str>) -> Result<()>;
    /// Makes a writable copy-on-write clone of `base` inside the empty directory `dir` and
    /// returns the clone's rootfs path. `base` is never modified.
    fn clone_into(&self, base: &Path, dir: &Path) -> Result<PathBuf>;
    /// Removes a clone made by `clone_into`.
    fn remove_clone(&self, dir: &Path) -> Result<()>;
}

/// Runs host tools (btrfs, zfs); tests replace it with a transcript.
pub trait Runner {
    fn run(&self, argv: &[&str]) -> Result<String>;
}

pub struct HostRunner;

impl Runner for HostRunner {
    fn run(&self, argv: &[&str]) -> Result<String> {
        let out = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| SnapshotError::Spawn {
                program: argv[0].to_string(),
                source,
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(SnapshotError::Command {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                stderr: stderr.trim().replace('\n', "; "),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

pub const BTRFS_MAGIC: i64 = 0x9123_683E;
pub const ZFS_MAGIC: i64 = 0x2FC1_2FC1;
pub const OVERLAY_MAGIC: i64 = 0x794C_7630;

/// The filesystem a path lives on, by statfs magic.
pub fn fs_magic(path: &Path) -> Result<i64> {
    let st = nix::sys::statfs::statfs(path).map_err(|e| SnapshotError::Io {
        what: "cannot statfs",
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    Ok(st.filesystem_type().0 as i64)
}

pub fn fs_name(magic: i64) -> String {
    match magic {
        BTRFS_MAGIC => "btrfs".into(),
        ZFS_MAGIC => "zfs".into(),
        OVERLAY_MAGIC => "overlayfs".into(),
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        0x5846_5342 => "xfs".into(),
        m => format!("a filesystem with magic {m:#x}"),
    }
}

/// Snapshot names become directory names in the store (and ZFS snapshot names): a small
/// alphabet, no path separators, no leading dot, no "..".
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why| {
        Err(SnapshotError::InvalidName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 100 {
        return bad("longer than 100 characters");
    }
    if name.contains('/') || name.contains("..") {
        return bad("it would escape the snapshot directory");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it must start with a letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return bad("use letters, digits, '_', '-', '.'");
    }
    Ok(())
}

/// True if `path` is a mount point (its device differs from its parent's, or it is a bind
/// mount listed in mountinfo).
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(canon) = fs::canonicalize(path) else {
        return false;
    };
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = canon.display().to_string();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mount(mp) == want)
}

pub(crate) fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_or_confuse_are_refused() {
        for bad in [
            "", ".", "..", "../x", "a/b", "/abs", ".hidden", "a..b", "x y", "a\nb", "é", "-x",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "before-upgrade", "snap.1", "2026_11_22"] {
            validate_name(good).unwrap();
        }
        let e = validate_name("../etc").unwrap_err().to_string();
        assert!(e.contains("escape"), "{e}");
    }
}
