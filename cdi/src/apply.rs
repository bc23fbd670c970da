//! Applying [`ContainerEdits`] to an OCI runtime spec, with the reference's semantics
//! (`pkg/cdi/container-edits.go`, `ContainerEdits.Apply`):
//!
//! - env: each `KEY=VALUE` replaces an existing entry with the same key, else is appended
//!   (runtime-tools' `AddMultipleProcessEnv`);
//! - device nodes: missing type/major/minor are taken from the host node (`lstat` of
//!   `hostPath`, else `path`); a declared type must match the host's; a node without uid/gid
//!   gets the process user's when that is not root; any device at the same container path is
//!   replaced; block and char nodes get a device cgroup allow rule (`rwm` unless `permissions`
//!   says otherwise, `none` for an empty access);
//! - net devices: `linux.netDevices[hostInterfaceName] = {name}`;
//! - mounts: any mount at the same destination is removed, the new one appended, then all
//!   mounts are stably sorted by the depth of their destination; with a user namespace, bind
//!   mounts get the `idmap` option so the files keep their owners inside the container;
//! - hooks: appended to their stage;
//! - intelRdt: replaces `linux.intelRdt`;
//! - additionalGids: added to `process.user.additionalGids`, skipping 0 and duplicates.
//!
//! [`apply`] works on a copy: on error the caller's spec is untouched.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    Hook as OciHook, Hooks, Linux, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxIntelRdt,
    LinuxNamespaceType, LinuxNetDevice, LinuxResources, Mount as OciMount, Process,
    Spec as OciSpec,
};

use crate::spec::{ContainerEdits, DeviceNode, Hook, IntelRdt, Mount};
use crate::validate::NO_PERMISSIONS;

/// The kind of a file on the host, as far as device injection cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Block,
    Char,
    Fifo,
    /// Anything else (regular file, directory, symlink, socket).
    Other,
}

impl NodeKind {
    /// The CDI/OCI type letter, `None` for [`NodeKind::Other`].
    pub fn as_type(self) -> Option<&'static str> {
        match self {
            NodeKind::Block => Some("b"),
            NodeKind::Char => Some("c"),
            NodeKind::Fifo => Some("p"),
            NodeKind::Other => None,
        }
    }
}

/// What the host says about a device node path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostNode {
    pub kind: NodeKind,
    pub major: i64,
    pub minor: i64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Access to the host's device nodes; [`RealHost`] in production, a table in tests.
pub trait HostDevices {
    /// `lstat`s a path (a symlink is not followed, as in the reference).
    fn stat(&self, path: &Path) -> io::Result<HostNode>;
}

/// The real host filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealHost;

impl HostDevices for RealHost {
    fn stat(&self, path: &Path) -> io::Result<HostNode> {
        Ok(HostNode::of(&std::fs::symlink_metadata(path)?))
    }
}

impl HostNode {
    /// What `lstat` metadata says about a node.
    pub fn of(meta: &std::fs::Metadata) -> HostNode {
        let ft = meta.file_type();
        let kind = if ft.is_block_device() {
            NodeKind::Block
        } else if ft.is_char_device() {
            NodeKind::Char
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else {
            NodeKind::Other
        };
        let rdev = meta.rdev();
        HostNode {
            kind,
            major: nix::sys::stat::major(rdev) as i64,
            minor: nix::sys::stat::minor(rdev) as i64,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        }
    }
}

/// What host device nodes are, by host path. Keyed by the path's bytes: hashing a `Path`
/// walks its components, which cost more than the rest of the lookup (30 nodes per
/// 8-GPU resolve).
pub type HostNodes = HashMap<std::ffi::OsString, HostNode>;

/// Host nodes already `lstat`ed a moment ago (by the live check of the spec file, in the same
/// resolve), answered from memory; any other path goes to `host`. Saves the second `lstat` of
/// every node a spec gives without type or major (as `nvbind cdi generate` and nvidia-ctk
/// write them): 24 of them on the 8-GPU host.
pub struct Remembered<'a> {
    pub nodes: &'a HostNodes,
    pub host: &'a dyn HostDevices,
}

impl HostDevices for Remembered<'_> {
    fn stat(&self, path: &Path) -> io::Result<HostNode> {
        match self.nodes.get(path.as_os_str()) {
            Some(n) => Ok(*n),
            None => self.host.stat(path),
        }
    }
}

/// Why edits could not be applied. Device errors name the node's container and host paths.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("CDI device node {path}: failed to stat host device {host_path}")]
    HostDevice {
        path: String,
        host_path: String,
        #[source]
        source: io::Error,
    },
    #[error("CDI device node {path}: host path {host_path} is not a device node")]
    NotADevice { path: String, host_path: String },
    #[error("CDI device node {path}: declared type {declared:?} but host device {host_path} has type {host:?}")]
    TypeMismatch {
        path: String,
        host_path: String,
        declared: String,
        host: String,
    },
    #[error("CDI device node {path:?}: the path inside the container must be absolute, name a file and hold no '..'; fix the CDI spec")]
    ContainerPath { path: String },
    #[error("CDI device node {path}: invalid type {value:?}")]
    InvalidNodeType { path: String, value: String },
    #[error("CDI hook {path}: unknown hook name {name:?}")]
    UnknownHookName { path: String, name: String },
    #[error("cannot build an empty OCI {what} section")]
    EmptySection {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// A device node with everything the OCI spec needs filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResolvedNode {
    path: String,
    node_type: LinuxDeviceType,
    major: i64,
    minor: i64,
    file_mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    permissions: Option<String>,
}

fn device_type(path: &str, t: &str) -> Result<LinuxDeviceType, ApplyError> {
    Ok(match t {
        "b" => LinuxDeviceType::B,
        "c" => LinuxDeviceType::C,
        "u" => LinuxDeviceType::U,
        "p" => LinuxDeviceType::P,
        _ => {
            return Err(ApplyError::InvalidNodeType {
                path: path.to_string(),
                value: t.to_string(),
            })
        }
    })
}

/// The reference's `fillMissingInfo`: stat the host only when type or major is missing.
fn resolve_node(node: &DeviceNode, host: &dyn HostDevices) -> Result<ResolvedNode, ApplyError> {
    // The reference accepts any non-empty path, and runc clamps it into the rootfs; nvbind's
    // bundle check refuses such a linux.devices entry, so say here which CDI node it was
    // (found by fuzz/cdi_spec: "path: dev/kfd" got as far as create's bundle check).
    if !names_a_file_in_the_container(Path::new(&node.path)) {
        return Err(ApplyError::ContainerPath {
            path: node.path.clone(),
        });
    }
    let host_path = node.host_path().to_string();
    let mut node_type = node.node_type.clone().unwrap_or_default();
    let mut major = node.major.unwrap_or(0);
    let mut minor = node.minor.unwrap_or(0);

    if node_type.is_empty() || (major == 0 && node_type != "p") {
        let info = host
            .stat(Path::new(&host_path))
            .map_err(|source| ApplyError::HostDevice {
                path: node.path.clone(),
                host_path: host_path.clone(),
                source,
            })?;
        let host_type = info.kind.as_type().ok_or_else(|| ApplyError::NotADevice {
            path: node.path.clone(),
            host_path: host_path.clone(),
        })?;
        if node_type.is_empty() {
            node_type = host_type.to_string();
        } else if node_type != host_type {
            return Err(ApplyError::TypeMismatch {
                path: node.path.clone(),
                host_path,
                declared: node_type,
                host: host_type.to_string(),
            });
        }
        if major == 0 && node_type != "p" {
            major = info.major;
            minor = info.minor;
        }
    }

    Ok(ResolvedNode {
        node_type: device_type(&node.path, &node_type)?,
        path: node.path.clone(),
        major,
        minor,
        file_mode: node.file_mode,
        uid: node.uid,
        gid: node.gid,
        permissions: node.permissions.clone(),
    })
}

/// Whether `path` can be a device's path inside the container (runtime-spec: its "full path
/// inside the container"): absolute, naming a file (not "/"), with no `..`. The OCI bundle
/// check applies the same rule to linux.devices.
pub fn names_a_file_in_the_container(path: &Path) -> bool {
    path.is_absolute()
        && path.file_name().is_some()
        && !path.components().any(|c| matches!(c, Component::ParentDir))
}

fn empty<T: serde::de::DeserializeOwned>(what: &'static str) -> Result<T, ApplyError> {
    serde_json::from_str("{}").map_err(|source| ApplyError::EmptySection { what, source })
}

fn empty_process() -> Result<Process, ApplyError> {
    serde_json::from_value(serde_json::json!({"user": {"uid": 0, "gid": 0}, "cwd": "/"})).map_err(
        |source| ApplyError::EmptySection {
            what: "process",
            source,
        },
    )
}

/// Number of separators in the cleaned destination, as Go's
/// `strings.Count(filepath.Clean(dst), "/")`.
fn mount_depth(dest: &Path) -> usize {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    let absolute = dest.is_absolute();
    for c in dest.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            // `..` at the root stays at the root; in a relative path it is kept.
            Component::ParentDir if parts.pop().is_none() && !absolute => parts.push("..".as_ref()),
            _ => {}
        }
    }
    if absolute {
        parts.len().max(1)
    } else {
        parts.len().saturating_sub(1)
    }
}

/// Adds `new` to `list` as the reference's remove-then-append per item does: existing items
/// whose key matches a new one are dropped, and of several new items with the same key only
/// the last is kept, at its own position. Linear, where the per-item version is quadratic.
fn replace_by_key<T, K: Eq + std::hash::Hash>(
    list: &mut Vec<T>,
    new: Vec<T>,
    key: impl Fn(&T) -> K,
) {
    let mut last: HashMap<K, usize> = HashMap::with_capacity(new.len());
    for (i, item) in new.iter().enumerate() {
        last.insert(key(item), i);
    }
    list.retain(|item| !last.contains_key(&key(item)));
    list.extend(
        new.into_iter()
            .enumerate()
            .filter(|(i, item)| last.get(&key(item)) == Some(i))
            .map(|(_, item)| item),
    );
}

fn has_user_namespace(spec: &OciSpec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::User))
}

fn to_oci_mount(m: &Mount, idmap: bool) -> OciMount {
    let mut options = m.options.clone();
    let is_bind = m.mount_type.as_deref() == Some("bind")
        || options.iter().any(|o| o == "bind" || o == "rbind");
    if idmap && is_bind && !options.iter().any(|o| o == "idmap" || o == "ridmap") {
        options.push("idmap".to_string());
    }
    let mut out = OciMount::default();
    out.set_destination(PathBuf::from(&m.container_path));
    out.set_source(Some(PathBuf::from(&m.host_path)));
    out.set_typ(m.mount_type.clone().filter(|t| !t.is_empty()));
    out.set_options((!options.is_empty()).then_some(options));
    out
}

fn to_oci_hook(h: &Hook) -> OciHook {
    let mut out = OciHook::default();
    out.set_path(PathBuf::from(&h.path));
    out.set_args((!h.args.is_empty()).then(|| h.args.clone()));
    out.set_env((!h.env.is_empty()).then(|| h.env.clone()));
    out.set_timeout(h.timeout);
    out
}

fn to_oci_intel_rdt(r: &IntelRdt) -> LinuxIntelRdt {
    let mut out = LinuxIntelRdt::default();
    out.set_clos_id(r.clos_id.clone());
    out.set_l3_cache_schema(r.l3_cache_schema.clone());
    out.set_mem_bw_schema(r.mem_bw_schema.clone());
    out.set_schemata(r.schemata.clone());
    out.set_enable_monitoring(r.enable_monitoring);
    out
}

fn add_env(process: &mut Process, entries: &[String]) {
    let env = process.env_mut().get_or_insert_with(Vec::new);
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, e) in env.iter().enumerate() {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        index.entry(key.to_string()).or_insert(i);
    }
    for e in entries {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k).to_string();
        match index.get(&key) {
            Some(&i) => env[i] = e.clone(),
            None => {
                env.push(e.clone());
                index.insert(key, env.len() - 1);
            }
        }
    }
}

/// Applies `edits` to a copy of `spec` and returns it; `spec` itself is never modified.
pub fn apply(
    edits: &ContainerEdits,
    spec: &OciSpec,
    host: &dyn HostDevices,
) -> Result<OciSpec, ApplyError> {
    // Resolve every device node against the host first: this is the only step that can fail
    // for reasons outside the edits themselves.
    let nodes = edits
        .device_nodes
        .iter()
        .map(|n| resolve_node(n, host))
        .collect::<Result<Vec<_>, _>>()?;
    for h in &edits.hooks {
        if !crate::validate::HOOK_NAMES.contains(&h.hook_name.as_str()) {
            return Err(ApplyError::UnknownHookName {
                path: h.path.clone(),
                name: h.hook_name.clone(),
            });
        }
    }

    let mut out = spec.clone();
    let (proc_uid, proc_gid) = spec
        .process()
        .as_ref()
        .map_or((0, 0), |p| (p.user().uid(), p.user().gid()));

    if !edits.env.is_empty() {
        if out.process().is_none() {
            out.set_process(Some(empty_process()?));
        }
        if let Some(process) = out.process_mut() {
            add_env(process, &edits.env);
        }
    }

    let needs_linux =
        !nodes.is_empty() || !edits.net_devices.is_empty() || edits.intel_rdt.is_some();
    if needs_linux && out.linux().is_none() {
        out.set_linux(Some(empty::<Linux>("linux")?));
    }
    if !nodes.is_empty() {
        let linux = out
            .linux_mut()
            .as_mut()
            .expect("linux section was just ensured");
        let mut rules = Vec::new();
        let mut new_devices = Vec::with_capacity(nodes.len());
        {
            for n in &nodes {
                let mut dev = LinuxDevice::default();
                dev.set_path(PathBuf::from(&n.path));
                dev.set_typ(n.node_type);
                dev.set_major(n.major);
                dev.set_minor(n.minor);
                dev.set_file_mode(n.file_mode);
                dev.set_uid(n.uid.or((proc_uid > 0).then_some(proc_uid)));
                dev.set_gid(n.gid.or((proc_gid > 0).then_some(proc_gid)));
                new_devices.push(dev);

                if matches!(n.node_type, LinuxDeviceType::B | LinuxDeviceType::C) {
                    let access = match n.permissions.as_deref() {
                        None | Some("") => "rwm",
                        Some(NO_PERMISSIONS) => "",
                        Some(p) => p,
                    };
                    let mut rule = LinuxDeviceCgroup::default();
                    rule.set_allow(true);
                    rule.set_typ(Some(n.node_type));
                    rule.set_major(Some(n.major));
                    rule.set_minor(Some(n.minor));
                    rule.set_access(Some(access.to_string()));
                    rules.push(rule);
                }
            }
        }
        let devices = linux.devices_mut().get_or_insert_with(Vec::new);
        replace_by_key(devices, new_devices, |d| d.path().as_os_str().to_owned());
        if !rules.is_empty() {
            if linux.resources().is_none() {
                linux.set_resources(Some(empty::<LinuxResources>("linux.resources")?));
            }
            let resources = linux
                .resources_mut()
                .as_mut()
                .expect("resources were just ensured");
            resources
                .devices_mut()
                .get_or_insert_with(Vec::new)
                .extend(rules);
        }
    }

    if !edits.net_devices.is_empty() {
        let linux = out
            .linux_mut()
            .as_mut()
            .expect("linux section was just ensured");
        let map = linux.net_devices_mut().get_or_insert_with(HashMap::new);
        for d in &edits.net_devices {
            let mut dev = LinuxNetDevice::default();
            dev.set_name(Some(d.name.clone()));
            map.insert(d.host_interface_name.clone(), dev);
        }
    }

    if !edits.mounts.is_empty() {
        let idmap = has_user_namespace(spec);
        let mounts = out.mounts_mut().get_or_insert_with(Vec::new);
        let new_mounts = edits
            .mounts
            .iter()
            .map(|m| to_oci_mount(m, idmap))
            .collect();
        replace_by_key(mounts, new_mounts, |m| {
            m.destination().as_os_str().to_owned()
        });
        // Stable: mounts of equal depth keep their order.
        mounts.sort_by_cached_key(|m| mount_depth(m.destination()));
    }

    if !edits.hooks.is_empty() {
        if out.hooks().is_none() {
            out.set_hooks(Some(Hooks::default()));
        }
        let hooks = out.hooks_mut().as_mut().expect("hooks were just ensured");
        for h in &edits.hooks {
            let stage = match h.hook_name.as_str() {
                "prestart" =>
                {
                    #[allow(deprecated)]
                    hooks.prestart_mut()
                }
                "createRuntime" => hooks.create_runtime_mut(),
                "createContainer" => hooks.create_container_mut(),
                "startContainer" => hooks.start_container_mut(),
                "poststart" => hooks.poststart_mut(),
                _ => hooks.poststop_mut(),
            };
            stage.get_or_insert_with(Vec::new).push(to_oci_hook(h));
        }
    }

    if let Some(rdt) = &edits.intel_rdt {
        let linux = out
            .linux_mut()
            .as_mut()
            .expect("linux section was just ensured");
        linux.set_intel_rdt(Some(to_oci_intel_rdt(rdt)));
    }

    let gids: Vec<u32> = edits
        .additional_gids
        .iter()
        .copied()
        .filter(|g| *g != 0)
        .collect();
    if !gids.is_empty() {
        if out.process().is_none() {
            out.set_process(Some(empty_process()?));
        }
        if let Some(process) = out.process_mut() {
            let list = process
                .user_mut()
                .additional_gids_mut()
                .get_or_insert_with(Vec::new);
            for g in gids {
                if !list.contains(&g) {
                    list.push(g);
                }
            }
        }
    }

    Ok(out)
}

#[cfg(test)]
mod tests;
