use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use libcontainer::container::{Container, ContainerStatus};
use serde::Serialize;

use crate::runtime::Ctx;

#[derive(clap::Args, Debug)]
pub struct StateArgs {
    /// Container ID
    pub id: String,
}

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

/// The rootfs is not in libcontainer's state; the bundle's config.json says where it is.
fn rootfs_of(c: &Container) -> PathBuf {
    let config = std::fs::read(c.bundle().join("config.json")).ok();
    let root: Option<PathBuf> = config
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["root"]["path"].as_str().map(PathBuf::from));
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

pub fn run(args: &StateArgs, ctx: &Ctx) -> Result<()> {
    let container = ctx.load(&args.id)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&StateDoc::of(&container))?
    );
    Ok(())
}
