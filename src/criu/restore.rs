//! Restore: recreate a checkpointed container's processes from an image directory, the way
//! runc's Restore does it, and record the result as an ordinary libcontainer container so
//! `state`, `kill`, `pause` and `delete` work on it.
//!
//! - the rootfs is bind-mounted on `<state dir>/criu-root` (CRIU wants a mount point whose
//!   parent is not overmounted) and CRIU restores the mount namespace on top of it;
//! - CRIU itself is moved into the container's cgroups (created from the spec, limits set)
//!   before it reads the request, and `cg_root` points it there, so the restored tasks land in
//!   the container's cgroups; `--manage-cgroups-mode` is passed through;
//! - bind mounts, cgroup v1 hierarchies, masked files and device nodes are external mounts,
//!   mapped back to their host paths; network and PID namespaces given by path are handed
//!   over with `inherit_fd`;
//! - stdio that was a pipe at dump time is replaced by our own stdio (as runc does), a
//!   terminal's master goes to `--console-socket`;
//! - the restored init is our child (`rst_sibling`); its PID comes from CRIU's answer.

use std::fs::{self, File};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use libcgroups::common::{
    create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager, ControllerOpt,
};
use libcontainer::config::YoukiConfig;
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Spec};
use rust_criu::rust_criu_protobuf::rpc;

use super::dump::COMMIT_MARKER;
use super::dump::{
    cgroup_v1_mount_points, ext_mount, has_namespace, is_bind, mount_destination, namespace_path,
    ns_key,
};
use super::swrk::{self, Call, NotifyError};
use super::{Criu, CriuError, DESCRIPTORS_JSON};

pub const RESTORE_LOG: &str = "restore.log";

#[derive(Debug, Clone, Default)]
pub struct RestoreOpts {
    pub image_path: PathBuf,
    pub work_path: Option<PathBuf>,
    pub flags: super::CriuFlags,
    pub console_socket: Option<PathBuf>,
    pub systemd_cgroup: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot read the checkpoint in {path}")]
    Images {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no checkpoint (no {DESCRIPTORS_JSON}); pass the --image-path that checkpoint wrote")]
    NotAnImage { path: PathBuf },
    #[error("the checkpoint in {path} is incomplete: a checkpoint was killed while it moved its images there ({COMMIT_MARKER}); checkpoint the container again")]
    Incomplete { path: PathBuf },
    #[error("cannot prepare {path} for the restore")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount the rootfs {path} for CRIU")]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot open namespace {path}")]
    Namespace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the container's cgroups")]
    Cgroup(#[source] NotifyError),
    #[error("cannot record the config of the restored container")]
    Config(#[source] libcontainer::config::ConfigError),
    #[error(transparent)]
    Criu(#[from] CriuError),
    #[error("criu reported no PID for the restored init")]
    NoPid,
}

/// Restores into the fresh state directory `dir` (created by the caller, empty). Returns the
/// host PID of the restored init. On failure the cgroups made here are removed again; the
/// caller removes `dir`.
pub fn restore(
    criu: &Criu,
    id: &str,
    dir: &Path,
    spec: &Spec,
    bundle: &Path,
    rootfs: &Path,
    opts: &RestoreOpts,
) -> Result<i32, RestoreError> {
    let images = &opts.image_path;
    if images.join(COMMIT_MARKER).exists() {
        return Err(RestoreError::Incomplete {
            path: images.clone(),
        });
    }
    let descriptors: Vec<String> = match fs::read(images.join(DESCRIPTORS_JSON)) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| RestoreError::Images {
            path: images.clone(),
            source: e.into(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RestoreError::NotAnImage {
                path: images.clone(),
            })
        }
        Err(source) => {
            return Err(RestoreError::Images {
                path: images.clone(),
                source,
            })
        }
    };
    let images_dir = File::open(images).map_err(|source| RestoreError::Images {
        path: images.clone(),
        source,
    })?;
    let work = match &opts.work_path {
        Some(wp) => {
            let _ = fs::DirBuilder::new().mode(0o700).recursive(true).create(wp);
            Some(File::open(wp).map_err(|source| RestoreError::Prepare {
                path: wp.clone(),
                source,
            })?)
        }
        None => None,
    };

    let config = YoukiConfig::from_spec(spec, id).map_err(RestoreError::Config)?;
    config.save(dir).map_err(RestoreError::Config)?;
    let cgroups = create_cgroup_manager(CgroupConfig {
        cgroup_path: config.cgroup_path.clone(),
        systemd_cgroup: opts.systemd_cgroup,
        container_name: id.to_string(),
    })
    .map_err(|e| RestoreError::Cgroup(e.into()))?;

    prepare_mountpoints(spec, bundle, rootfs)?;
    let root = CriuRoot::mount(rootfs, &dir.join("criu-root"))?;

    let mut o = rpc::Criu_opts::new();
    o.set_images_dir_fd(images_dir.as_raw_fd());
    let mut keep = vec![images_dir.as_raw_fd()];
    if let Some(w) = &work {
        o.set_work_dir_fd(w.as_raw_fd());
        keep.push(w.as_raw_fd());
    }
    o.set_log_level(4);
    o.set_log_file(RESTORE_LOG.into());
    o.set_evasive_devices(true);
    o.set_rst_sibling(true);
    o.set_root(root.path.display().to_string());
    o.set_manage_cgroups(true);
    opts.flags.apply(&mut o);
    o.set_notify_scripts(true);
    o.set_orphan_pts_master(true);
    if let Some(conf) = super::config_file(spec) {
        o.set_config_file(conf);
    }

    for m in spec.mounts().iter().flatten() {
        if is_bind(m) {
            o.ext_mnt.push(ext_mount(
                mount_destination(rootfs, m).display().to_string(),
                bind_source(bundle, m).display().to_string(),
            ));
        }
    }
    let linux = spec.linux().as_ref();
    if linux.is_some_and(|l| l.masked_paths().as_ref().is_some_and(|m| !m.is_empty())) {
        o.ext_mnt
            .push(ext_mount("/dev/null".into(), "/dev/null".into()));
    }
    for d in linux
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        let p = d.path().display().to_string();
        o.ext_mnt.push(ext_mount(p.clone(), p));
    }
    // Namespaces the engine made (given by path) are handed over, not recreated.
    let mut ns_files = Vec::new();
    for ns in [LinuxNamespaceType::Network, LinuxNamespaceType::Pid] {
        if let Some(path) = namespace_path(spec, ns) {
            let f = File::open(&path).map_err(|source| RestoreError::Namespace {
                path: path.clone(),
                source,
            })?;
            let mut inherit = rpc::Inherit_fd::new();
            inherit.set_key(ns_key(ns).into());
            inherit.set_fd(f.as_raw_fd());
            o.inherit_fd.push(inherit);
            keep.push(f.as_raw_fd());
            ns_files.push(f);
        }
    }
    // stdio that was a pipe at dump time becomes ours (the engine's new pipes).
    for (n, d) in descriptors.iter().enumerate() {
        if d.contains("pipe:") {
            let mut inherit = rpc::Inherit_fd::new();
            inherit.set_key(d.clone());
            inherit.set_fd(n as i32);
            o.inherit_fd.push(inherit);
        }
    }

    let mut req = rpc::Criu_req::new();
    req.set_type(rpc::Criu_req_type::RESTORE);
    req.opts = protobuf::MessageField::some(o);

    let resources = linux
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let cgroup_v1 = !has_namespace(spec, LinuxNamespaceType::Cgroup);
    let log = opts
        .work_path
        .clone()
        .unwrap_or_else(|| images.clone())
        .join(RESTORE_LOG);
    let mut notified_pid = None;
    let console = opts.console_socket.clone();
    let result = swrk::call(
        Call {
            binary: &criu.path,
            op: "restore",
            keep_fds: keep,
            inherit_stdio: true,
            log: Some(&log),
        },
        req,
        |criu_pid, req| enter_cgroups(&cgroups, &resources, criu_pid, cgroup_v1, req),
        |notify, fd| {
            match notify.script() {
                "post-restore" => notified_pid = Some(notify.pid()),
                "orphan-pts-master" => send_console(console.as_deref(), fd)?,
                _ => {}
            }
            Ok(())
        },
    );
    drop(root);
    drop(ns_files);
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            if let Err(err) = cgroups.remove() {
                tracing::warn!("cannot remove the cgroups of failed restore: {err}");
            }
            return Err(e.into());
        }
    };
    let pid = match resp.restore.pid() {
        0 => notified_pid.ok_or(RestoreError::NoPid)?,
        p => p,
    };
    Ok(pid)
}

/// runc's criuApplyCgroups: CRIU joins the container's cgroups (limits applied) before it
/// restores anything, and `cg_root` makes the dumped cgroup paths land under them.
fn enter_cgroups(
    cgroups: &AnyCgroupManager,
    resources: &LinuxResources,
    criu_pid: i32,
    cgroup_v1: bool,
    req: &mut rpc::Criu_req,
) -> Result<(), NotifyError> {
    let pid = nix::unistd::Pid::from_raw(criu_pid);
    cgroups
        .add_task(pid)
        .map_err(|e| format!("cannot move criu into the container's cgroups: {e}"))?;
    cgroups
        .apply(&ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
            skip_devices: false,
        })
        .map_err(|e| format!("cannot apply the container's resource limits: {e}"))?;
    let table = fs::read_to_string(format!("/proc/{criu_pid}/cgroup"))?;
    let opts = req.opts.mut_or_insert_default();
    let v1_mounts = if cgroup_v1 {
        cgroup_v1_mount_points()
    } else {
        vec![]
    };
    let hybrid = table.lines().any(|l| !l.starts_with("0::"));
    for (ctrl, path) in parse_cgroup_table(&table) {
        if ctrl.is_empty() && hybrid {
            // The cgroup2 part of a hybrid host carries no controller of the container's.
            continue;
        }
        let mut root = rpc::Cgroup_root::new();
        root.set_ctrl(ctrl.clone());
        root.set_path(path.clone());
        opts.cg_root.push(root);
        // cgroup v1 hierarchies are bind mounts of the container's own cgroup.
        for mp in &v1_mounts {
            let name = mp.trim_start_matches("/sys/fs/cgroup/");
            let matches = name == ctrl || ctrl.strip_prefix("name=").is_some_and(|n| n == name);
            if matches {
                opts.ext_mnt
                    .push(ext_mount(mp.clone(), format!("{mp}{path}")));
            }
        }
    }
    Ok(())
}

/// `/proc/PID/cgroup` lines "ID:CONTROLLERS:PATH" -> (controllers, path).
fn parse_cgroup_table(table: &str) -> Vec<(String, String)> {
    table
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            let ctrl = parts.next()?;
            let path = parts.next()?;
            Some((ctrl.to_string(), path.to_string()))
        })
        .collect()
}

fn send_console(socket: Option<&Path>, fd: Option<OwnedFd>) -> Result<(), NotifyError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::io::IoSlice;
    let fd = fd.ok_or("criu sent no terminal")?;
    let socket = socket.ok_or("the container has a terminal; pass --console-socket")?;
    let stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot connect to --console-socket {}: {e}",
            socket.display()
        )
    })?;
    let raw = [fd.as_raw_fd()];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(b"/dev/ptmx")],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// Creates missing mount points for bind mounts that are not below a tmpfs (CRIU restores
/// tmpfs contents itself), as runc's prepareCriuRestoreMounts does.
fn prepare_mountpoints(spec: &Spec, bundle: &Path, rootfs: &Path) -> Result<(), RestoreError> {
    let mounts: Vec<_> = spec.mounts().iter().flatten().collect();
    let tmpfs: Vec<&Path> = mounts
        .iter()
        .filter(|m| m.typ().as_deref() == Some("tmpfs"))
        .map(|m| m.destination().as_path())
        .collect();
    // (destination as mounted, host source) of the bind mounts made so far, in spec order.
    let mut binds: Vec<(PathBuf, PathBuf)> = Vec::new();
    for m in mounts.iter().filter(|m| is_bind(m)) {
        let dest = m.destination();
        let resolved = mount_destination(rootfs, m);
        let source = bind_source(bundle, m);
        binds.push((resolved.clone(), source.clone()));
        if tmpfs.iter().any(|t| dest.starts_with(t) && dest != *t) {
            continue;
        }
        let target = host_mountpoint(rootfs, &binds[..binds.len() - 1], &resolved);
        if target.symlink_metadata().is_ok() {
            continue;
        }
        let made = if source.is_dir() || m.source().is_none() {
            fs::create_dir_all(&target)
        } else {
            target
                .parent()
                .map_or(Ok(()), fs::create_dir_all)
                .and_then(|_| File::create(&target).map(drop))
        };
        made.map_err(|source| RestoreError::Prepare {
            path: target.clone(),
            source,
        })?;
    }
    Ok(())
}

/// A bind mount's source on the host (a relative one is the bundle's).
fn bind_source(bundle: &Path, m: &oci_spec::runtime::Mount) -> PathBuf {
    let src = m.source().clone().unwrap_or_default();
    if src.is_relative() {
        bundle.join(src)
    } else {
        src
    }
}

/// Where the mountpoint `dest` (inside the container) lives on the host, given the bind
/// mounts made before it: a destination below an earlier bind mount's (runc's checkpoint.bats
/// "nested bind mounts": /test/for/nested under /test) is in that mount's source, which the
/// container's create wrote it into; otherwise it is in the rootfs. runc gets the same by
/// bind-mounting each source over the rootfs while it makes the mountpoints.
fn host_mountpoint(rootfs: &Path, earlier: &[(PathBuf, PathBuf)], dest: &Path) -> PathBuf {
    // The deepest holder; of two at the same destination the later one, which covers the
    // other (`max_by_key` keeps the last of equal keys).
    let holder = earlier
        .iter()
        .filter(|(at, _)| dest.starts_with(at) && dest != at)
        .max_by_key(|(at, _)| at.components().count());
    match holder {
        Some((at, source)) => source.join(dest.strip_prefix(at).unwrap_or(dest)),
        None => rootfs.join(dest.strip_prefix("/").unwrap_or(dest)),
    }
}

/// The rootfs bind-mounted where CRIU wants it; unmounted and removed on drop.
struct CriuRoot {
    path: PathBuf,
}

impl CriuRoot {
    fn mount(rootfs: &Path, at: &Path) -> Result<Self, RestoreError> {
        use nix::mount::{mount, MsFlags};
        fs::DirBuilder::new()
            .mode(0o755)
            .create(at)
            .map_err(|source| RestoreError::Prepare {
                path: at.to_path_buf(),
                source,
            })?;
        if let Err(source) = mount(
            Some(rootfs),
            at,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ) {
            let _ = fs::remove_dir(at);
            return Err(RestoreError::Mount {
                path: rootfs.to_path_buf(),
                source,
            });
        }
        Ok(Self {
            path: at.to_path_buf(),
        })
    }
}

impl Drop for CriuRoot {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incomplete_checkpoint_is_refused_before_criu_runs() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(DESCRIPTORS_JSON), "[]").unwrap();
        fs::write(dir.path().join(COMMIT_MARKER), "").unwrap();
        let criu = Criu {
            path: "/nonexistent/criu".into(),
            version: 40100,
        };
        let opts = RestoreOpts {
            image_path: dir.path().to_path_buf(),
            ..Default::default()
        };
        let err = restore(
            &criu,
            "c",
            dir.path(),
            &Spec::default(),
            dir.path(),
            dir.path(),
            &opts,
        )
        .unwrap_err();
        assert!(matches!(err, RestoreError::Incomplete { .. }), "{err}");
        assert!(err.to_string().contains("checkpoint the container again"));
    }

    #[test]
    fn mountpoints_are_made_where_the_mounts_were_made() {
        // runc's checkpoint.bats "nested bind mounts" and "bind mount, destination is
        // symlink": /test/for/nested goes into /test's source, /conf follows its symlink.
        let dir = tempfile::tempdir().unwrap();
        let (bundle, rootfs) = (dir.path(), dir.path().join("rootfs"));
        fs::create_dir_all(rootfs.join("real")).unwrap();
        std::os::unix::fs::symlink("/real/conf", rootfs.join("conf")).unwrap();
        for d in ["bind1", "bind2", "conf-src"] {
            fs::create_dir(bundle.join(d)).unwrap();
        }
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "mounts": [
                {"destination": "/test", "type": "bind", "source": "bind1", "options": ["bind"]},
                {"destination": "/test/for/nested", "type": "bind", "source": "bind2",
                 "options": ["bind"]},
                {"destination": "/conf", "source": "conf-src", "options": ["bind"]},
            ]
        }))
        .unwrap();
        prepare_mountpoints(&spec, bundle, &rootfs).unwrap();
        assert!(rootfs.join("test").is_dir());
        assert!(bundle.join("bind1/for/nested").is_dir());
        assert!(!rootfs.join("test/for").exists());
        assert!(rootfs.join("real/conf").is_dir());
        assert!(fs::symlink_metadata(rootfs.join("conf"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn cgroup_table_parses_v1_and_v2_lines() {
        let t = "12:cpu,cpuacct:/nvbind/c1\n1:name=systemd:/nvbind/c1\n0::/\n";
        let rows = parse_cgroup_table(t);
        assert_eq!(rows[0], ("cpu,cpuacct".into(), "/nvbind/c1".into()));
        assert_eq!(rows[1].0, "name=systemd");
        assert_eq!(rows[2], (String::new(), "/".into()));
    }
}
