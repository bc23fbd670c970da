//! Where snapshots live: `<rootfs parent>/.nvbind-snapshots/<rootfs name>/<NAME>/`, holding
//! `meta.json` (written atomically) and the backend's data in `rootfs/`. Next to the rootfs
//! because btrfs snapshots must stay on the rootfs's filesystem, and because snapshots belong
//! to the tree, not to one container instance: they outlive `delete`, so a checkpointed
//! container restored later finds them.
//!
//! A snapshot appears under its name only when complete (built under a temporary name, then
//! renamed), and operations on one store are serialised by a lock on its directory.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::backend::{io_err, validate_name, Backend, Kind, Result, SnapshotError};
use super::choose::{backend_for, backend_of};
use crate::state_root::lock::DirLock;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    pub name: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub backend: Kind,
    pub rootfs: PathBuf,
    /// The container the snapshot was taken of.
    pub container: String,
    /// The CRIU image directory when the snapshot was taken by `checkpoint --snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<PathBuf>,
    /// Backend reference (ZFS: `dataset@name`; overlay: the lower layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

pub struct Store {
    pub dir: PathBuf,
    pub rootfs: PathBuf,
}

const META: &str = "meta.json";
const DATA: &str = "rootfs";
/// Clones of a snapshot made for containers (see `clone`); a snapshot with clones is in use.
pub const CLONES: &str = ".nvbind-clones";

impl Store {
    pub fn for_rootfs(rootfs: &Path) -> Result<Self> {
        let rootfs = fs::canonicalize(rootfs).map_err(io_err("cannot resolve rootfs", rootfs))?;
        let name = rootfs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        let parent = rootfs.parent().unwrap_or(Path::new("/"));
        Ok(Self {
            dir: parent.join(".nvbind-snapshots").join(name),
            rootfs,
        })
    }

    fn lock(&self) -> Result<DirLock> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err("cannot create", &self.dir))?;
        DirLock::exclusive(&self.dir).map_err(|e| SnapshotError::Io {
            what: "cannot lock",
            path: self.dir.clone(),
            source: std::io::Error::other(format!("{e:#}")),
        })
    }

    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The snapshot's tree (what a clone starts from).
    pub fn data_of(&self, meta: &Meta) -> PathBuf {
        match (meta.backend, meta.reference.as_deref()) {
            (Kind::Zfs, Some(r)) => {
                let snap = r.split_once('@').map(|(_, s)| s).unwrap_or(r);
                meta.rootfs.join(".zfs/snapshot").join(snap)
            }
            _ => self.path_of(&meta.name).join(DATA),
        }
    }

    pub fn check_new_name(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        if self.path_of(name).exists() {
            return Err(SnapshotError::Exists {
                name: name.into(),
                rootfs: self.rootfs.clone(),
            });
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<Meta> {
        validate_name(name)?;
        let path = self.path_of(name).join(META);
        match fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|source| SnapshotError::Meta { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SnapshotError::Unknown {
                name: name.into(),
                rootfs: self.rootfs.clone(),
                existing: match self.list() {
                    Ok(l) if !l.is_empty() => l
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    _ => "none".into(),
                },
            }),
            Err(e) => Err(io_err("cannot read", &path)(e)),
        }
    }

    /// All snapshots, oldest first.
    pub fn list(&self) -> Result<Vec<Meta>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io_err("cannot read", &self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("cannot read", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || validate_name(&name).is_err() {
                continue;
            }
            let path = entry.path().join(META);
            if let Ok(b) = fs::read(&path) {
                let meta: Meta = serde_json::from_slice(&b)
                    .map_err(|source| SnapshotError::Meta { path, source })?;
                out.push(meta);
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    /// Takes a snapshot with the backend the rootfs's filesystem calls for.
    pub fn create(&self, name: &str, container: &str, checkpoint: Option<&Path>) -> Result<Meta> {
        let backend = backend_for(&self.rootfs)?;
        self.create_with(backend.as_ref(), name, container, checkpoint)
    }

    pub fn create_with(
        &self,
        backend: &dyn Backend,
        name: &str,
        container: &str,
        checkpoint: Option<&Path>,
    ) -> Result<Meta> {
        validate_name(name)?;
        let _lock = self.lock()?;
        self.check_new_name(name)?;
        let tmp = self.dir.join(format!(".tmp-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp).map_err(io_err("cannot create", &tmp))?;
        let mut reference = None;
        let result = (|| {
            reference = backend.snapshot(&self.rootfs, &tmp.join(DATA), name)?;
            let meta = Meta {
                name: name.into(),
                created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                backend: backend.kind(),
                rootfs: self.rootfs.clone(),
                container: container.into(),
                checkpoint: checkpoint
                    .map(|p| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())),
                reference: reference.clone(),
            };
            let bytes = serde_json::to_vec_pretty(&meta).expect("serialisable");
            nvbind_atomic::write_atomic(&tmp.join(META), &bytes, 0o644)
                .map_err(io_err("cannot write", &tmp.join(META)))?;
            fs::rename(&tmp, self.path_of(name)).map_err(io_err("cannot rename", &tmp))?;
            Ok(meta)
        })();
        if result.is_err() {
            let _ = backend.remove_snapshot(&tmp.join(DATA), reference.as_deref());
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Rolls the rootfs back to `name`. `in_place`: the rootfs is in use by a paused container.
    pub fn rollback(&self, name: &str, in_place: bool) -> Result<Meta> {
        let _lock = self.lock()?;
        let meta = self.get(name)?;
        let backend = backend_of(meta.backend);
        backend.rollback(
            &self.path_of(name).join(DATA),
            meta.reference.as_deref(),
            &self.rootfs,
            in_place,
        )?;
        Ok(meta)
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        let _lock = self.lock()?;
        self.delete_locked(name)
    }

    fn delete_locked(&self, name: &str) -> Result<()> {
        let meta = self.get(name)?;
        let clones = self.path_of(name).join(CLONES);
        let users: Vec<String> = fs::read_dir(&clones)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !users.is_empty() {
            return Err(SnapshotError::InUse {
                name: name.into(),
                users: users.join(", "),
            });
        }
        let backend = backend_of(meta.backend);
        backend.remove_snapshot(&self.path_of(name).join(DATA), meta.reference.as_deref())?;
        let dir = self.path_of(name);
        // Hide it first, so a half-removed snapshot is never listed.
        let trash = self.dir.join(format!(".del-{name}-{}", std::process::id()));
        fs::rename(&dir, &trash).map_err(io_err("cannot remove", &dir))?;
        fs::remove_dir_all(&trash).map_err(io_err("cannot remove", &trash))
    }

    /// Keeps the `keep` newest snapshots and deletes older ones (snapshots that are the base
    /// of a container are kept). Returns the names deleted.
    pub fn prune(&self, keep: usize) -> Result<Vec<String>> {
        let _lock = self.lock()?;
        let all = self.list()?;
        let mut deleted = Vec::new();
        let excess = all.len().saturating_sub(keep);
        for meta in all.iter().take(excess) {
            match self.delete_locked(&meta.name) {
                Ok(()) => deleted.push(meta.name.clone()),
                Err(SnapshotError::InUse { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}

/// A default snapshot name: `snap-YYYYMMDDTHHMMSSZ`, with a counter if taken.
pub fn default_name(store: &Store) -> String {
    let base = format!("snap-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    if !store.path_of(&base).exists() {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|n| !store.path_of(n).exists())
        .expect("unbounded")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::copy::Copy;

    fn setup() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        fs::create_dir(&rootfs).unwrap();
        fs::write(rootfs.join("f"), "v1").unwrap();
        let store = Store::for_rootfs(&rootfs).unwrap();
        (dir, store)
    }

    #[test]
    fn create_list_rollback_delete_and_retention() {
        let (_d, store) = setup();
        store.create_with(&Copy, "one", "c1", None).unwrap();
        fs::write(store.rootfs.join("f"), "v2").unwrap();
        store.create_with(&Copy, "two", "c1", None).unwrap();
        store.create_with(&Copy, "three", "c1", None).unwrap();
        let names: Vec<_> = store.list().unwrap().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["one", "two", "three"]);
        store.rollback("one", false).unwrap();
        assert_eq!(fs::read_to_string(store.rootfs.join("f")).unwrap(), "v1");
        assert_eq!(store.prune(2).unwrap(), ["one"]);
        store.delete("two").unwrap();
        let names: Vec<_> = store.list().unwrap().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["three"]);
    }

    #[test]
    fn bad_and_unknown_names_change_nothing() {
        let (_d, store) = setup();
        store.create_with(&Copy, "keep", "c1", None).unwrap();
        let e = store.rollback("nope", false).unwrap_err().to_string();
        assert!(e.contains("does not exist") && e.contains("keep"), "{e}");
        let e = store
            .create_with(&Copy, "../escape", "c1", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("escape"), "{e}");
        let e = store
            .create_with(&Copy, "keep", "c1", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("already exists"), "{e}");
        assert!(store.delete("../../etc").is_err());
        assert_eq!(store.list().unwrap().len(), 1);
        let leftovers: Vec<_> = fs::read_dir(&store.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, ["keep"]);
    }

    #[test]
    fn a_snapshot_with_clones_is_not_deleted() {
        let (_d, store) = setup();
        store.create_with(&Copy, "base", "c1", None).unwrap();
        fs::create_dir_all(store.path_of("base").join(CLONES).join("c2")).unwrap();
        let e = store.delete("base").unwrap_err().to_string();
        assert!(e.contains("c2"), "{e}");
        assert!(store.prune(0).unwrap().is_empty());
    }
}
