//! Running work inside a container's mount namespace.
//!
//! A dedicated thread unshares its filesystem attributes (`CLONE_FS`, which `setns` of a
//! mount namespace requires of a multi-threaded process), joins the mount namespace of the
//! container's process and runs the closure there. The rest of the hook stays in the host
//! namespace, and so does anything it opened before: file descriptors and detached mount
//! trees made on the host can be attached inside the container from that thread.
//! Processes spawned from the thread (a CDI spec's hooks) inherit its namespace.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::{umask, Mode};

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("cannot open the mount namespace of container process {pid} ({path}); has the container exited?")]
    Open {
        pid: i32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot unshare the filesystem attributes of the namespace thread")]
    Unshare(#[source] Errno),
    #[error("cannot enter the mount namespace of container process {pid}")]
    Enter {
        pid: i32,
        #[source]
        source: Errno,
    },
    #[error("cannot start the namespace thread")]
    Spawn(#[source] std::io::Error),
    #[error("the namespace thread panicked")]
    Panicked,
    #[error("process {pid} is in the hook's own or the host's mount namespace, not a container's: refusing to mount there; run nvbind-hook prestart as a prestart or createRuntime hook, where the state's pid is the container's init")]
    HostNamespace { pid: i32 },
}

/// Where the work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// The mount namespace the hook already is in (LXC mount hooks, createContainer hooks).
    Current,
    /// The mount namespace of this process (the container's init, from the OCI state).
    OfPid(i32),
}

fn ns_id(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// True when `pid` is in a user namespace other than the hook's.
pub fn has_own_user_ns(pid: i32) -> bool {
    let theirs = ns_id(&format!("/proc/{pid}/ns/user"));
    theirs.is_some() && theirs != ns_id("/proc/self/ns/user")
}

/// The host uid and gid that `pid`'s user namespace maps its root to, if it maps it.
pub fn mapped_root(pid: i32) -> Option<(u32, u32)> {
    let outside = |map: &str| -> Option<u32> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{map}")).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[0] == "0")
                .then(|| f[1].parse().ok())
                .flatten()
        })
    };
    Some((outside("uid_map")?, outside("gid_map")?))
}

/// True when `pid` is in the same mount namespace as the hook.
fn same_mount_ns(pid: i32) -> bool {
    let theirs = ns_id(&format!("/proc/{pid}/ns/mnt"));
    theirs.is_some() && theirs == ns_id("/proc/self/ns/mnt")
}

/// True when `pid` shares the mount namespace of pid 1 (the host's, as this /proc shows
/// it). A createContainer hook that is handed its own pid-namespace pid 1 lands here too.
fn in_init_mount_ns(pid: i32) -> bool {
    let theirs = ns_id(&format!("/proc/{pid}/ns/mnt"));
    theirs.is_some() && theirs == ns_id("/proc/1/ns/mnt")
}

/// Refuses a pid whose mount namespace is the hook's own or pid 1's: a prestart hook runs
/// in the runtime's (host) namespace and the state's pid is the container's init, in a
/// namespace of its own; anything else means the hook is misplaced (e.g. registered as a
/// createContainer hook, which gets a pid of the container's pid namespace), and working
/// "inside" that namespace would mount on the host.
pub fn check_container_pid(pid: i32) -> Result<(), NsError> {
    if same_mount_ns(pid) || in_init_mount_ns(pid) {
        return Err(NsError::HostNamespace { pid });
    }
    Ok(())
}

/// Runs `work` on a thread with its own filesystem attributes and umask 0, inside the mount
/// namespace `ns`. `work`'s own error is returned as is.
pub fn run_in<T, E>(
    ns: Namespace,
    work: impl FnOnce() -> Result<T, E> + Send,
) -> Result<Result<T, E>, NsError>
where
    T: Send,
    E: Send,
{
    if let Namespace::OfPid(pid) = ns {
        check_container_pid(pid)?;
    }
    let ns_file = match ns {
        Namespace::OfPid(pid) => {
            let path = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
            let file = File::open(&path).map_err(|source| NsError::Open { pid, path, source })?;
            Some((pid, file))
        }
        Namespace::Current => None,
    };
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("nvbind-ns".into())
            .spawn_scoped(scope, move || {
                unshare(CloneFlags::CLONE_FS).map_err(NsError::Unshare)?;
                if let Some((pid, file)) = &ns_file {
                    setns(file.as_fd(), CloneFlags::CLONE_NEWNS)
                        .map_err(|source| NsError::Enter { pid: *pid, source })?;
                }
                umask(Mode::empty());
                Ok(work())
            })
            .map_err(NsError::Spawn)?;
        handle.join().map_err(|_| NsError::Panicked)?
    })
}
