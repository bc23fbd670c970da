use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::{Linux, LinuxNamespaceType};
#[cfg(feature = "libseccomp")]
use oci_spec::runtime::{SECCOMP_FD_NAME, VERSION as OCI_VERSION};

use crate::hooks;
use crate::network::network_device::dev_change_net_namespace;
use crate::process::args::{ContainerArgs, ContainerType};
use crate::process::fork::{self, CloneCb};
use crate::process::container_intermediate_process::CgroupEntry;
use crate::process::{channel, container_intermediate_process};
use crate::syscall::SyscallError;
use crate::user_ns::UserNamespaceConfig;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Channel(#[from] channel::ChannelError),
    #[error("failed to write deny to setgroups")]
    SetGroupsDeny(#[source] std::io::Error),
    #[error(transparent)]
    UserNamespace(#[from] crate::user_ns::UserNamespaceError),
    #[error("container state is required")]
    ContainerStateRequired,
    #[error("failed to wait for intermediate process")]
    WaitIntermediateProcess(#[source] nix::Error),
    #[error(transparent)]
    IntelRdt(#[from] crate::process::intel_rdt::IntelRdtError),
    #[error("failed to create intermediate process")]
    IntermediateProcessFailed(#[source] fork::CloneError),
    // nvbind: transparent, as the errors above: CreateContainerError shows only Display, and
    // the listener's error says what failed (runc: "failed to connect with seccomp agent")
    #[error(transparent)]
    #[cfg(feature = "libseccomp")]
    SeccompListener(#[from] crate::process::seccomp_listener::SeccompListenerError),
    #[error("failed setup network device")]
    Network(#[from] crate::network::NetworkError),
    #[error("failed syscall")]
    SyscallOther(#[source] SyscallError),
    #[error("failed hooks {0}")]
    Hooks(#[from] crate::hooks::HookError),
    #[error("failed to build OCI state: {0}")]
    OciStateBuild(String),
    // nvbind: the container's cgroup manager could not be made in this process (for the
    // device rules, or to start the systemd unit). Transparent, as the errors above:
    // CreateContainerError shows only Display; boxed, as the cgroup errors are large.
    #[error(transparent)]
    CgroupManager(Box<libcgroups::common::CreateCgroupSetupError>),
    #[error(transparent)]
    DeviceRules(Box<libcgroups::common::AnyManagerError>),
    // nvbind: the limits of a container whose init is cloned with no intermediate, or whose
    // systemd unit this process starts (the intermediate reported its own as "cgroup error:
    // ...")
    #[error("cgroup error: {0}")]
    Limits(Box<libcgroups::common::AnyManagerError>),
    // nvbind: see the pid file in container_main_process; the cause is in the message, as
    // CreateContainerError shows only Display
    #[error("failed to write the pid file {path:?}: {error}")]
    PidFile {
        path: PathBuf,
        error: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, ProcessError>;

/// nvbind: the container's device rules, applied by the runtime's own process (never
/// inherited by the container: memlock is raised here for the eBPF filter) once the init
/// has prepared the rootfs. The intermediate process applied every other limit when it
/// joined the cgroup (`skip_devices`). A rootless container gets none: they need host
/// privileges (runc skips them there too), and it may have no cgroup at all.
fn apply_device_rules(
    container_args: &ContainerArgs,
    rootless: Rootless,
    shared: Option<&libcgroups::common::AnyCgroupManager>,
) -> Result<()> {
    // not known to be rootless: the rules are applied (or fail)
    if rootless == Some(true) {
        return Ok(());
    }
    use libcgroups::common::CgroupManager;
    let own;
    let cmanager = match shared {
        Some(m) => m,
        None => {
            own = libcgroups::common::create_cgroup_manager(container_args.cgroup_config.clone())
                .map_err(|e| ProcessError::CgroupManager(Box::new(e)))?;
            &own
        }
    };
    // Only the device rules: every other field is left out, so no other controller is
    // touched again. No `linux.resources` at all still gets the default rules on a deny-all
    // cgroup, as with runc.
    let mut devices_only = oci_spec::runtime::LinuxResources::default();
    devices_only.set_devices(
        container_args
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.devices().clone()),
    );
    cmanager
        .apply(&libcgroups::common::ControllerOpt {
            resources: &devices_only,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
            skip_devices: false,
        })
        .map_err(|e| ProcessError::DeviceRules(Box::new(e)))
}

/// nvbind: the cgroup manager of the container's cgroupfs cgroup (v1, hybrid or v2), made
/// once here for the whole create: the intermediate (a clone of this process, so it has a
/// copy of it) joins and limits the cgroup with it, and this process opens the cgroup for
/// `clone3` and applies the device rules with it. Each manager built costs the cgroup setup's
/// detection (two statfs) again, and on v1 the path of every controller; the create built
/// three. None for the systemd driver on cgroup v2 (its manager holds a D-Bus connection,
/// which two processes must not share: this process makes it after the clone, `start_unit`,
/// or the intermediate makes its own) and when it cannot be built (the intermediate then
/// tries and reports why).
fn shared_cgroup_manager(
    args: &ContainerArgs,
    rootless: Rootless,
) -> Option<libcgroups::common::AnyCgroupManager> {
    let config = &args.cgroup_config;
    if systemd_unit(config) {
        return None;
    }
    match libcgroups::common::create_cgroup_manager(config.clone()) {
        Ok(libcgroups::common::AnyCgroupManager::Systemd(_)) => None,
        Ok(manager) => Some(manager.with_rootless(rootless.unwrap_or(false))),
        Err(err) => {
            tracing::debug!(%err, "cannot make the cgroup manager; the intermediate tries");
            None
        }
    }
}

/// nvbind: the container's cgroup, created and opened for `clone3(CLONE_INTO_CGROUP)`,
/// where the intermediate can be cloned into it: a container's init (an exec joins an
/// existing cgroup or sub-cgroups), not rootless (its cgroup may be best-effort), on a cgroup
/// v2 cgroupfs path (v1 has no such clone; the systemd driver makes the cgroup for a pid).
/// None otherwise, and on any failure: the intermediate then joins as before and reports
/// what is wrong with the cgroup.
fn cgroup_to_clone_into(
    args: &ContainerArgs,
    rootless: Rootless,
    manager: Option<&libcgroups::common::AnyCgroupManager>,
) -> Option<OwnedFd> {
    if !makes_own_cgroup(args) || rootless != Some(false) {
        return None;
    }
    match manager?.open_for_clone()? {
        Ok(dir) => Some(dir),
        Err(err) => {
            tracing::debug!(%err, "cannot open the cgroup to clone into");
            None
        }
    }
}

/// nvbind: whether the container's init can be cloned by this process itself, with no
/// intermediate process, and if so the new namespaces its `clone3` makes: the PID one where
/// one is asked for, and the UTS, IPC, network and mount ones asked for without a path
/// (`Namespaces::made_by_clone`), as crun's one `clone3` does. The intermediate exists
/// to enter what must be entered before the init is forked: a user namespace (mapped by this
/// process), a time namespace, an existing PID namespace (setns applies to children only),
/// and the cgroup. None of those asked for, and the init cloned into its cgroup
/// (`cgroup_to_clone_into`), one `clone3` with CLONE_NEWPID and CLONE_INTO_CGROUP makes the
/// init as crun makes its: a process fewer to fork, run and reap in every create (issue 19:
/// in the trixie VM, under TCG, the intermediate was about 5 % of a `run`'s CPU). None for
/// an exec, which joins the container's namespaces through the intermediate as before.
fn direct_init_clone_namespaces(args: &ContainerArgs) -> Option<CloneFlags> {
    if !matches!(args.container_type, ContainerType::InitContainer)
        || args.user_ns_config.is_some()
    {
        return None;
    }
    direct_init_namespaces(args.spec.linux().as_ref()?.namespaces().as_ref())
}

/// `direct_init_clone_namespaces` for the spec's `linux.namespaces`.
fn direct_init_namespaces(
    namespaces: Option<&Vec<oci_spec::runtime::LinuxNamespace>>,
) -> Option<CloneFlags> {
    let namespaces = crate::namespaces::Namespaces::try_from(namespaces).ok()?;
    let absent = |typ| matches!(namespaces.get(typ), Ok(None));
    if !absent(LinuxNamespaceType::User) || !absent(LinuxNamespaceType::Time) {
        return None;
    }
    let pid = match namespaces.get(LinuxNamespaceType::Pid).ok()? {
        None => CloneFlags::empty(),
        Some(pid) if pid.path().is_none() => CloneFlags::CLONE_NEWPID,
        Some(_) => return None,
    };
    Some(pid | namespaces.made_by_clone())
}

/// nvbind: whether this process starts the container's systemd unit with the intermediate
/// in it and applies its limits, as runc's parent does (`Apply(pid)`, then `Set`), so that
/// one D-Bus connection serves the whole create (the device rules come through it too): a
/// container's init under the systemd driver on cgroup v2, as root, with no sub-cgroups to
/// join. A rootless container's intermediate keeps joining itself (the user's bus, and a
/// container without a cgroup where the user may not make one).
fn runtime_starts_unit(args: &ContainerArgs, rootless: Rootless) -> bool {
    systemd_unit(&args.cgroup_config)
        && makes_own_cgroup(args)
        && rootless == Some(false)
        && matches!(
            libcgroups::common::get_cgroup_setup(),
            Ok(libcgroups::common::CgroupSetup::Unified)
        )
}

/// nvbind: whether the runtime runs rootless (`utils::rootless_required`), asked once a
/// create. None where it could not tell: the device rules are then still applied, and
/// neither way in that needs root (`cgroup_to_clone_into`, `runtime_starts_unit`) is taken.
type Rootless = Option<bool>;

/// nvbind: a container's init with no sub-cgroups to join: the one case whose cgroup is made
/// for it (an exec joins the container's cgroup, or sub-cgroups of it).
fn makes_own_cgroup(args: &ContainerArgs) -> bool {
    matches!(args.container_type, ContainerType::InitContainer) && args.sub_cgroups.is_empty()
}

/// nvbind: the cgroup is a systemd unit (the systemd driver and a "slice:prefix:name" path),
/// whose manager holds a D-Bus connection.
fn systemd_unit(config: &libcgroups::common::CgroupConfig) -> bool {
    config.systemd_cgroup && !config.cgroup_path.is_absolute()
}

/// nvbind: the container's systemd unit started with the intermediate (`pid`) in it, and the
/// limits applied (`runtime_starts_unit`); its manager, for the device rules.
fn start_unit(args: &ContainerArgs, pid: Pid) -> Result<libcgroups::common::AnyCgroupManager> {
    use libcgroups::common::CgroupManager;
    let manager = libcgroups::common::create_cgroup_manager(args.cgroup_config.clone())
        .map_err(|e| ProcessError::CgroupManager(Box::new(e)))?;
    manager
        .add_task(pid)
        .map_err(|e| ProcessError::Limits(Box::new(e)))?;
    apply_limits(args, &manager)?;
    Ok(manager)
}

/// nvbind: the container's limits, applied to its cgroup by this process before the init is
/// cloned into it (the intermediate applies them after joining, `apply_cgroups`); the device
/// rules come later, as always (`apply_device_rules`).
fn apply_limits(
    args: &ContainerArgs,
    manager: &libcgroups::common::AnyCgroupManager,
) -> Result<()> {
    use libcgroups::common::CgroupManager;
    let Some(resources) = args.spec.linux().as_ref().and_then(|l| l.resources().as_ref()) else {
        return Ok(());
    };
    manager
        .apply(&libcgroups::common::ControllerOpt {
            resources,
            freezer_state: None,
            oom_score_adj: None,
            disable_oom_killer: false,
            skip_devices: true,
        })
        .map_err(|e| ProcessError::Limits(Box::new(e)))
}

pub fn container_main_process(container_args: &ContainerArgs) -> Result<Pid> {
    // We use a set of channels to communicate between parent and child process.
    // Each channel is uni-directional. Because we will pass these channel to
    // cloned process, we have to be deligent about closing any unused channel.
    // At minimum, we have to close down any unused senders. The corresponding
    // receivers will be cleaned up once the senders are closed down.
    let (mut intermediate_main_sender, mut intermediate_main_receiver) = channel::main_channel()?;
    let (mut init_main_sender, mut init_main_receiver) = channel::main_channel()?;
    let mut inter_chan = channel::intermediate_channel()?;
    let mut init_chan = channel::init_channel()?;

    let main_pid = Pid::this();
    // nvbind: built before the clone, so the intermediate has it too (`shared_cgroup_manager`)
    let rootless: Rootless =
        crate::utils::rootless_required(container_args.syscall.create_syscall().as_ref()).ok();
    let cgroup_manager = shared_cgroup_manager(container_args, rootless);
    // nvbind: how the intermediate gets into the container's cgroup: cloned into it (cgroup
    // v2, `cgroup_to_clone_into`), put there by this process (`runtime_starts_unit`), or it
    // joins; the child sees the value set before the clone that made it.
    let own_join = if runtime_starts_unit(container_args, rootless) {
        CgroupEntry::ByRuntime
    } else {
        CgroupEntry::Joins
    };
    let cgroup_entry = Cell::new(own_join);
    // nvbind: cloned straight into its cgroup where the kernel allows (crun does the same),
    // else cloned as before and the intermediate joins the cgroup itself.
    let cgroup = cgroup_to_clone_into(container_args, rootless, cgroup_manager.as_ref());
    // nvbind: the init itself, with no intermediate, where nothing needs one
    // (`direct_init_clone_namespaces`)
    let direct_init = match (cgroup.as_ref(), cgroup_manager.as_ref()) {
        (Some(dir), Some(manager)) => match direct_init_clone_namespaces(container_args) {
            Some(namespaces) => {
                apply_limits(container_args, manager)?;
                let made_by_clone = namespaces.difference(CloneFlags::CLONE_NEWPID);
                let mut init_cb: CloneCb = Box::new(|| {
                    container_intermediate_process::direct_init_process(
                        container_args,
                        &mut inter_chan.0,
                        &mut init_chan,
                        &mut intermediate_main_sender,
                        &mut init_main_sender,
                        made_by_clone,
                    )
                });
                match fork::container_clone_into_cgroup(
                    &mut init_cb,
                    container_args.as_sibling,
                    dir.as_fd(),
                    namespaces,
                ) {
                    Ok(pid) => Some(pid),
                    Err(err) => {
                        tracing::debug!(%err, "cannot clone the init directly; through an intermediate");
                        None
                    }
                }
            }
            None => None,
        },
        _ => None,
    };
    let mut cb: CloneCb = {
        Box::new(|| {
            // nvbind: the intermediate dies with the runtime. Killed half-way, the runtime
            // left it building the container on its own (joining and creating the cgroup,
            // forking an init that waits for a `start` nobody can send) while `delete
            // --force` was already removing it: the cgroup came back with the init in it
            // (tests/crash.rs). The init it forks is in the cgroup, where delete finds it.
            // A sibling's parent is the runtime's parent, whose death is not ours to follow.
            if !container_args.as_sibling {
                if let Err(ret) = prctl::set_death_signal(libc::SIGKILL as isize) {
                    tracing::error!(?ret, "failed to set the parent death signal");
                    return ret;
                }
                if nix::unistd::getppid() != main_pid {
                    // the runtime died before the death signal was armed
                    return -1;
                }
            }
            if let Err(ret) = prctl::set_name("youki:[1:INTER]") {
                tracing::error!(?ret, "failed to set name for child process");
                return ret;
            }

            match container_intermediate_process::container_intermediate_process(
                container_args,
                &mut inter_chan,
                &mut init_chan,
                &mut intermediate_main_sender,
                &mut init_main_sender,
                cgroup_entry.get(),
                cgroup_manager.as_ref(),
                rootless.unwrap_or(false),
            ) {
                Ok(_) => 0,
                Err(err) => {
                    tracing::error!("failed to run intermediate process {}", err);
                    match intermediate_main_sender.send_error(err.to_string()) {
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(
                                "error in sending intermediate error message {} to main: {}",
                                err,
                                e
                            )
                        }
                    }
                    -1
                }
            }
        })
    };

    let container_clone_fn = if container_args.as_sibling {
        fork::container_clone_sibling
    } else {
        fork::container_clone
    };

    let cloned = direct_init.or_else(|| {
        let dir = cgroup.as_ref()?;
        cgroup_entry.set(CgroupEntry::ClonedInto);
        match fork::container_clone_into_cgroup(
            &mut cb,
            container_args.as_sibling,
            dir.as_fd(),
            CloneFlags::empty(),
        ) {
            Ok(pid) => Some(pid),
            Err(err) => {
                tracing::debug!(%err, "cannot clone into the cgroup; the intermediate joins it");
                cgroup_entry.set(own_join);
                None
            }
        }
    });
    drop(cgroup);
    let intermediate_pid = match cloned {
        Some(pid) => {
            // the callback borrows the channels that are closed and split below
            drop(cb);
            pid
        }
        None => container_clone_fn(cb).map_err(|err| {
            tracing::error!("failed to fork intermediate process: {}", err);
            ProcessError::IntermediateProcessFailed(err)
        })?,
    };
    // nvbind: from here on a failure kills what was forked
    let mut forked = KillOnError::new(intermediate_pid);

    // Close down unused fds. The corresponding fds are duplicated to the
    // child process during clone.
    intermediate_main_sender.close().map_err(|err| {
        tracing::error!("failed to close unused sender: {}", err);
        err
    })?;
    init_main_sender.close().map_err(|err| {
        tracing::error!("failed to close unused sender: {}", err);
        err
    })?;

    let (mut inter_sender, inter_receiver) = inter_chan;
    let (mut init_sender, init_receiver) = init_chan;

    let unit_manager = match cgroup_entry.get() {
        CgroupEntry::ByRuntime => {
            let manager = start_unit(container_args, intermediate_pid)?;
            inter_sender.cgroup_joined()?;
            Some(manager)
        }
        _ => None,
    };

    // If creating a container with new user namespace, the intermediate process will ask
    // the main process to set up uid and gid mapping, once the intermediate
    // process enters into a new user namespace.
    if let Some(config) = &container_args.user_ns_config {
        intermediate_main_receiver.wait_for_mapping_request()?;
        setup_mapping(config, intermediate_pid)?;
        inter_sender.mapping_written()?;
    }

    // If creating a container with time namespace and offsets are specified,
    // the intermediate process will ask the main process to write the time offsets.
    container_args
        .spec
        .linux()
        .as_ref()
        .and_then(build_timens_offsets)
        .map(|time_offsets| -> Result<()> {
            // This must be done from the parent process since CAP_SYS_TIME is required.
            intermediate_main_receiver.wait_for_time_offset_request()?;
            tracing::debug!("write time offsets for pid {intermediate_pid:?}: '{time_offsets}'");
            std::fs::write(
                format!("/proc/{intermediate_pid}/timens_offsets"),
                &time_offsets,
            )
            .map_err(|err| {
                tracing::error!(
                    "failed to write timens_offsets for pid {intermediate_pid:?}: {err}"
                );
                ProcessError::SyscallOther(SyscallError::IO(err))
            })?;
            inter_sender.time_offsets_written()?;
            Ok(())
        })
        .transpose()?;

    // At this point, we don't need to send any message to intermediate process anymore,
    // so we want to close this sender at the earliest point.
    inter_sender.close().map_err(|err| {
        tracing::error!("failed to close unused intermediate sender: {}", err);
        err
    })?;

    // The intermediate process will send the init pid once it forks the init
    // process.  The intermediate process should exit after this point.
    // nvbind: a directly cloned init is the process cloned above
    let init_pid = match direct_init {
        Some(pid) => pid,
        None => {
            let pid = intermediate_main_receiver.wait_for_intermediate_ready()?;
            forked.pids.push(pid);
            pid
        }
    };

    // if file to write the pid to is specified, write pid of the child
    if let Some(pid_file) = &container_args.pid_file {
        // nvbind: replaced atomically, as runc does: an engine reading it never sees an empty
        // or partial pid, also when the runtime is killed half-way
        // nvbind: and a pid file that cannot be written fails the create or exec (the
        // process forked is killed), as with runc: the caller that asked for it would wait on
        // a file that never comes.
        crate::utils::write_file_atomic(pid_file, format!("{init_pid}")).map_err(|error| {
            ProcessError::PidFile {
                path: pid_file.clone(),
                error,
            }
        })?;
    }

    if matches!(container_args.container_type, ContainerType::InitContainer) {
        // nvbind: the init always asks once it has prepared the rootfs (runc's procHooks),
        // hooks or not: the device rules are applied here, before any hook runs and before
        // the init pivots into the rootfs and runs the container's code, and after the
        // rootfs was prepared (so a spec mount of a block device works, as with runc).
        init_main_receiver.wait_for_hook_request()?;
        apply_device_rules(
            container_args,
            rootless,
            cgroup_manager.as_ref().or(unit_manager.as_ref()),
        )?;
        if let Some(hooks) = container_args.spec.hooks() {
            if let Some(container_for_hooks) = &container_args.container {
                hooks::run_hooks(
                    hooks.prestart().as_ref(),
                    Some(&container_for_hooks.state),
                    None,
                    Some(init_pid),
                    None,
                )
                .map_err(|err| {
                    tracing::error!("failed to run prestart hooks: {}", err);
                    err
                })?;

                hooks::run_hooks(
                    hooks.create_runtime().as_ref(),
                    Some(&container_for_hooks.state),
                    None,
                    Some(init_pid),
                    None,
                )
                .map_err(|err| {
                    tracing::error!("failed to run create runtime hooks: {}", err);
                    err
                })?;
            }
        }
        init_sender.hook_done()?;
    }

    if let Some(linux) = container_args.spec.linux() {
        move_network_devices_to_container(
            linux,
            init_pid,
            &mut init_main_receiver,
            &mut init_sender,
        )?;

        // nvbind: only a notify profile talks to a listener and needs the container's state;
        // an exec (tenant) has none, and failed here once its spec carried the profile.
        #[cfg(feature = "libseccomp")]
        if let Some(seccomp) = linux
            .seccomp()
            .as_ref()
            .filter(|s| crate::seccomp::is_notify(s))
        {
            // nvbind: an exec sends the state of the container it joins (runc does), whose
            // pid is the container's init; it had none and failed "container state is
            // required".
            let container = container_args
                .container
                .as_ref()
                .or(container_args.tenant_of.as_ref())
                .ok_or(ProcessError::ContainerStateRequired)?;

            // Determine OCI status based on container type (matching runc behavior)
            let (oci_status, state_pid) = match container_args.container_type {
                ContainerType::InitContainer => {
                    (oci_spec::runtime::ContainerState::Creating, init_pid.as_raw())
                }
                ContainerType::TenantContainer { .. } => (
                    oci_spec::runtime::ContainerState::Running,
                    container.pid().map_or(init_pid.as_raw(), |p| p.as_raw()),
                ),
            };

            // Build OCI-compliant ContainerProcessState using builder pattern
            let oci_state = oci_spec::runtime::StateBuilder::default()
                .version(OCI_VERSION)
                .id(container.state.id.clone())
                .status(oci_status)
                .pid(state_pid)
                .bundle(container.state.bundle.clone())
                .annotations(container.state.annotations.clone().unwrap_or_default())
                .build()
                .map_err(|e| ProcessError::OciStateBuild(e.to_string()))?;

            let state = oci_spec::runtime::ContainerProcessStateBuilder::default()
                .version(OCI_VERSION)
                .fds(vec![SECCOMP_FD_NAME.to_string()])
                .pid(init_pid.as_raw())
                .metadata(seccomp.listener_metadata().clone().unwrap_or_default())
                .state(oci_state)
                .build()
                .map_err(|e| ProcessError::OciStateBuild(e.to_string()))?;
            crate::process::seccomp_listener::sync_seccomp(
                seccomp,
                &state,
                &mut init_sender,
                &mut init_main_receiver,
            )?;
        }
    }

    // We don't need to send anything to the init process after this point, so
    // close the sender.
    init_sender.close().map_err(|err| {
        tracing::error!("failed to close unused init sender: {}", err);
        err
    })?;

    init_main_receiver.wait_for_init_ready().map_err(|err| {
        tracing::error!("failed to wait for init ready: {}", err);
        err
    })?;

    tracing::debug!("init pid is {:?}", init_pid);

    // Close the receiver ends to avoid leaking file descriptors.

    inter_receiver.close().map_err(|err| {
        tracing::error!("failed to close intermediate process receiver: {}", err);
        err
    })?;

    init_receiver.close().map_err(|err| {
        tracing::error!("failed to close init process receiver: {}", err);
        err
    })?;

    intermediate_main_receiver.close().map_err(|err| {
        tracing::error!("failed to close intermediate main receiver: {}", err);
        err
    })?;

    init_main_receiver.close().map_err(|err| {
        tracing::error!("failed to close init main receiver: {}", err);
        err
    })?;

    // Before the main process returns, we want to make sure the intermediate
    // process is exit and reaped. By this point, the intermediate process
    // should already exited successfully. If intermediate process errors out,
    // the `init_ready` will not be sent.
    // nvbind: a directly cloned init had none (and is the container, running on).
    if direct_init.is_some() {
        forked.armed = false;
        return Ok(init_pid);
    }
    match waitpid(intermediate_pid, None) {
        Ok(WaitStatus::Exited(_, 0)) => (),
        Ok(WaitStatus::Exited(_, s)) => {
            tracing::warn!("intermediate process failed with exit status: {s}");
        }
        Ok(WaitStatus::Signaled(_, sig, _)) => {
            tracing::warn!("intermediate process killed with signal: {sig}")
        }
        Ok(_) => (),
        Err(nix::errno::Errno::ECHILD) => {
            // This is safe because intermediate_process and main_process check if the process is
            // finished by piping instead of exit code.
            tracing::warn!("intermediate process already reaped");
        }
        Err(err) => return Err(ProcessError::WaitIntermediateProcess(err)),
    };

    forked.armed = false;
    Ok(init_pid)
}

/// nvbind: SIGKILLs the processes a failed create or exec forked (the intermediate, and the
/// init once known) and reaps the intermediate. A rootful container's cgroup removal did
/// this as a side effect; a rootless one has no cgroup, and its intermediate process waited
/// forever for an ID mapping that failed, or its init for a `start` that never comes.
struct KillOnError {
    intermediate: Pid,
    pids: Vec<Pid>,
    armed: bool,
}

impl KillOnError {
    fn new(intermediate: Pid) -> Self {
        Self {
            intermediate,
            pids: vec![intermediate],
            armed: true,
        }
    }
}

impl Drop for KillOnError {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for pid in self.pids.iter().rev() {
            let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = waitpid(self.intermediate, None);
        // nvbind: and reap them where they are ours (the init is cloned as our child): left
        // unreaped, an exec'd process became a zombie of the container's init, which may
        // never reap it (ECHILD for one that is not ours)
        for pid in &self.pids {
            let _ = waitpid(*pid, None);
        }
    }
}

fn setup_mapping(config: &UserNamespaceConfig, pid: Pid) -> Result<()> {
    tracing::debug!("write mapping for pid {:?}", pid);
    if !config.privileged {
        // The main process is running as an unprivileged user and cannot write the mapping
        // until "deny" has been written to setgroups. See CVE-2014-8989.
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny")
            .map_err(ProcessError::SetGroupsDeny)?;
    }

    config.write_uid_mapping(pid).map_err(|err| {
        tracing::error!("failed to write uid mapping for pid {:?}: {}", pid, err);
        err
    })?;
    config.write_gid_mapping(pid).map_err(|err| {
        tracing::error!("failed to write gid mapping for pid {:?}: {}", pid, err);
        err
    })?;
    Ok(())
}

/// Builds the payload to write to the kernel's `/proc/<pid>/timens_offsets`
/// from the spec's `timeOffsets`.
fn build_timens_offsets(linux: &Linux) -> Option<String> {
    let offsets = linux.time_offsets().as_ref()?;
    if offsets.is_empty() {
        return None;
    }
    let time_ns = linux
        .namespaces()
        .as_ref()?
        .iter()
        .find(|ns| ns.typ() == LinuxNamespaceType::Time)?;
    // Only set offsets when creating a new time namespace (no path to join).
    if time_ns.path().is_some() {
        return None;
    }
    Some(
        offsets
            .iter()
            .map(|(clock_type, offset)| {
                format!(
                    "{clock_type} {} {}",
                    offset.secs().unwrap_or(0),
                    offset.nanosecs().unwrap_or(0)
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Moves configured network devices from the host to the container's network namespace.
/// This function waits for the init process to join its namespace, then transfers each
/// configured device while preserving network addresses. Returns early if the container
/// runs in the host network namespace.
fn move_network_devices_to_container(
    linux: &Linux,
    init_pid: Pid,
    main_receiver: &mut channel::MainReceiver,
    init_sender: &mut channel::InitSender,
) -> Result<()> {
    // Early return if there are no network devices to move
    let devices = match linux.net_devices() {
        Some(devs) if !devs.is_empty() => devs,
        _ => return Ok(()),
    };

    if let Some(namespaces) = linux.namespaces() {
        // network devices are not moved for containers running in the host network.
        let net_ns = match namespaces
            .iter()
            .find(|ns| ns.typ() == LinuxNamespaceType::Network)
        {
            Some(ns) => ns,
            None => return Ok(()),
        };

        // Wait for the init process to signal that it has joined the network namespace
        // and is ready for network device setup
        main_receiver.wait_for_network_setup_ready()?;

        // the container init process has already joined the provided net namespace,
        // so we can use the process's net ns path directly.
        let default_ns_path = PathBuf::from(format!("/proc/{}/ns/net", init_pid.as_raw()));
        let ns_path = net_ns.path().as_deref().unwrap_or(&default_ns_path);

        // Open the network namespace file and validate it exists before moving devices
        let netns_file = File::open(ns_path).map_err(|err| {
            tracing::error!(
                "failed to open network namespace at {}: {}",
                ns_path.display(),
                err
            );
            ProcessError::Network(err.into())
        })?;
        let netns_fd = netns_file.as_raw_fd();

        // If moving any of the network devices fails, we return an error immediately.
        // The runtime spec requires that the kernel handles moving back any devices
        // that were successfully moved before the failure occurred.
        // See: https://github.com/opencontainers/runtime-spec/blob/27cb0027fd92ef81eda1ea3a8153b8337f56d94a/config-linux.md#namespace-lifecycle-and-container-termination
        let addrs_map = devices
            .iter()
            .map(|(name, net_dev)| {
                let addrs = dev_change_net_namespace(name, netns_fd, net_dev).map_err(|err| {
                    tracing::error!("failed to dev_change_net_namespace: {}", err);
                    err
                })?;
                Ok((name.clone(), addrs))
            })
            .collect::<Result<HashMap<String, Vec<crate::network::cidr::CidrAddress>>>>()?;
        init_sender.move_network_device(addrs_map)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use anyhow::Result;
    use nix::sched::{CloneFlags, unshare};
    use nix::unistd::{self, getgid, getuid};
    use oci_spec::runtime::LinuxIdMappingBuilder;
    use serial_test::serial;

    use super::*;
    use crate::process::channel::{intermediate_channel, main_channel};
    use crate::user_ns::UserNamespaceIDMapper;

    // nvbind: the init is cloned with no intermediate only where nothing must be entered
    // before it forks: no user or time namespace, no PID namespace to join.
    #[test]
    fn direct_init_only_without_namespaces_to_enter_first() -> Result<()> {
        use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceBuilder};
        let ns = |typ, path: Option<&str>| -> Result<LinuxNamespace> {
            let mut b = LinuxNamespaceBuilder::default().typ(typ);
            if let Some(p) = path {
                b = b.path(p);
            }
            Ok(b.build()?)
        };
        use LinuxNamespaceType::*;
        let common = vec![ns(Mount, None)?, ns(Network, None)?, ns(Uts, None)?, ns(Ipc, None)?];
        let with = |extra: Vec<LinuxNamespace>| {
            let mut all = common.clone();
            all.extend(extra);
            direct_init_namespaces(Some(&all))
        };
        // nvbind: the clone makes the new UTS, IPC, network and mount namespaces too
        let made = CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC;
        assert_eq!(
            with(vec![ns(Pid, None)?]),
            Some(made | CloneFlags::CLONE_NEWPID),
            "a new PID namespace"
        );
        assert_eq!(with(vec![]), Some(made), "the host's PID namespace");
        assert_eq!(
            direct_init_namespaces(Some(&vec![
                ns(Pid, None)?,
                ns(Network, Some("/var/run/netns/pod"))?,
                ns(Cgroup, None)?
            ])),
            Some(CloneFlags::CLONE_NEWPID),
            "a network namespace to join, and the cgroup one, are the init's"
        );
        assert_eq!(
            direct_init_namespaces(None),
            Some(CloneFlags::empty()),
            "no namespaces at all"
        );
        assert_eq!(with(vec![ns(Pid, Some("/proc/1/ns/pid"))?]), None, "a PID namespace to join");
        assert_eq!(with(vec![ns(Pid, None)?, ns(User, None)?]), None, "a user namespace");
        assert_eq!(with(vec![ns(Pid, None)?, ns(Time, None)?]), None, "a time namespace");
        Ok(())
    }

    #[test]
    #[serial]
    fn setup_uid_mapping_should_succeed() -> Result<()> {
        let uid_mapping = LinuxIdMappingBuilder::default()
            .host_id(getuid())
            .container_id(0u32)
            .size(1u32)
            .build()?;
        let uid_mappings = vec![uid_mapping];
        let tmp = tempfile::tempdir()?;
        let id_mapper = UserNamespaceIDMapper::new_test(tmp.path().to_path_buf());
        let ns_config = UserNamespaceConfig {
            uid_mappings: Some(uid_mappings),
            privileged: true,
            id_mapper: id_mapper.clone(),
            ..Default::default()
        };
        let (mut parent_sender, mut parent_receiver) = main_channel()?;
        let (mut child_sender, mut child_receiver) = intermediate_channel()?;
        match unsafe { unistd::fork()? } {
            unistd::ForkResult::Parent { child } => {
                parent_receiver.wait_for_mapping_request()?;
                parent_receiver.close()?;

                // In test, we fake the uid path in /proc/{pid}/uid_map, so we
                // need to ensure the path exists before we write the mapping.
                // The path requires the pid we use, so we can only do do after
                // obtaining the child pid here.
                id_mapper.ensure_uid_path(&child)?;
                setup_mapping(&ns_config, child)?;
                let line = fs::read_to_string(id_mapper.get_uid_path(&child))?;
                let split_lines = line.split_whitespace();
                for (act, expect) in split_lines.zip([
                    uid_mapping.container_id().to_string(),
                    uid_mapping.host_id().to_string(),
                    uid_mapping.size().to_string(),
                ]) {
                    assert_eq!(act, expect);
                }
                child_sender.mapping_written()?;
                child_sender.close()?;
            }
            unistd::ForkResult::Child => {
                prctl::set_dumpable(true).unwrap();
                unshare(CloneFlags::CLONE_NEWUSER)?;
                parent_sender.identifier_mapping_request()?;
                parent_sender.close()?;
                child_receiver.wait_for_mapping_ack()?;
                child_receiver.close()?;
                std::process::exit(0);
            }
        }
        Ok(())
    }

    #[test]
    #[serial]
    fn setup_gid_mapping_should_succeed() -> Result<()> {
        let gid_mapping = LinuxIdMappingBuilder::default()
            .host_id(getgid())
            .container_id(0u32)
            .size(1u32)
            .build()?;
        let gid_mappings = vec![gid_mapping];
        let tmp = tempfile::tempdir()?;
        let id_mapper = UserNamespaceIDMapper::new_test(tmp.path().to_path_buf());
        let ns_config = UserNamespaceConfig {
            gid_mappings: Some(gid_mappings),
            id_mapper: id_mapper.clone(),
            ..Default::default()
        };
        let (mut parent_sender, mut parent_receiver) = main_channel()?;
        let (mut child_sender, mut child_receiver) = intermediate_channel()?;
        match unsafe { unistd::fork()? } {
            unistd::ForkResult::Parent { child } => {
                parent_receiver.wait_for_mapping_request()?;
                parent_receiver.close()?;

                // In test, we fake the gid path in /proc/{pid}/gid_map, so we
                // need to ensure the path exists before we write the mapping.
                // The path requires the pid we use, so we can only do do after
                // obtaining the child pid here.
                id_mapper.ensure_gid_path(&child)?;
                setup_mapping(&ns_config, child)?;
                let line = fs::read_to_string(id_mapper.get_gid_path(&child))?;
                let split_lines = line.split_whitespace();
                for (act, expect) in split_lines.zip([
                    gid_mapping.container_id().to_string(),
                    gid_mapping.host_id().to_string(),
                    gid_mapping.size().to_string(),
                ]) {
                    assert_eq!(act, expect);
                }
                assert_eq!(
                    fs::read_to_string(format!("/proc/{}/setgroups", child.as_raw()))?,
                    "deny\n",
                );
                child_sender.mapping_written()?;
                child_sender.close()?;
            }
            unistd::ForkResult::Child => {
                prctl::set_dumpable(true).unwrap();
                unshare(CloneFlags::CLONE_NEWUSER)?;
                parent_sender.identifier_mapping_request()?;
                parent_sender.close()?;
                child_receiver.wait_for_mapping_ack()?;
                child_receiver.close()?;
                std::process::exit(0);
            }
        }
        Ok(())
    }
}
