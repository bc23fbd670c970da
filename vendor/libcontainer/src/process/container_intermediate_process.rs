use std::os::fd::FromRawFd;

use libcgroups::common::CgroupManager;
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Pid, Uid, close, getpid, write};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, LinuxResources};

use super::args::{ContainerArgs, ContainerType};
use super::channel::{IntermediateReceiver, MainSender};
use super::fork::CloneCb;
use super::init::process as init_process;
use crate::error::MissingSpecError;
use crate::namespaces::Namespaces;
use crate::process::{channel, cpu_affinity, fork};
use crate::rootfs::BindSources;

#[derive(Debug, thiserror::Error)]
pub enum IntermediateProcessError {
    #[error(transparent)]
    Channel(#[from] channel::ChannelError),
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    #[error(transparent)]
    Syscall(#[from] crate::syscall::SyscallError),
    #[error("failed to launch init process")]
    InitProcess(#[source] fork::CloneError),
    #[error("cgroup error: {0}")]
    Cgroup(String),
    #[error(transparent)]
    Procfs(#[from] procfs::ProcError),
    #[error("exec notify failed")]
    ExecNotify(#[source] nix::Error),
    #[error(transparent)]
    MissingSpec(#[from] crate::error::MissingSpecError),
    #[error("CPU affinity error {0}")]
    CpuAffinity(#[from] cpu_affinity::CPUAffinityError),
    #[error("other error")]
    Other(String),
}

type Result<T> = std::result::Result<T, IntermediateProcessError>;

/// nvbind: how the intermediate gets into the container's cgroup before it forks the init
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupEntry {
    /// It joins the cgroup itself and applies the limits.
    Joins,
    /// It was cloned into the cgroup (CLONE_INTO_CGROUP); the limits are still its to apply.
    ClonedInto,
    /// The runtime puts it there and applies the limits, and says so (`CgroupJoined`): under
    /// the systemd driver the runtime starts the unit with this process in it, on the one
    /// D-Bus connection it applies the device rules with later, where each process opened
    /// its own (a connection costs systemd about 20 ms of CPU under TCG).
    ByRuntime,
}

pub fn container_intermediate_process(
    args: &ContainerArgs,
    intermediate_chan: &mut (channel::IntermediateSender, channel::IntermediateReceiver),
    init_chan: &mut (channel::InitSender, channel::InitReceiver),
    intermediate_main_sender: &mut channel::MainSender,
    init_main_sender: &mut channel::MainSender,
    // nvbind: how this process gets into the container's cgroup
    cgroup_entry: CgroupEntry,
    // nvbind: the manager the runtime made before cloning this process (its copy of it), so
    // that one create builds it once; None where the runtime could not or must not share it
    shared_cgroup_manager: Option<&libcgroups::common::AnyCgroupManager>,
    // nvbind: the runtime's answer (`utils::rootless_required`, false where it could not
    // tell), the same for this clone of it: asked once a create
    rootless: bool,
) -> Result<()> {
    // nvbind: the runtime's own descriptors (its root lock) must not reach the container's
    // init, which keeps every inherited descriptor until it execs the payload: a process in
    // the container able to reopen /proc/<init>/fd/N could take the lock and stall the host's
    // every create. This process never needs them; closing them here (a clone, not the lock's
    // owner) releases nothing in the runtime.
    close_runtime_fds(args);
    let runtime_pid = nix::unistd::getppid();
    let (inter_sender, inter_receiver) = intermediate_chan;
    let (init_sender, init_receiver) = init_chan;
    let command = args.syscall.create_syscall();
    let spec = &args.spec;
    let linux = spec.linux().as_ref().ok_or(MissingSpecError::Linux)?;
    let namespaces = Namespaces::try_from(linux.namespaces().as_ref())?;

    let current_pid = Pid::this();
    // setting CPU affinity for tenant container before cgroup move
    if matches!(args.container_type, ContainerType::TenantContainer { .. }) {
        if let Some(exec_cpu_affinity) = spec
            .process()
            .as_ref()
            .and_then(|p| p.exec_cpu_affinity().as_ref())
        {
            if let Some(initial) = exec_cpu_affinity.initial() {
                cpu_affinity::set_cpuset_affinity_from_string(current_pid, initial)?;
            }
        }
    }
    let _ = cpu_affinity::log_cpu_affinity();

    // this needs to be done before we create the init process, so that the init
    // process will already be captured by the cgroup. It also needs to be done
    // before we enter the user namespace because if a privileged user starts a
    // rootless container on a cgroup v1 system we can still fulfill resource
    // restrictions through the cgroup fs support (delegation through systemd is
    // not supported for v1 by us). This only works if the user has not yet been
    // mapped to an unprivileged user by the user namespace however.
    // In addition this needs to be done before we enter the cgroup namespace as
    // the cgroup of the process will form the root of the cgroup hierarchy in
    // the cgroup namespace.
    // nvbind: made only where this process uses it: under the systemd driver it is a D-Bus
    // connection, which the runtime's own makes unneeded (CgroupEntry::ByRuntime)
    let mut own_cgroup_manager = None;
    if cgroup_entry == CgroupEntry::ByRuntime {
        inter_receiver.wait_for_cgroup_joined()?;
    } else if args.sub_cgroups.is_empty() {
        apply_cgroups(
            cgroup_manager(args, shared_cgroup_manager, &mut own_cgroup_manager, rootless)?,
            linux.resources().as_ref(),
            matches!(args.container_type, ContainerType::InitContainer),
            rootless,
            cgroup_entry == CgroupEntry::ClonedInto,
            // nvbind: an exec's fallback when the container's cgroup is no longer a leaf
            args.tenant_of.as_ref().and_then(|c| c.pid()),
        )?;
    } else {
        // nvbind: runc's `exec --cgroup`: sub-cgroups that must exist; a failure to join one
        // fails the exec, rootless or not (the caller asked for that cgroup).
        let dirs = cgroup_manager(args, shared_cgroup_manager, &mut own_cgroup_manager, rootless)?
            .sub_cgroup_dirs(&args.sub_cgroups)
            .map_err(|e| IntermediateProcessError::Cgroup(e.to_string()))?;
        libcgroups::sub_cgroups::join(&dirs, getpid())
            .map_err(|e| IntermediateProcessError::Cgroup(e.to_string()))?;
    }

    // setting CPU affinity for tenant container after cgroup move
    if matches!(args.container_type, ContainerType::TenantContainer { .. }) {
        if let Some(exec_cpu_affinity) = spec
            .process()
            .as_ref()
            .and_then(|p| p.exec_cpu_affinity().as_ref())
        {
            if let Some(cpu_affinity_final) = exec_cpu_affinity.cpu_affinity_final() {
                cpu_affinity::set_cpuset_affinity_from_string(current_pid, cpu_affinity_final)?;
            }
        }
    }

    // if new user is specified in specification, this will be true and new
    // namespace will be created, check
    // https://man7.org/linux/man-pages/man7/user_namespaces.7.html for more
    // information
    // nvbind: bind sources are cloned while this process is still the runtime's root in the
    // runtime's user namespace: the container's mapped root may not be able to reach them
    // (runc passes descriptors opened before the user namespace for the same reason).
    let bind_sources = match (namespaces.get(LinuxNamespaceType::User)?, spec.mounts()) {
        (Some(userns), Some(mounts))
            if userns.path().is_none()
                && !rootless
                && matches!(args.container_type, ContainerType::InitContainer) =>
        {
            BindSources::open(mounts, command.as_ref())
        }
        _ => BindSources::default(),
    };

    if let Some(user_namespace) = namespaces.get(LinuxNamespaceType::User)? {
        setup_userns(
            &namespaces,
            user_namespace,
            intermediate_main_sender,
            inter_receiver,
        )?;

        // After UID and GID mapping is configured correctly in the Youki main
        // process, We want to make sure continue as the root user inside the
        // new user namespace. This is required because the process of
        // configuring the container process will require root, even though the
        // root in the user namespace likely is mapped to an non-privileged user
        // on the parent user namespace.
        command.set_id(Uid::from_raw(0), Gid::from_raw(0))?;
        // nvbind: changing credentials cleared the parent death signal that
        // container_main_process armed; arm it again (the runtime may have died meanwhile)
        if !args.as_sibling {
            prctl::set_death_signal(libc::SIGKILL as isize).map_err(|errno| {
                IntermediateProcessError::Other(format!(
                    "failed to set the parent death signal: errno {errno}"
                ))
            })?;
            if nix::unistd::getppid() != runtime_pid {
                return Err(IntermediateProcessError::Other(
                    "the runtime exited while the container was being set up".into(),
                ));
            }
        }
    }

    // set limits and namespaces to the process
    set_rlimits(args, command.as_ref())?;

    if let Some(time_namespace) = namespaces.get(LinuxNamespaceType::Time)? {
        namespaces.unshare_or_setns(time_namespace)?;
        if time_namespace.path().is_none()
            && linux
                .time_offsets()
                .as_ref()
                .is_some_and(|offsets| !offsets.is_empty())
        {
            setup_time_offsets(intermediate_main_sender, inter_receiver)?;
        }
    }

    // Pid namespace requires an extra fork to enter, so we enter pid namespace now.
    if let Some(pid_namespace) = namespaces.get(LinuxNamespaceType::Pid)? {
        namespaces.unshare_or_setns(pid_namespace)?;
    }

    let cb: CloneCb = Box::new(|| {
        init_process_main(
            args,
            init_sender,
            init_receiver,
            inter_sender,
            intermediate_main_sender,
            init_main_sender,
            &bind_sources,
            CloneFlags::empty(),
        )
    });

    // We have to record the pid of the init process. The init process will be
    // inside the pid namespace, so we can't rely on the init process to send us
    // the correct pid. We also want to clone the init process as a sibling
    // process to the intermediate process. The intermediate process is only
    // used as a jumping board to set the init process to the correct
    // configuration. The youki main process can decide what to do with the init
    // process and the intermediate process can just exit safely after the job
    // is done.
    let pid = fork::container_clone_sibling(cb).map_err(|err| {
        tracing::error!("failed to fork init process: {}", err);
        IntermediateProcessError::InitProcess(err)
    })?;

    // Close the exec_notify_fd in this process
    if let ContainerType::TenantContainer { exec_notify_fd } = args.container_type {
        close(exec_notify_fd).map_err(|err| {
            tracing::error!("failed to close exec notify fd: {}", err);
            IntermediateProcessError::ExecNotify(err)
        })?;
    }

    intermediate_main_sender
        .intermediate_ready(pid)
        .map_err(|err| {
            tracing::error!("failed to wait on intermediate process: {}", err);
            err
        })?;

    // Close unused senders here so we don't have lingering socket around.
    intermediate_main_sender.close().map_err(|err| {
        tracing::error!("failed to close unused main sender: {}", err);
        err
    })?;
    init_main_sender.close().map_err(|err| {
        tracing::error!("failed to close unused init main sender: {}", err);
        err
    })?;
    inter_sender.close().map_err(|err| {
        tracing::error!(
            "failed to close sender in the intermediate process: {}",
            err
        );
        err
    })?;
    init_sender.close().map_err(|err| {
        tracing::error!("failed to close unused init sender: {}", err);
        err
    })?;

    Ok(())
}

fn setup_userns(
    namespaces: &Namespaces,
    user_namespace: &LinuxNamespace,
    sender: &mut MainSender,
    receiver: &mut IntermediateReceiver,
) -> Result<()> {
    namespaces.unshare_or_setns(user_namespace)?;
    if user_namespace.path().is_some() {
        return Ok(());
    }

    tracing::debug!("creating new user namespace");
    // child needs to be dumpable, otherwise the non root parent is not
    // allowed to write the uid/gid maps
    prctl::set_dumpable(true).map_err(|e| {
        IntermediateProcessError::Other(format!(
            "error in setting dumpable to true : {}",
            nix::errno::Errno::from_raw(e)
        ))
    })?;
    sender.identifier_mapping_request().map_err(|err| {
        tracing::error!("failed to send id mapping request: {}", err);
        err
    })?;
    receiver.wait_for_mapping_ack().map_err(|err| {
        tracing::error!("failed to receive id mapping ack: {}", err);
        err
    })?;
    prctl::set_dumpable(false).map_err(|e| {
        IntermediateProcessError::Other(format!(
            "error in setting dumplable to false : {}",
            nix::errno::Errno::from_raw(e)
        ))
    })?;
    Ok(())
}

fn setup_time_offsets(sender: &mut MainSender, receiver: &mut IntermediateReceiver) -> Result<()> {
    tracing::debug!("requesting parent to write time namespace offsets");

    prctl::set_dumpable(true).map_err(|e| {
        IntermediateProcessError::Other(format!(
            "error in setting dumpable to true for time offsets: {}",
            nix::errno::Errno::from_raw(e)
        ))
    })?;

    sender.time_offset_request().map_err(|err| {
        tracing::error!("failed to send time offset request: {}", err);
        err
    })?;

    receiver.wait_for_time_offsets_ack().map_err(|err| {
        tracing::error!("failed to receive time offsets ack: {}", err);
        err
    })?;

    prctl::set_dumpable(false).map_err(|e| {
        IntermediateProcessError::Other(format!(
            "error in setting dumpable to false after time offsets: {}",
            nix::errno::Errno::from_raw(e)
        ))
    })?;

    Ok(())
}

/// nvbind: the runtime's own descriptors (its root lock) must not reach the container's
/// init, which keeps every inherited descriptor until it execs the payload: a process in
/// the container able to reopen /proc/<init>/fd/N could take the lock and stall the host's
/// every create. The intermediate (or a directly cloned init) never needs them; closing them
/// in a clone, not the lock's owner, releases nothing in the runtime.
fn close_runtime_fds(args: &ContainerArgs) {
    for fd in &args.runtime_fds {
        // SAFETY: closing a descriptor number this process inherited and never uses.
        unsafe { libc::close(*fd) };
    }
    // The debug lines runc's nsexec and init log at the same points: tools and runc's
    // integration tests (debug.bats, exec.bats) look for them in a --debug log.
    tracing::debug!("nsexec container setup");
}

/// The process's rlimits, set before the init is forked (it inherits them).
fn set_rlimits(args: &ContainerArgs, command: &dyn crate::syscall::Syscall) -> Result<()> {
    let proc = args
        .spec
        .process()
        .as_ref()
        .ok_or(MissingSpecError::Process)?;
    if let Some(rlimits) = proc.rlimits() {
        for rlimit in rlimits {
            command.set_rlimit(rlimit).map_err(|err| {
                tracing::error!(?err, ?rlimit, "failed to set rlimit");
                err
            })?;
        }
    }
    Ok(())
}

/// The container's init process, as a clone's exit code: it closes the senders it was
/// cloned with and does not use, runs the init and reports a failure to the main process
/// (and to an exec's notify pipe).
// nvbind: one parameter more (`made_by_clone`); the channel ends are each the init's to
// close, so they stay apart.
#[allow(clippy::too_many_arguments)]
fn init_process_main(
    args: &ContainerArgs,
    init_sender: &mut channel::InitSender,
    init_receiver: &mut channel::InitReceiver,
    inter_sender: &mut channel::IntermediateSender,
    intermediate_main_sender: &mut MainSender,
    init_main_sender: &mut MainSender,
    bind_sources: &BindSources,
    // nvbind: the namespaces the init's clone made (`Namespaces::made_by_clone`)
    made_by_clone: CloneFlags,
) -> i32 {
    if let Err(ret) = prctl::set_name("youki:[2:INIT]") {
        tracing::error!(?ret, "failed to set name for child process");
        return ret;
    }

    // We are inside the forked process here. The first thing we have to do
    // is to close any unused senders, since fork will make a dup for all
    // the socket.
    if let Err(err) = init_sender.close() {
        tracing::error!(?err, "failed to close receiver in init process");
        return -1;
    }
    if let Err(err) = inter_sender.close() {
        tracing::error!(?err, "failed to close sender in the intermediate process");
        return -1;
    }
    if let Err(err) = intermediate_main_sender.close() {
        tracing::error!(
            ?err,
            "failed to close intermediate main sender in init process"
        );
        return -1;
    }
    match init_process::container_init_process(
        args,
        init_main_sender,
        init_receiver,
        bind_sources,
        made_by_clone,
    ) {
        Ok(_) => 0,
        Err(e) => {
            tracing::error!("failed to initialize container process: {e}");
            // nvbind: the whole chain, not only the outermost error ("failed to
            // prepare rootfs" said nothing of which mount or why).
            if let Err(err) = init_main_sender.exec_failed(error_chain(&e)) {
                tracing::error!(?err, "failed sending error to main sender");
            }
            if let ContainerType::TenantContainer { exec_notify_fd } = args.container_type {
                let buf = format!("{e}");
                let exec_notify_fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(exec_notify_fd) };
                if let Err(err) = write(&exec_notify_fd, buf.as_bytes()) {
                    tracing::error!(?err, "failed to write to exec notify fd");
                }

                // After sending the error through the exec_notify_fd,
                // we need to explicitly close the pipe.
                drop(exec_notify_fd);
            }
            -1
        }
    }
}

/// nvbind: the container's init cloned by the main process itself, with no intermediate
/// (container_main_process, `direct_init_clone_namespaces`): it was cloned into its cgroup
/// with its PID namespace and `made_by_clone` (its new UTS, IPC, network and mount
/// namespaces), the main process applied the limits, and there is no user or time
/// namespace to enter first. It does the rest of the intermediate's work for the init (the
/// runtime's descriptors closed, the rlimits set) and runs the init. Its parent is the main
/// process (or, as a sibling, the main process's parent), as the intermediate's init was.
pub fn direct_init_process(
    args: &ContainerArgs,
    inter_sender: &mut channel::IntermediateSender,
    init_chan: &mut (channel::InitSender, channel::InitReceiver),
    intermediate_main_sender: &mut MainSender,
    init_main_sender: &mut MainSender,
    made_by_clone: CloneFlags,
) -> i32 {
    close_runtime_fds(args);
    if let Err(err) = set_rlimits(args, args.syscall.create_syscall().as_ref()) {
        tracing::error!("failed to set up the init process: {err}");
        if let Err(e) = init_main_sender.exec_failed(err.to_string()) {
            tracing::error!(?e, "failed sending error to main sender");
        }
        return -1;
    }
    let (init_sender, init_receiver) = init_chan;
    init_process_main(
        args,
        init_sender,
        init_receiver,
        inter_sender,
        intermediate_main_sender,
        init_main_sender,
        &BindSources::default(),
        made_by_clone,
    )
}

/// nvbind: the manager the runtime shared, else one made here (once)
fn cgroup_manager<'a>(
    args: &ContainerArgs,
    shared: Option<&'a libcgroups::common::AnyCgroupManager>,
    own: &'a mut Option<libcgroups::common::AnyCgroupManager>,
    rootless: bool,
) -> Result<&'a libcgroups::common::AnyCgroupManager> {
    if let Some(m) = shared {
        return Ok(m);
    }
    let made = libcgroups::common::create_cgroup_manager(args.cgroup_config.to_owned())
        .map_err(|e| IntermediateProcessError::Cgroup(e.to_string()))?
        .with_rootless(rootless);
    Ok(own.insert(made))
}

fn apply_cgroups<
    C: CgroupManager<Error = E> + ?Sized,
    E: std::error::Error + Send + Sync + 'static,
>(
    cmanager: &C,
    resources: Option<&LinuxResources>,
    init: bool,
    rootless: bool,
    // nvbind: already in the cgroup (cloned into it): nothing to join, the limits still apply
    joined: bool,
    // nvbind: for an exec, the container's init, whose cgroup is joined when the container's
    // own cannot take a process (see `join_cgroup_of_init`)
    exec_of: Option<Pid>,
) -> Result<()> {
    let pid = getpid();
    let added = if joined { Ok(()) } else { cmanager.add_task(pid) };
    if let Err(err) = &added
        && let Some(init_pid) = exec_of
        && !rootless
        && cgroup_busy(err)
    {
        return join_cgroup_of_init(init_pid, pid).map_err(|e| {
            IntermediateProcessError::Cgroup(format!(
                "{err}; joining the cgroup of the container's init (pid {init_pid}) instead: {e}"
            ))
        });
    }
    if let Err(err) = added {
        // nvbind: a rootless container on a host where the user may not create cgroups
        // (cgroup v1, or v2 without delegation) runs without one, as runc's does, unless the
        // spec asks for limits that only a cgroup could enforce.
        if rootless && cgroup_permission_denied(&err) {
            if let Some(field) = resources.and_then(resources_needing_cgroup) {
                return Err(IntermediateProcessError::Cgroup(format!(
                    "rootless container cannot apply linux.resources.{field}: {err}; \
                     delegate a cgroup to this user (chown it) and set linux.cgroupsPath \
                     to it, or remove the limit"
                )));
            }
            tracing::warn!(?pid, %err, "rootless container runs without a cgroup");
            return Ok(());
        }
        tracing::error!(?pid, ?err, ?init, "failed to add task to cgroup");
        return Err(IntermediateProcessError::Cgroup(err.to_string()));
    }

    if init && let Some(resources) = resources {
        // nvbind: a rootless container in a cgroup it could join (a delegated one): device
        // rules need host privileges (runc ignores them for rootless containers too), and
        // the v1 manager writes its default device rules with every apply, so on v1 a limit
        // cannot be applied at all.
        if rootless {
            match resources_needing_cgroup(resources) {
                None => return Ok(()),
                Some(field)
                    if !matches!(
                        libcgroups::common::get_cgroup_setup(),
                        Ok(libcgroups::common::CgroupSetup::Unified)
                    ) =>
                {
                    return Err(IntermediateProcessError::Cgroup(format!(
                        "rootless container cannot apply linux.resources.{field} on cgroup v1: \
                         applying limits there writes device rules, which need host root; \
                         remove the limit, or use a cgroup v2 host with a delegated cgroup"
                    )));
                }
                Some(_) => {}
            }
        }
        let controller_opt = libcgroups::common::ControllerOpt {
            resources,
            freezer_state: None,
            oom_score_adj: None,
            disable_oom_killer: false,
            // nvbind: the device rules come later, from the main process, once the init has
            // prepared the rootfs (container_main_process::apply_device_rules), as in runc.
            skip_devices: true,
        };

        cmanager.apply(&controller_opt).map_err(|err| {
            tracing::error!(?pid, ?err, ?init, "failed to apply cgroup");
            IntermediateProcessError::Cgroup(err.to_string())
        })?;
    }

    Ok(())
}

/// nvbind: whether joining a cgroup failed with EBUSY: on cgroup v2 a cgroup with
/// controllers enabled in its `cgroup.subtree_control` takes no process (the no internal
/// processes rule), which is what a container that made sub-cgroups, moved its init into one
/// and enabled controllers for them (a systemd or a nested runtime inside) leaves.
fn cgroup_busy(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        let io = e
            .downcast_ref::<libcgroups::common::WrappedIoError>()
            .map(|w| w.inner())
            .or_else(|| e.downcast_ref::<std::io::Error>());
        if io.and_then(|io| io.raw_os_error()) == Some(libc::EBUSY) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// nvbind: as runc 1.1's exec (setnsProcess.start, runc issue 2356): on a cgroup v2 host,
/// when the container's cgroup refuses the process (EBUSY), it joins the cgroup2 directory
/// the container's init is in now (the "0::" line of /proc/INIT/cgroup, read in the host's
/// namespaces: the intermediate has not entered the container's yet).
fn join_cgroup_of_init(init_pid: Pid, pid: Pid) -> std::result::Result<(), String> {
    if !matches!(
        libcgroups::common::get_cgroup_setup(),
        Ok(libcgroups::common::CgroupSetup::Unified)
    ) {
        return Err("not a cgroup v2 host".into());
    }
    let table_path = format!("/proc/{init_pid}/cgroup");
    let table = std::fs::read_to_string(&table_path).map_err(|e| format!("{table_path}: {e}"))?;
    let cgroup = table
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| format!("{table_path} has no cgroup v2 line"))?;
    let dir = std::path::Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT)
        .join(cgroup.trim_start_matches('/'));
    tracing::debug!(?pid, ?dir, "the container's cgroup is busy; joining its init's");
    libcgroups::common::write_cgroup_file(dir.join(libcgroups::common::CGROUP_PROCS), pid)
        .map_err(|e| e.to_string())
}

/// nvbind: whether a cgroup operation failed because the caller may not write the cgroup
/// tree (EACCES, EPERM, or a read-only cgroupfs), looking through the error's sources.
fn cgroup_permission_denied(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        let io = e
            .downcast_ref::<libcgroups::common::WrappedIoError>()
            .map(|w| w.inner())
            .or_else(|| e.downcast_ref::<std::io::Error>());
        if let Some(io) = io
            && matches!(
                io.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EROFS)
            )
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// nvbind: the first part of linux.resources that only a cgroup can enforce (runtime-spec
/// names). Device rules do not count: a container in a user namespace cannot create device
/// nodes anyway, and runc ignores the devices controller for rootless containers too.
pub fn resources_needing_cgroup(r: &LinuxResources) -> Option<&'static str> {
    let set = |present: bool, name: &'static str| present.then_some(name);
    set(
        r.memory().as_ref().is_some_and(|m| *m != Default::default()),
        "memory",
    )
        .or_else(|| set(r.cpu().as_ref().is_some_and(|c| *c != Default::default()), "cpu"))
        .or_else(|| set(r.pids().as_ref().is_some_and(|p| p.limit() > 0), "pids"))
        .or_else(|| {
            set(
                r.block_io().as_ref().is_some_and(|b| *b != Default::default()),
                "blockIO",
            )
        })
        .or_else(|| {
            set(
                r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
                "hugepageLimits",
            )
        })
        .or_else(|| {
            set(
                r.network().as_ref().is_some_and(|n| *n != Default::default()),
                "network",
            )
        })
        .or_else(|| set(r.rdma().as_ref().is_some_and(|m| !m.is_empty()), "rdma"))
        .or_else(|| set(r.unified().as_ref().is_some_and(|m| !m.is_empty()), "unified"))
}

#[cfg(test)]
mod tests {
    use anyhow::Result;
    use libcgroups::test_manager::TestManager;
    use nix::unistd::Pid;
    use oci_spec::runtime::LinuxResources;
    use procfs::process::Process;

    use super::*;

    #[test]
    fn apply_cgroup_init() -> Result<()> {
        // arrange
        let cmanager = TestManager::default();
        let resources = LinuxResources::default();

        // act
        apply_cgroups(&cmanager, Some(&resources), true, false, false, None)?;

        // assert
        assert!(cmanager.get_add_task_args().len() == 1);
        assert_eq!(
            cmanager.get_add_task_args()[0],
            Pid::from_raw(Process::myself()?.pid())
        );
        assert!(cmanager.apply_called());
        Ok(())
    }

    #[test]
    fn apply_cgroup_tenant() -> Result<()> {
        // arrange
        let cmanager = TestManager::default();
        let resources = LinuxResources::default();

        // act
        apply_cgroups(&cmanager, Some(&resources), false, false, false, None)?;

        // assert
        assert_eq!(
            cmanager.get_add_task_args()[0],
            Pid::from_raw(Process::myself()?.pid())
        );
        assert!(!cmanager.apply_called());
        Ok(())
    }

    // nvbind: what a rootless create may run without a cgroup
    #[test]
    fn resources_that_need_a_cgroup() -> Result<()> {
        use oci_spec::runtime::{
            LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
        };
        assert_eq!(resources_needing_cgroup(&LinuxResources::default()), None);
        let devices_only = LinuxResourcesBuilder::default()
            .devices(vec![LinuxDeviceCgroupBuilder::default().allow(false).build()?])
            .build()?;
        assert_eq!(resources_needing_cgroup(&devices_only), None);
        let empty_memory = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().build()?)
            .build()?;
        assert_eq!(resources_needing_cgroup(&empty_memory), None);
        let memory = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(1 << 20).build()?)
            .build()?;
        assert_eq!(resources_needing_cgroup(&memory), Some("memory"));
        let pids = LinuxResourcesBuilder::default()
            .pids(LinuxPidsBuilder::default().limit(10).build()?)
            .build()?;
        assert_eq!(resources_needing_cgroup(&pids), Some("pids"));
        Ok(())
    }

    // nvbind: only permission errors let a rootless container go on without a cgroup
    #[test]
    fn permission_errors_are_recognised_through_wrappers() {
        use libcgroups::common::{AnyManagerError, WrappedIoError};
        use libcgroups::v1::manager::V1ManagerError;
        let wrapped = |errno| {
            AnyManagerError::V1(V1ManagerError::WrappedIo(WrappedIoError::CreateDir {
                err: std::io::Error::from_raw_os_error(errno),
                path: "/sys/fs/cgroup/cpu/x".into(),
            }))
        };
        assert!(cgroup_permission_denied(&wrapped(libc::EACCES)));
        assert!(cgroup_permission_denied(&wrapped(libc::EROFS)));
        assert!(!cgroup_permission_denied(&wrapped(libc::ENOENT)));
        assert!(cgroup_permission_denied(&std::io::Error::from_raw_os_error(
            libc::EPERM
        )));
    }

    // nvbind: cloned into its cgroup: nothing joined, the limits applied
    #[test]
    fn apply_cgroup_already_joined() -> Result<()> {
        let cmanager = TestManager::default();
        let resources = LinuxResources::default();
        apply_cgroups(&cmanager, Some(&resources), true, false, true, None)?;
        assert!(cmanager.get_add_task_args().is_empty());
        assert!(cmanager.apply_called());
        Ok(())
    }

    #[test]
    fn apply_cgroup_no_resources() -> Result<()> {
        // arrange
        let cmanager = TestManager::default();

        // act
        apply_cgroups(&cmanager, None, true, false, false, None)?;
        // assert
        assert_eq!(
            cmanager.get_add_task_args()[0],
            Pid::from_raw(Process::myself()?.pid())
        );
        assert!(!cmanager.apply_called());
        Ok(())
    }
}

/// nvbind: an error and its sources joined by ": ", as runc prints them; a source whose text
/// the message already holds (thiserror's "{0}" formats) is not repeated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod error_chain_tests {
    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("failed to prepare rootfs")]
        Rootfs(#[source] Inner),
    }
    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("mount error: {0}")]
        Mount(#[source] std::io::Error),
    }

    #[test]
    fn the_chain_is_joined_and_repeats_are_left_out() {
        let e = Outer::Rootfs(Inner::Mount(std::io::Error::other(
            "filesystem proc must be mounted on ordinary directory",
        )));
        assert_eq!(
            super::error_chain(&e),
            "failed to prepare rootfs: mount error: filesystem proc must be mounted on \
             ordinary directory"
        );
    }
}
