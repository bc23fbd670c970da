//! ZFS, with a dataset per container as Proxmox lays them out (`rpool/data/subvol-101-disk-0`
//! mounted at `/rpool/data/subvol-101-disk-0`): `zfs snapshot DS@NAME`, `zfs rollback
//! DS@NAME` (refused by ZFS when newer snapshots exist, which we report rather than
//! destroying them with -r), `zfs destroy DS@NAME`, and `zfs clone` for bundles that start
//! from a snapshot. All through a `Runner`, so the command sequence is tested against a
//! transcript on machines without ZFS.

use std::path::{Path, PathBuf};

use super::backend::{Backend, Kind, Result, Runner, SnapshotError};

pub struct Zfs<R: Runner> {
    runner: R,
}

/// Prefix of the snapshots nvbind takes of a plain dataset to clone it.
const BASE_PREFIX: &str = "nvbind-base-";

impl<R: Runner> Zfs<R> {
    pub fn new(runner: R) -> Self {
        Self { runner }
    }

    /// The dataset mounted at `path` (`zfs list -H -o name,mountpoint`).
    fn dataset_at(&self, path: &Path) -> Result<String> {
        let out = self.runner.run(&[
            "zfs",
            "list",
            "-H",
            "-o",
            "name,mountpoint",
            "-t",
            "filesystem",
        ])?;
        let want = path.to_string_lossy();
        out.lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(_, mp)| *mp == want)
            .map(|(name, _)| name.to_string())
            .ok_or_else(|| SnapshotError::Command {
                argv: vec!["zfs".into(), "list".into()],
                stderr: format!(
                    "no dataset is mounted at {want}; ZFS snapshots need the rootfs to be a \
                     dataset's mountpoint (one dataset per container)"
                ),
            })
    }
}

impl<R: Runner> Backend for Zfs<R> {
    fn kind(&self) -> Kind {
        Kind::Zfs
    }

    fn snapshot(&self, rootfs: &Path, _snap: &Path, name: &str) -> Result<Option<String>> {
        let ds = self.dataset_at(rootfs)?;
        let full = format!("{ds}@{name}");
        self.runner.run(&["zfs", "snapshot", &full])?;
        Ok(Some(full))
    }

    fn rollback(
        &self,
        _snap: &Path,
        reference: Option<&str>,
        _rootfs: &Path,
        _in_place: bool,
    ) -> Result<()> {
        let full = reference.ok_or_else(missing_ref)?;
        self.runner.run(&["zfs", "rollback", full]).map(drop)
    }

    fn remove_snapshot(&self, _snap: &Path, reference: Option<&str>) -> Result<()> {
        let full = reference.ok_or_else(missing_ref)?;
        self.runner.run(&["zfs", "destroy", full]).map(drop)
    }

    /// `base` is a dataset's mountpoint, or one of its snapshots as
    /// `MOUNTPOINT/.zfs/snapshot/NAME`.
    fn clone_into(&self, base: &Path, dir: &Path) -> Result<PathBuf> {
        let text = base.to_string_lossy();
        let (mountpoint, snap) = match text.split_once("/.zfs/snapshot/") {
            Some((mp, snap)) => (
                PathBuf::from(mp),
                Some(snap.trim_end_matches('/').to_string()),
            ),
            None => (base.to_path_buf(), None),
        };
        let ds = self.dataset_at(&mountpoint)?;
        let leaf = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let origin = match snap {
            Some(s) => format!("{ds}@{s}"),
            None => {
                let o = format!("{ds}@{BASE_PREFIX}{leaf}");
                self.runner.run(&["zfs", "snapshot", &o])?;
                o
            }
        };
        let parent = ds.rsplit_once('/').map(|(p, _)| p).unwrap_or(&ds);
        let clone = format!("{parent}/nvbind-{leaf}");
        let rootfs = dir.join("rootfs");
        let mp = format!("mountpoint={}", rootfs.display());
        self.runner
            .run(&["zfs", "clone", "-o", &mp, &origin, &clone])?;
        Ok(rootfs)
    }

    fn remove_clone(&self, dir: &Path) -> Result<()> {
        let rootfs = dir.join("rootfs");
        let clone = self.dataset_at(&rootfs)?;
        let origin = self
            .runner
            .run(&["zfs", "get", "-H", "-o", "value", "origin", &clone])?;
        let origin = origin.trim().to_string();
        self.runner.run(&["zfs", "destroy", &clone])?;
        if origin
            .split_once('@')
            .is_some_and(|(_, s)| s.starts_with(BASE_PREFIX))
        {
            self.runner.run(&["zfs", "destroy", &origin])?;
        }
        super::copy::remove_tree(dir)
    }
}

fn missing_ref() -> SnapshotError {
    SnapshotError::Command {
        argv: vec!["zfs".into()],
        stderr: "the snapshot's metadata names no ZFS snapshot".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Replays `tests/fixtures/zfs-transcript.txt`: each `$ ARGV` line must be the next command
    /// run, the lines after it are its stdout, `! MESSAGE` makes it fail.
    struct Transcript {
        steps: RefCell<std::collections::VecDeque<(String, std::result::Result<String, String>)>>,
    }

    impl Transcript {
        fn section(name: &str) -> Self {
            let text = include_str!("../../tests/fixtures/zfs-transcript.txt");
            let mut steps = std::collections::VecDeque::new();
            let mut in_section = false;
            for line in text.lines() {
                if let Some(s) = line.strip_prefix("## ") {
                    in_section = s.trim() == name;
                    continue;
                }
                if !in_section || line.starts_with('#') {
                    continue;
                }
                if let Some(cmd) = line.strip_prefix("$ ") {
                    steps.push_back((cmd.to_string(), Ok(String::new())));
                } else if let Some(msg) = line.strip_prefix("! ") {
                    steps.back_mut().expect("output before a command").1 = Err(msg.to_string());
                } else if let Some((_, Ok(out))) = steps.back_mut() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            assert!(!steps.is_empty(), "no section {name}");
            Self {
                steps: RefCell::new(steps),
            }
        }

        fn done(&self) {
            assert!(
                self.steps.borrow().is_empty(),
                "commands not run: {:?}",
                self.steps.borrow()
            );
        }
    }

    impl Runner for &Transcript {
        fn run(&self, argv: &[&str]) -> Result<String> {
            let got = argv.join(" ");
            let (want, result) = self
                .steps
                .borrow_mut()
                .pop_front()
                .unwrap_or_else(|| panic!("unexpected command {got}"));
            assert_eq!(got, want);
            result.map_err(|stderr| SnapshotError::Command {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                stderr,
            })
        }
    }

    const ROOTFS: &str = "/rpool/data/subvol-101-disk-0";

    #[test]
    fn snapshot_rollback_delete_follow_the_proxmox_layout() {
        let t = Transcript::section("snapshot-rollback-delete");
        let z = Zfs::new(&t);
        let snap = Path::new("/unused");
        let r = z
            .snapshot(Path::new(ROOTFS), snap, "before-upgrade")
            .unwrap();
        assert_eq!(
            r.as_deref(),
            Some("rpool/data/subvol-101-disk-0@before-upgrade")
        );
        z.rollback(snap, r.as_deref(), Path::new(ROOTFS), false)
            .unwrap();
        z.remove_snapshot(snap, r.as_deref()).unwrap();
        t.done();
    }

    #[test]
    fn rollback_past_a_newer_snapshot_is_refused_not_forced() {
        let t = Transcript::section("rollback-refused");
        let z = Zfs::new(&t);
        let e = z
            .rollback(
                Path::new("/unused"),
                Some("rpool/data/subvol-101-disk-0@old"),
                Path::new(ROOTFS),
                false,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("more recent snapshots"), "{e}");
        t.done();
    }

    #[test]
    fn clone_of_a_snapshot_and_of_a_plain_dataset() {
        let t = Transcript::section("clone");
        let z = Zfs::new(&t);
        let base = format!("{ROOTFS}/.zfs/snapshot/before-upgrade");
        let dir = Path::new("/rpool/data/.nvbind-clones/c1");
        let rootfs = z.clone_into(Path::new(&base), dir).unwrap();
        assert_eq!(rootfs, dir.join("rootfs"));
        let dir2 = Path::new("/rpool/data/.nvbind-clones/c2");
        z.clone_into(Path::new(ROOTFS), dir2).unwrap();
        t.done();
    }

    #[test]
    fn removing_a_clone_destroys_it_and_the_base_snapshot_nvbind_took() {
        let t = Transcript::section("remove-clone");
        let z = Zfs::new(&t);
        // The clone directory does not exist here; remove_tree tolerates that.
        z.remove_clone(Path::new("/rpool/data/.nvbind-clones/c2"))
            .unwrap();
        t.done();
    }

    #[test]
    fn a_rootfs_that_is_no_dataset_is_explained() {
        let t = Transcript::section("not-a-dataset");
        let z = Zfs::new(&t);
        let e = z
            .snapshot(Path::new("/srv/rootfs"), Path::new("/unused"), "s")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no dataset is mounted at /srv/rootfs"), "{e}");
        t.done();
    }
}
