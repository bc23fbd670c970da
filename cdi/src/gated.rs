//! What NVIDIA's runtime environment variables add besides GPUs, for a container that asks
//! for GPUs through `NVIDIA_VISIBLE_DEVICES`, read from the live host at create time:
//!
//! - `NVIDIA_IMEX_CHANNELS` (`all`, `none`, or channel numbers `0,1`): the IMEX channel
//!   nodes `/dev/nvidia-caps-imex-channels/channelN`, character devices of the major the
//!   driver registered as `nvidia-caps-imex-channels` (/proc/devices). Given by number, so
//!   no node is ever made on the host (libnvidia-container mknods them there, as root, from
//!   the image's variable); `all` is the channels the host has nodes for.
//! - `NVIDIA_MIG_CONFIG_DEVICES=all`, `NVIDIA_MIG_MONITOR_DEVICES=all`: the MIG config and
//!   monitor capability nodes, their minors from /proc/driver/nvidia/capabilities/mig; only
//!   for a privileged container (CAP_SYS_ADMIN in its bounding set), as the toolkit says.
//! - The toolkit's feature gates, `=enabled`: `NVIDIA_GDS` (/dev/nvidia-fs*, and then
//!   /etc/cufile.json and /run/udev), `NVIDIA_MOFED` (/dev/infiniband/uverbs*, rdma_cm),
//!   `NVIDIA_NVSWITCH` (/dev/nvidia-nvswitch*), `NVIDIA_GDRCOPY` (/dev/gdrdrv).

use std::path::Path;

use crate::discover::host::{read_text, sorted_dir_names, HostRoots};
use crate::requests::Requests;
use crate::spec::{ContainerEdits, DeviceNode, Mount};

pub const NVIDIA_IMEX_CHANNELS: &str = "NVIDIA_IMEX_CHANNELS";
pub const NVIDIA_MIG_CONFIG_DEVICES: &str = "NVIDIA_MIG_CONFIG_DEVICES";
pub const NVIDIA_MIG_MONITOR_DEVICES: &str = "NVIDIA_MIG_MONITOR_DEVICES";
const IMEX_DIR: &str = "/dev/nvidia-caps-imex-channels";
const IMEX_DRIVER: &str = "nvidia-caps-imex-channels";
/// The driver's default `NVreg_ImexChannelCount`.
pub const IMEX_CHANNELS: u32 = 2048;

/// A gated variable that cannot be honoured; one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatedError {
    #[error("{NVIDIA_IMEX_CHANNELS}={value:?}: expected all, none or channel numbers below {IMEX_CHANNELS} (0,1,...)")]
    ImexSyntax { value: String },
    #[error("{NVIDIA_IMEX_CHANNELS}={value}: the NVIDIA driver has no IMEX channels on this host (no {IMEX_DRIVER} in /proc/devices); load a driver with IMEX support or unset the variable")]
    NoImex { value: String },
    #[error("{var}=all: only a privileged container may use the MIG {what} capability (it needs CAP_SYS_ADMIN)")]
    MigUnprivileged {
        var: &'static str,
        what: &'static str,
    },
    #[error("{var}={value:?}: expected all (or none)")]
    MigSyntax { var: &'static str, value: String },
    #[error("{var}=all: no MIG {what} capability on this host ({path} unreadable)")]
    NoMig {
        var: &'static str,
        what: &'static str,
        path: String,
    },
}

/// Character device majors by driver name, from /proc/devices.
pub fn registered_major(roots: &HostRoots, driver: &str) -> Option<i64> {
    let text = read_text(&roots.proc("/proc/devices"))?;
    let chars = text.split("Block devices:").next().unwrap_or_default();
    chars.lines().find_map(|l| {
        let (major, name) = l.trim().split_once(' ')?;
        (name.trim() == driver).then(|| major.parse().ok())?
    })
}

fn numbered_node(path: String, major: i64, minor: i64) -> DeviceNode {
    DeviceNode {
        path,
        node_type: Some("c".into()),
        major: Some(major),
        minor: Some(minor),
        ..Default::default()
    }
}

/// The IMEX channel nodes `value` asks for.
pub fn imex_channels(value: &str, roots: &HostRoots) -> Result<Vec<DeviceNode>, GatedError> {
    let value = value.trim();
    if matches!(value, "" | "none" | "void") {
        return Ok(Vec::new());
    }
    let channels: Vec<u32> = if value == "all" {
        let mut c: Vec<u32> = sorted_dir_names(&roots.dev(IMEX_DIR))
            .iter()
            .filter_map(|n| n.strip_prefix("channel")?.parse().ok())
            .filter(|&n| n < IMEX_CHANNELS)
            .collect();
        c.sort_unstable();
        c
    } else {
        let mut out = Vec::new();
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<u32>() {
                Ok(n) if n < IMEX_CHANNELS => {
                    if !out.contains(&n) {
                        out.push(n)
                    }
                }
                _ => {
                    return Err(GatedError::ImexSyntax {
                        value: value.to_string(),
                    })
                }
            }
        }
        out
    };
    if channels.is_empty() {
        return Ok(Vec::new());
    }
    let Some(major) = registered_major(roots, IMEX_DRIVER) else {
        return Err(GatedError::NoImex {
            value: value.to_string(),
        });
    };
    Ok(channels
        .into_iter()
        .map(|n| numbered_node(format!("{IMEX_DIR}/channel{n}"), major, i64::from(n)))
        .collect())
}

/// `DeviceFileMinor` of a /proc/driver/nvidia/capabilities access file.
pub fn capability_minor(roots: &HostRoots, abs: &str) -> Option<i64> {
    read_text(&roots.proc(abs))?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "DeviceFileMinor").then(|| v.trim().parse().ok())?
    })
}

fn mig_global(
    var: &'static str,
    what: &'static str,
    value: Option<&str>,
    privileged: bool,
    roots: &HostRoots,
) -> Result<Option<DeviceNode>, GatedError> {
    let Some(value) = value.map(str::trim) else {
        return Ok(None);
    };
    match value {
        "" | "none" | "void" => return Ok(None),
        "all" => {}
        other => {
            return Err(GatedError::MigSyntax {
                var,
                value: other.to_string(),
            })
        }
    }
    if !privileged {
        return Err(GatedError::MigUnprivileged { var, what });
    }
    let path = format!("/proc/driver/nvidia/capabilities/mig/{what}");
    let (Some(minor), Some(major)) = (
        capability_minor(roots, &path),
        registered_major(roots, "nvidia-caps"),
    ) else {
        return Err(GatedError::NoMig { var, what, path });
    };
    Ok(Some(numbered_node(
        format!("/dev/nvidia-caps/nvidia-cap{minor}"),
        major,
        minor,
    )))
}

/// The host's character devices matching `prefix*` in `dir` (by host path; apply reads their
/// numbers).
fn host_nodes(roots: &HostRoots, dir: &str, prefix: &str) -> Vec<DeviceNode> {
    sorted_dir_names(&roots.dev(dir))
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .filter_map(|n| {
            let p = format!("{dir}/{n}");
            let node = roots.char_device(&p)?;
            Some(DeviceNode {
                path: p,
                host_path: (node.host_path != Path::new(&node.path))
                    .then(|| node.host_path.display().to_string()),
                ..Default::default()
            })
        })
        .collect()
}

fn enabled(requests: &Requests, var: &str) -> bool {
    requests.env_value(var).map(str::trim) == Some("enabled")
}

/// The edits the gated variables of `requests` add.
pub fn edits(requests: &Requests, roots: &HostRoots) -> Result<ContainerEdits, GatedError> {
    let mut e = ContainerEdits::default();
    if let Some(v) = requests.env_value(NVIDIA_IMEX_CHANNELS) {
        e.device_nodes.extend(imex_channels(v, roots)?);
    }
    let privileged = requests.privileged;
    for (var, what) in [
        (NVIDIA_MIG_CONFIG_DEVICES, "config"),
        (NVIDIA_MIG_MONITOR_DEVICES, "monitor"),
    ] {
        if let Some(n) = mig_global(var, what, requests.env_value(var), privileged, roots)? {
            e.device_nodes.push(n);
        }
    }
    if enabled(requests, "NVIDIA_GDS") {
        let fs = host_nodes(roots, "/dev", "nvidia-fs");
        if !fs.is_empty() {
            e.device_nodes.extend(fs);
            for (p, dir) in [("/etc/cufile.json", false), ("/run/udev", true)] {
                let host = roots.driver(p);
                let exists = if dir { host.is_dir() } else { host.is_file() };
                if exists {
                    e.mounts.push(Mount {
                        host_path: host.display().to_string(),
                        container_path: p.to_string(),
                        options: ["ro", "nosuid", "nodev", "bind"]
                            .iter()
                            .map(|o| o.to_string())
                            .collect(),
                        mount_type: None,
                    });
                }
            }
        }
    }
    if enabled(requests, "NVIDIA_MOFED") {
        e.device_nodes
            .extend(host_nodes(roots, "/dev/infiniband", "uverbs"));
        e.device_nodes
            .extend(host_nodes(roots, "/dev/infiniband", "rdma_cm"));
    }
    if enabled(requests, "NVIDIA_NVSWITCH") {
        e.device_nodes
            .extend(host_nodes(roots, "/dev", "nvidia-nvswitch"));
    }
    if enabled(requests, "NVIDIA_GDRCOPY") {
        e.device_nodes.extend(host_nodes(roots, "/dev", "gdrdrv"));
    }
    Ok(e)
}
