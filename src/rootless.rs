//! Rootless containers: what an unprivileged caller can ask of the kernel, checked before
//! libcontainer forks anything, so that a spec it cannot run fails with one line naming the
//! field and leaves nothing behind.
//!
//! An unprivileged user can create a user namespace and, without help, map exactly one ID in
//! it: its own effective uid and gid (user_namespaces(7), "Defining user and group ID
//! mappings"). More IDs need the setuid helpers newuidmap/newgidmap (package uidmap) and ranges
//! granted in /etc/subuid and /etc/subgid. Cgroups are another matter: on a cgroup v1 host, or
//! v2 without delegation, the user cannot create one; the vendored libcontainer then runs the
//! container without a cgroup, unless the spec asks for limits (NVBIND-PATCHES.md #15). It
//! joins a cgroup delegated to the user (chowned), but applies limits there only on v2.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::container::Container;
use libcontainer::process::container_intermediate_process::resources_needing_cgroup;
use nix::unistd::{access, getegid, geteuid, AccessFlags};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

/// Whether the kernel will treat this nvbind as an unprivileged user. Root inside a user
/// namespace (how Podman runs a runtime rootless) is privileged there and needs none of this.
pub fn unprivileged() -> bool {
    !geteuid().is_root()
}

/// `--rootless auto`, as runc decides where its state goes (shouldHonorXDGRuntimeDir): an
/// unprivileged caller, or root inside a user namespace that another user made (rootless
/// Podman's conmon runs the runtime so, with that user's XDG_RUNTIME_DIR and USER), unless
/// USER says root. There, /run/nvbind belongs to the host's root and cannot be written.
pub fn auto() -> bool {
    let in_userns = libcontainer::utils::is_in_new_userns().unwrap_or(false);
    auto_for(
        geteuid().as_raw(),
        in_userns,
        std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| !d.is_empty()),
        std::env::var("USER").ok().as_deref(),
    )
}

fn auto_for(euid: u32, in_userns: bool, xdg_runtime_dir: bool, user: Option<&str>) -> bool {
    euid != 0 || (in_userns && xdg_runtime_dir && user != Some("root"))
}

/// $XDG_RUNTIME_DIR/nvbind, or /tmp/nvbind-UID where there is no (usable) XDG_RUNTIME_DIR.
pub fn default_root() -> PathBuf {
    root_for(std::env::var_os("XDG_RUNTIME_DIR"), geteuid().as_raw())
}

fn root_for(xdg_runtime_dir: Option<std::ffi::OsString>, uid: u32) -> PathBuf {
    match xdg_runtime_dir.map(PathBuf::from) {
        // An empty or relative value would put the state under the current directory.
        Some(dir) if dir.is_absolute() => dir.join("nvbind"),
        _ => PathBuf::from(format!("/tmp/nvbind-{uid}")),
    }
}

/// The state root of an unprivileged caller must be its own: state.json names the PIDs that
/// kill and delete signal, so a root another user can write (a /tmp/nvbind-UID made by
/// someone else first) would let that user aim our signals.
pub fn check_root_owner(root: &Path) -> Result<()> {
    let meta = std::fs::metadata(root)
        .with_context(|| format!("cannot read the state directory --root {}", root.display()))?;
    let me = geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "the state directory --root {} belongs to uid {}, not to you (uid {me}); a rootless \
             state root must be your own directory",
            root.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "the state directory --root {} is writable by others (mode {:o}); chmod 700 it",
            root.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// Refuses, for an unprivileged caller, a spec the kernel would refuse half-way through the
/// create: no user namespace, ID mappings the user may not write, supplementary groups, or
/// resource limits without a cgroup the user can write. With the systemd driver the user's
/// own manager makes the cgroup (a scope in its delegated subtree) and applies the limits as
/// unit properties, so no cgroup path of ours is checked then.
pub fn check_spec(spec: &Spec, id: &str, systemd: bool) -> Result<()> {
    if !unprivileged() {
        return Ok(());
    }
    let uid = geteuid().as_raw();
    let gid = getegid().as_raw();
    let linux = spec.linux().as_ref();
    let user_ns = linux
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::User));
    let Some(user_ns) = user_ns else {
        bail!(
            "a rootless container needs a user namespace: add {{\"type\": \"user\"}} to \
             linux.namespaces and map your uid {uid} and gid {gid} in linux.uidMappings and \
             linux.gidMappings (`nvbind spec --rootless` writes such a config.json)"
        );
    };
    if user_ns.path().is_none() {
        let linux = linux.expect("a namespace was found in linux");
        check_mappings("uidMappings", "uid", uid, linux.uid_mappings().as_deref())?;
        check_mappings("gidMappings", "gid", gid, linux.gid_mappings().as_deref())?;
    }
    let extra_gids = spec
        .process()
        .as_ref()
        .and_then(|p| p.user().additional_gids().as_ref())
        .is_some_and(|g| !g.is_empty());
    if extra_gids {
        bail!(
            "process.user.additionalGids cannot be set in a rootless container (the kernel \
             denies setgroups to an unprivileged user namespace, CVE-2014-8989); remove it"
        );
    }
    if let Some(resources) = linux.and_then(|l| l.resources().as_ref()) {
        if let Some(field) = resources_needing_cgroup(resources) {
            let cgroups_path = linux
                .and_then(|l| l.cgroups_path().clone())
                .unwrap_or_else(|| PathBuf::from(format!(":youki:{id}")));
            if let Some(why) = limits_unavailable(&cgroups_path, field, systemd) {
                bail!(why);
            }
        }
    }
    Ok(())
}

/// CDI's additionalGids name host groups (a device node's group). In a user namespace, the
/// spec's own or the one the runtime runs in (rootless Podman's), a host gid is whatever the
/// namespace maps it to, and one it does not map cannot be given at all (setgroups fails with
/// EINVAL, or is denied). Such a group reaches the container only as one the caller already
/// has: the init keeps the caller's groups when no setgroups runs, so it is left out (logged).
pub fn container_gids(spec: &Spec, host_gids: &[u32]) -> Vec<u32> {
    if host_gids.is_empty() {
        return Vec::new();
    }
    let linux = spec.linux().as_ref();
    let spec_ns = linux
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::User));
    let map: Vec<(u32, u32, u32)> = match spec_ns {
        Some(ns) if ns.path().is_none() => linux
            .and_then(|l| l.gid_mappings().as_ref())
            .map(|m| {
                m.iter()
                    .map(|m| (m.container_id(), m.host_id(), m.size()))
                    .collect()
            })
            .unwrap_or_default(),
        // Joining a namespace by path, or none: ours (identity outside any user namespace).
        _ => std::fs::read_to_string("/proc/self/gid_map")
            .map(|t| parse_id_map(&t))
            .unwrap_or_default(),
    };
    host_gids
        .iter()
        .filter_map(|&g| {
            let inside = to_container_id(&map, g);
            if inside.is_none() {
                tracing::warn!(
                    "the CDI additionalGid {g} is not mapped in the container's user namespace \
                     and cannot be added there; the container has that group only if the \
                     caller does (rootless: the caller's own groups are kept)"
                );
            }
            inside
        })
        .collect()
}

/// In a user namespace no device node can be made: libcontainer bind-mounts each of
/// linux.devices instead, from the host file at the node's path in the container (as runc
/// does), which a CDI node with a hostPath elsewhere does not have. Such nodes become bind
/// mounts of their hostPath here; their device cgroup rules stay.
pub fn bind_device_nodes(spec: &mut Spec, nodes: &[nvbind_cdi::spec::DeviceNode]) -> Result<()> {
    let user_ns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::User));
    if !user_ns && !libcontainer::utils::is_in_new_userns().unwrap_or(false) {
        return Ok(());
    }
    let elsewhere: Vec<(&str, &str)> = nodes
        .iter()
        .filter_map(|n| Some((n.path.as_str(), n.host_path.as_deref()?)))
        .filter(|(path, host)| path != host)
        .collect();
    if elsewhere.is_empty() {
        return Ok(());
    }
    if let Some(devices) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.devices_mut().as_mut())
    {
        devices.retain(|d| {
            !elsewhere
                .iter()
                .any(|(path, _)| d.path() == Path::new(path))
        });
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for (path, host) in elsewhere {
        mounts.push(
            oci_spec::runtime::MountBuilder::default()
                .destination(path)
                .typ("bind")
                .source(host)
                .options(vec!["bind".to_string()])
                .build()
                .with_context(|| format!("cannot make a bind mount of the device node {host}"))?,
        );
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// /proc/PID/gid_map: "inside outside count" a line.
fn parse_id_map(text: &str) -> Vec<(u32, u32, u32)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|f| f.parse::<u32>().ok());
            Some((f.next()??, f.next()??, f.next()??))
        })
        .collect()
}

fn to_container_id(map: &[(u32, u32, u32)], host: u32) -> Option<u32> {
    map.iter()
        .find(|&&(_, outside, count)| {
            host >= outside && u64::from(host) < u64::from(outside) + u64::from(count)
        })
        .map(|&(inside, outside, _)| inside + (host - outside))
}

/// A rootless container has a cgroup only where one was delegated to the user. The verbs
/// that work through it (ps, pause, resume, events, update) say so up front instead of
/// failing on a cgroup file that is not there.
pub fn require_cgroup(container: &Container) -> Result<()> {
    // With the systemd driver the user's manager made a scope for the container, or the create
    // failed; cgroup_path is then `slice:prefix:name`, no path under /sys/fs/cgroup.
    if !unprivileged() || container.systemd() {
        return Ok(());
    }
    let config = container
        .spec()
        .with_context(|| format!("cannot read the saved config of {:?}", container.id()))?;
    let relative = config
        .cgroup_path
        .strip_prefix("/")
        .unwrap_or(&config.cgroup_path);
    let base = Path::new("/sys/fs/cgroup");
    let exists = if base.join("cgroup.controllers").exists() {
        base.join(relative).is_dir()
    } else {
        ["freezer", "devices", "pids"]
            .iter()
            .any(|c| base.join(c).join(relative).is_dir())
    };
    if !exists {
        bail!(
            "container {:?} runs without a cgroup (rootless, and no cgroup is delegated to \
             this user), which this verb needs; see README \"Rootless\"",
            container.id()
        );
    }
    Ok(())
}

/// A single mapping is written straight to /proc/PID/*_map, which the kernel allows an
/// unprivileged writer only for its own ID, one wide. Several go through newuidmap/newgidmap,
/// which check /etc/subuid and /etc/subgid themselves (their refusal is reported then).
fn check_mappings(
    field: &str,
    kind: &str,
    own: u32,
    mappings: Option<&[LinuxIdMapping]>,
) -> Result<()> {
    let mappings = mappings.unwrap_or_default();
    match mappings {
        [] => bail!(
            "linux.{field} is empty; a rootless container must map your {kind} {own}, e.g. \
             [{{\"containerID\": 0, \"hostID\": {own}, \"size\": 1}}]"
        ),
        [one] if one.host_id() != own || one.size() != 1 => bail!(
            "linux.{field} maps host {kind}s {}..{} but you may map only your own {kind} {own} \
             (\"hostID\": {own}, \"size\": 1); for more IDs, list several mappings and grant \
             the range in /etc/sub{kind} (newuidmap/newgidmap)",
            one.host_id(),
            u64::from(one.host_id()) + u64::from(one.size()),
        ),
        [_] => Ok(()),
        _ => {
            let helper = if kind == "uid" {
                "newuidmap"
            } else {
                "newgidmap"
            };
            if find_in_path(helper).is_none() {
                bail!(
                    "linux.{field} has {} mappings, which need {helper} (package uidmap); \
                     install it or map only your own {kind} {own}",
                    mappings.len()
                );
            }
            Ok(())
        }
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Why this user cannot have `field` applied, if it cannot. On cgroup v1 (legacy or hybrid)
/// never: libcgroups writes device rules with every apply, which need host root. On v2 the
/// cgroup (or the nearest existing parent, where it would be made) must be writable: a
/// delegated one, unless the user's systemd manager makes it (the systemd driver).
fn limits_unavailable(cgroups_path: &Path, field: &str, systemd: bool) -> Option<String> {
    let base = Path::new("/sys/fs/cgroup");
    if !base.join("cgroup.controllers").exists() {
        return Some(format!(
            "linux.resources.{field} cannot be applied to a rootless container on this cgroup \
             v1 host (applying limits writes device rules, which need host root); remove the \
             limit, or use a cgroup v2 host with a cgroup delegated to this user"
        ));
    }
    if systemd {
        return None;
    }
    let dir = base.join(cgroups_path.strip_prefix("/").unwrap_or(cgroups_path));
    let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(base);
    let target = if existing == dir.as_path() {
        dir.join("cgroup.procs")
    } else {
        existing.to_path_buf()
    };
    access(&target, AccessFlags::W_OK).err().map(|_| {
        format!(
            "linux.resources.{field} needs a cgroup, and you (uid {}) cannot create {}; \
             delegate a cgroup to this user (chown it) and set linux.cgroupsPath under it, or \
             remove the limit",
            geteuid(),
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxIdMappingBuilder;

    fn mapping(host: u32, size: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(host)
            .size(size)
            .build()
            .unwrap()
    }

    #[test]
    fn only_the_own_id_may_be_mapped_alone() {
        check_mappings("uidMappings", "uid", 1000, Some(&[mapping(1000, 1)])).unwrap();
        let e = check_mappings("uidMappings", "uid", 1000, Some(&[mapping(0, 1)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux.uidMappings") && e.contains("1000"), "{e}");
        let e = check_mappings("gidMappings", "gid", 1000, Some(&[mapping(1000, 2)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/subgid"), "{e}");
        let e = check_mappings("uidMappings", "uid", 1000, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn host_gids_are_translated_through_the_gid_map_and_unmapped_ones_dropped() {
        // rootless Podman: own gid at 0, a subordinate range, the GPU group 44 granted last
        let map = parse_id_map("         0       1000          1\n         1     100000      65536\n     65537         44          1\n");
        assert_eq!(map.len(), 3);
        assert_eq!(to_container_id(&map, 1000), Some(0));
        assert_eq!(to_container_id(&map, 100009), Some(10));
        assert_eq!(to_container_id(&map, 44), Some(65537));
        assert_eq!(to_container_id(&map, 45), None);
        assert_eq!(to_container_id(&map, 165536), None);
        assert_eq!(
            to_container_id(&parse_id_map("0 0 4294967295"), 44),
            Some(44)
        );

        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {
                "namespaces": [{"type": "user"}],
                "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1},
                                {"containerID": 5, "hostID": 44, "size": 1}]
            }
        }))
        .unwrap();
        assert_eq!(container_gids(&spec, &[44, 1000, 45]), [5, 0]);
        assert!(container_gids(&spec, &[]).is_empty());
    }

    #[test]
    fn in_a_user_namespace_cdi_nodes_with_a_host_path_elsewhere_are_bind_mounted() {
        let spec = |ns: &str| -> Spec {
            serde_json::from_value(serde_json::json!({
                "ociVersion": "1.0.2",
                "mounts": [],
                "linux": {
                    "namespaces": [{"type": ns}],
                    "devices": [
                        {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0},
                        {"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255}
                    ]
                }
            }))
            .unwrap()
        };
        let node = |path: &str, host: Option<&str>| nvbind_cdi::spec::DeviceNode {
            path: path.into(),
            host_path: host.map(Into::into),
            ..Default::default()
        };
        let nodes = [
            node("/dev/nvidia0", Some("/var/tmp/gpu/nvidia0")),
            node("/dev/nvidiactl", Some("/dev/nvidiactl")),
        ];
        let mut s = spec("user");
        bind_device_nodes(&mut s, &nodes).unwrap();
        let devices = s.linux().as_ref().unwrap().devices().clone().unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].path(), Path::new("/dev/nvidiactl"));
        let mounts = s.mounts().clone().unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].destination(), Path::new("/dev/nvidia0"));
        assert_eq!(
            mounts[0].source().as_deref(),
            Some(Path::new("/var/tmp/gpu/nvidia0"))
        );
        // No user namespace (the test does not run in one): nodes are made, nothing changes.
        if !libcontainer::utils::is_in_new_userns().unwrap() {
            let mut s = spec("pid");
            bind_device_nodes(&mut s, &nodes).unwrap();
            assert_eq!(s, spec("pid"));
        }
    }

    #[test]
    fn auto_is_rootless_for_a_user_and_for_root_in_a_users_namespace() {
        assert!(auto_for(1000, false, false, None));
        assert!(!auto_for(0, false, true, Some("alice")));
        // rootless Podman: root in the user's namespace, with the user's environment
        assert!(auto_for(0, true, true, Some("alice")));
        assert!(auto_for(0, true, true, None));
        assert!(!auto_for(0, true, true, Some("root")));
        assert!(!auto_for(0, true, false, Some("alice")));
    }

    #[test]
    fn an_empty_or_relative_xdg_runtime_dir_is_not_used() {
        let root = |v: Option<&str>| root_for(v.map(Into::into), 1000);
        assert_eq!(
            root(Some("/run/user/1000")),
            Path::new("/run/user/1000/nvbind")
        );
        assert_eq!(root(Some("")), Path::new("/tmp/nvbind-1000"));
        assert_eq!(root(Some("run")), Path::new("/tmp/nvbind-1000"));
        assert_eq!(root(None), Path::new("/tmp/nvbind-1000"));
    }

    #[test]
    fn a_root_that_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        check_root_owner(dir.path()).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_root_owner(dir.path()).unwrap_err().to_string();
        assert!(e.contains("writable by others"), "{e}");
    }
}
