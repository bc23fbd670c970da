//! Applying CDI container edits to a container that already exists.
//!
//! The edits go through the same code as in the runtime: [`nvbind_cdi::apply::apply`] turns
//! them into OCI spec entries (device nodes filled in from the host, cgroup rules, mounts
//! ordered by depth, hooks by stage), applied here to a copy of the container's config with
//! its own devices, mounts and hooks removed, so what comes out is exactly what the edits
//! add. A [`LivePlan`] holds those entries; [`apply`] then does for the running container
//! what a runtime would have done while creating it:
//!
//! 1. host side, before anything changes: every bind-mount source is cloned as a detached,
//!    read-only (per its options), private mount tree; a missing source fails here;
//! 2. in the container's mount namespace (a thread that `setns`es, see [`crate::nsenter`]):
//!    device nodes are made (`mknodat`, type/major/minor/mode of the host node), the trees
//!    attached on targets resolved beneath the rootfs, the `create-symlinks` links made,
//!    and the linker cache refreshed (`ldconfig -r ROOTFS`);
//! 3. the device cgroup (v1) gets the allow rules; on a v2-only host this is reported as
//!    not supported.
//!
//! Nothing is ever mounted in the host's namespace.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::sys::stat::{mknodat, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};
use nvbind_cdi::apply::{apply as apply_edits, ApplyError, HostDevices};
use nvbind_cdi::spec::ContainerEdits;
use oci_spec::runtime::{
    Hook as OciHook, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, Mount as OciMount,
    Spec as OciSpec,
};

use crate::cgroup::{self, CgroupError, DeviceCgroup};
use crate::ldcache::{self, LdError};
use crate::mountapi;
use crate::nsenter::{self, Namespace, NsError};
use crate::rootfs::{Root, RootError};
use crate::symlinks::{self, Link, LinkError};

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
    #[error("container process {pid} has already switched to its rootfs: run nvbind-hook as a prestart or createRuntime hook")]
    Pivoted { pid: i32 },
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
    Ld(#[from] LdError),
    #[error(transparent)]
    Link(#[from] LinkError),
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

/// An OCI hook stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

/// What the edits add to a container, as OCI entries.
#[derive(Debug, Clone, Default)]
pub struct LivePlan {
    pub devices: Vec<LinuxDevice>,
    /// (container path, host path) of each device node, for bind-mounting the host node
    /// where `mknod` is not permitted (a container in a user namespace).
    pub device_sources: Vec<(PathBuf, PathBuf)>,
    pub rules: Vec<LinuxDeviceCgroup>,
    pub mounts: Vec<OciMount>,
    /// From `create-symlinks` hooks (ours or nvidia-ctk's), done in-process.
    pub links: Vec<Link>,
    /// From `update-ldcache` hooks and the directories of mounted libraries.
    pub ld_folders: Vec<PathBuf>,
    /// Whether the linker cache must be refreshed.
    pub refresh_ldcache: bool,
    /// Other hooks, run as processes.
    pub hooks: Vec<(Stage, OciHook)>,
    /// Edits a running container cannot take, for the caller to report.
    pub notes: Vec<String>,
}

/// Binaries whose `update-ldcache`/`create-symlinks` hooks are done in-process.
const OWN_HOOKS: [&str; 4] = [
    "nvbind-hook",
    "nvidia-container-runtime-hook",
    "nvidia-ctk",
    "nvidia-cdi-hook",
];

/// A hook of ours: (subcommand, its arguments).
fn own_subcommand(h: &OciHook) -> Option<(String, Vec<String>)> {
    let name = h.path().file_name()?.to_str()?;
    if !OWN_HOOKS.contains(&name) {
        return None;
    }
    let args = h.args().clone().unwrap_or_default();
    let mut rest: &[String] = args.get(1..).unwrap_or(&[]);
    if rest.first().map(String::as_str) == Some("hook") {
        rest = &rest[1..];
    }
    let (sub, tail) = rest.split_first()?;
    Some((sub.clone(), tail.to_vec()))
}

/// Values of `--flag V` / `--flag=V` in `args`.
pub fn flag_values(args: &[String], flag: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    let eq = format!("{flag}=");
    while let Some(a) = it.next() {
        if a == flag {
            if let Some(v) = it.next() {
                out.push(v.clone());
            }
        } else if let Some(v) = a.strip_prefix(&eq) {
            out.push(v.to_string());
        }
    }
    out
}

/// The container's config without devices, mounts, hooks and device rules: what remains
/// (process user, namespaces) is what [`apply_edits`] consults.
fn stripped(config: &OciSpec) -> OciSpec {
    let mut base = config.clone();
    base.set_mounts(None);
    base.set_hooks(None);
    if let Some(linux) = base.linux_mut() {
        linux.set_devices(None);
        if let Some(res) = linux.resources_mut() {
            res.set_devices(None);
        }
    }
    base
}

fn is_library(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(".so"))
}

impl LivePlan {
    /// Resolves `edits` against the host (the shared [`apply_edits`]) for `config`.
    pub fn new(
        edits: &ContainerEdits,
        config: &OciSpec,
        host: &dyn HostDevices,
    ) -> Result<LivePlan, LiveError> {
        let base = stripped(config);
        let out = apply_edits(edits, &base, host)?;
        let mut plan = LivePlan {
            device_sources: edits
                .device_nodes
                .iter()
                .map(|n| (PathBuf::from(&n.path), PathBuf::from(n.host_path())))
                .collect(),
            ..Default::default()
        };
        if let Some(linux) = out.linux() {
            plan.devices = linux.devices().clone().unwrap_or_default();
            plan.rules = linux
                .resources()
                .as_ref()
                .and_then(|r| r.devices().clone())
                .unwrap_or_default();
            let before = base.linux().as_ref();
            if linux.intel_rdt() != &before.and_then(|l| l.intel_rdt().clone()) {
                plan.notes
                    .push("intelRdt edits are not applied to a running container".into());
            }
            if linux.net_devices() != &before.and_then(|l| l.net_devices().clone()) {
                plan.notes
                    .push("netDevices edits are not applied to a running container".into());
            }
        }
        plan.mounts = out.mounts().clone().unwrap_or_default();
        for m in &plan.mounts {
            if m.source().as_deref().is_some_and(is_library) {
                if let Some(dir) = m.destination().parent() {
                    plan.ld_folders.push(dir.to_path_buf());
                }
            }
        }
        plan.refresh_ldcache = !plan.ld_folders.is_empty();
        if !edits.additional_gids.is_empty() {
            plan.notes
                .push("additionalGids edits are not applied to a running container".into());
        }
        if let Some(hooks) = out.hooks() {
            #[allow(deprecated)]
            let stages = [
                (Stage::Prestart, hooks.prestart()),
                (Stage::CreateRuntime, hooks.create_runtime()),
                (Stage::CreateContainer, hooks.create_container()),
                (Stage::StartContainer, hooks.start_container()),
                (Stage::Poststart, hooks.poststart()),
                (Stage::Poststop, hooks.poststop()),
            ];
            for (stage, list) in stages {
                for h in list.iter().flatten() {
                    plan.add_hook(stage, h)?;
                }
            }
        }
        Ok(plan)
    }

    fn add_hook(&mut self, stage: Stage, h: &OciHook) -> Result<(), LiveError> {
        match own_subcommand(h) {
            Some((sub, args)) if sub == "update-ldcache" => {
                self.refresh_ldcache = true;
                self.ld_folders.extend(
                    flag_values(&args, "--folder")
                        .into_iter()
                        .map(PathBuf::from),
                );
            }
            Some((sub, args)) if sub == "create-symlinks" => {
                for l in flag_values(&args, "--link") {
                    self.links.push(Link::parse(&l)?);
                }
            }
            Some((sub, _)) => self.notes.push(format!(
                "hook {} {sub}: not needed when injecting into a running container; skipped",
                h.path().display()
            )),
            None => match stage {
                Stage::Prestart | Stage::CreateRuntime | Stage::CreateContainer => {
                    self.hooks.push((stage, h.clone()))
                }
                _ => self.notes.push(format!(
                    "hook {} ({stage:?}): a hook cannot add hooks of this stage; skipped",
                    h.path().display()
                )),
            },
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
            && self.mounts.is_empty()
            && self.links.is_empty()
            && !self.refresh_ldcache
            && self.hooks.is_empty()
    }
}

/// The container to inject into.
#[derive(Debug, Clone)]
pub struct Target {
    /// The rootfs as a path in the container's mount namespace (before pivot_root it is the
    /// bundle's root.path).
    pub rootfs: PathBuf,
    /// The container's init process: its mount namespace is entered and its device cgroup
    /// gets the rules. None: work in the hook's own namespace, no cgroup (LXC).
    pub pid: Option<i32>,
    /// The OCI state JSON, for hooks run as processes.
    pub state_json: Vec<u8>,
}

/// What happened to the device cgroup rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulesOutcome {
    /// Written to this v1 cgroup directory.
    Written(PathBuf),
    /// Not written: no pid, cgroup v2, or no devices cgroup; the lines a user would need.
    NotWritten {
        why: String,
        lines: Vec<String>,
    },
    None,
}

/// What [`apply`] did besides succeeding.
#[derive(Debug, Clone)]
pub struct Report {
    pub rules: RulesOutcome,
    pub warnings: Vec<String>,
}

/// A mount prepared on the host.
struct Prepared {
    destination: PathBuf,
    tree: OwnedFd,
    dir: bool,
}

fn prepare_mount(m: &OciMount, userns: Option<&OwnedFd>) -> Result<Prepared, LiveError> {
    let destination = m.destination().clone();
    let options = m.options().clone().unwrap_or_default();
    let typ = m.typ().clone().unwrap_or_default();
    let bind = options.iter().any(|o| o == "bind" || o == "rbind");
    if !(bind && (typ.is_empty() || typ == "bind" || typ == "none")) {
        return Err(LiveError::UnsupportedMount {
            destination,
            typ: if typ.is_empty() { "(none)".into() } else { typ },
        });
    }
    let source = m.source().clone().ok_or_else(|| LiveError::NoSource {
        destination: destination.clone(),
    })?;
    let err = |source_err: std::io::Error| LiveError::Source {
        destination: destination.clone(),
        source_path: source.clone(),
        source: source_err,
    };
    let meta = std::fs::metadata(&source).map_err(err)?;
    let recursive = options.iter().any(|o| o == "rbind");
    let tree = mountapi::clone_tree(&source, recursive)
        .map_err(|e| err(std::io::Error::from_raw_os_error(e as i32)))?;
    let mut attr = mountapi::attrs_for(&options);
    if options.iter().any(|o| o == "idmap" || o == "ridmap") {
        if let Some(fd) = userns {
            attr.attr_set |= mountapi::MOUNT_ATTR_IDMAP;
            attr.userns_fd = fd.as_raw_fd() as u64;
        }
    }
    mountapi::set_attr(&tree, &attr, recursive).map_err(|source| LiveError::Attr {
        destination: destination.clone(),
        source,
    })?;
    Ok(Prepared {
        destination,
        tree,
        dir: meta.is_dir(),
    })
}

fn node_kind(t: LinuxDeviceType) -> SFlag {
    match t {
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    }
}

/// Bind-mounts the host's device node on `path` (rw, nosuid, noexec): the way to give a
/// device to a container whose user namespace may not `mknod` (and whose own /dev tmpfs
/// would not honour device nodes anyway).
fn bind_node(root: &Root, path: &Path, host: &Path) -> Result<(), LiveError> {
    let tree = mountapi::clone_tree(host, false).map_err(|e| LiveError::Source {
        destination: path.to_path_buf(),
        source_path: host.to_path_buf(),
        source: std::io::Error::from_raw_os_error(e as i32),
    })?;
    let attr = mountapi::attrs_for(&["nosuid".to_string(), "noexec".to_string()]);
    mountapi::set_attr(&tree, &attr, false).map_err(|source| LiveError::Attr {
        destination: path.to_path_buf(),
        source,
    })?;
    let target = root.mount_target(path, false)?;
    mountapi::attach(&tree, target.as_fd()).map_err(|source| LiveError::Attach {
        destination: path.to_path_buf(),
        source,
    })
}

/// Creates one device node beneath `root`; an identical node already there is fine. Where
/// `mknod` is refused (EPERM: a user namespace), the host node is bind-mounted instead.
fn make_node(root: &Root, d: &LinuxDevice, host: Option<&Path>) -> Result<(), LiveError> {
    let path = d.path().clone();
    let (parent, name) = root.parent_of(&path)?;
    let kind = node_kind(d.typ());
    let dev = nix::sys::stat::makedev(d.major() as u64, d.minor() as u64);
    let mode = Mode::from_bits_truncate(d.file_mode().unwrap_or(0o666) & 0o7777);
    match mknodat(Some(parent.as_raw_fd()), name, kind, mode, dev) {
        Ok(()) => {}
        Err(Errno::EEXIST) => {
            let st = nix::sys::stat::fstatat(
                Some(parent.as_raw_fd()),
                name,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|source| LiveError::Device {
                path: path.clone(),
                source,
            })?;
            let same_kind = st.st_mode & SFlag::S_IFMT.bits() == kind.bits();
            if !same_kind || (kind != SFlag::S_IFIFO && st.st_rdev != dev) {
                return Err(LiveError::DeviceExists { path });
            }
            return Ok(());
        }
        Err(source) => {
            return match (source, host) {
                (Errno::EPERM, Some(host)) => bind_node(root, &path, host),
                _ => Err(LiveError::Device { path, source }),
            }
        }
    }
    fchownat(
        Some(parent.as_raw_fd()),
        name,
        Some(Uid::from_raw(d.uid().unwrap_or(0))),
        Some(Gid::from_raw(d.gid().unwrap_or(0))),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|source| LiveError::Device { path, source })
}

fn run_hook(h: &OciHook, state: &[u8]) -> Result<(), LiveError> {
    use std::io::Write;
    let path = h.path().clone();
    let args = h.args().clone().unwrap_or_default();
    let mut cmd = Command::new(&path);
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for kv in h.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let spawn_err = |source| LiveError::HookSpawn {
        path: path.clone(),
        source,
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(state);
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(LiveError::HookFailed {
            path,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Opens the container's rootfs from inside its mount namespace, refusing a container that
/// already pivoted (its root is no longer the namespace's root).
fn open_root(target: &Target, pid_root: Option<&std::fs::File>) -> Result<Root, LiveError> {
    if let (Some(pid), Some(pid_root)) = (target.pid, pid_root) {
        let ours = std::fs::metadata("/").map_err(|source| LiveError::PidRoot { pid, source })?;
        let theirs = pid_root
            .metadata()
            .map_err(|source| LiveError::PidRoot { pid, source })?;
        if (ours.dev(), ours.ino()) != (theirs.dev(), theirs.ino()) {
            return Err(LiveError::Pivoted { pid });
        }
    }
    Ok(Root::open(&target.rootfs)?)
}

/// The work done inside the container's mount namespace.
fn inside(
    plan: &LivePlan,
    target: &Target,
    prepared: Vec<Prepared>,
    pid_root: Option<&std::fs::File>,
    ldconfig: &Path,
) -> Result<Vec<String>, LiveError> {
    let root = open_root(target, pid_root)?;
    for d in &plan.devices {
        let host = plan
            .device_sources
            .iter()
            .rev()
            .find(|(c, _)| c == d.path())
            .map(|(_, h)| h.as_path());
        make_node(&root, d, host)?;
    }
    for p in &prepared {
        let t = root.mount_target(&p.destination, p.dir)?;
        mountapi::attach(&p.tree, t.as_fd()).map_err(|source| LiveError::Attach {
            destination: p.destination.clone(),
            source,
        })?;
    }
    let outcomes = symlinks::create(&root, &plan.links)?;
    let warnings = symlinks::kept_warnings(&plan.links, &outcomes);
    if plan.refresh_ldcache {
        ldcache::update(&root, &plan.ld_folders, ldconfig)?;
    }
    for (stage, h) in &plan.hooks {
        if *stage == Stage::CreateContainer {
            run_hook(h, &target.state_json)?;
        }
    }
    Ok(warnings)
}

/// Applies `plan` to the running container `target`.
pub fn apply(plan: &LivePlan, target: &Target, ldconfig: &Path) -> Result<Report, LiveError> {
    if let Some(pid) = target.pid {
        nsenter::check_container_pid(pid)?;
    }
    // Host side first: everything that can fail for want of a host file fails here.
    let userns = match target.pid {
        Some(pid)
            if plan.mounts.iter().any(|m| {
                m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "idmap" || o == "ridmap")
            }) =>
        {
            let path = format!("/proc/{pid}/ns/user");
            Some(OwnedFd::from(
                std::fs::File::open(path).map_err(|source| LiveError::UserNs { pid, source })?,
            ))
        }
        _ => None,
    };
    let prepared = plan
        .mounts
        .iter()
        .map(|m| prepare_mount(m, userns.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let pid_root = match target.pid {
        Some(pid) => Some(
            std::fs::File::open(format!("/proc/{pid}/root"))
                .map_err(|source| LiveError::PidRoot { pid, source })?,
        ),
        None => None,
    };
    for (stage, h) in &plan.hooks {
        if matches!(stage, Stage::Prestart | Stage::CreateRuntime) {
            run_hook(h, &target.state_json)?;
        }
    }

    let ns = target.pid.map_or(Namespace::Current, Namespace::OfPid);
    let mut warnings = plan.notes.clone();
    warnings.extend(nsenter::run_in(ns, || {
        inside(plan, target, prepared, pid_root.as_ref(), ldconfig)
    })??);

    let lines: Vec<String> = plan.rules.iter().map(cgroup::rule_line).collect();
    let rules = if plan.rules.is_empty() {
        RulesOutcome::None
    } else {
        match target.pid {
            None => RulesOutcome::NotWritten {
                why: "no container process to find the cgroup of".into(),
                lines,
            },
            Some(pid) => match cgroup::locate(pid)? {
                DeviceCgroup::V1(dir) => {
                    cgroup::allow_v1(&dir, &plan.rules)?;
                    RulesOutcome::Written(dir)
                }
                DeviceCgroup::V2(path) => RulesOutcome::NotWritten {
                    why: format!(
                        "cgroup v2 ({path}): device rules are an eBPF program this hook does not change"
                    ),
                    lines,
                },
                DeviceCgroup::Unconfined => RulesOutcome::None,
            },
        }
    };
    Ok(Report { rules, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        let a: Vec<String> = ["--folder", "/a", "--folder=/b", "--x", "--folder"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(flag_values(&a, "--folder"), ["/a", "/b"]);
    }

    #[test]
    fn own_hooks_are_recognised() {
        let mk = |path: &str, args: &[&str]| {
            let mut h = OciHook::default();
            h.set_path(path.into());
            h.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
            h
        };
        let h = mk(
            "/usr/bin/nvidia-ctk",
            &["nvidia-ctk", "hook", "update-ldcache", "--folder", "/x"],
        );
        assert_eq!(
            own_subcommand(&h),
            Some((
                "update-ldcache".into(),
                vec!["--folder".into(), "/x".into()]
            ))
        );
        let h = mk("/usr/bin/nvbind-hook", &["nvbind-hook", "create-symlinks"]);
        assert_eq!(own_subcommand(&h).unwrap().0, "create-symlinks");
        assert_eq!(own_subcommand(&mk("/bin/true", &["true", "x"])), None);
    }
}
