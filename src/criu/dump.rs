//! Checkpoint: dump a running container's processes into an image directory, as runc does.
//!
//! The dump is written into a staging directory inside the image directory and moved into
//! place only when CRIU reports success, so a dump that fails half-way (a full disk) leaves an
//! earlier checkpoint in that directory as it was; the failed attempt's log is kept.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use rust_criu::rust_criu_protobuf::rpc;

use super::swrk::{self, Call, NotifyError};
use super::{Criu, CriuError, DESCRIPTORS_JSON};

pub const DUMP_LOG: &str = "dump.log";

/// runc's checkpoint flags.
#[derive(Debug, Clone, Default)]
pub struct DumpOpts {
    pub image_path: PathBuf,
    pub work_path: Option<PathBuf>,
    pub leave_running: bool,
    pub flags: super::CriuFlags,
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("cannot prepare the image directory {path}")]
    ImageDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the container has no init process recorded")]
    NoPid,
    #[error("cannot open namespace {path}")]
    Namespace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Criu(#[from] CriuError),
    #[error("the dump succeeded but moving it into {path} failed")]
    Commit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Dumps `container` (running) whose spec is `spec` and rootfs `rootfs`. `frozen` runs while
/// CRIU still holds the tasks frozen after a successful dump (a rootfs snapshot is taken
/// there, so files and memory are from the same instant); its failure fails the dump and
/// CRIU lets the tasks run on.
pub fn dump(
    criu: &Criu,
    container: &Container,
    spec: &Spec,
    rootfs: &Path,
    opts: &DumpOpts,
    frozen: impl FnOnce() -> Result<(), NotifyError>,
) -> Result<(), DumpError> {
    let pid = container.pid().ok_or(DumpError::NoPid)?.as_raw();
    let image_dir = &opts.image_path;
    let dir_err = |source| DumpError::ImageDir {
        path: image_dir.clone(),
        source,
    };
    match fs::DirBuilder::new().mode(0o700).create(image_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && image_dir.is_dir() => {}
        Err(e) => return Err(dir_err(e)),
    }
    remove_stale_staging(image_dir);
    let staging = image_dir.join(format!("{STAGING_PREFIX}{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    // Recorded first: a checkpoint killed from here on leaves the staging directory, which
    // `delete` of the container then removes.
    record_staging(&container.root, &staging).map_err(dir_err)?;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(dir_err)?;
    let result = dump_into(criu, pid, spec, rootfs, opts, &staging, frozen);
    let result = match result {
        Ok(()) => commit(&staging, image_dir).map_err(|source| DumpError::Commit {
            path: image_dir.clone(),
            source,
        }),
        Err(e) => {
            // Keep the log of the failed attempt next to the images, drop the partial images.
            let _ = fs::rename(staging.join(DUMP_LOG), image_dir.join(DUMP_LOG));
            let _ = fs::remove_dir_all(&staging);
            Err(rewrite_log_path(e, &staging, image_dir))
        }
    };
    let _ = fs::remove_file(container.root.join(STAGING_RECORD));
    result
}

const STAGING_PREFIX: &str = ".nvbind-dump-";
/// In the container's directory: the path of the staging directory of a dump in progress.
const STAGING_RECORD: &str = "checkpoint-staging";

fn record_staging(container_dir: &Path, staging: &Path) -> std::io::Result<()> {
    nvbind_atomic::write_atomic_nosync(
        &container_dir.join(STAGING_RECORD),
        staging.as_os_str().as_bytes(),
        0o600,
    )
}

/// The staging directory of a dump that was killed, if the container's directory records
/// one; `remove_staging` it once the container is deleted.
pub fn recorded_staging(container_dir: &Path) -> Option<PathBuf> {
    let bytes = fs::read(container_dir.join(STAGING_RECORD)).ok()?;
    let staging = PathBuf::from(std::ffi::OsString::from_vec(bytes));
    // Only ever a staging directory, whatever the file says.
    staging
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(STAGING_PREFIX))
        .then_some(staging)
}

/// The CRIU of a killed checkpoint outlives it and may still be writing images; once the
/// container's processes are killed it gives up, so the removal is retried until then.
pub fn remove_staging(staging: &Path) {
    let removed = crate::retry::patiently(|| match fs::remove_dir_all(staging) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    });
    if let Err(e) = removed {
        tracing::warn!("cannot remove {}: {e}", staging.display());
    }
}

/// Staging directories in `image_dir` whose dump process is gone (killed checkpoints).
fn remove_stale_staging(image_dir: &Path) {
    let Ok(entries) = fs::read_dir(image_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(STAGING_PREFIX))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if gone {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn dump_into(
    criu: &Criu,
    pid: i32,
    spec: &Spec,
    rootfs: &Path,
    opts: &DumpOpts,
    staging: &Path,
    frozen: impl FnOnce() -> Result<(), NotifyError>,
) -> Result<(), DumpError> {
    let images = File::open(staging).map_err(|source| DumpError::ImageDir {
        path: staging.to_path_buf(),
        source,
    })?;
    let work = match &opts.work_path {
        Some(wp) => {
            match fs::DirBuilder::new().mode(0o700).recursive(true).create(wp) {
                Ok(()) => {}
                Err(source) => {
                    return Err(DumpError::ImageDir {
                        path: wp.clone(),
                        source,
                    })
                }
            }
            Some(File::open(wp).map_err(|source| DumpError::ImageDir {
                path: wp.clone(),
                source,
            })?)
        }
        None => None,
    };
    write_descriptors(pid, staging).map_err(|source| DumpError::ImageDir {
        path: staging.to_path_buf(),
        source,
    })?;

    let mut o = rpc::Criu_opts::new();
    o.set_pid(pid);
    o.set_images_dir_fd(images.as_raw_fd());
    let mut keep = vec![images.as_raw_fd()];
    if let Some(w) = &work {
        o.set_work_dir_fd(w.as_raw_fd());
        keep.push(w.as_raw_fd());
    }
    o.set_log_level(4);
    o.set_log_file(DUMP_LOG.into());
    o.set_root(rootfs.display().to_string());
    o.set_manage_cgroups(true);
    opts.flags.apply(&mut o);
    o.set_leave_running(opts.leave_running);
    o.set_orphan_pts_master(true);
    o.set_notify_scripts(true);
    if let Some(conf) = super::config_file(spec) {
        o.set_config_file(conf);
    }
    for (key, val) in external_mounts(pid, spec, rootfs) {
        o.ext_mnt.push(ext_mount(key, val));
    }
    for ns in [LinuxNamespaceType::Network, LinuxNamespaceType::Pid] {
        if let Some(ext) = external_namespace(spec, ns)? {
            o.external.push(ext);
        }
    }

    let mut req = rpc::Criu_req::new();
    req.set_type(rpc::Criu_req_type::DUMP);
    req.opts = protobuf::MessageField::some(o);
    let log = opts
        .work_path
        .clone()
        .unwrap_or_else(|| staging.to_path_buf())
        .join(DUMP_LOG);
    let mut frozen = Some(frozen);
    swrk::call(
        Call {
            binary: &criu.path,
            op: "dump",
            keep_fds: keep,
            inherit_stdio: false,
            log: Some(&log),
        },
        req,
        |_, _| Ok(()),
        |notify, _| match notify.script() {
            "post-dump" => frozen.take().map_or(Ok(()), |f| f()),
            _ => Ok(()),
        },
    )?;
    Ok(())
}

pub(crate) fn ext_mount(key: String, val: String) -> rpc::Ext_mount_map {
    let mut m = rpc::Ext_mount_map::new();
    m.set_key(key);
    m.set_val(val);
    m
}

/// Mounts whose source lies outside the container: CRIU records them by name and the restore
/// maps each name to a host path again (runc's addCriuDumpMount / addMaskPaths). A bind mount
/// is named by the destination it was made at, symlinks in the rootfs followed (runc
/// securejoins it too): CRIU sees the mount at "/real/conf", not at the "/conf" that leads
/// there.
fn external_mounts(pid: i32, spec: &Spec, rootfs: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let has_cgroupns = has_namespace(spec, LinuxNamespaceType::Cgroup);
    for m in spec.mounts().iter().flatten() {
        if is_bind(m) {
            let dest = mount_destination(rootfs, m).display().to_string();
            out.push((dest.clone(), dest));
        } else if m.typ().as_deref() == Some("cgroup") && !has_cgroupns {
            for mp in cgroup_v1_mount_points() {
                out.push((mp.clone(), mp));
            }
        }
    }
    if let Some(linux) = spec.linux() {
        for p in linux.masked_paths().iter().flatten() {
            let inside = PathBuf::from(format!("/proc/{pid}/root{p}"));
            if fs::metadata(&inside).map(|m| !m.is_dir()).unwrap_or(false) {
                out.push((p.clone(), "/dev/null".into()));
            }
        }
        for d in linux.devices().iter().flatten() {
            let p = d.path().display().to_string();
            out.push((p.clone(), p));
        }
    }
    out
}

/// Where `m` was mounted in the container: its destination with the rootfs's symlinks
/// followed, as the mount itself followed them.
pub(crate) fn mount_destination(rootfs: &Path, m: &oci_spec::runtime::Mount) -> PathBuf {
    libcontainer::rootfs::resolve_in_root(rootfs, m.destination())
}

pub(crate) fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

pub(crate) fn has_namespace(spec: &Spec, ns: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|v| v.iter().any(|n| n.typ() == ns))
}

pub(crate) fn namespace_path(spec: &Spec, ns: LinuxNamespaceType) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == ns)?
        .path()
        .clone()
}

/// The cgroup v1 hierarchies (under /sys/fs/cgroup) that libcontainer bind-mounts into a
/// container without a cgroup namespace.
pub(crate) fn cgroup_v1_mount_points() -> Vec<String> {
    libcgroups::v1::util::list_subsystem_mount_points()
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.display().to_string())
        .filter(|p| p.starts_with("/sys/fs/cgroup/"))
        .collect()
}

pub(crate) fn ns_key(ns: LinuxNamespaceType) -> &'static str {
    match ns {
        LinuxNamespaceType::Network => "extRootNetNS",
        _ => "extRootPidNS",
    }
}

fn external_namespace(spec: &Spec, ns: LinuxNamespaceType) -> Result<Option<String>, DumpError> {
    use std::os::unix::fs::MetadataExt;
    let Some(path) = namespace_path(spec, ns) else {
        return Ok(None);
    };
    let meta = fs::metadata(&path).map_err(|source| DumpError::Namespace {
        path: path.clone(),
        source,
    })?;
    let name = if ns == LinuxNamespaceType::Network {
        "net"
    } else {
        "pid"
    };
    Ok(Some(format!("{name}[{}]:{}", meta.ino(), ns_key(ns))))
}

/// Records where the init's stdin/stdout/stderr pointed (runc's descriptors.json), so a
/// restore can hand fresh pipes in their place.
fn write_descriptors(pid: i32, dir: &Path) -> std::io::Result<()> {
    let fds: Vec<String> = (0..3)
        .map(|n| {
            fs::read_link(format!("/proc/{pid}/fd/{n}"))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "/dev/null".into())
        })
        .collect();
    fs::write(dir.join(DESCRIPTORS_JSON), serde_json::to_vec(&fds)?)
}

/// In the image directory while a dump's images are moved in: moving takes one rename per
/// file, and a checkpoint killed in between leaves a mix of two dumps that looks whole.
/// Restore refuses an image directory that has it.
pub const COMMIT_MARKER: &str = "nvbind-checkpoint-incomplete";

/// Moves the staged images into the image directory and removes images of an older dump
/// that the new one does not have.
fn commit(staging: &Path, image_dir: &Path) -> std::io::Result<()> {
    let marker = image_dir.join(COMMIT_MARKER);
    // Its existence is the message, so a plain create: a temp file and rename would leave the
    // temp file behind when killed in between (tests/crash.rs saw it, 1 in 30).
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&marker)?
            .write_all(b"a checkpoint was killed while its images were moved here\n")?;
    }
    let mut fresh = std::collections::HashSet::new();
    for entry in fs::read_dir(staging)? {
        let entry = entry?;
        fs::rename(entry.path(), image_dir.join(entry.file_name()))?;
        fresh.insert(entry.file_name());
    }
    fs::remove_dir(staging)?;
    for entry in fs::read_dir(image_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let stale = name.to_string_lossy().ends_with(".img") && !fresh.contains(&name);
        if stale {
            fs::remove_file(entry.path())?;
        }
    }
    File::open(image_dir)?.sync_all()?;
    fs::remove_file(marker)
}

fn rewrite_log_path(e: DumpError, staging: &Path, image_dir: &Path) -> DumpError {
    match e {
        DumpError::Criu(CriuError::Failed {
            op,
            errmsg,
            first_error,
            log,
        }) => DumpError::Criu(CriuError::Failed {
            op,
            errmsg,
            first_error,
            log: log.replace(
                &staging.display().to_string(),
                &image_dir.display().to_string(),
            ),
        }),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_replaces_the_images_and_leaves_no_marker() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        let staging = images.join(format!("{STAGING_PREFIX}1"));
        fs::create_dir_all(&staging).unwrap();
        fs::write(images.join("old.img"), "old").unwrap();
        fs::write(images.join("core-1.img"), "old core").unwrap();
        fs::write(staging.join("core-1.img"), "new core").unwrap();
        commit(&staging, &images).unwrap();
        let mut names: Vec<String> = fs::read_dir(&images)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["core-1.img"]);
        assert_eq!(
            fs::read_to_string(images.join("core-1.img")).unwrap(),
            "new core"
        );
    }
}
