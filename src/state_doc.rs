//! The state document `nvbind state` prints and `nvbind list` tabulates, built from a
//! container loaded from its state.json. In the library so the fuzz target for state.json
//! (fuzz/) runs the same code as the verbs.

use std::collections::HashMap;
use std::path::PathBuf;

use libcontainer::container::{Container, ContainerStatus};
use serde::Serialize;

/// runc's `state` document: the OCI state plus `rootfs`, `created` and `owner`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct StateDoc {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: ContainerStatus,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
}

impl StateDoc {
    pub fn of(c: &Container) -> Self {
        let stopped = c.status() == ContainerStatus::Stopped;
        Self {
            oci_version: c.state.oci_version.clone(),
            id: c.id().to_string(),
            pid: if stopped {
                0
            } else {
                c.pid().map_or(0, |p| p.as_raw())
            },
            status: c.status(),
            bundle: c.bundle().clone(),
            rootfs: rootfs_of(c),
            created: c
                .created()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
                .unwrap_or_default(),
            owner: owner_name(c.state.creator),
            annotations: c.state.annotations.clone().filter(|a| !a.is_empty()),
        }
    }
}

/// The rootfs is not in libcontainer's state; the spec the container was built from says
/// where it is (a snapshot clone's, say), else the bundle's config.json.
fn rootfs_of(c: &Container) -> PathBuf {
    let root: Option<PathBuf> = c
        .built_spec()
        .ok()
        .and_then(|s| s.root().as_ref().map(|r| r.path().clone()));
    let root = root.unwrap_or_else(|| PathBuf::from("rootfs"));
    c.bundle().join(root)
}

fn owner_name(uid: Option<u32>) -> String {
    match uid {
        None | Some(0) => String::new(),
        Some(uid) => nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name),
    }
}

/// The lowercase names of the OCI state document ("created", "running", ...).
pub fn status_name(s: ContainerStatus) -> &'static str {
    match s {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
        ContainerStatus::Paused => "paused",
    }
}

/// `nvbind list`'s table: one row per document, columns padded to the widest cell.
pub fn table(docs: &[StateDoc]) -> String {
    let rows: Vec<[String; 6]> = docs
        .iter()
        .map(|d| {
            [
                d.id.clone(),
                d.pid.to_string(),
                status_name(d.status).to_string(),
                d.bundle.display().to_string(),
                d.created.clone(),
                d.owner.clone(),
            ]
        })
        .collect();
    let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}
