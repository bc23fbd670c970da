//! overlayfs: a clone is a fresh upper layer over the read-only base (`DIR/upper`, `DIR/work`,
//! mounted on `DIR/merged`, the base recorded in `DIR/overlay.json`). A snapshot of such a
//! rootfs keeps only the upper layer; a rollback of a stopped container unmounts, swaps the
//! upper layer for a copy of the snapshot's and mounts again. A paused container keeps its
//! mount, so its rollback (`--force`) rewrites the merged tree in place from a read-only
//! overlay of the snapshot's upper layer over the same base.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use super::backend::{io_err, Backend, Kind, Result, SnapshotError};
use super::copy::{self, copy_tree, remove_tree};

const RECORD: &str = "overlay.json";

#[derive(Serialize, Deserialize)]
struct Record {
    lower: PathBuf,
}

pub struct Overlay;

/// A rootfs nvbind mounted as an overlay clone (`DIR/merged` with `DIR/overlay.json`).
pub fn is_nvbind_overlay(rootfs: &Path) -> bool {
    rootfs.file_name().is_some_and(|n| n == "merged")
        && rootfs.parent().is_some_and(|d| d.join(RECORD).exists())
}

fn layout(rootfs: &Path) -> Result<(PathBuf, Record)> {
    let dir = rootfs.parent().unwrap_or(Path::new("/")).to_path_buf();
    let path = dir.join(RECORD);
    let bytes = fs::read(&path).map_err(io_err("cannot read", &path))?;
    let rec =
        serde_json::from_slice(&bytes).map_err(|source| SnapshotError::Meta { path, source })?;
    Ok((dir, rec))
}

fn mount_overlay(lower: &str, upper: Option<&Path>, work: Option<&Path>, at: &Path) -> Result<()> {
    let mut data = format!("lowerdir={lower}");
    let mut flags = MsFlags::empty();
    match (upper, work) {
        (Some(u), Some(w)) => data.push_str(&format!(
            ",upperdir={},workdir={}",
            u.display(),
            w.display()
        )),
        _ => flags |= MsFlags::MS_RDONLY,
    }
    mount(
        Some("overlay"),
        at,
        Some("overlay"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|source| SnapshotError::Mount {
        what: "mount an overlay on",
        path: at.to_path_buf(),
        source,
    })
}

fn umount(at: &Path) -> Result<()> {
    match umount2(at, MntFlags::empty()) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(source) => Err(SnapshotError::Mount {
            what: "unmount",
            path: at.to_path_buf(),
            source,
        }),
    }
}

impl Backend for Overlay {
    fn kind(&self) -> Kind {
        Kind::Overlay
    }

    fn snapshot(&self, rootfs: &Path, snap: &Path, _name: &str) -> Result<Option<String>> {
        let (dir, rec) = layout(rootfs)?;
        fs::create_dir(snap).map_err(io_err("cannot create", snap))?;
        copy_tree(&dir.join("upper"), &snap.join("upper"))?;
        Ok(Some(rec.lower.display().to_string()))
    }

    fn rollback(&self, snap: &Path, _r: Option<&str>, rootfs: &Path, in_place: bool) -> Result<()> {
        let (dir, rec) = layout(rootfs)?;
        if in_place {
            let view = dir.join(format!(".rollback-view-{}", std::process::id()));
            fs::create_dir(&view).map_err(io_err("cannot create", &view))?;
            let lower = format!("{}:{}", snap.join("upper").display(), rec.lower.display());
            let result = mount_overlay(&lower, None, None, &view).and_then(|_| {
                let r = copy::clear_dir(rootfs).and_then(|_| copy::copy_contents(&view, rootfs));
                let _ = umount2(&view, MntFlags::MNT_DETACH);
                r
            });
            let _ = fs::remove_dir(&view);
            return result;
        }
        umount(rootfs)?;
        let upper = dir.join("upper");
        let work = dir.join("work");
        let swapped = copy::swap_in(
            &upper,
            |staged| copy_tree(&snap.join("upper"), staged),
            remove_tree,
        )
        .and_then(|_| remove_tree(&work))
        .and_then(|_| fs::create_dir(&work).map_err(io_err("cannot create", &work)));
        // Mount again whatever happened, so a failed rollback leaves the rootfs usable.
        let mounted = mount_overlay(
            &rec.lower.display().to_string(),
            Some(&upper),
            Some(&work),
            rootfs,
        );
        swapped.and(mounted)
    }

    fn remove_snapshot(&self, snap: &Path, _r: Option<&str>) -> Result<()> {
        remove_tree(snap)
    }

    fn clone_into(&self, base: &Path, dir: &Path) -> Result<PathBuf> {
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for d in [&upper, &work, &merged] {
            fs::create_dir_all(d).map_err(io_err("cannot create", d))?;
        }
        // The upper layer's root takes the base's owner and mode, as a copy would.
        let meta = fs::symlink_metadata(base).map_err(io_err("cannot stat", base))?;
        copy::copy_attrs(base, &upper, &meta)?;
        let rec = serde_json::to_vec(&Record {
            lower: base.to_path_buf(),
        })
        .expect("serialisable");
        nvbind_atomic::write_atomic(&dir.join(RECORD), &rec, 0o644)
            .map_err(io_err("cannot write", &dir.join(RECORD)))?;
        mount_overlay(
            &base.display().to_string(),
            Some(&upper),
            Some(&work),
            &merged,
        )?;
        Ok(merged)
    }

    fn remove_clone(&self, dir: &Path) -> Result<()> {
        let merged = dir.join("merged");
        if let Err(e) = umount(&merged) {
            // Busy: detach it so the directory can go; the kernel frees it when unused.
            tracing::warn!("{e}; detaching");
            let _ = umount2(&merged, MntFlags::MNT_DETACH);
        }
        remove_tree(dir)
    }
}
