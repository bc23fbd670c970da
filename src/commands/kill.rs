use anyhow::{Context, Result};
use libcgroups::common::{CgroupManager as _, WrappedIoError};
use libcontainer::container::ContainerStatus;
use libcontainer::error::LibcontainerError;
use libcontainer::signal::Signal;
use nix::errno::Errno;
use nix::unistd::Pid;

use crate::lifecycle::guard::{ensure, Action};
use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
pub struct KillArgs {
    /// Send the signal to every process of the container, not only its init
    #[arg(short, long)]
    pub all: bool,
    /// Container ID
    pub id: String,
    /// Signal name (TERM, SIGTERM) or number; 0 only checks that the process exists
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

pub fn parse_signal(s: &str) -> Result<Signal> {
    Signal::try_from(s).map_err(|_| {
        anyhow::anyhow!("unknown signal {s:?}; use a name such as TERM or KILL, or a number")
    })
}

/// Signal 0, as kill(2) takes it: no signal, only the check that the target exists.
fn is_null_signal(s: &str) -> bool {
    s.parse::<i32>() == Ok(0)
}

pub fn run(args: &KillArgs, ctx: &Ctx) -> Result<()> {
    let signal = (!is_null_signal(&args.signal))
        .then(|| parse_signal(&args.signal))
        .transpose()?;
    let (_lock, mut container) = ctx.load_locked(&args.id)?;
    ensure(&container, Action::Kill { all: args.all })?;
    // runc 1.1 (linuxContainer.Signal): a stopped container whose cgroup is gone has no process
    // left, and `kill --all` succeeds. The systemd driver's scope loses its cgroup as soon as
    // its last process exits, and containerd's shim sends `kill --all ID 9` after an init's
    // exit (every pod's StopContainer): a failure there kept the exit from being reported, and
    // the kubelet's StopContainer waited until its deadline.
    if args.all && container.status() == ContainerStatus::Stopped && cgroup_gone(&container, ctx) {
        return Ok(());
    }
    let Some(signal) = signal else {
        return probe(&container, args.all, ctx)
            .with_context(|| format!("cannot signal container {:?}", args.id));
    };
    match container.kill(signal, args.all) {
        // libcontainer looks at the init again before signalling it: one that ended since
        // `ensure` (a load test's kill racing the container's exit) gets the same refusal as
        // one that had ended before, not libcontainer's "incompatible container status".
        Err(e @ LibcontainerError::IncorrectStatus(_)) => {
            ensure(&container, Action::Kill { all: args.all })?;
            Err(e).with_context(|| format!("cannot signal container {:?}", args.id))
        }
        r => r.with_context(|| format!("cannot signal container {:?}", args.id)),
    }
}

/// Whether the container's cgroup no longer exists: its manager cannot list it because a file
/// of it is not found. Any other answer, or a container without a cgroup, is not "gone".
fn cgroup_gone(container: &libcontainer::container::Container, ctx: &Ctx) -> bool {
    let Ok(manager) = ctx.cgroup_manager(container) else {
        return false;
    };
    let Err(err) = manager.get_all_pids() else {
        return false;
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<WrappedIoError>() {
            return io.inner().kind() == std::io::ErrorKind::NotFound;
        }
        cause = e.source();
    }
    false
}

/// `kill ID 0`: succeeds when the init exists; with --all, checks each process of the
/// container's cgroup, and a stopped container has none to fail on (runc's kill.bats sends
/// `kill -a ID 0` after the container stopped). Nothing is signalled, nothing is saved.
fn probe(container: &libcontainer::container::Container, all: bool, ctx: &Ctx) -> Result<()> {
    if all {
        if container.status() == ContainerStatus::Stopped {
            return Ok(());
        }
        let pids = ctx.cgroup_manager(container)?.get_all_pids()?;
        for pid in pids {
            match nix::sys::signal::kill(pid, None) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => return Err(e).with_context(|| format!("cannot signal process {pid}")),
            }
        }
        return Ok(());
    }
    // The init's pid only while it names the init: not a process the kernel gave it since.
    let pid = container
        .init_pid()
        .filter(|p| *p > Pid::from_raw(0))
        .context("the container has no init process")?;
    nix::sys::signal::kill(pid, None).with_context(|| format!("init process {pid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_parse_and_garbage_is_refused() {
        let name = |s: &str| format!("{:?}", parse_signal(s).unwrap());
        assert_eq!(name("KILL"), "Signal(SIGKILL)");
        assert_eq!(name("SIGTERM"), "Signal(SIGTERM)");
        assert_eq!(name("term"), "Signal(SIGTERM)");
        assert_eq!(name("10"), "Signal(SIGUSR1)");
        let e = parse_signal("NOPE").unwrap_err().to_string();
        assert!(e.contains("NOPE"), "{e}");
        assert!(is_null_signal("0") && !is_null_signal("SIGTERM") && !is_null_signal("10"));
    }
}
