//! Containers that a killed nvbind left half-made, and the record that makes them removable.
//!
//! libcontainer builds a container in steps: the state directory, state.json ("creating"),
//! youki_config.json (which holds the cgroup path), the cgroup and the processes, then
//! state.json again ("created", with the init's pid). A `create` killed between two steps
//! leaves a directory with no state.json; a `delete` killed while removing the directory
//! leaves some of its files. Neither loads as a container, so `state`, `list` and `delete`
//! used to fail on it, and runc's answer (delete.go removes the directory of a container whose
//! state.json was never written) would leave behind whatever only the dead process knew of.
//!
//! So `create` first records what it is about to make (ID, bundle, cgroup path) in
//! `<root>/.nvbind-container-<ID>.json`, replaced atomically, before anything of the container
//! exists. The record stays for the container's life and `delete` removes it last, after the
//! directory: it is nvbind's claim on the ID, what tells its containers from those of another
//! runtime sharing the root (src/state_root/owner.rs), so a directory without one is never
//! taken for a half-made container of nvbind's. `delete --force` of a half-made container
//! waits for the ID's lock (a create still running holds it until it is done), thaws and kills
//! what is in the recorded cgroup (or the one youki_config.json names), removes the cgroup, the
//! directory and the record. `state` and `list` report such a container as stopped (creating,
//! while its create still runs) with a warning.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libcgroups::common::{create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager};
use libcontainer::config::YoukiConfig;
use libcontainer::container::state::State;
use libcontainer::container::{Container, ContainerStatus};
use nvbind::bundle::names_a_child_cgroup;
use nvbind::state_doc::StateDoc;
use nvbind_atomic::{is_temp_of, temp_writer, write_atomic_nosync};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::retry::patiently;
use crate::state_root::id::validate_id;
use crate::state_root::lock::{id_lock_held_here, id_lock_holder, lock_cgroup, DirLock, FileLock};
use crate::state_root::owner::{foreign, record_path, Foreign, RECORD_PREFIX};
use crate::state_root::{load_state_retrying, Ctx};

/// Directories under the root that are nvbind's own, not containers.
pub const INTERNAL_DIRS: [&str; 1] = [".nvbind-clones"];

/// What a `create` (or `restore`) is about to make, written before anything of the container
/// exists and kept until `delete` removed the rest. Records are files in the root, not a
/// directory of them: removing an emptied directory is a step a killed create or delete could
/// leave undone (tests/crash.rs saw it, 2 in 600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Intent {
    pub id: String,
    pub bundle: PathBuf,
    /// The cgroup libcontainer will make: linux.cgroupsPath, or its default for the ID. None
    /// for a restore: CRIU restores into the spec's cgroup, which the container checkpointed
    /// with --leave-running may still share; a half-made restore goes by its youki_config.json.
    pub cgroup_path: Option<PathBuf>,
    pub systemd: bool,
    /// The creating nvbind; while it holds the ID's lock, the create is still running.
    pub pid: u32,
}

impl Intent {
    pub fn new(ctx: &Ctx, id: &str, bundle: &Path, spec: &Spec) -> Self {
        let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
        Self {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            cgroup_path: Some(libcontainer::utils::get_cgroup_path(&cgroups_path, id)),
            systemd: ctx.systemd_cgroup,
            pid: std::process::id(),
        }
    }

    fn path(ctx: &Ctx, id: &str) -> PathBuf {
        record_path(&ctx.root, id)
    }

    /// The record of a `restore`: it claims the ID but names no cgroup (see `cgroup_path`).
    pub fn for_restore(ctx: &Ctx, id: &str, bundle: &Path) -> Self {
        Self {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            cgroup_path: None,
            systemd: ctx.systemd_cgroup,
            pid: std::process::id(),
        }
    }

    /// The caller holds the ID's lock.
    pub fn record(&self, ctx: &Ctx) -> Result<()> {
        let path = Self::path(ctx, &self.id);
        // It has to outlive the process, not a power loss (which takes the cgroup and the
        // processes with it), so no fsync: a create pays one small write and a rename.
        let bytes = serde_json::to_vec(self).context("cannot serialize the create record")?;
        write_atomic_nosync(&path, &bytes, 0o600)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The lock on the cgroup this create will make, for `check_cgroup_unused` (see
    /// `lock::lock_cgroup`); None where that check does not apply.
    pub fn lock_cgroup(&self, ctx: &Ctx) -> Result<Option<FileLock>> {
        match self.cgroup_path.as_ref().filter(|_| !self.systemd) {
            Some(path) => lock_cgroup(&ctx.root, path).map(Some),
            None => Ok(None),
        }
    }

    /// runc 1.2 (factory_linux.go) refuses a cgroup that already holds processes: the
    /// container would share it with them, and `delete --force` of a container whose create
    /// was killed kills what is in the recorded cgroup. Not for systemd cgroups: there the
    /// cgroup is a transient unit that libcontainer makes, and fails to make when it exists.
    pub fn check_cgroup_unused(&self) -> Result<()> {
        let Some(cgroup_path) = self.cgroup_path.as_ref().filter(|_| !self.systemd) else {
            return Ok(());
        };
        let manager = open_cgroup(cgroup_path, false, &self.id)?;
        // A cgroup that does not exist (the usual case) lists nothing.
        let pids = manager.get_all_pids().unwrap_or_default();
        if !pids.is_empty() {
            // runc's words (1.2 refuses too; 1.1 warned with them, announcing the refusal).
            anyhow::bail!(
                "container's cgroup is not empty: {} process(es) found in {} \
                 (linux.cgroupsPath); give the container a cgroup of its own",
                pids.len(),
                cgroup_path.display()
            );
        }
        Ok(())
    }

    /// runc 1.1 (factory_linux.go) refuses a cgroup that is already frozen: the init would
    /// join it and stop before it could report to us, so the create would wait for it until
    /// somebody thawed the cgroup. A FROZEN state inherited from a frozen ancestor is not the
    /// cgroup's own and is left alone, as runc does (freezer.self_freezing says which).
    pub fn check_cgroup_not_frozen(&self) -> Result<()> {
        let Some(cgroup_path) = self.cgroup_path.as_ref().filter(|_| !self.systemd) else {
            return Ok(());
        };
        if let Some(state) = freezer_state(cgroup_path) {
            anyhow::bail!(
                "container's cgroup unexpectedly frozen: {} (linux.cgroupsPath) is {state}; \
                 thaw it (or give the container another cgroup) and create it again",
                cgroup_path.display(),
            );
        }
        Ok(())
    }

    pub fn load(ctx: &Ctx, id: &str) -> Option<Self> {
        let path = Self::path(ctx, id);
        let bytes = fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(intent) => Some(intent),
            Err(e) => {
                // Written atomically, so only damage from outside gets here; without it the
                // container's own youki_config.json still names the cgroup.
                tracing::warn!("ignoring {}: {e}", path.display());
                None
            }
        }
    }

    /// The IDs with a record.
    pub fn ids(ctx: &Ctx) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&ctx.root) else {
            return vec![];
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_prefix(RECORD_PREFIX)?.strip_suffix(".json")?;
                Some(id.to_string())
            })
            .collect()
    }

    pub fn exists(ctx: &Ctx, id: &str) -> bool {
        Self::path(ctx, id).exists()
    }

    /// Holds the record while a verb removes the container: from before its directory goes
    /// until the record is gone, `inspect` waits on this lock instead of taking the record
    /// without a directory for what a killed delete left. A flock on the record file: it dies
    /// with the process, so what a killed delete left is judged at once.
    pub fn hold(ctx: &Ctx, id: &str) -> Option<DirLock> {
        DirLock::exclusive(&Self::path(ctx, id)).ok()
    }

    /// Whether another process holds the record (`hold`): a delete is removing the container.
    pub fn held_elsewhere(ctx: &Ctx, id: &str) -> bool {
        DirLock::held_elsewhere(&Self::path(ctx, id))
    }

    /// Removes the record of a container that `delete` removed (or a create failed to make),
    /// under the ID's lock: once the directory is gone a new create of the ID may record it
    /// again, and its record must stay.
    pub fn forget_deleted(ctx: &Ctx, id: &str) -> Result<()> {
        if !Self::exists(ctx, id) {
            return Ok(());
        }
        let _id_lock = ctx.lock_id(id)?;
        if !ctx.container_dir(id).exists() {
            Self::forget(ctx, id);
        }
        Ok(())
    }

    /// Removes the record; the caller holds the ID's lock.
    pub fn forget(ctx: &Ctx, id: &str) {
        let path = Self::path(ctx, id);
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {e}", path.display());
            }
        }
    }

    /// The temporary files of records whose write was killed. Matched exactly: ID "a" must
    /// not take ID "a.json"'s files.
    fn leftovers(ctx: &Ctx, id: &str) -> Vec<PathBuf> {
        let record = format!("{RECORD_PREFIX}{id}.json");
        fs::read_dir(&ctx.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| is_temp_of(&e.file_name().to_string_lossy(), &record))
            .map(|e| e.path())
            .collect()
    }

    /// Whether a create of `id` left a record or the temporary file of one.
    pub fn left_by_a_create(ctx: &Ctx, id: &str) -> bool {
        Self::exists(ctx, id) || !Self::leftovers(ctx, id).is_empty()
    }

    /// `forget`, and the temporary files a create killed while writing the record left; the
    /// caller holds the ID's lock, so no create is writing one.
    pub fn forget_all(ctx: &Ctx, id: &str) {
        Self::forget(ctx, id);
        Self::forget_leftovers(ctx, id);
    }

    /// The temporary files a create killed while writing the record left; the caller holds
    /// the ID's lock.
    pub fn forget_leftovers(ctx: &Ctx, id: &str) {
        for temp in Self::leftovers(ctx, id) {
            let _ = fs::remove_file(temp);
        }
    }
}

/// What is under the root for one ID.
pub enum Entry {
    Missing,
    Complete(Box<Container>),
    HalfMade(HalfMade),
    /// Another runtime's (a root shared with runc): never touched, never reported as ours.
    Foreign(Foreign),
}

pub struct HalfMade {
    pub id: String,
    pub dir: PathBuf,
    pub intent: Option<Intent>,
    /// Why it is not a complete container, for messages.
    pub why: String,
    /// Whether its create was still running when it was inspected. Judged once, after the
    /// directory was looked at, so that the warning, the status and delete's choice agree
    /// (a create that ends in between would otherwise be warned about as half-made).
    creating: bool,
}

pub fn inspect(ctx: &Ctx, id: &str) -> Result<Entry> {
    // A directory without state.json may be one a delete is emptying (under the container's
    // lock, state.json first), or one whose create ended between our look at the directory
    // and our look at the ID's lock. So a half-made one is judged again after waiting for the
    // container's lock, until two looks agree (tests/load.rs: list and state racing create
    // and delete must not warn about containers that are merely coming or going).
    let mut entry = inspect_now(ctx, id)?;
    for _ in 0..50 {
        let Entry::HalfMade(half) = &entry else {
            break;
        };
        if half.in_progress() {
            break;
        }
        // Fails at once when the directory is gone (deleted meanwhile): look again anyway.
        drop(DirLock::exclusive(&half.dir));
        // A record without a directory is also what a delete leaves for a moment, holding the
        // record until it removes it (`Intent::hold`). Not under the ID's lock: that delete
        // takes the ID's lock to remove the record.
        if !half.dir.exists() {
            if !id_lock_held_here(&ctx.root, id) {
                drop(Intent::hold(ctx, id));
            } else if Intent::held_elsewhere(ctx, id) {
                // We hold the ID's lock (delete of a half-made container), and a delete that
                // removed the directory holds the record: it waits for our lock to remove
                // the record, so waiting for it here would never end. The container is gone.
                // (tests/load.rs: `delete` failed "half-made: it has a record but no
                // directory" after 50 looks, about 1 run in 4.)
                return Ok(Entry::Missing);
            }
        }
        let again = inspect_now(ctx, id)?;
        // Another process holding the ID's lock may be removing it right now (a `delete
        // --force` of a half-made container removes its directory, then its record, under
        // the ID's lock): two equal looks then say nothing yet (tests/load.rs saw list warn
        // so). Not waiting for that lock here: a caller may hold a container's lock. Our own
        // hold of it is not someone else's work in progress.
        let busy = id_lock_holder(&ctx.root, id).is_some_and(|p| p != std::process::id() as i32);
        let settled =
            !busy && matches!(&again, Entry::HalfMade(h) if h.why == half.why && !h.in_progress());
        entry = again;
        if settled {
            break;
        }
        if busy {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    Ok(entry)
}

fn inspect_now(ctx: &Ctx, id: &str) -> Result<Entry> {
    validate_id(id)?;
    if let Some(theirs) = foreign(&ctx.root, id) {
        return Ok(Entry::Foreign(theirs));
    }
    let dir = ctx.container_dir(id);
    let intent = Intent::load(ctx, id);
    let half = |why: String, intent: Option<Intent>| {
        Entry::HalfMade(HalfMade {
            id: id.to_string(),
            dir: dir.clone(),
            creating: intent
                .as_ref()
                .is_some_and(|i| id_lock_holder(&ctx.root, id) == Some(i.pid as i32)),
            intent,
            why,
        })
    };
    if !dir.is_dir() {
        return Ok(match intent {
            Some(i) => half(
                "it has a record but no directory (a create killed before making it, or a \
                 delete killed before removing the record)"
                    .into(),
                Some(i),
            ),
            None => Entry::Missing,
        });
    }
    if !State::file_path(&dir).exists() {
        return Ok(half(
            "its directory has no state.json (an interrupted create or delete)".into(),
            intent,
        ));
    }
    match load_state_retrying(&dir) {
        Ok(mut c) => {
            // libcontainer writes state.json ("creating", no pid) before the init exists and
            // then reads it back as stopped; while its create runs, it is creating.
            if c.pid().is_none()
                && intent
                    .as_ref()
                    .is_some_and(|i| id_lock_holder(&ctx.root, id) == Some(i.pid as i32))
            {
                c.set_status(ContainerStatus::Creating);
            }
            Ok(Entry::Complete(Box::new(c)))
        }
        Err(_) if !dir.exists() => Ok(Entry::Missing),
        Err(e) => Ok(half(
            format!("its state.json is unreadable ({e:#})"),
            intent,
        )),
    }
}

impl HalfMade {
    /// Whether its create was still running (that nvbind held the ID's lock) when inspected.
    pub fn in_progress(&self) -> bool {
        self.creating
    }

    /// The state document as far as it is known.
    pub fn doc(&self) -> StateDoc {
        let bundle = self
            .intent
            .as_ref()
            .map(|i| i.bundle.clone())
            .unwrap_or_default();
        StateDoc {
            oci_version: oci_spec::runtime::Spec::default().version().clone(),
            id: self.id.clone(),
            pid: 0,
            status: if self.in_progress() {
                ContainerStatus::Creating
            } else {
                ContainerStatus::Stopped
            },
            rootfs: if bundle.as_os_str().is_empty() {
                PathBuf::new()
            } else {
                bundle.join("rootfs")
            },
            bundle,
            created: String::new(),
            owner: String::new(),
            annotations: None,
        }
    }

    pub fn warning(&self) -> String {
        format!(
            "container {:?} is half-made: {}; `nvbind delete --force {}` removes it",
            self.id, self.why, self.id
        )
    }

    /// Removes what there is of it: the processes in its cgroup, the cgroup, its directory
    /// and the create record. The caller holds the ID's lock, so no create of it is running.
    pub fn remove(&self, ctx: &Ctx) -> Result<()> {
        let (cgroup, systemd) = match &self.intent {
            Some(Intent {
                cgroup_path: Some(path),
                systemd,
                ..
            }) => (Some(path.clone()), *systemd),
            _ => (
                YoukiConfig::load(&self.dir).ok().map(|c| c.cgroup_path),
                ctx.systemd_cgroup,
            ),
        };
        if let Some(path) = cgroup {
            destroy_cgroup(&path, systemd, &self.id)?;
        }
        let staging = crate::criu::dump::recorded_staging(&self.dir);
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove {}", self.dir.display()))
            }
        }
        if let Some(staging) = staging {
            crate::criu::dump::remove_staging(&staging);
        }
        if let Some(intent) = &self.intent {
            remove_config_temp(intent);
        }
        Intent::forget_all(ctx, &self.id);
        Ok(())
    }
}

/// A create killed while it rewrote the bundle's config.json (CDI injection) left a temp file
/// in the bundle. Only that create's own (its pid is in the name, and it is gone: we hold the
/// ID's lock it held): the bundle may be another root's too.
fn remove_config_temp(intent: &Intent) {
    for entry in fs::read_dir(&intent.bundle).into_iter().flatten().flatten() {
        let name = entry.file_name();
        if temp_writer(&name.to_string_lossy(), "config.json") == Some(intent.pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Kills everything in the cgroup and removes it (every controller). A frozen cgroup is
/// thawed first: a checkpoint or `kill --all` interrupted while it was frozen leaves
/// processes that cannot die, and a cgroup that cannot be removed.
pub fn destroy_cgroup(path: &Path, systemd: bool, id: &str) -> Result<()> {
    // The bundle check refuses these at create; a record written before it did must not
    // make us kill every process on the host (libcgroups lists a cgroup's pids recursively).
    // Such a cgroup was never the container's to remove either.
    if !names_a_child_cgroup(path) {
        tracing::warn!(
            "not killing the processes of cgroup {} for {id:?}: it is the root cgroup or \
             climbs out of it; look for the container's processes by hand",
            path.display()
        );
        return Ok(());
    }
    thaw(path);
    let manager = open_cgroup(path, systemd, id)?;
    // No cgroup (never made, or removed already) lists no processes.
    for pid in manager.get_all_pids().unwrap_or_default() {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    patiently(|| manager.remove())
        .with_context(|| format!("cannot remove the cgroup {} of {id:?}", path.display()))
}

fn open_cgroup(path: &Path, systemd: bool, id: &str) -> Result<AnyCgroupManager> {
    create_cgroup_manager(CgroupConfig {
        cgroup_path: path.to_path_buf(),
        systemd_cgroup: systemd,
        container_name: id.to_string(),
    })
    .with_context(|| format!("cannot open the cgroup {} of {id:?}", path.display()))
}

/// The freezer state of the cgroup at `path` when it is frozen (or being frozen) by itself;
/// None when it is thawed, does not exist, or the host has no freezer. On cgroup v1 (hybrid
/// hosts too) that is the freezer hierarchy, as libcgroups' v1 manager joins it; on v2,
/// cgroup.freeze.
fn freezer_state(path: &Path) -> Option<String> {
    use libcgroups::common::{get_cgroup_setup, CgroupSetup, DEFAULT_CGROUP_ROOT};
    use libcontainer::utils::PathBufExt;
    let read = |p: PathBuf| fs::read_to_string(p).ok();
    match get_cgroup_setup().ok()? {
        CgroupSetup::Legacy | CgroupSetup::Hybrid => {
            let mount = libcgroups::v1::util::get_subsystem_mount_point(
                &libcgroups::v1::ControllerType::Freezer,
            )
            .ok()?;
            let dir = mount.join_safely(path).ok()?;
            let state = read(dir.join("freezer.state"))?;
            v1_frozen(&state, read(dir.join("freezer.self_freezing")).as_deref())
                .then(|| state.trim().to_string())
        }
        CgroupSetup::Unified => {
            let dir = Path::new(DEFAULT_CGROUP_ROOT).join_safely(path).ok()?;
            let freeze = read(dir.join("cgroup.freeze"))?;
            (freeze.trim() == "1").then(|| "frozen (cgroup.freeze is 1)".to_string())
        }
    }
}

/// A v1 freezer.state of FROZEN or FREEZING is the cgroup's own unless freezer.self_freezing
/// says 0 (an ancestor froze it); a kernel without self_freezing counts it as its own.
fn v1_frozen(state: &str, self_freezing: Option<&str>) -> bool {
    matches!(state.trim(), "FROZEN" | "FREEZING") && self_freezing.map(str::trim) != Some("0")
}

/// Thaws the cgroup where it exists. Not through libcgroups: its v1 freezer creates the
/// cgroup directory when it is missing.
fn thaw(path: &Path) {
    let Ok(rel) = path.strip_prefix("/") else {
        return; // a systemd slice:prefix:name path
    };
    for (file, value) in [
        (
            Path::new("/sys/fs/cgroup/freezer")
                .join(rel)
                .join("freezer.state"),
            "THAWED",
        ),
        (
            Path::new("/sys/fs/cgroup").join(rel).join("cgroup.freeze"),
            "0",
        ),
        (
            Path::new("/sys/fs/cgroup/unified")
                .join(rel)
                .join("cgroup.freeze"),
            "0",
        ),
    ] {
        if file.exists() {
            if let Err(e) = fs::write(&file, value) {
                tracing::warn!("cannot thaw {}: {e}", file.display());
            }
        }
    }
}

#[cfg(test)]
mod tests;
