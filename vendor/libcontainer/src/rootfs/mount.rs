use std::fs::Permissions;
use std::io::{BufRead, BufReader, ErrorKind};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
#[cfg(feature = "v1")]
use std::borrow::Cow;
use std::{fs, mem};

use libcgroups::common::CgroupSetup::{Hybrid, Legacy, Unified};
#[cfg(feature = "v1")]
use libcgroups::common::DEFAULT_CGROUP_ROOT;
use nix::NixPath;
use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sys::statfs::{PROC_SUPER_MAGIC, statfs};
use oci_spec::runtime::{Mount as SpecMount, MountBuilder as SpecMountBuilder};
use pathrs::Root;
use pathrs::flags::OpenFlags;
use pathrs::procfs::ProcfsBase;
#[cfg(feature = "v1")]
use procfs::process::Process;
use procfs::process::{MountInfo, MountOptFields};
use procfs::{FromRead, ProcessCGroups};

#[cfg(feature = "v1")]
use super::symlink::Symlink;
use super::symlink::SymlinkError;
use super::utils::{MountOptionConfig, parse_mount};
use crate::rootfs::utils::is_bind;
use crate::syscall::syscall::create_syscall;
use crate::syscall::{Syscall, SyscallError, linux};
use crate::utils::{PathBufExt, retry};

const MAX_EBUSY_MOUNT_ATTEMPTS: u32 = 3;
// runc has a retry interval of 100ms. We are following this.
// https://github.com/opencontainers/runc/blob/v1.3.0/libcontainer/rootfs_linux.go#L1235
#[cfg(not(test))]
const MOUNT_RETRY_DELAY_MS: u64 = 100;
// In tests, there is no need to delay, so set it to 0ms.
#[cfg(test)]
const MOUNT_RETRY_DELAY_MS: u64 = 0;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("no source in mount spec")]
    NoSource,
    #[error("io error")]
    Io(#[from] std::io::Error),
    #[error("syscall")]
    Syscall(#[from] crate::syscall::SyscallError),
    #[error("nix error")]
    Nix(#[from] nix::Error),
    #[error("failed to build oci spec")]
    SpecBuild(#[from] oci_spec::OciSpecError),
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
    #[error("{0}")]
    Custom(String),
    #[error("symlink")]
    Symlink(#[from] SymlinkError),
    #[error("procfs failed")]
    Procfs(#[from] procfs::ProcError),
    #[error("unknown mount option: {0}")]
    UnsupportedMountOption(String),
    #[error(transparent)]
    Pathrs(#[from] pathrs::error::Error),
    /// nvbind: a bind mount's source that cannot be opened, named (runc: "error mounting SRC
    /// to rootfs at DEST: stat SRC: ..."); a bare "io error" said neither.
    #[error("cannot open the bind mount source {path:?} (for {dest:?})")]
    BindSource {
        path: PathBuf,
        dest: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, MountError>;

pub trait MountInfoProvider {
    fn mountinfo(&self) -> Result<Vec<MountInfo>>;
}

/// Default provider that reads mountinfo from /proc via procfs.
pub struct ProcMountInfoProvider;

impl ProcMountInfoProvider {
    pub fn new() -> Self {
        ProcMountInfoProvider
    }
}

impl MountInfoProvider for ProcMountInfoProvider {
    fn mountinfo(&self) -> Result<Vec<MountInfo>> {
        // nvbind: the process's one checked procfs handle (libcgroups::procfs_handle)
        let reader = BufReader::new(libcgroups::procfs_handle::get()?.open(
            ProcfsBase::ProcSelf,
            "mountinfo",
            OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
        )?);

        let mount_infos: Vec<MountInfo> = reader
            .lines()
            .map(|lr| {
                lr.map_err(MountError::from)
                    .and_then(|s| MountInfo::from_line(&s).map_err(MountError::from))
            })
            .collect::<Result<_>>()?;
        Ok(mount_infos)
    }
}

#[derive(Debug)]
pub struct MountOptions<'a> {
    pub root: &'a Path,
    pub label: Option<&'a str>,
    #[allow(dead_code)]
    pub cgroup_ns: bool,
    /// nvbind: the bind mount's source as a detached tree the runtime cloned before the
    /// process joined the user namespace (see `BindSources`); mounted instead of the path.
    pub source_tree: Option<BorrowedFd<'a>>,
}

/// nvbind: the sources of a spec's bind mounts, cloned (`open_tree(OPEN_TREE_CLONE)`) by the
/// intermediate process while it is still the runtime's root, before it joins a new user
/// namespace, keyed by the mount's index in `spec.mounts()`. The container's mapped root may
/// not reach a source (runc's userns.bats "userns with 2 inaccessible mounts": a 0700
/// directory owned by the host's root); runc opens such sources before joining the user
/// namespace and passes the descriptors for the same reason (`_LIBCONTAINER_MOUNT_FDS`). A
/// detached tree can be attached in another mount namespace by a process with CAP_SYS_ADMIN
/// in the owner of that namespace, which the init has.
#[derive(Default)]
pub struct BindSources(HashMap<usize, OwnedFd>);

impl BindSources {
    /// Clones the source of every bind mount that can be cloned. A source that cannot is left
    /// out: the init tries it again by its path and reports the error then, in its words.
    pub fn open(mounts: &[SpecMount], syscall: &dyn Syscall) -> Self {
        let mut trees = HashMap::new();
        for (i, m) in mounts.iter().enumerate() {
            if !is_bind(m) {
                continue;
            }
            let Some(source) = m.source().as_ref().and_then(|s| s.to_str()) else {
                continue;
            };
            let recursive = m
                .options()
                .as_ref()
                .is_some_and(|v| v.iter().any(|o| o == "rbind"));
            let mut flags = (libc::OPEN_TREE_CLOEXEC as libc::c_uint)
                | (libc::OPEN_TREE_CLONE as libc::c_uint);
            if recursive {
                flags |= libc::AT_RECURSIVE as libc::c_uint;
            }
            match syscall.open_tree(libc::AT_FDCWD, Some(source), flags) {
                Ok(fd) => {
                    trees.insert(i, fd);
                }
                Err(err) => tracing::debug!(?err, source, "bind source not cloned ahead"),
            }
        }
        Self(trees)
    }

    pub fn get(&self, index: usize) -> Option<BorrowedFd<'_>> {
        self.0.get(&index).map(|fd| fd.as_fd())
    }
}

pub struct Mount {
    syscall: Box<dyn Syscall>,
    mountinfo_provider: Box<dyn MountInfoProvider>,
    /// nvbind: the rootfs, opened once for all the mounts of a container (see `root`).
    root: RefCell<Option<OpenRoot>>,
}

/// nvbind: a rootfs opened by `Mount::root`, with the path it was opened by and its device
/// and inode, which tell a destination that is the rootfs itself.
struct OpenRoot {
    path: PathBuf,
    root: Rc<Root>,
    dev: u64,
    ino: u64,
}

impl Default for Mount {
    fn default() -> Self {
        Self::new()
    }
}

impl Mount {
    pub fn new() -> Mount {
        Mount {
            syscall: create_syscall(),
            mountinfo_provider: Box::new(ProcMountInfoProvider::new()),
            root: RefCell::new(None),
        }
    }

    /// nvbind: the rootfs as a pathrs `Root`, opened on first use and kept for the mounts that
    /// follow (it was opened again for every mount: an open and a close each). Every
    /// destination is still resolved inside it by pathrs (openat2 RESOLVE_IN_ROOT). A mount
    /// made on the rootfs directory itself hides what this descriptor points at, so
    /// `mount_into_container_from` forgets it then (`forget_root`) and the next mount opens
    /// the path again, as before.
    fn root(&self, rootfs: &Path) -> Result<(Rc<Root>, u64, u64)> {
        if let Some(open) = self.root.borrow().as_ref() {
            if open.path == rootfs {
                return Ok((Rc::clone(&open.root), open.dev, open.ino));
            }
        }
        let root = Root::open(rootfs)?;
        let st = nix::sys::stat::fstat(root.as_fd().as_raw_fd())?;
        let root = Rc::new(root);
        *self.root.borrow_mut() = Some(OpenRoot {
            path: rootfs.to_path_buf(),
            root: Rc::clone(&root),
            dev: st.st_dev,
            ino: st.st_ino,
        });
        Ok((root, st.st_dev, st.st_ino))
    }

    fn forget_root(&self) {
        self.root.borrow_mut().take();
    }

    pub fn with_mountinfo_provider<P: MountInfoProvider + 'static>(mut self, provider: P) -> Self {
        self.mountinfo_provider = Box::new(provider);
        self
    }

    pub fn setup_mount(&self, mount: &SpecMount, options: &MountOptions) -> Result<()> {
        tracing::debug!("mounting {:?}", mount);
        let mut mount_option_config = parse_mount(mount)?;

        match mount.typ().as_deref() {
            Some("cgroup") => {
                let cgroup_setup = libcgroups::common::get_cgroup_setup().map_err(|err| {
                    tracing::error!("failed to determine cgroup setup: {}", err);
                    MountError::Other(err.into())
                })?;
                match cgroup_setup {
                    Legacy | Hybrid => {
                        #[cfg(not(feature = "v1"))]
                        panic!(
                            "libcontainer can't run in a Legacy or Hybrid cgroup setup without the v1 feature"
                        );
                        #[cfg(feature = "v1")]
                        // nvbind: pass the mount's flags so "ro" (and nosuid/nodev/noexec)
                        // reach the subsystem mounts and the tmpfs, as runc does.
                        self.mount_cgroup_v1(mount, options, mount_option_config.flags).map_err(|err| {
                            tracing::error!("failed to mount cgroup v1: {}", err);
                            err
                        })?
                    }
                    Unified => {
                        #[cfg(not(feature = "v2"))]
                        panic!(
                            "libcontainer can't run in a Unified cgroup setup without the v2 feature"
                        );
                        #[cfg(feature = "v2")]
                        self.mount_cgroup_v2(mount, options, &mount_option_config)
                            .map_err(|err| {
                                tracing::error!("failed to mount cgroup v2: {}", err);
                                err
                            })?
                    }
                }
            }
            // procfs and sysfs are special because we need to ensure they are actually
            // mounted on a specific path in a container without any funny business.
            // Ref: https://github.com/opencontainers/runc/security/advisories/GHSA-fh74-hm69-rqjw
            Some(typ @ ("proc" | "sysfs")) => {
                let dest_path = options
                    .root
                    .join_safely(Path::new(mount.destination()).normalize())
                    .map_err(|err| {
                        tracing::error!(
                            "could not join rootfs path with mount destination {:?}: {}",
                            mount.destination(),
                            err
                        );
                        MountError::Other(err.into())
                    })?;

                match fs::symlink_metadata(&dest_path) {
                    Ok(m) if !m.is_dir() => {
                        return Err(MountError::Other(
                            format!("filesystem {} must be mounted on ordinary directory", typ)
                                .into(),
                        ));
                    }
                    Err(e) if e.kind() != ErrorKind::NotFound => {
                        return Err(MountError::Other(
                            format!("symlink_metadata failed for {}: {}", dest_path.display(), e)
                                .into(),
                        ));
                    }
                    _ => {}
                }

                self.check_proc_mount(options.root, mount)?;

                self.mount_into_container(mount, options.root, &mount_option_config, options.label)
                    .map_err(|err| {
                        tracing::error!("failed to mount {:?}: {}", mount, err);
                        err
                    })?;
            }
            _ => {
                if mount.destination() == Path::new("/dev") {
                    mount_option_config.flags &= !MsFlags::MS_RDONLY;
                    self.mount_into_container(
                        mount,
                        options.root,
                        &mount_option_config,
                        options.label,
                    )
                    .map_err(|err| {
                        tracing::error!("failed to mount /dev: {}", err);
                        err
                    })?;
                } else {
                    self.mount_into_container_from(
                        mount,
                        options.root,
                        &mount_option_config,
                        options.label,
                        options.source_tree,
                    )
                    .map_err(|err| {
                        tracing::error!("failed to mount {:?}: {}", mount, err);
                        err
                    })?;
                }
            }
        }

        Ok(())
    }

    #[cfg(feature = "v1")]
    fn mount_cgroup_v1(
        &self,
        cgroup_mount: &SpecMount,
        options: &MountOptions,
        cgroup_flags: MsFlags,
    ) -> Result<()> {
        tracing::debug!("mounting cgroup v1 filesystem");
        // create tmpfs into which the cgroup subsystems will be mounted
        let tmpfs = SpecMountBuilder::default()
            .source("tmpfs")
            .typ("tmpfs")
            .destination(cgroup_mount.destination())
            .options(
                ["noexec", "nosuid", "nodev", "mode=755"]
                    .iter()
                    .map(|o| o.to_string())
                    .collect::<Vec<String>>(),
            )
            .build()
            .map_err(|err| {
                tracing::error!("failed to build tmpfs for cgroup: {}", err);
                err
            })?;

        self.setup_mount(&tmpfs, options).map_err(|err| {
            tracing::error!("failed to mount tmpfs for cgroup: {}", err);
            err
        })?;

        // get all cgroup mounts on the host system
        let host_mounts: Vec<PathBuf> = libcgroups::v1::util::list_subsystem_mount_points()
            .map_err(|err| {
                tracing::error!("failed to get subsystem mount points: {}", err);
                MountError::Other(err.into())
            })?
            .into_iter()
            .filter(|p| p.as_path().starts_with(DEFAULT_CGROUP_ROOT))
            .collect();
        tracing::debug!("cgroup mounts: {:?}", host_mounts);

        // get process cgroups
        let ppid = std::os::unix::process::parent_id();
        // The non-zero ppid means that the PID Namespace is not separated.
        // nvbind: in a separate PID namespace /proc still shows the runtime's namespace, whose
        // pid 1 is the process meant here; our own pid is namespace-relative (1 in a fresh
        // namespace, by luck right; e.g. 11 in a joined one, such as a CRI pod's, which the
        // host's /proc lacks or gives to an unrelated process).
        let ppid = if ppid == 0 { 1 } else { ppid };
        let root_cgroups = Process::new(ppid as i32)?.cgroups()?.0;
        let process_cgroups: HashMap<String, String> =
            // nvbind: the process's one checked procfs handle (libcgroups::procfs_handle)
            ProcessCGroups::from_read(libcgroups::procfs_handle::get()?.open(
                ProcfsBase::ProcSelf,
                "cgroup",
                OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
            )?)?
            .into_iter()
            .map(|c| {
                let hierarchy = c.hierarchy;
                // When youki itself is running inside a container, the cgroup path
                // will include the path of pid-1, which needs to be stripped before
                // mounting.
                let root_pathname = root_cgroups
                    .iter()
                    .find(|c| c.hierarchy == hierarchy)
                    .map(|c| c.pathname.as_ref())
                    .unwrap_or("");
                let path = c
                    .pathname
                    .strip_prefix(root_pathname)
                    .unwrap_or(&c.pathname);
                (c.controllers.join(","), path.to_owned())
            })
            .collect();
        tracing::debug!("Process cgroups: {:?}", process_cgroups);

        let cgroup_root = options
            .root
            .join_safely(cgroup_mount.destination())
            .map_err(|err| {
                tracing::error!(
                    "could not join rootfs path with cgroup mount destination: {}",
                    err
                );
                MountError::Other(err.into())
            })?;
        tracing::debug!("cgroup root: {:?}", cgroup_root);

        let symlink = Symlink::new();

        // setup cgroup mounts for container
        for host_mount in &host_mounts {
            if let Some(subsystem_name) = host_mount.file_name().and_then(|n| n.to_str()) {
                if options.cgroup_ns {
                    self.setup_namespaced_subsystem(
                        cgroup_mount,
                        options,
                        subsystem_name,
                        subsystem_name == "systemd",
                        cgroup_flags,
                    )?;
                } else {
                    self.setup_emulated_subsystem(
                        cgroup_mount,
                        options,
                        subsystem_name,
                        subsystem_name == "systemd",
                        host_mount,
                        &process_cgroups,
                        cgroup_flags,
                    )?;
                }

                symlink.setup_comount_symlinks(&cgroup_root, subsystem_name)?;
            } else {
                tracing::warn!("could not get subsystem name from {:?}", host_mount);
            }
        }

        // nvbind: like runc, make the tmpfs holding the subsystems read-only once the
        // subsystem mounts and comount symlinks are in place, when the mount asks for "ro".
        if cgroup_flags.contains(MsFlags::MS_RDONLY) {
            let root = Root::open(options.root)?;
            let tmpfs_root: OwnedFd = root.resolve(cgroup_mount.destination())?.into();
            let attr = linux::MountAttr {
                attr_set: linux::MOUNT_ATTR_RDONLY,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            self.syscall.mount_setattr(
                tmpfs_root.as_fd(),
                Path::new(""),
                linux::AT_EMPTY_PATH,
                &attr,
                mem::size_of::<linux::MountAttr>(),
            )?;
        }

        Ok(())
    }

    // On some distros cgroup subsystems are comounted e.g. cpu,cpuacct or net_cls,net_prio. These systems
    // have to be comounted in the container as well as the kernel will reject trying to mount them separately.
    #[cfg(feature = "v1")]
    fn setup_namespaced_subsystem(
        &self,
        cgroup_mount: &SpecMount,
        options: &MountOptions,
        subsystem_name: &str,
        named: bool,
        cgroup_flags: MsFlags,
    ) -> Result<()> {
        tracing::debug!(
            "Mounting (namespaced) {:?} cgroup subsystem",
            subsystem_name
        );
        let subsystem_mount = SpecMountBuilder::default()
            .source("cgroup")
            .typ("cgroup")
            .destination(cgroup_mount.destination().join(subsystem_name))
            .options(
                ["noexec", "nosuid", "nodev"]
                    .iter()
                    .map(|o| o.to_string())
                    .collect::<Vec<String>>(),
            )
            .build()
            .map_err(|err| {
                tracing::error!("failed to build {subsystem_name} mount: {err}");
                err
            })?;

        let data: Cow<str> = if named {
            format!("name={subsystem_name}").into()
        } else {
            subsystem_name.into()
        };

        let mount_options_config = MountOptionConfig {
            // nvbind: keep the cgroup mount's "ro" (runc mounts each subsystem with its flags)
            flags: MsFlags::MS_NOEXEC
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | (cgroup_flags & MsFlags::MS_RDONLY),
            data: vec![data.into_owned()],
            rec_attr: None,
        };

        self.mount_into_container(
            &subsystem_mount,
            options.root,
            &mount_options_config,
            options.label,
        )
        .map_err(|err| {
            tracing::error!("failed to mount {subsystem_mount:?}: {err}");
            err
        })
    }

    #[cfg(feature = "v1")]
    fn setup_emulated_subsystem(
        &self,
        cgroup_mount: &SpecMount,
        options: &MountOptions,
        subsystem_name: &str,
        named: bool,
        host_mount: &Path,
        process_cgroups: &HashMap<String, String>,
        cgroup_flags: MsFlags,
    ) -> Result<()> {
        tracing::debug!("Mounting (emulated) {:?} cgroup subsystem", subsystem_name);
        let named_hierarchy: Cow<str> = if named {
            format!("name={subsystem_name}").into()
        } else {
            subsystem_name.into()
        };

        if let Some(proc_path) = process_cgroups.get(named_hierarchy.as_ref()) {
            let emulated = SpecMountBuilder::default()
                .source(
                    host_mount
                        .join_safely(proc_path.as_str())
                        .map_err(|err| {
                            tracing::error!(
                                "failed to join mount source for {subsystem_name} subsystem: {}",
                                err
                            );
                            MountError::Other(err.into())
                        })?,
                )
                .destination(
                    cgroup_mount
                        .destination()
                        .join_safely(subsystem_name)
                        .map_err(|err| {
                            tracing::error!(
                                "failed to join mount destination for {subsystem_name} subsystem: {}",
                                err
                            );
                            MountError::Other(err.into())
                        })?,
                )
                .typ("bind")
                // nvbind: was a hard-coded ["rw", "rbind"], which left every subsystem
                // writable by the container even when the cgroup mount says "ro". runc binds
                // each subsystem with the cgroup mount's flags.
                .options(
                    std::iter::once("rbind")
                        .chain(
                            [
                                (MsFlags::MS_RDONLY, "ro"),
                                (MsFlags::MS_NOSUID, "nosuid"),
                                (MsFlags::MS_NODEV, "nodev"),
                                (MsFlags::MS_NOEXEC, "noexec"),
                            ]
                            .into_iter()
                            .filter(|(flag, _)| cgroup_flags.contains(*flag))
                            .map(|(_, name)| name),
                        )
                        .map(|o| o.to_string())
                        .collect::<Vec<String>>(),
                )
                .build()?;
            tracing::debug!("Mounting emulated cgroup subsystem: {:?}", emulated);

            self.setup_mount(&emulated, options).map_err(|err| {
                tracing::error!("failed to mount {subsystem_name} cgroup hierarchy: {}", err);
                err
            })?;
        } else {
            tracing::warn!("Could not mount {:?} cgroup subsystem", subsystem_name);
        }

        Ok(())
    }

    #[cfg(feature = "v2")]
    fn mount_cgroup_v2(
        &self,
        cgroup_mount: &SpecMount,
        options: &MountOptions,
        mount_option_config: &MountOptionConfig,
    ) -> Result<()> {
        tracing::debug!("Mounting cgroup v2 filesystem");

        let cgroup_mount = SpecMountBuilder::default()
            .typ("cgroup2")
            .source("cgroup")
            .destination(cgroup_mount.destination())
            .options(Vec::new())
            .build()?;
        tracing::debug!("{:?}", cgroup_mount);

        if self
            .mount_into_container(
                &cgroup_mount,
                options.root,
                mount_option_config,
                options.label,
            )
            .is_err()
        {
            let host_mount = libcgroups::v2::util::get_unified_mount_point().map_err(|err| {
                tracing::error!("failed to get unified mount point: {}", err);
                MountError::Other(err.into())
            })?;

            // nvbind: the process's one checked procfs handle (libcgroups::procfs_handle)
            let process_cgroup = ProcessCGroups::from_read(libcgroups::procfs_handle::get()?.open(
                ProcfsBase::ProcSelf,
                "cgroup",
                OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
            )?)?
            .into_iter()
            .find(|c| c.hierarchy == 0)
            .map(|c| PathBuf::from(c.pathname))
            .ok_or_else(|| MountError::Custom("failed to find unified process cgroup".into()))?;

            let bind_mount = SpecMountBuilder::default()
                .typ("bind")
                .source(host_mount.join_safely(process_cgroup).map_err(|err| {
                    tracing::error!("failed to join host mount for cgroup hierarchy: {}", err);
                    MountError::Other(err.into())
                })?)
                .destination(cgroup_mount.destination())
                .options(Vec::new())
                .build()
                .map_err(|err| {
                    tracing::error!("failed to build cgroup bind mount: {}", err);
                    err
                })?;
            tracing::debug!("{:?}", bind_mount);

            let mut mount_option_config = (*mount_option_config).clone();
            mount_option_config.flags |= MsFlags::MS_BIND;
            self.mount_into_container(
                &bind_mount,
                options.root,
                &mount_option_config,
                options.label,
            )
            .map_err(|err| {
                tracing::error!("failed to bind mount cgroup hierarchy: {}", err);
                err
            })?;
        }

        Ok(())
    }

    /// Make parent mount of rootfs private if it was shared, which is required by pivot_root.
    /// It also makes sure following bind mount does not propagate in other namespaces.
    pub fn make_parent_mount_private(&self, rootfs: &Path) -> Result<MountInfo> {
        let mount_infos = self.mountinfo_provider.mountinfo()?;
        let parent_mount = find_parent_mount(rootfs, mount_infos)?;

        // check parent mount has 'shared' propagation type
        if parent_mount
            .opt_fields
            .iter()
            .any(|field| matches!(field, MountOptFields::Shared(_)))
        {
            self.syscall.mount(
                None,
                &parent_mount.mount_point,
                None,
                MsFlags::MS_PRIVATE,
                None,
            )?;
        }
        Ok(parent_mount)
    }

    fn mount_into_container(
        &self,
        m: &SpecMount,
        rootfs: &Path,
        mount_option_config: &MountOptionConfig,
        label: Option<&str>,
    ) -> Result<()> {
        self.mount_into_container_from(m, rootfs, mount_option_config, label, None)
    }

    /// nvbind: `mount_into_container`, with a bind mount's source already cloned as a
    /// detached tree (`BindSources`): it is attached as it is, and the source path is not
    /// looked up again (the process may no longer be able to reach it).
    fn mount_into_container_from(
        &self,
        m: &SpecMount,
        rootfs: &Path,
        mount_option_config: &MountOptionConfig,
        label: Option<&str>,
        source_tree: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        let typ = m.typ().as_deref();
        let mut data_options = mount_option_config.data.clone();

        if let Some(l) = label {
            if typ != Some("proc") && typ != Some("sysfs") {
                if Path::new("/sys/fs/selinux").exists() {
                    data_options.push(format!("context={}", l));
                } else {
                    tracing::debug!("ignoring mount label because SELinux is disabled");
                }
            }
        }

        let (root, root_dev, root_ino) = self.root(rootfs)?;
        let source = m.source().as_ref().ok_or(MountError::NoSource)?;
        let dir_perm = Permissions::from_mode(0o755);
        let source_tree = source_tree.filter(|_| is_bind(m));
        // nvbind: a bind source is cloned (open_tree by its path, every symlink followed, as
        // the realpath it replaces followed them) before the destination is made, and what
        // it is comes from the clone: one lookup of the path instead of an O_PATH open, a
        // readlink of /proc/self/fd, an lstat of the result and the open_tree of that path.
        // A source that cannot be cloned is named (MountError::BindSource) as before.
        let cloned;
        let (src, src_is_dir, bind_tree) = if let Some(tree) = source_tree {
            let st = nix::sys::stat::fstat(tree.as_raw_fd()).map_err(SyscallError::Nix)?;
            (PathBuf::from(source), st.st_mode & libc::S_IFMT == libc::S_IFDIR, Some(tree))
        } else if is_bind(m) {
            cloned = self.clone_bind_source(m, source)?;
            let st = nix::sys::stat::fstat(cloned.as_raw_fd()).map_err(SyscallError::Nix)?;
            (
                PathBuf::from(source),
                st.st_mode & libc::S_IFMT == libc::S_IFDIR,
                Some(cloned.as_fd()),
            )
        } else {
            (PathBuf::from(source), true, None)
        };
        // nvbind: a destination that already exists in the rootfs (symlinks followed inside
        // it) is used as it is; a missing file whose parent directory exists is created in it
        // directly. pathrs' mkdir_all and create_file check each step through procfs (about
        // 40 syscalls a mount), which only matters for the directories they create; anything
        // else takes the pathrs path below, with its errors.
        let existing = existing_destination(&root, m.destination(), src_is_dir);
        // nvbind: a mount on the rootfs directory itself covers the descriptor `root` holds:
        // the mounts after it must see it, so the next one opens the rootfs path again.
        if existing
            .as_ref()
            .and_then(|(_, st)| st.as_ref())
            .is_some_and(|st| st.st_dev == root_dev && st.st_ino == root_ino)
        {
            self.forget_root();
        }
        // nvbind: resolve symlinks in the destination inside the rootfs first (runc:
        // securejoin), so a destination under a dangling symlink is created at the symlink's
        // target inside the rootfs; pathrs' mkdir_all refuses dangling symlinks outright.
        // nvbind: a missing directory whose parent exists is made first, in the parent
        // opened in the rootfs (openat2 RESOLVE_IN_ROOT follows the parent's symlinks as
        // resolve_in_root would), without resolve_in_root's lstat of every component of its
        // host path (four for a cgroup v1 subsystem). Anything else (a missing parent, a name
        // that exists, a dangling symlink at the end) takes resolve_in_root as before.
        let made = existing.is_none()
            && src_is_dir
            && mkdir_in_existing_parent(&root, m.destination());
        let resolved_dest = match existing {
            Some(_) => m.destination().clone(),
            None if made => m.destination().clone(),
            None => resolve_in_root(rootfs, m.destination()),
        };
        let container_dest = resolved_dest.as_path();

        // nvbind: a tmpfs over a directory that exists takes the directory's mode
        // (setuid, setgid and sticky bits too) unless the options give one, as runc does
        // (runc#3952); tmpfs's own default is 1777.
        if typ == Some("tmpfs") && !data_options.iter().any(|o| o.starts_with("mode=")) {
            if let Some((_, Some(st))) = &existing {
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    data_options.push(format!("mode={:o}", st.st_mode & 0o7777));
                }
            }
        }

        if existing.is_some() || made {
            // nvbind: nothing (more) to make.
        } else if src_is_dir {
            if !mkdir_in_existing_parent(&root, container_dest) {
                root.mkdir_all(container_dest, &dir_perm)?;
            }
        } else if !create_in_existing_parent(&root, container_dest) {
            let parent = container_dest
                .parent()
                .ok_or(MountError::Custom("destination has no parent".to_string()))?;
            root.mkdir_all(parent, &dir_perm)?;

            match root.create_file(
                container_dest,
                OpenFlags::O_EXCL
                    | OpenFlags::O_CREAT
                    | OpenFlags::O_NOFOLLOW
                    | OpenFlags::O_CLOEXEC,
                &Permissions::from_mode(0o644),
            ) {
                Ok(_) => Ok(()),
                // If we get here, the file is already present, so continue.
                Err(create_err) => root
                    .resolve(container_dest)
                    .map(|_| ())
                    .map_err(|_| create_err),
            }?;
        }

        let dest: OwnedFd = match existing {
            Some((fd, _)) => fd,
            None => root.resolve(container_dest)?.into(),
        };
        let dest_fd = dest.as_fd();

        // fd-based mount flow:
        // - bind: open_tree -> mount_setattr -> move_mount
        // - nonbind: fsopen -> fsconfig -> fsmount -> mount_setattr -> move_mount
        if is_bind(m) {
            // nvbind: cloned above (clone_bind_source), or by the runtime (BindSources).
            let mount_fd = bind_tree.ok_or(MountError::NoSource)?;

            // mount_setattr
            let attr_set_from_flags = self.mount_flag_to_attr(&mount_option_config.flags);
            let mut mount_attr = linux::MountAttr {
                attr_set: 0,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            mount_attr.attr_set |= attr_set_from_flags;

            self.apply_atime_from_msflags(
                &mut mount_attr,
                attr_set_from_flags,
                mount_option_config.flags,
            );

            self.syscall.mount_setattr(
                mount_fd,
                Path::new(""),
                linux::AT_EMPTY_PATH,
                &mount_attr,
                mem::size_of::<linux::MountAttr>(),
            )?;

            // rec_attr is applied recursively
            if let Some(rec_attr) = &mount_option_config.rec_attr {
                self.syscall.mount_setattr(
                    mount_fd,
                    Path::new(""),
                    linux::AT_EMPTY_PATH | linux::AT_RECURSIVE,
                    rec_attr,
                    mem::size_of::<linux::MountAttr>(),
                )?;
            }

            // move_mount
            self.syscall.move_mount(
                mount_fd,
                None,
                dest_fd,
                None,
                linux::MOVE_MOUNT_T_EMPTY_PATH | linux::MOVE_MOUNT_F_EMPTY_PATH,
            )?;
            self.apply_propagation(m, mount_fd)?;
        } else {
            let mount_fn = || -> std::result::Result<OwnedFd, SyscallError> {
                // fsopen
                let fsfd_owned = self.syscall.fsopen(typ, 0)?;
                let fsfd = fsfd_owned.as_fd();

                // fsconfig
                let src_str = src
                    .as_os_str()
                    .to_str()
                    .ok_or(SyscallError::Nix(Errno::EINVAL))?;
                self.syscall.fsconfig(
                    fsfd,
                    linux::FSCONFIG_SET_STRING as u32,
                    Some("source"),
                    Some(src_str),
                    0,
                )?;

                for opt in data_options.iter().filter(|s| !s.is_empty()) {
                    if let Some((k, v)) = opt.split_once('=') {
                        self.syscall.fsconfig(
                            fsfd,
                            linux::FSCONFIG_SET_STRING as u32,
                            Some(k),
                            Some(v),
                            0,
                        )?;
                    } else {
                        self.syscall.fsconfig(
                            fsfd,
                            linux::FSCONFIG_SET_FLAG as u32,
                            Some(opt),
                            None,
                            0,
                        )?;
                    };
                }

                self.syscall
                    .fsconfig(fsfd, linux::FSCONFIG_CMD_CREATE as u32, None, None, 0)?;

                // fsmount
                let mount_fd_owned = self.syscall.fsmount(fsfd, 0, None)?;
                let mount_fd = mount_fd_owned.as_fd();

                // mount_setattr
                let attr_set_from_flags = self.mount_flag_to_attr(&mount_option_config.flags);
                let mut mount_attr = linux::MountAttr {
                    attr_set: 0,
                    attr_clr: 0,
                    propagation: 0,
                    userns_fd: 0,
                };
                mount_attr.attr_set |= attr_set_from_flags;

                self.apply_atime_from_msflags(
                    &mut mount_attr,
                    attr_set_from_flags,
                    mount_option_config.flags,
                );

                self.syscall.mount_setattr(
                    mount_fd,
                    Path::new(""),
                    linux::AT_EMPTY_PATH,
                    &mount_attr,
                    mem::size_of::<linux::MountAttr>(),
                )?;

                // rec_attr is applied recursively
                if let Some(rec_attr) = &mount_option_config.rec_attr {
                    self.syscall.mount_setattr(
                        mount_fd,
                        Path::new(""),
                        linux::AT_EMPTY_PATH | linux::AT_RECURSIVE,
                        rec_attr,
                        mem::size_of::<linux::MountAttr>(),
                    )?;
                }

                // move_mount
                self.syscall.move_mount(
                    mount_fd,
                    None,
                    dest_fd,
                    None,
                    linux::MOVE_MOUNT_T_EMPTY_PATH | linux::MOVE_MOUNT_F_EMPTY_PATH,
                )?;
                // nvbind: hand the attached mount back for apply_propagation
                Ok(mount_fd_owned)
            };

            let mounted = match mount_fn() {
                Ok(fd) => fd,
                Err(SyscallError::Nix(nix::Error::EINVAL)) => mount_fn()?,
                Err(SyscallError::Nix(nix::Error::EBUSY)) => {
                    let delay = Duration::from_millis(MOUNT_RETRY_DELAY_MS);
                    let retry_policy =
                        |err: &SyscallError| matches!(err, SyscallError::Nix(Errno::EBUSY));
                    retry(mount_fn, MAX_EBUSY_MOUNT_ATTEMPTS - 1, delay, retry_policy)?
                }
                Err(e) => return Err(e.into()),
            };
            self.apply_propagation(m, mounted.as_fd())?;
        }

        Ok(())
    }

    /// nvbind: the source of bind mount `m` cloned as a detached tree (`rbind`: with the
    /// mounts under it), looked up by its path from the process's root and cwd with every
    /// symlink followed. No AT_EMPTY_PATH: an empty source is ENOENT, never the cwd.
    fn clone_bind_source(&self, m: &SpecMount, source: &Path) -> Result<OwnedFd> {
        let recursive = m
            .options()
            .as_ref()
            .is_some_and(|v| v.iter().any(|o| o == "rbind"));
        let mut flags =
            (libc::OPEN_TREE_CLOEXEC as libc::c_uint) | (libc::OPEN_TREE_CLONE as libc::c_uint);
        if recursive {
            flags |= libc::AT_RECURSIVE as libc::c_uint;
        }
        let named = |err: std::io::Error| MountError::BindSource {
            path: source.to_path_buf(),
            dest: m.destination().clone(),
            source: err,
        };
        let path = source
            .to_str()
            .ok_or_else(|| named(std::io::Error::from(ErrorKind::InvalidInput)))?;
        if path.is_empty() {
            return Err(named(std::io::Error::from(ErrorKind::NotFound)));
        }
        self.syscall
            .open_tree(libc::AT_FDCWD, Some(path), flags)
            .map_err(|err| match err {
                SyscallError::Nix(errno) => named(std::io::Error::from(errno)),
                other => MountError::Syscall(other),
            })
    }

    /// nvbind: apply the mount's propagation options ("shared", "rshared", "slave", "rslave",
    /// "private", "rprivate", "unbindable", "runbindable") in the order given, once the mount
    /// is attached. parse_mount drops them from the flags and the fd-based flow never applied
    /// them, so e.g. a bind with "rshared" stayed private. runc does a mount(MS_SHARED|...)
    /// per propagation option after the mount.
    fn apply_propagation(&self, m: &SpecMount, mount_fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
        let Some(opts) = m.options() else {
            return Ok(());
        };
        for opt in opts {
            let (propagation, recursive) = match opt.as_str() {
                "shared" => (MsFlags::MS_SHARED, false),
                "rshared" => (MsFlags::MS_SHARED, true),
                "slave" => (MsFlags::MS_SLAVE, false),
                "rslave" => (MsFlags::MS_SLAVE, true),
                "private" => (MsFlags::MS_PRIVATE, false),
                "rprivate" => (MsFlags::MS_PRIVATE, true),
                "unbindable" => (MsFlags::MS_UNBINDABLE, false),
                "runbindable" => (MsFlags::MS_UNBINDABLE, true),
                _ => continue,
            };
            let attr = linux::MountAttr {
                attr_set: 0,
                attr_clr: 0,
                propagation: propagation.bits() as u64,
                userns_fd: 0,
            };
            let mut flags = linux::AT_EMPTY_PATH;
            if recursive {
                flags |= linux::AT_RECURSIVE;
            }
            self.syscall
                .mount_setattr(
                    mount_fd,
                    Path::new(""),
                    flags,
                    &attr,
                    mem::size_of::<linux::MountAttr>(),
                )
                .map_err(|err| {
                    tracing::error!(?err, option = opt, "failed to set mount propagation");
                    err
                })?;
        }
        Ok(())
    }

    // https://man7.org/linux/man-pages/man2/mount_setattr.2.html
    // To apply MsFlags via mount_setattr, we set the corresponding bits in attr_set
    fn mount_flag_to_attr(&self, flags: &MsFlags) -> u64 {
        const MAP_SET: &[(MsFlags, u64)] = &[
            (MsFlags::MS_RDONLY, linux::MOUNT_ATTR_RDONLY),
            (MsFlags::MS_NOSUID, linux::MOUNT_ATTR_NOSUID),
            (MsFlags::MS_NODEV, linux::MOUNT_ATTR_NODEV),
            (MsFlags::MS_NOEXEC, linux::MOUNT_ATTR_NOEXEC),
            (MsFlags::MS_NOATIME, linux::MOUNT_ATTR_NOATIME),
            (MsFlags::MS_NODIRATIME, linux::MOUNT_ATTR_NODIRATIME),
            (MsFlags::MS_RELATIME, linux::MOUNT_ATTR_RELATIME),
            (MsFlags::MS_STRICTATIME, linux::MOUNT_ATTR_STRICTATIME),
        ];

        let mut set = 0;
        for (ms, attr) in MAP_SET {
            if flags.intersects(*ms) {
                set |= *attr;
            }
        }
        set
    }

    // Apply atime-related configuration.
    // https://man7.org/linux/man-pages/man2/mount_setattr.2.html
    // ref: MOUNT_ATTR__ATIME
    fn apply_atime_from_msflags(
        &self,
        mount_attr: &mut linux::MountAttr,
        attr_set_from_flags: u64,
        msflags: MsFlags,
    ) {
        let atime_bits =
            linux::MOUNT_ATTR_NOATIME | linux::MOUNT_ATTR_STRICTATIME | linux::MOUNT_ATTR_RELATIME;

        let noatime = msflags.contains(MsFlags::MS_NOATIME);
        let strictatime = msflags.contains(MsFlags::MS_STRICTATIME);
        let relatime = msflags.contains(MsFlags::MS_RELATIME);

        let atime = if strictatime {
            linux::MOUNT_ATTR_STRICTATIME
        } else if noatime {
            linux::MOUNT_ATTR_NOATIME
        } else if relatime {
            linux::MOUNT_ATTR_RELATIME
        } else {
            0
        };

        let non_atime = attr_set_from_flags & !atime_bits;

        if atime != 0 {
            mount_attr.attr_clr |= linux::MOUNT_ATTR__ATIME;
            mount_attr.attr_set |= non_atime | atime;
        } else {
            mount_attr.attr_set |= non_atime;
        }
    }

    /// check_proc_mount checks to ensure that the mount destination is not over the top of /proc.
    /// dest is required to be an abs path and have any symlinks resolved before calling this function.
    /// # Example  (a valid case where `/proc` is mounted with `proc` type.)
    ///
    /// ```
    /// use std::path::PathBuf;
    /// use oci_spec::runtime::MountBuilder as SpecMountBuilder;
    /// use libcontainer::rootfs::Mount;
    ///
    /// let mounter = Mount::new();
    ///
    /// let rootfs = PathBuf::from("/var/lib/my-runtime/containers/abcd1234/rootfs");
    /// let destination = PathBuf::from("/proc");
    /// let source = PathBuf::from("proc");
    /// let typ = "proc";
    ///
    /// let mount = SpecMountBuilder::default()
    ///     .destination(destination)
    ///     .typ(typ)
    ///     .source(source)
    ///     .build()
    ///     .expect("failed to build SpecMount");
    ///
    /// assert!(mounter.check_proc_mount(rootfs.as_path(), &mount).is_ok());
    /// ```
    /// # Example (bind mount to `/proc` that should fail)
    /// ```
    /// use std::path::PathBuf;
    /// use oci_spec::runtime::MountBuilder as SpecMountBuilder;
    /// use libcontainer::rootfs::Mount;
    ///
    /// let mounter = Mount::new();
    ///
    /// let rootfs = PathBuf::from("/var/lib/my-runtime/containers/abcd1234/rootfs");
    /// let destination = PathBuf::from("/proc");
    /// let source = PathBuf::from("/tmp");
    /// let typ = "bind";
    ///
    /// let mount = SpecMountBuilder::default()
    ///     .destination(destination)
    ///     .typ(typ)
    ///     .source(source)
    ///     .build()
    ///     .expect("failed to build SpecMount");
    ///
    /// assert!(mounter.check_proc_mount(rootfs.as_path(), &mount).is_err());
    /// ```
    pub fn check_proc_mount(&self, rootfs: &Path, mount: &SpecMount) -> Result<()> {
        const PROC_ROOT_INO: u64 = 1;
        const VALID_PROC_MOUNTS: &[&str] = &[
            "/proc/cpuinfo",
            "/proc/diskstats",
            "/proc/meminfo",
            "/proc/stat",
            "/proc/swaps",
            "/proc/uptime",
            "/proc/loadavg",
            "/proc/slabinfo",
            "/proc/sys/kernel/ns_last_pid",
            "/proc/sys/crypto/fips_enabled",
        ];

        let dest = mount.destination();

        let container_proc_path = rootfs.join("proc");
        let dest_path = rootfs.join_safely(dest).map_err(|err| {
            tracing::error!(
                "could not join rootfs path with mount destination {:?}: {}",
                dest,
                err
            );
            MountError::Other(err.into())
        })?;

        // If path is Ok, it means dest_path is under /proc.
        // - Ok(p) with p.is_empty(): mount target is exactly /proc.
        //   In this case, check if the mount source is procfs.
        // - Ok(p) with !p.is_empty(): mount target is under /proc.
        //   Only allow if it matches a specific whitelist of proc entries.
        // - Err: not under /proc, so no further checks are needed
        let path = dest_path.strip_prefix(&container_proc_path);

        match path {
            Err(_) => Ok(()),
            Ok(p) if p.as_os_str().is_empty() => {
                if mount.typ().as_deref() == Some("proc") {
                    return Ok(());
                }

                if is_bind(mount) {
                    if let Some(source) = mount.source() {
                        let stat = statfs(source).map_err(MountError::from)?;
                        if stat.filesystem_type() == PROC_SUPER_MAGIC {
                            let meta = fs::metadata(source).map_err(MountError::from)?;
                            // Follow the behavior of runc's checkProcMount function.
                            if meta.ino() != PROC_ROOT_INO {
                                tracing::warn!(
                                    "bind-mount {} (source {:?}) is of type procfs but not the root (inode {}). \
                                    Future versions may reject this.",
                                    dest.display(),
                                    mount.source(),
                                    meta.ino()
                                );
                            }
                            return Ok(());
                        }
                    }
                }

                Err(MountError::Custom(format!(
                    "{} cannot be mounted because it is not type proc",
                    dest.display()
                )))
            }
            Ok(_) => {
                // Here dest is definitely under /proc. Do not allow those,
                // except for a few specific entries emulated by lxcfs.
                let is_allowed = VALID_PROC_MOUNTS.iter().any(|allowed_path| {
                    let container_allowed_path = rootfs.join(allowed_path.trim_start_matches('/'));
                    dest_path == container_allowed_path
                });

                if is_allowed {
                    Ok(())
                } else {
                    Err(MountError::Other(
                        format!("{} is not a valid mount under /proc", dest.display()).into(),
                    ))
                }
            }
        }
    }
}

/// nvbind: resolve `path` against `rootfs` the way runc's securejoin does: every symlink met on
/// the way is followed with `rootfs` as "/" (absolute targets restart at the rootfs, ".." never
/// climbs above it), and components that do not exist are kept as they are. The result is an
/// absolute path meant to be interpreted inside `rootfs`; it is only a hint for the
/// pathrs-scoped operations that follow (which still refuse anything escaping the root), so a
/// race here can make a mount fail but not escape. On an unexpected error the path is returned
/// unchanged and pathrs decides.
/// nvbind: `dest` resolved in the rootfs when it already exists, and is a directory if
/// `want_dir` (then with the stat that said so); what `mkdir_all` (for a directory) or
/// `create_file` + `resolve` (for a file) would end with, without their procfs checks.
fn existing_destination(
    root: &Root,
    dest: &Path,
    want_dir: bool,
) -> Option<(OwnedFd, Option<nix::sys::stat::FileStat>)> {
    let fd = probe_in_root(root, dest)?;
    if want_dir {
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return None;
        }
        return Some((fd, Some(st)));
    }
    Some((fd, None))
}

/// nvbind: `root.resolve(path)` where a failure only means "take the other path": one
/// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, what pathrs' resolver does when the
/// kernel has openat2, without the error pathrs would build for a path that does not exist
/// (its message names the root by reading /proc/thread-self/fd/N: about 9 syscalls through a
/// checked procfs, for an error that is dropped). ENOENT and ENOTDIR are answered at once;
/// any other failure (no openat2, EAGAIN under a concurrent rename, ...) is left to pathrs.
fn probe_in_root(root: &Root, path: &Path) -> Option<OwnedFd> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    use std::os::fd::FromRawFd;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match nix::fcntl::openat2(root.as_fd().as_raw_fd(), path, how) {
        // SAFETY: openat2 just returned this descriptor and nothing else owns it.
        Ok(fd) => Some(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(Errno::ENOENT | Errno::ENOTDIR) => None,
        Err(_) => root.resolve(path).ok().map(Into::into),
    }
}

/// nvbind: creates the file `dest` (0644, as `create_file` would) in its parent directory when
/// that exists in the rootfs; false when it does not, or on any error (the caller then takes
/// the pathrs path, which reports it). An `EEXIST` counts as created, as in the caller.
fn create_in_existing_parent(root: &Root, dest: &Path) -> bool {
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return false;
    };
    let Some(dir) = probe_in_root(root, parent) else {
        return false;
    };
    match nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_EXCL
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    ) {
        Ok(fd) => {
            let _ = nix::unistd::close(fd);
            true
        }
        Err(Errno::EEXIST) => true,
        Err(_) => false,
    }
}

/// nvbind: makes the directory `dest` (0755 less the umask, as `mkdir_all` would) in its
/// parent directory when that exists in the rootfs: one openat2 and one mkdirat where
/// `mkdir_all` verifies each step through procfs (about 60 syscalls for a cgroup v1
/// subsystem's directory). False when the parent is missing, `dest` exists already, or on any
/// error: the caller then takes the pathrs path, which reports it.
fn mkdir_in_existing_parent(root: &Root, dest: &Path) -> bool {
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return false;
    };
    let Some(dir) = probe_in_root(root, parent) else {
        return false;
    };
    nix::sys::stat::mkdirat(
        Some(dir.as_raw_fd()),
        name,
        nix::sys::stat::Mode::from_bits_truncate(0o755),
    )
    .is_ok()
}

/// nvbind: the destination a mount was made at (securejoin-like, described with
/// `canonical_source` above); public so that a checkpoint names each mount as it was made
/// (CRIU's external mount keys).
pub fn resolve_in_root(rootfs: &Path, path: &Path) -> PathBuf {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    use std::path::Component;

    const MAX_SYMLINKS: usize = 255;
    let mut remaining: VecDeque<OsString> = VecDeque::new();
    let push_front = |remaining: &mut VecDeque<OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => remaining.push_front(n.to_os_string()),
                Component::ParentDir => remaining.push_front(OsString::from("..")),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
    };
    push_front(&mut remaining, path);
    let mut current = PathBuf::new();
    let mut links = 0;
    while let Some(part) = remaining.pop_front() {
        if part == ".." {
            current.pop();
            continue;
        }
        let candidate = current.join(&part);
        let on_host = rootfs.join(&candidate);
        match fs::symlink_metadata(&on_host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                let Ok(target) = fs::read_link(&on_host) else {
                    return path.to_path_buf();
                };
                if links > MAX_SYMLINKS {
                    return path.to_path_buf();
                }
                if target.is_absolute() {
                    current = PathBuf::new();
                }
                push_front(&mut remaining, &target);
            }
            Ok(_) => current = candidate,
            Err(err) if err.kind() == ErrorKind::NotFound => current = candidate,
            Err(_) => return path.to_path_buf(),
        }
    }
    Path::new("/").join(current)
}

/// Find parent mount of rootfs in given mount infos
pub fn find_parent_mount(
    rootfs: &Path,
    mount_infos: Vec<MountInfo>,
) -> std::result::Result<MountInfo, MountError> {
    // find the longest mount point
    let parent_mount_info = mount_infos
        .into_iter()
        .filter(|mi| rootfs.starts_with(&mi.mount_point))
        .max_by(|mi1, mi2| mi1.mount_point.len().cmp(&mi2.mount_point.len()))
        .ok_or_else(|| {
            MountError::Custom(format!("can't find the parent mount of {:?}", rootfs))
        })?;
    Ok(parent_mount_info)
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "v1")]
    use std::fs;
    use std::fs::OpenOptions;
    use std::os::unix::fs::symlink;
    use std::os::unix::net::UnixListener;
    use std::str::FromStr;

    use anyhow::{Context, Ok, Result};

    use super::*;
    use crate::syscall::test::{ArgName, FsconfigArgs, FsopenArgs, TestHelperSyscall};

    fn helper_syscall(m: &Mount) -> &TestHelperSyscall {
        m.syscall
            .as_any()
            .downcast_ref::<TestHelperSyscall>()
            .unwrap()
    }

    // Helpers to build the expected fsconfig calls of the fd-based mount flow.
    fn fsc_str(key: &str, val: &str) -> FsconfigArgs {
        FsconfigArgs {
            cmd: linux::FSCONFIG_SET_STRING as u32,
            key: Some(key.to_string()),
            val: Some(val.to_string()),
            aux: 0,
        }
    }

    fn fsc_flag(key: &str) -> FsconfigArgs {
        FsconfigArgs {
            cmd: linux::FSCONFIG_SET_FLAG as u32,
            key: Some(key.to_string()),
            val: None,
            aux: 0,
        }
    }

    fn fsc_create() -> FsconfigArgs {
        FsconfigArgs {
            cmd: linux::FSCONFIG_CMD_CREATE as u32,
            key: None,
            val: None,
            aux: 0,
        }
    }

    #[test]
    fn test_mount_into_container() -> Result<()> {
        let tmp_dir = tempfile::tempdir()?;
        {
            // Non-bind mount (devpts) uses the fsopen/fsconfig/fsmount flow.
            let m = Mount::new();
            let mount = &SpecMountBuilder::default()
                .destination(PathBuf::from("/dev/pts"))
                .typ("devpts")
                .source(PathBuf::from("devpts"))
                .options(vec![
                    "nosuid".to_string(),
                    "noexec".to_string(),
                    "newinstance".to_string(),
                    "ptmxmode=0666".to_string(),
                    "mode=0620".to_string(),
                    "gid=5".to_string(),
                ])
                .build()?;
            let mount_option_config = parse_mount(mount)?;

            assert!(
                m.mount_into_container(
                    mount,
                    tmp_dir.path(),
                    &mount_option_config,
                    Some("defaults")
                )
                .is_ok()
            );

            let s = helper_syscall(&m);

            assert_eq!(
                s.get_fsopen_args(),
                vec![FsopenArgs {
                    fsname: Some("devpts".to_string()),
                    flags: 0,
                }]
            );

            // source, then each mount option, then the create command. The
            // SELinux mount label is only applied when SELinux is enabled.
            let mut want_fsconfig = vec![
                fsc_str("source", "devpts"),
                fsc_flag("newinstance"),
                fsc_str("ptmxmode", "0666"),
                fsc_str("mode", "0620"),
                fsc_str("gid", "5"),
            ];
            if Path::new("/sys/fs/selinux").exists() {
                want_fsconfig.push(fsc_str("context", "defaults"));
            }
            want_fsconfig.push(fsc_create());
            assert_eq!(s.get_fsconfig_args(), want_fsconfig);

            let setattr = s.get_mount_setattr_args();
            assert_eq!(setattr.len(), 1);
            assert_eq!(
                setattr[0].attr_set,
                linux::MOUNT_ATTR_NOSUID | linux::MOUNT_ATTR_NOEXEC
            );

            let mv = s.get_move_mount_args();
            assert_eq!(mv.len(), 1);
            assert_eq!(
                mv[0].to_dirfd_path.as_deref(),
                Some(tmp_dir.path().join("dev/pts").as_path())
            );
        }
        {
            // Read-only bind mount uses the open_tree flow; the read-only flag
            // is applied via mount_setattr (no separate remount).
            let m = Mount::new();
            let mount = &SpecMountBuilder::default()
                .destination(PathBuf::from("/dev/null"))
                .typ("bind")
                .source(tmp_dir.path().join("null"))
                .options(vec!["ro".to_string()])
                .build()?;
            let mount_option_config = parse_mount(mount)?;
            OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(tmp_dir.path().join("null"))?;

            assert!(
                m.mount_into_container(mount, tmp_dir.path(), &mount_option_config, None)
                    .is_ok()
            );

            let s = helper_syscall(&m);

            let open_tree = s.get_open_tree_args();
            assert_eq!(open_tree.len(), 1);
            assert_eq!(
                open_tree[0].path.as_deref(),
                Some(tmp_dir.path().join("null").to_str().unwrap())
            );
            assert_eq!(open_tree[0].flags & linux::AT_RECURSIVE, 0);

            let setattr = s.get_mount_setattr_args();
            assert_eq!(setattr.len(), 1);
            assert_eq!(setattr[0].attr_set, linux::MOUNT_ATTR_RDONLY);

            let mv = s.get_move_mount_args();
            assert_eq!(mv.len(), 1);
            assert_eq!(
                mv[0].to_dirfd_path.as_deref(),
                Some(tmp_dir.path().join("dev/null").as_path())
            );
        }
        {
            // Socket file bind-mount
            // https://github.com/youki-dev/youki/issues/3483
            let m = Mount::new();
            let mount = &SpecMountBuilder::default()
                .destination(PathBuf::from("/tmp.sock"))
                .typ("bind")
                .source(tmp_dir.path().join("tmp.sock"))
                .build()?;
            let mount_option_config = parse_mount(mount)?;
            UnixListener::bind(tmp_dir.path().join("tmp.sock"))?;

            assert!(
                m.mount_into_container(mount, tmp_dir.path(), &mount_option_config, None)
                    .is_ok()
            );

            let s = helper_syscall(&m);

            let open_tree = s.get_open_tree_args();
            assert_eq!(open_tree.len(), 1);
            assert_eq!(
                open_tree[0].path.as_deref(),
                Some(tmp_dir.path().join("tmp.sock").to_str().unwrap())
            );
            assert_eq!(open_tree[0].flags & linux::AT_RECURSIVE, 0);

            let setattr = s.get_mount_setattr_args();
            assert_eq!(setattr.len(), 1);
            assert_eq!(setattr[0].attr_set, 0);

            let mv = s.get_move_mount_args();
            assert_eq!(mv.len(), 1);
            assert_eq!(
                mv[0].to_dirfd_path.as_deref(),
                Some(tmp_dir.path().join("tmp.sock").as_path())
            );
        }
        {
            // EINVAL on the first attempt is retried once and then succeeds.
            let m = Mount::new();
            let mount = &SpecMountBuilder::default()
                .destination(PathBuf::from("/tmp/retry"))
                .typ("tmpfs")
                .source(PathBuf::from("tmpfs"))
                .build()?;
            let mount_option_config = parse_mount(mount)?;

            let syscall = helper_syscall(&m);
            syscall.set_ret_err(ArgName::Fsopen, || {
                Err(crate::syscall::SyscallError::Nix(nix::errno::Errno::EINVAL))
            });
            syscall.set_ret_err_times(ArgName::Fsopen, 1);

            assert!(
                m.mount_into_container(mount, tmp_dir.path(), &mount_option_config, None)
                    .is_ok()
            );
            // The failed first fsopen isn't recorded; only the retried one is.
            assert_eq!(syscall.get_fsopen_args().len(), 1);
        }
        {
            // EINVAL on both attempts gives up.
            let m = Mount::new();
            let mount = &SpecMountBuilder::default()
                .destination(PathBuf::from("/tmp/retry"))
                .typ("tmpfs")
                .source(PathBuf::from("tmpfs"))
                .build()?;
            let mount_option_config = parse_mount(mount)?;

            let syscall = helper_syscall(&m);
            syscall.set_ret_err(ArgName::Fsopen, || {
                Err(crate::syscall::SyscallError::Nix(nix::errno::Errno::EINVAL))
            });
            syscall.set_ret_err_times(ArgName::Fsopen, 2);

            assert!(
                m.mount_into_container(mount, tmp_dir.path(), &mount_option_config, None)
                    .is_err()
            );
            assert_eq!(syscall.get_fsopen_args().len(), 0);
        }
        {
            // EBUSY is retried up to MAX_EBUSY_MOUNT_ATTEMPTS times.
            let m = Mount::new();
            let mount = &SpecMountBuilder::default()
                .destination(PathBuf::from("/tmp/retry"))
                .typ("tmpfs")
                .source(PathBuf::from("tmpfs"))
                .build()?;
            let mount_option_config = parse_mount(mount)?;

            let syscall = helper_syscall(&m);
            syscall.set_ret_err(ArgName::Fsopen, || {
                Err(crate::syscall::SyscallError::Nix(nix::errno::Errno::EBUSY))
            });
            syscall.set_ret_err_times(ArgName::Fsopen, MAX_EBUSY_MOUNT_ATTEMPTS as usize - 1);

            assert!(
                m.mount_into_container(mount, tmp_dir.path(), &mount_option_config, None)
                    .is_ok()
            );
            assert_eq!(syscall.get_fsopen_args().len(), 1);
        }
        {
            // EBUSY beyond MAX_EBUSY_MOUNT_ATTEMPTS gives up.
            let m = Mount::new();
            let mount = &SpecMountBuilder::default()
                .destination(PathBuf::from("/tmp/retry"))
                .typ("tmpfs")
                .source(PathBuf::from("tmpfs"))
                .build()?;
            let mount_option_config = parse_mount(mount)?;

            let syscall = helper_syscall(&m);
            syscall.set_ret_err(ArgName::Fsopen, || {
                Err(crate::syscall::SyscallError::Nix(nix::errno::Errno::EBUSY))
            });
            syscall.set_ret_err_times(ArgName::Fsopen, MAX_EBUSY_MOUNT_ATTEMPTS as usize);

            assert!(
                m.mount_into_container(mount, tmp_dir.path(), &mount_option_config, None)
                    .is_err()
            );
            assert_eq!(syscall.get_fsopen_args().len(), 0);
        }

        Ok(())
    }

    struct FakeMountInfo {
        entries: Vec<MountInfo>,
    }
    impl MountInfoProvider for FakeMountInfo {
        fn mountinfo(&self) -> std::result::Result<Vec<MountInfo>, MountError> {
            std::result::Result::Ok(self.entries.clone())
        }
    }

    #[test]
    fn test_make_parent_mount_private() -> Result<()> {
        let tmp_dir = PathBuf::from_str("/tmp/mydir")?;

        let parent = tmp_dir.as_path().parent().unwrap().to_path_buf();
        let fake = FakeMountInfo {
            entries: vec![MountInfo {
                mnt_id: 1,
                pid: 0,
                majmin: "".to_string(),
                root: "/".to_string(),
                mount_point: parent.clone(),
                mount_options: Default::default(),
                opt_fields: vec![MountOptFields::Shared(1)],
                fs_type: "tmpfs".to_string(),
                mount_source: None,
                super_options: Default::default(),
            }],
        };

        let m = Mount::new().with_mountinfo_provider(fake);
        m.make_parent_mount_private(tmp_dir.as_path())?;

        let set = m
            .syscall
            .as_any()
            .downcast_ref::<TestHelperSyscall>()
            .unwrap()
            .get_mount_args();

        assert_eq!(set.len(), 1);

        let got = &set[0];
        assert_eq!(got.source, None);
        assert_eq!(got.fstype, None);
        assert_eq!(got.flags, MsFlags::MS_PRIVATE);
        assert_eq!(got.data, None);

        assert_eq!(got.target, parent);

        Ok(())
    }

    #[test]
    fn test_not_make_parent_mount_private_if_already_private() -> Result<()> {
        let tmp_dir = PathBuf::from_str("/tmp/mydir")?;

        let parent = tmp_dir.as_path().parent().unwrap().to_path_buf();
        let fake = FakeMountInfo {
            entries: vec![MountInfo {
                mnt_id: 1,
                pid: 0,
                majmin: "".to_string(),
                root: "/".to_string(),
                mount_point: parent.clone(),
                mount_options: Default::default(),
                opt_fields: vec![],
                fs_type: "tmpfs".to_string(),
                mount_source: None,
                super_options: Default::default(),
            }],
        };

        let m = Mount::new().with_mountinfo_provider(fake);
        m.make_parent_mount_private(tmp_dir.as_path())?;

        let set = m
            .syscall
            .as_any()
            .downcast_ref::<TestHelperSyscall>()
            .unwrap()
            .get_mount_args();

        assert_eq!(set.len(), 0);

        Ok(())
    }

    #[test]
    #[cfg(feature = "v2")]
    fn test_mount_cgroup_v2() -> Result<()> {
        // arrange
        let tmp = tempfile::tempdir().unwrap();
        let container_cgroup = PathBuf::from("/sys/fs/cgroup");

        let spec_cgroup_mount = SpecMountBuilder::default()
            .destination(&container_cgroup)
            .source("cgroup")
            .typ("cgroup")
            .build()
            .context("failed to build cgroup mount")?;

        let mount_opts = MountOptions {
            root: tmp.path(),
            label: None,
            cgroup_ns: true,
            source_tree: None,
        };

        let mounter = Mount::new();
        let flags = MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;

        // act
        let mount_option_config = MountOptionConfig {
            flags,
            data: vec![],
            rec_attr: None,
        };
        mounter
            .mount_cgroup_v2(&spec_cgroup_mount, &mount_opts, &mount_option_config)
            .context("failed to mount cgroup v2")?;

        // assert
        let s = helper_syscall(&mounter);

        // cgroup v2 is a non-bind mount (cgroup2 filesystem).
        assert_eq!(
            s.get_fsopen_args(),
            vec![FsopenArgs {
                fsname: Some("cgroup2".to_string()),
                flags: 0,
            }]
        );
        // No mount data, so only the source and the create command.
        assert_eq!(
            s.get_fsconfig_args(),
            vec![fsc_str("source", "cgroup"), fsc_create()]
        );

        let setattr = s.get_mount_setattr_args();
        assert_eq!(setattr.len(), 1);
        assert_eq!(
            setattr[0].attr_set,
            linux::MOUNT_ATTR_NOEXEC | linux::MOUNT_ATTR_NOSUID | linux::MOUNT_ATTR_NODEV
        );

        let mv = s.get_move_mount_args();
        assert_eq!(mv.len(), 1);
        assert_eq!(
            mv[0].to_dirfd_path.as_deref(),
            Some(tmp.path().join_safely(container_cgroup)?.as_path())
        );

        Ok(())
    }

    #[test]
    fn test_find_parent_mount() -> anyhow::Result<()> {
        let mount_infos = vec![
            MountInfo {
                mnt_id: 11,
                pid: 10,
                majmin: "".to_string(),
                root: "/".to_string(),
                mount_point: PathBuf::from("/"),
                mount_options: Default::default(),
                opt_fields: vec![],
                fs_type: "ext4".to_string(),
                mount_source: Some("/dev/sda1".to_string()),
                super_options: Default::default(),
            },
            MountInfo {
                mnt_id: 12,
                pid: 11,
                majmin: "".to_string(),
                root: "/".to_string(),
                mount_point: PathBuf::from("/proc"),
                mount_options: Default::default(),
                opt_fields: vec![],
                fs_type: "proc".to_string(),
                mount_source: Some("proc".to_string()),
                super_options: Default::default(),
            },
        ];

        let res = find_parent_mount(Path::new("/path/to/rootfs"), mount_infos)
            .context("failed to get parent mount")?;
        assert_eq!(res.mnt_id, 11);
        Ok(())
    }

    #[test]
    fn test_find_parent_mount_with_empty_mount_infos() {
        let mount_infos = vec![];
        let res = find_parent_mount(Path::new("/path/to/rootfs"), mount_infos);
        assert!(res.is_err());
    }

    #[test]
    fn test_check_proc_mount_proc_ok() -> Result<()> {
        let rootfs = tempfile::tempdir()?;
        let mounter = Mount::new();

        let mount = SpecMountBuilder::default()
            .destination(PathBuf::from("/proc"))
            .typ("proc".to_string())
            .source(PathBuf::from("proc"))
            .build()?;

        assert!(mounter.check_proc_mount(rootfs.path(), &mount).is_ok());
        Ok(())
    }

    #[test]
    fn test_check_proc_mount_allowed_subpath() -> Result<()> {
        let rootfs = tempfile::tempdir()?;
        let uptime = rootfs.path().join("proc/uptime");
        std::fs::create_dir_all(uptime.parent().unwrap())?;

        let mounter = Mount::new();
        let mount = SpecMountBuilder::default()
            .destination(PathBuf::from("/proc/uptime"))
            .typ("bind".to_string())
            .source(uptime)
            .build()?;

        assert!(mounter.check_proc_mount(rootfs.path(), &mount).is_ok());
        Ok(())
    }

    #[test]
    fn test_check_proc_mount_denied_subpath() -> Result<()> {
        let rootfs = tempfile::tempdir()?;
        let custom = rootfs.path().join("proc/custom");
        std::fs::create_dir_all(custom.parent().unwrap())?;

        let mounter = Mount::new();
        let mount = SpecMountBuilder::default()
            .destination(PathBuf::from("/proc/custom"))
            .typ("bind".to_string())
            .source(custom)
            .build()?;

        assert!(mounter.check_proc_mount(rootfs.path(), &mount).is_err());
        Ok(())
    }

    #[test]
    fn setup_mount_proc_fails_if_destination_is_symlink() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let rootfs = tmp.path();

        let symlink_path = rootfs.join("symlink");
        fs::create_dir_all(&symlink_path)?;
        let proc_path = rootfs.join("proc");

        symlink(&symlink_path, &proc_path)?;

        let mount = SpecMountBuilder::default()
            .destination(PathBuf::from("/proc"))
            .typ("proc")
            .source(proc_path)
            .build()?;

        let options = MountOptions {
            root: rootfs,
            label: None,
            cgroup_ns: true,
            source_tree: None,
        };

        let m = Mount::new();

        let res = m.setup_mount(&mount, &options);

        // proc destination symlink should be rejected
        assert!(res.is_err());
        let err = format!("{:?}", res.err().unwrap());
        assert!(err.contains("must be mounted on ordinary directory"));

        Ok(())
    }

    #[test]
    fn setup_mount_sys_fails_if_destination_is_symlink() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let rootfs = tmp.path();

        let symlink_path = rootfs.join("symlink");
        fs::create_dir_all(&symlink_path)?;
        let sys_path = rootfs.join("sys");

        symlink(&symlink_path, &sys_path)?;

        let mount = SpecMountBuilder::default()
            .destination(PathBuf::from("/sys"))
            .typ("sysfs")
            .source(sys_path)
            .build()?;

        let options = MountOptions {
            root: rootfs,
            label: None,
            cgroup_ns: true,
            source_tree: None,
        };

        let m = Mount::new();

        let res = m.setup_mount(&mount, &options);

        // sys destination symlink should be rejected
        assert!(res.is_err());
        let err = format!("{:?}", res.err().unwrap());
        assert!(err.contains("must be mounted on ordinary directory"));

        Ok(())
    }

    // nvbind
    #[test]
    fn test_resolve_in_root() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        fs::create_dir_all(root.join("real/dir"))?;
        std::os::unix::fs::symlink("/abs/missing", root.join("dangling"))?;
        std::os::unix::fs::symlink("../real", root.join("real/up"))?;
        std::os::unix::fs::symlink("/../../real/dir", root.join("climb"))?;
        let r = |p: &str| resolve_in_root(root, Path::new(p));
        assert_eq!(r("/real/dir"), PathBuf::from("/real/dir"));
        assert_eq!(r("/dangling/m"), PathBuf::from("/abs/missing/m"));
        assert_eq!(r("/real/up/dir/x"), PathBuf::from("/real/dir/x"));
        assert_eq!(r("/climb"), PathBuf::from("/real/dir"));
        assert_eq!(r("/../../new"), PathBuf::from("/new"));
        Ok(())
    }

    // nvbind
    #[test]
    // nvbind: the probe answers what pathrs' resolve answers (the same file, or nothing) for
    // paths that exist, do not, pass through a file, climb above the rootfs, or go through
    // symlinks (absolute, relative, escaping, dangling).
    fn test_probe_in_root_agrees_with_pathrs() -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir()?;
        fs::write(tmp.path().join("outside"), b"")?;
        let rootfs = tmp.path().join("rootfs");
        fs::create_dir_all(rootfs.join("usr/lib"))?;
        fs::write(rootfs.join("usr/lib/present.so"), b"")?;
        fs::write(rootfs.join("outside"), b"")?;
        std::os::unix::fs::symlink("/usr/lib", rootfs.join("lib"))?;
        std::os::unix::fs::symlink("usr/lib/present.so", rootfs.join("rel"))?;
        std::os::unix::fs::symlink("../../../outside", rootfs.join("usr/lib/up"))?;
        std::os::unix::fs::symlink("/nowhere", rootfs.join("dangling"))?;
        let root = Root::open(&rootfs).unwrap();
        let ino = |fd: &OwnedFd| nix::sys::stat::fstat(fd.as_raw_fd()).unwrap().st_ino;
        for path in [
            "/usr/lib/present.so",
            "usr/lib/present.so",
            "/lib/present.so",
            "/rel",
            "/usr/lib/up",
            "/../../outside",
            "/usr/lib/present.so/x",
            "/usr/lib/missing.so",
            "/no/such/dir",
            "/dangling",
            "/dangling/x",
            "/",
            "/usr/lib",
        ] {
            let probed = probe_in_root(&root, Path::new(path)).map(|fd| ino(&fd));
            let resolved = root.resolve(Path::new(path)).ok().map(|h| ino(&h.into()));
            assert_eq!(probed, resolved, "{path}");
        }
        let outside = fs::metadata(rootfs.join("outside"))?.ino();
        let up = probe_in_root(&root, Path::new("/usr/lib/up")).unwrap();
        assert_eq!(ino(&up), outside, "a symlink climbing out stays inside");
        assert!(probe_in_root(&root, Path::new("/usr/lib/missing.so")).is_none());
        Ok(())
    }

    #[test]
    fn test_fast_destination_paths() -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir()?;
        let rootfs = tmp.path().join("rootfs");
        fs::create_dir_all(rootfs.join("usr/lib"))?;
        fs::write(rootfs.join("usr/lib/present.so"), b"")?;
        std::os::unix::fs::symlink("/usr/lib", rootfs.join("lib"))?;
        let root = Root::open(&rootfs).unwrap();
        let ino = |fd: &OwnedFd| nix::sys::stat::fstat(fd.as_raw_fd()).unwrap().st_ino;
        // An existing file, also through a symlink inside the rootfs; a directory only when
        // one is wanted.
        let (f, st) = existing_destination(&root, Path::new("/lib/present.so"), false).unwrap();
        assert_eq!(ino(&f), fs::metadata(rootfs.join("usr/lib/present.so"))?.ino());
        assert!(st.is_none());
        assert!(existing_destination(&root, Path::new("/usr/lib/present.so"), true).is_none());
        let (_, st) = existing_destination(&root, Path::new("/usr/lib"), true).unwrap();
        assert_eq!(st.unwrap().st_ino, fs::metadata(rootfs.join("usr/lib"))?.ino());
        assert!(existing_destination(&root, Path::new("/usr/lib/missing.so"), false).is_none());
        // A file is made in an existing parent (0644 less the umask), never above the rootfs.
        assert!(create_in_existing_parent(&root, Path::new("/usr/lib/new.so")));
        assert!(rootfs.join("usr/lib/new.so").is_file());
        assert!(create_in_existing_parent(&root, Path::new("/usr/lib/new.so")), "EEXIST");
        assert!(create_in_existing_parent(&root, Path::new("/../../escaped.so")));
        assert!(rootfs.join("escaped.so").is_file());
        assert!(!tmp.path().join("escaped.so").exists());
        assert!(!create_in_existing_parent(&root, Path::new("/no/such/dir/x.so")));
        // A directory likewise, through a symlink inside the rootfs too; not over anything
        // that exists, not without its parent, never above the rootfs.
        assert!(mkdir_in_existing_parent(&root, Path::new("/lib/newdir")));
        assert!(rootfs.join("usr/lib/newdir").is_dir());
        assert!(!mkdir_in_existing_parent(&root, Path::new("/usr/lib/newdir")));
        assert!(!mkdir_in_existing_parent(&root, Path::new("/usr/lib/present.so")));
        assert!(!mkdir_in_existing_parent(&root, Path::new("/no/such/dir")));
        assert!(mkdir_in_existing_parent(&root, Path::new("/../../escaped")));
        assert!(rootfs.join("escaped").is_dir());
        assert!(!tmp.path().join("escaped").exists());
        // A bind source is cloned by its path as given (open_tree follows the symlinks);
        // one that cannot be is named with its destination; an empty one is never the cwd.
        let m = Mount::new();
        let bind = |src: &str| {
            SpecMountBuilder::default()
                .destination(PathBuf::from("/usr/lib/present.so"))
                .typ("bind")
                .source(PathBuf::from(src))
                .options(vec!["rbind".to_string()])
                .build()
                .unwrap()
        };
        let src = rootfs.join("lib/present.so");
        m.clone_bind_source(&bind(src.to_str().unwrap()), &src)?;
        let args = helper_syscall(&m).get_open_tree_args();
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].path.as_deref(), src.to_str());
        assert_eq!(args[0].dirfd, libc::AT_FDCWD);
        assert_ne!(args[0].flags & linux::AT_RECURSIVE, 0);
        assert_eq!(args[0].flags & libc::AT_EMPTY_PATH as u32, 0);
        helper_syscall(&m).set_ret_err(ArgName::OpenTree, || {
            Err(SyscallError::Nix(nix::errno::Errno::ENOENT))
        });
        let missing = Path::new("/no/such/source");
        match m.clone_bind_source(&bind("/no/such/source"), missing) {
            Err(MountError::BindSource { path, dest, source }) => {
                assert_eq!(path, missing);
                assert_eq!(dest, Path::new("/usr/lib/present.so"));
                assert_eq!(source.kind(), ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            m.clone_bind_source(&bind(""), Path::new("")),
            Err(MountError::BindSource { .. })
        ));
        assert_eq!(helper_syscall(&m).get_open_tree_args().len(), 1);
        Ok(())
    }

    // nvbind: the rootfs is opened once for a container's mounts, and opened again after a
    // mount on the rootfs directory itself (the descriptor would still show what is under it).
    #[test]
    fn test_root_kept_across_mounts() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let rootfs = tmp.path().canonicalize()?;
        fs::create_dir_all(rootfs.join("tmp"))?;
        let m = Mount::new();
        let tmpfs = |dest: &str| {
            SpecMountBuilder::default()
                .destination(PathBuf::from(dest))
                .typ("tmpfs")
                .source(PathBuf::from("tmpfs"))
                .build()
                .unwrap()
        };
        let held = |m: &Mount| m.root.borrow().as_ref().map(|r| Rc::as_ptr(&r.root));
        let mount = |m: &Mount, dest: &str| {
            let spec = tmpfs(dest);
            m.mount_into_container(&spec, &rootfs, &parse_mount(&spec).unwrap(), None)
        };
        mount(&m, "/tmp")?;
        let first = held(&m).expect("the rootfs is kept");
        mount(&m, "/tmp/new")?;
        assert_eq!(held(&m), Some(first), "opened again for the second mount");
        mount(&m, "/")?;
        assert_eq!(held(&m), None, "kept after a mount on the rootfs itself");
        mount(&m, "/tmp")?;
        assert!(held(&m).is_some());
        assert_eq!(helper_syscall(&m).get_move_mount_args().len(), 4);
        Ok(())
    }
}
