use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use pathrs::flags::OpenFlags;
use pathrs::procfs::{ProcfsBase, ProcfsHandle};
use procfs::ProcError;
use procfs::process::MountInfo;

use super::ControllerType;
use super::controller_type::CONTROLLERS;

#[derive(thiserror::Error, Debug)]
pub enum V1MountPointError {
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("failed to get mountinfo: {0}")]
    MountInfo(ProcError),
    #[error("could not find mountpoint for {subsystem}")]
    NotFound { subsystem: ControllerType },
    #[error(transparent)]
    Pathrs(#[from] pathrs::error::Error),
}

/// List all cgroup v1 subsystem mount points on the system. This can include unsupported
/// subsystems, comounted controllers and named hierarchies.
pub fn list_subsystem_mount_points() -> Result<Vec<PathBuf>, V1MountPointError> {
    // nvbind: the process's one checked procfs handle (procfs_handle)
    let reader = BufReader::new(crate::procfs_handle::get()?.open(
        ProcfsBase::ProcSelf,
        "mountinfo",
        OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
    )?);

    reader
        .lines()
        .map(|lr| {
            lr.map_err(V1MountPointError::Io)
                .and_then(|line| MountInfo::from_line(&line).map_err(V1MountPointError::MountInfo))
        })
        .try_fold(Vec::new(), |mut mount_points, r| {
            r.map(|m| {
                if m.fs_type == "cgroup" {
                    mount_points.push(m.mount_point);
                }
                mount_points
            })
        })
}

/// nvbind: the cgroup v1 mounts (type `cgroup`) of this mount namespace, read from
/// /proc/self/mountinfo once, for a caller that looks up several hierarchies: `Manager::new`
/// looked up each controller and the name=systemd hierarchy, reading the file (through a new
/// procfs handle, about 30 syscalls) 12 times per manager.
pub fn cgroup_mounts() -> Result<Vec<MountInfo>, V1MountPointError> {
    // nvbind: the process's one checked procfs handle (procfs_handle)
    let procfs = crate::procfs_handle::get()?;
    cgroup_mounts_in(&procfs)
}

/// nvbind: `cgroup_mounts` read through a procfs handle the caller has already made (and
/// uses for its other procfs reads): each `ProcfsHandle::new` verifies the handle again,
/// about 16 syscalls.
pub fn cgroup_mounts_in(procfs: &ProcfsHandle) -> Result<Vec<MountInfo>, V1MountPointError> {
    let reader = BufReader::new(procfs.open(
        ProcfsBase::ProcSelf,
        "mountinfo",
        OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
    )?);
    let mut mounts = Vec::new();
    for line in reader.lines() {
        let m = MountInfo::from_line(&line?).map_err(V1MountPointError::MountInfo)?;
        if m.fs_type == "cgroup" {
            mounts.push(m);
        }
    }
    Ok(mounts)
}

/// nvbind: the mount point of the named cgroup v1 hierarchy `name` (a hierarchy without
/// controllers, mounted with `-o none,name=NAME`, as `name=systemd` is on hybrid and legacy
/// hosts), if this mount namespace has one.
pub fn get_named_hierarchy_mount_point(name: &str) -> Result<Option<PathBuf>, V1MountPointError> {
    Ok(named_hierarchy_mount_point_in(&cgroup_mounts()?, name))
}

/// nvbind: `get_named_hierarchy_mount_point` among mounts read by `cgroup_mounts`.
pub fn named_hierarchy_mount_point_in(mounts: &[MountInfo], name: &str) -> Option<PathBuf> {
    mounts
        .iter()
        .find(|m| m.super_options.get("name") == Some(&Some(name.to_owned())))
        .map(|m| m.mount_point.clone())
}

/// List the mount points of all currently supported cgroup subsystems.
pub fn list_supported_mount_points() -> Result<HashMap<ControllerType, PathBuf>, V1MountPointError>
{
    let mut mount_paths = HashMap::with_capacity(CONTROLLERS.len());
    // nvbind: mountinfo read once for all of them
    let mounts = cgroup_mounts()?;

    for controller in CONTROLLERS {
        if let Ok(mount_point) = subsystem_mount_point_in(&mounts, controller) {
            mount_paths.insert(controller.to_owned(), mount_point);
        }
    }

    Ok(mount_paths)
}

pub fn get_subsystem_mount_point(subsystem: &ControllerType) -> Result<PathBuf, V1MountPointError> {
    subsystem_mount_point_in(&cgroup_mounts()?, subsystem)
}

/// nvbind: `get_subsystem_mount_point` among mounts read by `cgroup_mounts`.
pub fn subsystem_mount_point_in(
    mounts: &[MountInfo],
    subsystem: &ControllerType,
) -> Result<PathBuf, V1MountPointError> {
    let subsystem_name = subsystem.to_string();
    mounts
        .iter()
        .find(|m| {
            // Some systems mount net_prio and net_cls in the same directory
            // other systems mount them in their own directories. This
            // should handle both cases.
            match subsystem_name.as_str() {
                "net_cls" => ["net_cls,net_prio", "net_prio,net_cls", "net_cls"]
                    .iter()
                    .any(|s| m.mount_point.ends_with(s)),
                "net_prio" => ["net_cls,net_prio", "net_prio,net_cls", "net_prio"]
                    .iter()
                    .any(|s| m.mount_point.ends_with(s)),
                "cpu" => ["cpu,cpuacct", "cpu"]
                    .iter()
                    .any(|s| m.mount_point.ends_with(s)),
                "cpuacct" => ["cpu,cpuacct", "cpuacct"]
                    .iter()
                    .any(|s| m.mount_point.ends_with(s)),
                _ => m.mount_point.ends_with(&subsystem_name),
            }
        })
        .map(|m| m.mount_point.clone())
        .ok_or(V1MountPointError::NotFound {
            subsystem: *subsystem,
        })
}
