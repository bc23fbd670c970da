//! Bundles that start from a snapshot: `org.nvbind.snapshot.from=<path-or-name>` in the
//! bundle's annotations, or `--snapshot NAME` on create/run/restore. The base (a snapshot of
//! the bundle's rootfs, a snapshot directory, or any rootfs directory) is cloned
//! copy-on-write for the container, never modified:
//!
//! - base a btrfs subvolume: a writable subvolume snapshot;
//! - base on ZFS: `zfs clone`;
//! - anything else: an overlay with a fresh upper layer over the base; a plain copy (with
//!   reflinks) where overlayfs cannot mount.
//!
//! The clone lives in `<base's parent>/.nvbind-clones/<ID>/` (for a snapshot, inside the
//! snapshot's directory, which makes `snapshot delete` refuse while it is in use); the spec
//! libcontainer gets in memory has root.path pointing at the clone (the bundle is never
//! written). `<root>/.nvbind-clones/<ID>.json` records it so `delete`
//! can remove it (unless `org.nvbind.snapshot.keep=true`); `checkpoint` keeps it for
//! `restore`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::backend::{fs_magic, Backend, HostRunner, Kind, BTRFS_MAGIC, ZFS_MAGIC};
use super::btrfs::{is_subvolume, Btrfs};
use super::choose::backend_of;
use super::rootfs::spec_rootfs;
use super::store::{Store, CLONES};
use crate::state_root::Ctx;

pub const FROM_ANNOTATION: &str = "org.nvbind.snapshot.from";
pub const KEEP_ANNOTATION: &str = "org.nvbind.snapshot.keep";

#[derive(Debug, Serialize, Deserialize)]
struct CloneRecord {
    id: String,
    backend: Kind,
    base: PathBuf,
    dir: PathBuf,
    rootfs: PathBuf,
    keep: bool,
}

fn record_path(ctx: &Ctx, id: &str) -> PathBuf {
    ctx.root.join(".nvbind-clones").join(format!("{id}.json"))
}

fn load_record(ctx: &Ctx, id: &str) -> anyhow::Result<Option<CloneRecord>> {
    let path = record_path(ctx, id);
    match fs::read(&path) {
        Ok(b) => {
            Ok(Some(serde_json::from_slice(&b).with_context(|| {
                format!("{} is unreadable", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Whether container `id` has a rootfs clone on record (kept by a checkpoint, say).
pub fn has_clone(ctx: &Ctx, id: &str) -> bool {
    record_path(ctx, id).exists()
}

/// If the bundle asks to start from a snapshot, clones it for container `id` and points the
/// spec's root.path at the clone (the spec goes to libcontainer in memory; nothing is
/// written in or beside the bundle). Returns whether it did; `Ok(false)`: the bundle does not
/// ask for it, nothing was done. A clone kept for `id` (by a checkpoint) is reused.
pub fn prepare_rootfs_for_bundle(
    ctx: &Ctx,
    id: &str,
    bundle: &Path,
    spec: &mut Spec,
    cli_snapshot: Option<&str>,
) -> anyhow::Result<bool> {
    let annotations = spec.annotations().clone().unwrap_or_default();
    let Some(from) = cli_snapshot
        .map(str::to_string)
        .or_else(|| annotations.get(FROM_ANNOTATION).cloned())
    else {
        return Ok(false);
    };
    let keep = annotations
        .get(KEEP_ANNOTATION)
        .is_some_and(|v| v == "true");
    let rec = match load_record(ctx, id)? {
        Some(rec) => rec,
        None => {
            let base = resolve_base(&from, bundle, spec)?;
            let path = record_path(ctx, id);
            // Recorded before the clone is made, and again once it is: a create killed in
            // between leaves a record that `delete` releases; the clone's mount and directory
            // were otherwise known to no one (tests/crash.rs). Every backend's remove_clone
            // copes with a clone made half-way or not at all.
            let dir = clone_dir(id, &base);
            let planned = CloneRecord {
                id: id.into(),
                backend: backend_for(&base)?,
                base: base.clone(),
                rootfs: dir.clone(),
                dir,
                keep,
            };
            write_record(&path, &planned)?;
            let rec = match make_clone(id, &base, keep) {
                Ok(rec) => rec,
                Err(e) => {
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
            };
            if let Err(e) = write_record(&path, &rec) {
                let _ = backend_of(rec.backend).remove_clone(&rec.dir);
                let _ = fs::remove_file(&path);
                return Err(e);
            }
            rec
        }
    };
    if let Some(mut root) = spec.root().clone() {
        root.set_path(rec.rootfs.clone());
        spec.set_root(Some(root));
    }
    Ok(true)
}

/// What `from` names: a path (absolute, or relative to the bundle; a snapshot directory
/// counts as its tree), or the name of a snapshot of the bundle's rootfs.
fn resolve_base(from: &str, bundle: &Path, spec: &Spec) -> anyhow::Result<PathBuf> {
    if from.contains('/') || from.starts_with('.') {
        let path = bundle.join(from);
        let path = fs::canonicalize(&path).with_context(|| {
            format!(
                "{FROM_ANNOTATION}={from}: {} does not exist",
                path.display()
            )
        })?;
        if path.join("meta.json").is_file() {
            let store = Store {
                dir: path.parent().unwrap_or(Path::new("/")).to_path_buf(),
                rootfs: PathBuf::new(),
            };
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let meta = store.get(&name)?;
            return Ok(store.data_of(&meta));
        }
        if !path.is_dir() {
            bail!(
                "{FROM_ANNOTATION}={from}: {} is not a directory",
                path.display()
            );
        }
        return Ok(path);
    }
    let rootfs = spec_rootfs(spec, bundle)?;
    let store = Store::for_rootfs(&rootfs)?;
    let meta = store.get(from)?;
    Ok(store.data_of(&meta))
}

fn write_record(path: &Path, rec: &CloneRecord) -> anyhow::Result<()> {
    let written = fs::create_dir_all(path.parent().expect("has a parent"))
        .and_then(|_| nvbind_atomic::write_atomic(path, &serde_json::to_vec_pretty(rec)?, 0o600));
    written.with_context(|| format!("cannot write {}", path.display()))
}

fn clone_dir(id: &str, base: &Path) -> PathBuf {
    base.parent()
        .unwrap_or(Path::new("/"))
        .join(CLONES)
        .join(id)
}

/// The backend `make_clone` tries first (overlay falls back to a copy, which overlay's
/// removal also removes).
fn backend_for(base: &Path) -> anyhow::Result<Kind> {
    let magic = fs_magic(base)?;
    Ok(if magic == BTRFS_MAGIC && is_subvolume(base) {
        Kind::Btrfs
    } else if magic == ZFS_MAGIC {
        Kind::Zfs
    } else {
        Kind::Overlay
    })
}

fn make_clone(id: &str, base: &Path, keep: bool) -> anyhow::Result<CloneRecord> {
    let dir = clone_dir(id, base);
    if dir.exists() {
        bail!(
            "a clone for container {id:?} already exists at {} (kept from an earlier \
             container?); remove it or choose another ID",
            dir.display()
        );
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let attempt = |backend: &dyn Backend| -> anyhow::Result<CloneRecord> {
        let rootfs = backend.clone_into(base, &dir)?;
        Ok(CloneRecord {
            id: id.into(),
            backend: backend.kind(),
            base: base.to_path_buf(),
            dir: dir.clone(),
            rootfs,
            keep,
        })
    };
    let result = match backend_for(base)? {
        Kind::Btrfs => attempt(&Btrfs),
        Kind::Zfs => attempt(&super::zfs::Zfs::new(HostRunner)),
        _ => attempt(&super::overlay::Overlay).or_else(|e| {
            tracing::debug!("overlay clone failed ({e:#}); copying instead");
            let _ = super::overlay::Overlay.remove_clone(&dir);
            fs::create_dir_all(&dir)?;
            attempt(&super::copy::Copy)
        }),
    };
    match result {
        Ok(rec) => Ok(rec),
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            Err(e.context(format!(
                "cannot clone {} for container {id:?}",
                base.display()
            )))
        }
    }
}

/// Removes the clone of container `id` (unless it asked to keep it) and its record; nothing
/// to do for a container that did not start from a snapshot. Call after the container is
/// deleted.
pub fn release(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    // A create killed while writing the record leaves its temporary file.
    let path = record_path(ctx, id);
    let records = path.parent().expect("has a parent");
    let record = format!("{id}.json");
    for entry in fs::read_dir(records).into_iter().flatten().flatten() {
        if nvbind_atomic::is_temp_of(&entry.file_name().to_string_lossy(), &record) {
            let _ = fs::remove_file(entry.path());
        }
    }
    let _ = fs::remove_dir(records);
    let Some(rec) = load_record(ctx, id)? else {
        return Ok(());
    };
    if !rec.keep {
        backend_of(rec.backend)
            .remove_clone(&rec.dir)
            .with_context(|| format!("cannot remove the rootfs clone {}", rec.dir.display()))?;
        if let Some(clones) = rec.dir.parent() {
            let _ = fs::remove_dir(clones);
        }
    } else {
        let _ = fs::remove_dir_all(rec.dir.join("bundle"));
    }
    fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    let _ = fs::remove_dir(records);
    Ok(())
}
