//! Checking a spec file against the live host before its edits are used.
//!
//! A spec on disk is a snapshot of the host when it was written. After a driver upgrade,
//! a reboot that renumbered a module's major, a MIG reconfiguration or a GPU that fell off
//! the bus, it describes a host that no longer exists, and a container built from it fails
//! in ways far from the cause (CUDA error 999 for an nvidia-uvm node with the old major).
//! So every spec file a request uses is checked, for the entries the request uses (the
//! spec-wide edits and each requested device):
//!
//! - a device node whose host node is missing, is not a device, or whose type, major or
//!   minor the spec declares differently from the host node (or, for a node the host lacks,
//!   from the major the NVIDIA driver registered in /proc/devices);
//! - a mounted file or directory that is missing on the host;
//! - for NVIDIA: a GPU node (`/dev/nvidiaN`) whose minor no GPU in
//!   /proc/driver/nvidia/gpus has any more, a `GPU-<uuid>` device whose GPU is gone or now
//!   has another minor, and a MIG capability node (`/dev/nvidia-caps/nvidia-capN`) whose
//!   GPU or compute instance no longer exists under /proc/driver/nvidia/capabilities.
//!
//! Specs generated in memory are not checked: they were made from the host a moment ago.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::apply::{HostNode, HostNodes};
use crate::discover::host::{read_fields, read_text, sorted_dir_names, HostRoots};
use crate::discover::Vendor;
use crate::name::QualifiedName;
use crate::registry::Registry;
use crate::spec::{ContainerEdits, DeviceNode, Mount};

/// A spec file that no longer describes the host, and the first difference found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.line())]
pub struct StaleSpec {
    pub path: PathBuf,
    /// The spec's kind (`nvidia.com/gpu`).
    pub kind: String,
    /// `device nvidia.com/gpu=0` or `containerEdits` (the spec-wide edits).
    pub entry: String,
    pub change: Change,
}

/// What differs between a spec entry and the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    NodeMissing {
        node: String,
        host_path: String,
    },
    NotADevice {
        node: String,
        host_path: String,
    },
    NodeChanged {
        node: String,
        declared: String,
        host: String,
    },
    /// No host node, and the driver registered another major than the spec declares.
    MajorChanged {
        node: String,
        declared: i64,
        driver: String,
        registered: u64,
    },
    FileMissing {
        container_path: String,
        host_path: String,
    },
    GpuGone {
        node: String,
        minor: i64,
    },
    UuidGone {
        uuid: String,
    },
    UuidMoved {
        uuid: String,
        node: String,
        now: u32,
    },
    MigGone {
        node: String,
        capability: String,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::NodeMissing { node, host_path } => {
                write!(f, "device node {node}: {host_path} does not exist on the host")
            }
            Change::NotADevice { node, host_path } => {
                write!(f, "device node {node}: {host_path} is not a device node on the host")
            }
            Change::NodeChanged {
                node,
                declared,
                host,
            } => write!(
                f,
                "device node {node} is {declared} in the spec but {host} on the host"
            ),
            Change::MajorChanged {
                node,
                declared,
                driver,
                registered,
            } => write!(
                f,
                "device node {node} has major {declared} in the spec but the {driver} driver now has major {registered} (/proc/devices)"
            ),
            Change::FileMissing {
                container_path,
                host_path,
            } => write!(
                f,
                "mount {container_path}: {host_path} does not exist on the host"
            ),
            Change::GpuGone { node, minor } => write!(
                f,
                "{node}: no GPU with device minor {minor} in /proc/driver/nvidia/gpus any more"
            ),
            Change::UuidGone { uuid } => {
                write!(f, "GPU {uuid} is no longer in /proc/driver/nvidia/gpus")
            }
            Change::UuidMoved { uuid, node, now } => write!(
                f,
                "GPU {uuid} is {node} in the spec but /dev/nvidia{now} on the host"
            ),
            Change::MigGone { node, capability } => write!(
                f,
                "{node}: MIG capability {capability} no longer exists (MIG layout changed)"
            ),
        }
    }
}

impl StaleSpec {
    fn line(&self) -> String {
        let fix = match Vendor::ALL.into_iter().find(|v| v.kind() == self.kind) {
            Some(v) => format!(
                "regenerate it with `nvbind cdi generate --vendor {} --output {}`",
                v.name(),
                self.path.display()
            ),
            None => "fix the spec or the host".to_string(),
        };
        format!(
            "CDI spec {} is stale: {}: {}; {fix} (or set {}=regenerate to have it regenerated in memory at create time)",
            self.path.display(),
            self.entry,
            self.change,
            STALE_ENV
        )
    }
}

/// What to do with a spec file that no longer matches the host: `fail` (default) or
/// `regenerate` (generate the kind's spec in memory instead, with a warning).
pub const STALE_ENV: &str = "NVBIND_CDI_STALE_SPECS";

/// (minor, uuid) of each GPU the driver lists.
type GpuTable = Vec<(u32, Option<String>)>;

/// What the checks read from the host, each read at most once.
struct Host<'a> {
    roots: &'a HostRoots,
    proc_devices: Option<HashMap<String, u64>>,
    /// (minor, uuid) of each GPU in /proc/driver/nvidia/gpus; None when that is unreadable.
    gpus: Option<Option<GpuTable>>,
    /// Capability minor -> `gpu0/gi1/ci0/access`.
    mig_minors: Option<Option<HashMap<u32, String>>>,
    /// Every device node `lstat`ed, by host path (the resolve applies the edits from these).
    nodes: HostNodes,
}

impl<'a> Host<'a> {
    fn new(roots: &'a HostRoots) -> Host<'a> {
        Host {
            roots,
            proc_devices: None,
            gpus: None,
            mig_minors: None,
            nodes: HashMap::new(),
        }
    }

    /// Character device majors by driver name (/proc/devices).
    fn registered(&mut self, driver: &str) -> Option<u64> {
        let roots = self.roots;
        self.proc_devices
            .get_or_insert_with(|| {
                let text = read_text(&roots.proc("/proc/devices")).unwrap_or_default();
                let chars = text
                    .split("Block devices:")
                    .next()
                    .unwrap_or_default()
                    .to_string();
                chars
                    .lines()
                    .filter_map(|l| {
                        let (major, name) = l.trim().split_once(' ')?;
                        Some((name.trim().to_string(), major.parse().ok()?))
                    })
                    .collect()
            })
            .get(driver)
            .copied()
    }

    fn gpus(&mut self) -> Option<&GpuTable> {
        let roots = self.roots;
        self.gpus
            .get_or_insert_with(|| {
                let dir = roots.proc("/proc/driver/nvidia/gpus");
                let buses = sorted_dir_names(&dir);
                if buses.is_empty() {
                    return None;
                }
                let mut out = Vec::new();
                for bus in buses {
                    let [minor, uuid] = read_fields(
                        &dir.join(&bus).join("information"),
                        ["Device Minor", "GPU UUID"],
                    )?;
                    out.push((minor?.parse().ok()?, uuid));
                }
                Some(out)
            })
            .as_ref()
    }

    fn mig_capability(&mut self, minor: u32) -> Option<Option<String>> {
        let roots = self.roots;
        let table = self
            .mig_minors
            .get_or_insert_with(|| {
                let text = read_text(&roots.proc("/proc/driver/nvidia-caps/mig-minors"))?;
                Some(
                    text.lines()
                        .filter_map(|l| {
                            let (cap, m) = l.trim().split_once(' ')?;
                            Some((m.trim().parse().ok()?, cap.to_string()))
                        })
                        .collect(),
                )
            })
            .as_ref()?;
        Some(table.get(&minor).cloned())
    }
}

/// The driver (as /proc/devices names it) of an NVIDIA node whose major is not fixed.
fn nvidia_driver_of(node: &str) -> Option<&'static str> {
    let name = node.strip_prefix("/dev/")?;
    if name == "nvidia-uvm" || name == "nvidia-uvm-tools" {
        Some("nvidia-uvm")
    } else if name.starts_with("nvidia-caps-imex-channels/") {
        Some("nvidia-caps-imex-channels")
    } else if name.starts_with("nvidia-caps/") {
        Some("nvidia-caps")
    } else if name.starts_with("nvidia-nvswitch") {
        Some("nvidia-nvswitch")
    } else if name == "nvidia-nvlink" {
        Some("nvidia-nvlink")
    } else {
        None
    }
}

fn gpu_minor_of(node: &str) -> Option<u32> {
    node.strip_prefix("/dev/nvidia")?.parse().ok()
}

fn describe(t: &str, major: i64, minor: i64) -> String {
    format!("{t} {major}:{minor}")
}

fn check_node(
    n: &DeviceNode,
    kind: &str,
    device_name: Option<&str>,
    host: &mut Host,
) -> Option<Change> {
    let node = n.path.clone();
    let host_path = n.host_path().to_string();
    let declared_type = n.node_type.clone().unwrap_or_default();
    if declared_type == "p" {
        return None;
    }
    let nvidia = kind == Vendor::Nvidia.kind();
    let mut minor_now = n.minor;
    match std::fs::symlink_metadata(&host_path) {
        Err(_) => {
            // A node the spec fully describes can be made without the host's node, as
            // long as the driver still has that major.
            let driver = nvidia_driver_of(&node);
            match (n.major, driver) {
                (Some(major), Some(driver)) if nvidia && !declared_type.is_empty() => {
                    match host.registered(driver) {
                        Some(reg) if reg as i64 == major => {}
                        Some(registered) => {
                            return Some(Change::MajorChanged {
                                node,
                                declared: major,
                                driver: driver.to_string(),
                                registered,
                            })
                        }
                        None => return Some(Change::NodeMissing { node, host_path }),
                    }
                }
                _ => return Some(Change::NodeMissing { node, host_path }),
            }
        }
        Ok(meta) => {
            host.nodes
                .insert(host_path.clone().into(), HostNode::of(&meta));
            let ft = meta.file_type();
            let host_type = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                return Some(Change::NotADevice { node, host_path });
            };
            let (hmaj, hmin) = (
                nix::sys::stat::major(meta.rdev()) as i64,
                nix::sys::stat::minor(meta.rdev()) as i64,
            );
            let type_differs = !declared_type.is_empty() && declared_type != host_type;
            let major_differs = n.major.is_some_and(|m| m != 0 && m != hmaj);
            let minor_differs = n.major.is_some_and(|m| m != 0) && n.minor.unwrap_or(0) != hmin;
            if type_differs || major_differs || minor_differs {
                let t = if declared_type.is_empty() {
                    host_type
                } else {
                    &declared_type
                };
                return Some(Change::NodeChanged {
                    node,
                    declared: describe(t, n.major.unwrap_or(0), n.minor.unwrap_or(0)),
                    host: describe(host_type, hmaj, hmin),
                });
            }
            minor_now = Some(hmin);
        }
    }
    if !nvidia {
        return None;
    }
    if let (Some(gpu_minor), Some(minor)) = (gpu_minor_of(&node), minor_now) {
        if let Some(gpus) = host.gpus() {
            if let Some(uuid) = device_name.filter(|d| d.starts_with("GPU-")) {
                match gpus.iter().find(|(_, u)| u.as_deref() == Some(uuid)) {
                    None => {
                        return Some(Change::UuidGone {
                            uuid: uuid.to_string(),
                        })
                    }
                    Some((now, _)) if *now != gpu_minor => {
                        return Some(Change::UuidMoved {
                            uuid: uuid.to_string(),
                            node,
                            now: *now,
                        })
                    }
                    Some(_) => {}
                }
            } else if !gpus.iter().any(|(m, _)| i64::from(*m) == minor) {
                return Some(Change::GpuGone { node, minor });
            }
        }
    }
    if node.starts_with("/dev/nvidia-caps/nvidia-cap") {
        if let Some(minor) = minor_now.and_then(|m| u32::try_from(m).ok()) {
            if let Some(Some(cap)) = host.mig_capability(minor) {
                // gpu0/gi1/ci0/access -> /proc/driver/nvidia/capabilities/gpu0/mig/gi1/ci0
                if let Some((gpu, rest)) = cap.split_once('/') {
                    let inst = rest.strip_suffix("/access").unwrap_or(rest);
                    let dir = host
                        .roots
                        .proc(format!("/proc/driver/nvidia/capabilities/{gpu}/mig/{inst}"));
                    if !dir.exists() {
                        return Some(Change::MigGone {
                            node,
                            capability: cap,
                        });
                    }
                }
            }
        }
    }
    None
}

fn is_bind(m: &Mount) -> bool {
    matches!(m.mount_type.as_deref(), None | Some("") | Some("bind"))
        || m.options.iter().any(|o| o == "bind" || o == "rbind")
}

fn check_edits(
    edits: &ContainerEdits,
    kind: &str,
    device_name: Option<&str>,
    host: &mut Host,
) -> Option<Change> {
    for n in &edits.device_nodes {
        if let Some(c) = check_node(n, kind, device_name, host) {
            return Some(c);
        }
    }
    for m in edits.mounts.iter().filter(|m| is_bind(m)) {
        if std::fs::metadata(Path::new(&m.host_path)).is_err() {
            return Some(Change::FileMissing {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
            });
        }
    }
    None
}

/// The first stale entry among the spec files `names` resolve to (generated specs and
/// unknown names are skipped).
pub fn first_stale(
    registry: &Registry,
    names: &[QualifiedName],
    roots: &HostRoots,
) -> Option<StaleSpec> {
    first_stale_noting(registry, names, roots, &mut HashMap::new())
}

/// [`first_stale`], adding what each device node it `lstat`ed is to `nodes` (by host path),
/// for [`crate::apply::Remembered`].
pub fn first_stale_noting(
    registry: &Registry,
    names: &[QualifiedName],
    roots: &HostRoots,
    nodes: &mut HostNodes,
) -> Option<StaleSpec> {
    let mut host = Host::new(roots);
    let stale = first_stale_in(registry, names, &mut host);
    nodes.extend(host.nodes);
    stale
}

fn first_stale_in(
    registry: &Registry,
    names: &[QualifiedName],
    host: &mut Host,
) -> Option<StaleSpec> {
    let mut specs_done: HashSet<PathBuf> = HashSet::new();
    for name in names {
        let Some((loaded, device)) = registry.device(name) else {
            continue;
        };
        if loaded.generated {
            continue;
        }
        let kind = loaded.spec.kind.clone();
        let stale = |entry: String, change: Change| StaleSpec {
            path: loaded.path.clone(),
            kind: kind.clone(),
            entry,
            change,
        };
        if specs_done.insert(loaded.path.clone()) {
            if let Some(c) = check_edits(&loaded.spec.container_edits, &kind, None, host) {
                return Some(stale("containerEdits".into(), c));
            }
        }
        if let Some(c) = check_edits(
            &device.container_edits,
            &kind,
            Some(device.name.as_str()),
            host,
        ) {
            return Some(stale(format!("device {name}"), c));
        }
    }
    None
}
