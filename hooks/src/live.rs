//! Applying CDI container edits to a container that already exists.
//!
//! A [`LivePlan`] (see [`crate::plan`]: the edits through the runtime's own
//! [`nvbind_cdi::apply::apply`]) holds what the edits add as OCI entries; [`apply`] does for
//! the running container what a runtime would have done while creating it:
//!
//! 1. host side, before anything changes: every bind-mount source is cloned as a detached,
//!    read-only (per its options), private mount tree; a missing source fails here;
//! 2. in the container's mount namespace (a thread that `setns`es, see [`crate::nsenter`]):
//!    device nodes are made (`mknodat`, type/major/minor/mode of the host node), the trees
//!    attached on targets resolved inside the rootfs, then the links and the linker cache
//!    made by nvbind itself through the container's root (no ldconfig is run);
//! 3. the device cgroup gets the allow rules: v1 `devices.allow`, or on a v2-only host the
//!    runtime's eBPF device program extended ([`crate::devbpf`]).
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
use oci_spec::runtime::{Hook as OciHook, LinuxDevice, LinuxDeviceType, Mount as OciMount};

use crate::cgroup::{self, DeviceCgroup};
use crate::devbpf;
use crate::error::LiveError;
use crate::mountapi;
use crate::nsenter::{self, Namespace};
use crate::plan::{LivePlan, Stage};
use nvbind_cdi::rootfs::Root;

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
    /// (st_dev, st_ino) of the source, to recognise a target that already shows it.
    identity: (u64, u64),
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
        identity: (meta.dev(), meta.ino()),
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

/// Creates one device node beneath `root`; an identical node already there is fine. For a
/// container in a user namespace (`bind`: a node on its own /dev would not open) or where
/// `mknod` is refused (EPERM: the hook itself runs in a user namespace), the host node is
/// bind-mounted instead, as runtimes do.
fn make_node(
    root: &Root,
    d: &LinuxDevice,
    host: Option<&Path>,
    bind: bool,
) -> Result<(), LiveError> {
    let path = d.path().clone();
    if let (true, Some(host)) = (bind, host) {
        return bind_node(root, &path, host);
    }
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

/// The container's rootfs, opened on the host side. With a pid it is reached through
/// `/proc/PID/root`, which leads into the container's mount namespace (its /dev tmpfs and
/// other mounts included): before pivot_root (runc's and crun's prestart) the rootfs is
/// root.path below that root; after it (a created or running container) it is that root
/// itself, recognised by being the same directory as root.path seen from the host.
fn open_root(target: &Target) -> Result<Root, LiveError> {
    let Some(pid) = target.pid else {
        return Ok(Root::open(&target.rootfs)?);
    };
    let pid_root = PathBuf::from(format!("/proc/{pid}/root"));
    let theirs =
        std::fs::metadata(&pid_root).map_err(|source| LiveError::PidRoot { pid, source })?;
    let pivoted = std::fs::metadata(&target.rootfs)
        .is_ok_and(|m| (m.dev(), m.ino()) == (theirs.dev(), theirs.ino()));
    let path = if pivoted {
        pid_root
    } else {
        pid_root.join(target.rootfs.strip_prefix("/").unwrap_or(&target.rootfs))
    };
    Ok(Root::open(&path)?)
}

/// The work done inside the container's mount namespace (attaching mounts needs it; the
/// rest works through `root`'s fd and is done here too, in order).
fn inside(
    plan: &LivePlan,
    root: &Root,
    prepared: Vec<Prepared>,
    bind_devices: bool,
) -> Result<Vec<String>, LiveError> {
    for d in &plan.devices {
        let host = plan
            .device_sources
            .iter()
            .rev()
            .find(|(c, _)| c == d.path())
            .map(|(_, h)| h.as_path());
        make_node(root, d, host, bind_devices)?;
    }
    for p in &prepared {
        let t = root.mount_target(&p.destination, p.dir)?;
        // Already bind-mounted there (the hook ran twice): leave it, do not stack mounts.
        let st = nix::sys::stat::fstat(t.as_raw_fd()).map_err(|source| LiveError::Attach {
            destination: p.destination.clone(),
            source,
        })?;
        if (st.st_dev, st.st_ino) == p.identity {
            continue;
        }
        mountapi::attach(&p.tree, t.as_fd()).map_err(|source| LiveError::Attach {
            destination: p.destination.clone(),
            source,
        })?;
    }
    // The links and the linker cache, through the root's fd as the container's root user.
    Ok(plan.steps.apply(root)?.warnings)
}

/// Applies `plan` to the running container `target`.
pub fn apply(plan: &LivePlan, target: &Target) -> Result<Report, LiveError> {
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
    let root = open_root(target)?;
    for (stage, h) in &plan.hooks {
        if matches!(stage, Stage::Prestart | Stage::CreateRuntime) {
            run_hook(h, &target.state_json)?;
        }
    }

    let ns = target.pid.map_or(Namespace::Current, Namespace::OfPid);
    let mut warnings = plan.notes.clone();
    // A container with its own user namespace: files the hook creates there (mount targets on
    // its /dev tmpfs, links, directories) must belong to its root, or the kernel refuses
    // them (EOVERFLOW) on filesystems that namespace mounted; and device nodes are
    // bind-mounted. The thread's filesystem ids switch to the mapped root.
    let userns_root = target
        .pid
        .filter(|p| nsenter::has_own_user_ns(*p))
        .and_then(nsenter::mapped_root);
    let bind_devices = target.pid.is_some_and(nsenter::has_own_user_ns);
    warnings.extend(nsenter::run_in(ns, || {
        if let Some((uid, gid)) = userns_root {
            nix::unistd::setfsgid(Gid::from_raw(gid));
            nix::unistd::setfsuid(Uid::from_raw(uid));
        }
        inside(plan, &root, prepared, bind_devices)
    })??);
    if plan.hooks.iter().any(|(s, _)| *s == Stage::CreateContainer) {
        nsenter::run_in(ns, || {
            for (stage, h) in &plan.hooks {
                if *stage == Stage::CreateContainer {
                    run_hook(h, &target.state_json)?;
                }
            }
            Ok::<(), LiveError>(())
        })??;
    }

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
                DeviceCgroup::V2(dir) => {
                    if devbpf::allow(&dir, &plan.rules)? {
                        if let Some(w) = allow_in_systemd_unit(&dir, &plan.rules) {
                            warnings.push(w);
                        }
                        RulesOutcome::Written(dir)
                    } else {
                        RulesOutcome::None
                    }
                }
                DeviceCgroup::Unconfined => RulesOutcome::None,
            },
        }
    };
    Ok(Report { rules, warnings })
}

/// The systemd unit that holds a container's cgroup: the cgroup itself when it is a scope
/// (runc's and Docker's, containerd's, Podman's `--systemd-cgroup` layout), or its parent
/// (crun puts the container in a `container` child of the scope). None for cgroupfs layouts.
pub fn systemd_unit_of(dir: &std::path::Path) -> Option<String> {
    let name = |p: &std::path::Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let own = name(dir)?;
    if own.ends_with(".scope") {
        return Some(own);
    }
    name(dir.parent()?).filter(|n| n.ends_with(".scope"))
}

/// The runtime's systemd driver put the container in a unit whose `DeviceAllow` says what the
/// spec said (runc: `DevicePolicy=strict`); systemd attaches that list as its own device
/// program again at every `systemctl daemon-reload`, and a device the hook granted only in
/// the runtime's program is then denied ("Failed to initialize NVML: Unknown Error", the
/// NVIDIA toolkit's issues 48 and 251). So the granted devices go into the unit too. Not
/// fatal (a warning): the container works until the next reload.
fn allow_in_systemd_unit(
    dir: &std::path::Path,
    rules: &[oci_spec::runtime::LinuxDeviceCgroup],
) -> Option<String> {
    if !libcgroups::systemd::booted() {
        return None;
    }
    let unit = systemd_unit_of(dir)?;
    match libcgroups::systemd::add_device_allow(&unit, rules) {
        Ok(()) => None,
        Err(e) => Some(format!(
            "cannot add the devices to the DeviceAllow of systemd unit {unit} ({e}): they are denied again after the next `systemctl daemon-reload`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::systemd_unit_of;

    #[test]
    fn the_unit_of_a_cgroup() {
        let unit = |p: &str| systemd_unit_of(Path::new(p));
        assert_eq!(
            unit("/sys/fs/cgroup/system.slice/runc-c1.scope").as_deref(),
            Some("runc-c1.scope")
        );
        assert_eq!(
            unit("/sys/fs/cgroup/machine.slice/libpod-c1.scope/container").as_deref(),
            Some("libpod-c1.scope")
        );
        assert_eq!(unit("/sys/fs/cgroup/docker/c1"), None);
        assert_eq!(unit("/sys/fs/cgroup/system.slice"), None);
    }
}
