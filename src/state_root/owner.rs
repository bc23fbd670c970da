//! Whose a state directory is. Engines point several runtimes at one --root (Docker hands
//! every runc-compatible runtime /run/docker/runtime-runc/moby; containerd's runc shims share
//! /run/containerd/runc/NAMESPACE whatever binary they run), so the root may hold runc's, crun's
//! or youki's containers beside nvbind's. nvbind acts only on a directory it has a record for
//! (`<root>/.nvbind-container-ID.json`, which `create` and `restore` write before the directory
//! exists and `delete` removes after it is gone), and never on one whose contents say that
//! another runtime made it, record or not. A failed parse proves nothing: it is how nvbind once
//! took runc's running container for a half-made one of its own and removed its state.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;

/// The prefix of the per-container records in the root.
pub const RECORD_PREFIX: &str = ".nvbind-container-";

/// nvbind's record of container `id`: its claim on the ID under this root.
pub fn record_path(root: &Path, id: &str) -> PathBuf {
    root.join(format!("{RECORD_PREFIX}{id}.json"))
}

/// The runtime whose state format a directory holds, as far as it can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `state.json` with `init_process_pid` and `config` (runc's libcontainer).
    Runc,
    /// A `status` file and no `state.json` (crun).
    Crun,
    /// youki's libcontainer format (`state.json` with `ociVersion` and `status`, and
    /// `youki_config.json`) without an nvbind record: youki's, or a container copied in.
    Youki,
    /// Anything else: a runtime in the middle of making its container, or one we do not know.
    Unknown,
}

impl Runtime {
    /// The command to use instead, when there is one.
    fn command(self) -> Option<&'static str> {
        match self {
            Runtime::Runc => Some("runc"),
            Runtime::Crun => Some("crun"),
            Runtime::Youki => Some("youki"),
            Runtime::Unknown => None,
        }
    }
}

/// A container under the root that nvbind did not make.
#[derive(Debug, Clone)]
pub struct Foreign {
    pub id: String,
    pub root: PathBuf,
    pub runtime: Runtime,
}

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (id, root) = (&self.id, self.root.display());
        match self.runtime.command() {
            Some(cmd) => write!(
                f,
                "container {id:?} under {root} is {cmd}'s, not nvbind's (its state directory \
                 holds {cmd}'s state): nvbind leaves it alone; run the command with \
                 `{cmd} --root {root}` instead"
            ),
            None => write!(
                f,
                "container {id:?} under {root} was not made by nvbind (no nvbind record, and \
                 no state format nvbind knows): nvbind leaves it alone; use the runtime that \
                 made it"
            ),
        }
    }
}

impl std::error::Error for Foreign {}

/// `Some` when `root/id` is a state directory (or any entry) that is not nvbind's: one whose
/// contents are another runtime's, or one without nvbind's record. `None` when it is nvbind's
/// or does not exist.
///
/// Create writes the record (under the ID's lock) before the directory, and delete removes it
/// (under the ID's lock) after the directory, so a directory of nvbind's always has one. Looked
/// at without a lock, a delete and a new create of the ID between the two looks could hide it;
/// so an answer of "not ours" that the files do not prove is checked again under the ID's lock,
/// where the record cannot come or go. Another runtime's container that its files identify
/// (runc's, crun's) costs no lock: engines ask about those all the time in a shared root.
pub fn foreign(root: &Path, id: &str) -> Option<Foreign> {
    let dir = root.join(id);
    let present = || fs::symlink_metadata(&dir).is_ok();
    let theirs = |runtime| {
        Some(Foreign {
            id: id.to_string(),
            root: root.to_path_buf(),
            runtime,
        })
    };
    if !present() {
        return None;
    }
    let runtime = identify(&dir);
    if matches!(runtime, Runtime::Runc | Runtime::Crun) {
        // Whatever a record says: a stale one of ours (a delete killed after removing its
        // directory) does not make another runtime's container with that ID ours.
        return theirs(runtime);
    }
    if record_path(root, id).exists() {
        return None;
    }
    // Nested when the caller holds it already; without it (an unwritable root) the answer
    // stays "not ours": refusing is the safe mistake.
    let _id_lock = super::lock::lock_id(root, id).ok();
    if !present() || record_path(root, id).exists() {
        return None;
    }
    theirs(identify(&dir))
}

/// What the files in `dir` say about the runtime that made it.
pub fn identify(dir: &Path) -> Runtime {
    #[derive(Deserialize)]
    struct Probe {
        init_process_pid: Option<IgnoredAny>,
        config: Option<IgnoredAny>,
        #[serde(rename = "ociVersion")]
        oci_version: Option<IgnoredAny>,
        status: Option<IgnoredAny>,
    }
    if !dir.is_dir() {
        return Runtime::Unknown;
    }
    let state = dir.join("state.json");
    match read_small(&state) {
        Some(bytes) => match serde_json::from_slice::<Probe>(&bytes) {
            Ok(p) if p.init_process_pid.is_some() && p.config.is_some() => Runtime::Runc,
            Ok(p)
                if p.oci_version.is_some()
                    && p.status.is_some()
                    && dir.join("youki_config.json").exists() =>
            {
                Runtime::Youki
            }
            _ => Runtime::Unknown,
        },
        None if dir.join("status").is_file() => Runtime::Crun,
        None => Runtime::Unknown,
    }
}

/// A state file's bytes, if it exists and is of a sane size (runc's is a few KiB; a huge one
/// is not worth reading to refuse it).
fn read_small(path: &Path) -> Option<Vec<u8>> {
    const LIMIT: u64 = 4 << 20;
    let file = fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(LIMIT).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNC_STATE: &str = r#"{"id":"rc1","init_process_pid":4242,"init_process_start":1,
        "created":"2026-12-04T03:15:00Z","config":{"rootfs":"/b/rootfs"},"rootless":false,
        "cgroup_paths":{},"namespace_paths":{},"external_descriptors":[],"intel_rdt_path":""}"#;
    const YOUKI_STATE: &str = r#"{"ociVersion":"1.0.2","id":"y1","status":"running",
        "pid":4242,"bundle":"/b","created":"2026-12-04T03:15:00Z","useSystemd":false}"#;

    fn dir_with(root: &Path, id: &str, files: &[(&str, &str)]) {
        let dir = root.join(id);
        fs::create_dir(&dir).unwrap();
        for (name, text) in files {
            fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn each_runtimes_state_is_recognised() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        dir_with(r, "rc", &[("state.json", RUNC_STATE)]);
        dir_with(r, "cr", &[("status", "{\"pid\":1}"), ("config.json", "{}")]);
        dir_with(
            r,
            "yk",
            &[("state.json", YOUKI_STATE), ("youki_config.json", "{}")],
        );
        dir_with(r, "half", &[("exec.fifo", "")]);
        dir_with(r, "junk", &[("state.json", "{\"id\":")]);
        for (id, runtime) in [
            ("rc", Runtime::Runc),
            ("cr", Runtime::Crun),
            ("yk", Runtime::Youki),
            ("half", Runtime::Unknown),
            ("junk", Runtime::Unknown),
        ] {
            assert_eq!(identify(&r.join(id)), runtime, "{id}");
            assert_eq!(foreign(r, id).unwrap().runtime, runtime, "{id}");
        }
        assert!(foreign(r, "absent").is_none());
    }

    #[test]
    fn a_record_makes_a_directory_ours_unless_another_runtime_wrote_it() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        dir_with(r, "mine", &[("state.json", "{\"id\":")]);
        dir_with(r, "rc", &[("state.json", RUNC_STATE)]);
        dir_with(r, "cr", &[("status", "{}")]);
        for id in ["mine", "rc", "cr"] {
            fs::write(record_path(r, id), "{}").unwrap();
        }
        assert!(foreign(r, "mine").is_none());
        assert_eq!(foreign(r, "rc").unwrap().runtime, Runtime::Runc);
        assert_eq!(foreign(r, "cr").unwrap().runtime, Runtime::Crun);
        // A record without a directory: nvbind's (a create that made nothing yet).
        fs::write(record_path(r, "later"), "{}").unwrap();
        assert!(foreign(r, "later").is_none());
    }

    #[test]
    fn the_message_is_one_line_naming_the_runtime_and_what_to_run() {
        let f = Foreign {
            id: "rc1".into(),
            root: PathBuf::from("/run/shared"),
            runtime: Runtime::Runc,
        };
        let m = f.to_string();
        assert!(!m.contains('\n'), "{m}");
        assert!(m.contains("runc's, not nvbind's"), "{m}");
        assert!(m.contains("`runc --root /run/shared`"), "{m}");
        let unknown = Foreign {
            runtime: Runtime::Unknown,
            ..f
        }
        .to_string();
        assert!(unknown.contains("not made by nvbind"), "{unknown}");
    }
}
