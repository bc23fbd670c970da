use std::os::unix::prelude::RawFd;
use std::path::PathBuf;
use std::rc::Rc;

use libcgroups::common::CgroupConfig;
use oci_spec::runtime::Spec;

use crate::container::Container;
use crate::notify_socket::NotifyListener;
use crate::syscall::syscall::SyscallType;
use crate::user_ns::UserNamespaceConfig;
use crate::workload::Executor;
#[derive(Debug, Copy, Clone)]
pub enum ContainerType {
    InitContainer,
    TenantContainer { exec_notify_fd: RawFd },
}

#[derive(Clone)]
pub struct ContainerArgs {
    /// Indicates if an init or a tenant container should be created
    pub container_type: ContainerType,
    /// Interface to operating system primitives
    pub syscall: SyscallType,
    /// OCI compliant runtime spec
    pub spec: Rc<Spec>,
    /// Root filesystem of the container
    pub rootfs: PathBuf,
    /// Socket to communicate the file descriptor of the ptty
    pub console_socket: Option<RawFd>,
    /// The Unix Domain Socket to communicate container start
    pub notify_listener: NotifyListener,
    /// File descriptors preserved/passed to the container init process.
    pub preserve_fds: i32,
    /// The runtime's own descriptors (locks): closed first thing in the intermediate process.
    pub runtime_fds: Vec<RawFd>,
    /// Container state
    pub container: Option<Container>,
    /// nvbind: the container an exec (tenant) joins, for the state a seccomp agent receives
    /// (SCMP_ACT_NOTIFY); read only, unlike `container`, whose state the create saves.
    pub tenant_of: Option<Container>,
    /// Options for new namespace creation
    pub user_ns_config: Option<UserNamespaceConfig>,
    /// Cgroup Manager Config
    pub cgroup_config: CgroupConfig,
    /// nvbind: sub-cgroups of `cgroup_config`'s cgroup an exec joins instead (checked: relative,
    /// no `..`); empty: the cgroup itself.
    pub sub_cgroups: libcgroups::sub_cgroups::SubCgroupPaths,
    /// If the container is to be run in detached mode
    pub detached: bool,
    /// Manage the functions that actually run on the container
    pub executor: Box<dyn Executor>,
    /// Run in the init process on the prepared rootfs, before the createContainer hooks.
    pub rootfs_hook: Option<crate::container::builder::RootfsHook>,
    /// nvbind: linux.seccomp compiled by the runtime process, loaded as it is by the init.
    #[cfg(feature = "libseccomp")]
    pub seccomp_program: Option<Rc<crate::seccomp::Program>>,
    /// If do not use pivot root to jail process inside rootfs
    pub no_pivot: bool,
    // RawFd set to stdin of the container init process.
    pub stdin: Option<RawFd>,
    // RawFd set to stdout of the container init process.
    pub stdout: Option<RawFd>,
    // RawFd set to stderr of the container init process.
    pub stderr: Option<RawFd>,
    // Indicate if the init process should be a sibling of the main process.
    pub as_sibling: bool,
    /// File path used to communicate the PID of the
    /// container process to the higher-level runtime.
    pub pid_file: Option<PathBuf>,
}
