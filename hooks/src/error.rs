//! What can go wrong while CDI edits are planned for or applied to a running container: one
//! error type for [`crate::plan`] and [`crate::live`], in a module of its own so that neither
//! has to import the other for it.

use std::path::PathBuf;

use nix::errno::Errno;
use nvbind_cdi::apply::ApplyError;

use crate::cgroup::CgroupError;
use crate::devbpf::BpfError;
use crate::nsenter::NsError;
use nvbind_cdi::rootfs::RootError;
use nvbind_cdi::steps::StepError;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Edits(#[from] ApplyError),
    #[error("mount {destination}: type {typ:?} cannot be added to a running container (only bind mounts)")]
    UnsupportedMount { destination: PathBuf, typ: String },
    #[error("mount {destination}: no source")]
    NoSource { destination: PathBuf },
    #[error("mount {destination}: cannot clone host path {source_path}")]
    Source {
        destination: PathBuf,
        source_path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount {destination}: cannot set mount attributes")]
    Attr {
        destination: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("mount {destination}: cannot attach in the container")]
    Attach {
        destination: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cannot open the user namespace of container process {pid} for an idmapped mount")]
    UserNs {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("device {path}: cannot create the node in the container")]
    Device {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("device {path}: something else already exists at this path in the container")]
    DeviceExists { path: PathBuf },
    #[error("cannot open the root of container process {pid}")]
    PidRoot {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Ns(#[from] NsError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error(transparent)]
    Steps(#[from] StepError),
    #[error("CDI hook {path}: cannot run it")]
    HookSpawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CDI hook {path} failed ({status}): {stderr}")]
    HookFailed {
        path: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}
