use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::waitpid;

use crate::executor::NvbindExecutor;
use crate::lifecycle::console::ConsoleRelay;
use crate::lifecycle::foreground::{
    exit_code, forward_signals_until_exit, FOREGROUND_CONSOLE_SOCKET,
};
use crate::lifecycle::guard::{ensure, Action};
use crate::state_root::Ctx;
use libcontainer::container::ContainerStatus;

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Do not wait for the process; print nothing and return at once
    #[arg(short, long)]
    pub detach: bool,
    /// Allocate a pseudo-TTY (needs --console-socket when detached)
    #[arg(short, long)]
    pub tty: bool,
    /// Write the new process's PID to this file
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// A JSON file with the OCI "process" object to run (overrides the command line)
    #[arg(short, long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Set an environment variable (repeatable)
    #[arg(short, long, value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory inside the container
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// UID[:GID] to run as
    #[arg(short, long, value_parser = parse_user)]
    pub user: Option<(u32, Option<u32>)>,
    /// Additional group ID (repeatable)
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Unix socket that receives the pty master when --tty is given
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Add a capability (repeatable)
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Set no_new_privs for the process
    #[arg(long)]
    pub no_new_privs: bool,
    /// Pass N extra file descriptors into the process
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
    /// Exec into a paused container too (the process starts frozen, and runs on resume)
    #[arg(long)]
    pub ignore_paused: bool,
    /// Run the process in a sub-cgroup of the container's, which must exist: PATH for every
    /// hierarchy, or CONTROLLER[,CONTROLLER]:PATH per cgroup v1 controller (repeatable)
    #[arg(long = "cgroup", value_name = "[CONTROLLER:]PATH")]
    pub cgroup: Vec<String>,
    /// The --process object, read before main closes inherited descriptors
    #[arg(skip)]
    pub process_copy: Option<OwnedFd>,
    /// Container ID
    pub id: String,
    /// Command and arguments (after --)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not K=V")),
    }
}

fn parse_user(s: &str) -> Result<(u32, Option<u32>), String> {
    let bad = || format!("{s:?} is not UID or UID:GID (numbers)");
    match s.split_once(':') {
        Some((u, g)) => Ok((
            u.parse().map_err(|_| bad())?,
            Some(g.parse().map_err(|_| bad())?),
        )),
        None => Ok((s.parse().map_err(|_| bad())?, None)),
    }
}

/// Reads --process before main closes inherited descriptors: given as one (`-p /dev/fd/63`, as
/// bash's `<(...)` makes it) it would be gone by the time the exec reads it. The process
/// object is checked here, where its error can name the file, and what runc takes as zero
/// values is filled in (a missing `user` is uid 0, gid 0), then handed on in a close-on-exec
/// memfd that --process points at.
pub fn keep_process_file(args: &mut ExecArgs) -> Result<()> {
    let Some(path) = &args.process else {
        return Ok(());
    };
    let text = match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("--process {} does not exist", path.display())
        }
        r => r.with_context(|| format!("cannot read --process {}", path.display()))?,
    };
    let text = with_runc_defaults(&text)
        .with_context(|| format!("--process {} is not an OCI process object", path.display()))?;
    // SAFETY: memfd_create with a NUL-terminated name; the result is checked before use.
    let raw = unsafe { libc::memfd_create(c"nvbind-exec-process".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot create a memfd for --process");
    }
    // SAFETY: raw is a new descriptor nothing else owns.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    std::fs::File::from(fd.try_clone()?)
        .write_all(&text)
        .context("cannot copy --process into a memfd")?;
    args.process = Some(PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())));
    args.process_copy = Some(fd);
    Ok(())
}

/// The process object with runc's zero values where the JSON leaves them out (runc's Go
/// structs read a missing `user` as uid 0, gid 0; oci-spec requires the field), its keys
/// matched as runc's Go decoder matches them (`gojson`), written back in the spec's spelling
/// for the exec to read.
fn with_runc_defaults(text: &[u8]) -> Result<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(text)?;
    let obj = v.as_object_mut().context("not a JSON object")?;
    if !obj.keys().any(|k| k.eq_ignore_ascii_case("user")) {
        obj.insert("user".into(), serde_json::json!({"uid": 0, "gid": 0}));
    }
    let process: oci_spec::runtime::Process = nvbind::gojson::from_value(v)?;
    Ok(serde_json::to_vec(&process)?)
}

/// runc's `--cgroup` arguments as sub-cgroup paths by controller ("" for every hierarchy): a
/// bare PATH only alone, `a,b:PATH` for each controller named.
fn sub_cgroup_paths(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut paths = BTreeMap::new();
    for arg in args {
        match arg.split_once(':') {
            None if args.len() == 1 => {
                paths.insert(String::new(), arg.clone());
            }
            None => bail!(
                "invalid --cgroup argument: {arg} (missing <controller>: prefix; a PATH for \
                 every controller can only be given alone)"
            ),
            Some((_, path)) if path.contains(':') => {
                bail!("invalid --cgroup argument: {arg} (give [CONTROLLER[,CONTROLLER]:]PATH)")
            }
            Some((controllers, path)) => {
                for controller in controllers.split(',') {
                    if controller.is_empty() {
                        bail!(
                            "invalid --cgroup argument: {arg} (an empty controller name; give \
                             CONTROLLER[,CONTROLLER]:PATH)"
                        );
                    }
                    paths.insert(controller.to_string(), path.to_string());
                }
            }
        }
    }
    Ok(paths)
}

pub fn run(args: &ExecArgs, ctx: &Ctx) -> Result<u8> {
    let sub_cgroups = sub_cgroup_paths(&args.cgroup)?;
    let container = ctx.load(&args.id)?;
    // runc's --ignore-paused: the process joins the frozen cgroup and runs on resume.
    if !(args.ignore_paused && container.status() == ContainerStatus::Paused) {
        ensure(&container, Action::Exec)?;
    }
    if args.process.is_none() && args.command.is_empty() {
        bail!("no command given; usage: nvbind exec ID -- CMD [ARGS...]");
    }
    if !args.detach && args.console_socket.is_some() {
        bail!(FOREGROUND_CONSOLE_SOCKET);
    }
    // `-t` (or a --process with "terminal": true) in the foreground: nvbind relays the pty to
    // its stdio (runc). --process is nvbind's memfd copy by now, so it can be read again. A
    // --process object says itself whether it wants a terminal: runc ignores -t with it
    // (tty.bats "exec [tty consolesize]" runs `exec -t -p` of a process without one).
    let terminal = match args.process.as_deref() {
        Some(process) => process_wants_terminal(Some(process)),
        None => args.tty,
    };
    let relay = match args.detach {
        false if terminal => Some(ConsoleRelay::new()?),
        _ => None,
    };
    let console_socket = relay.as_ref().map(ConsoleRelay::path);
    // Signals meant for the process are forwarded to it once it runs; blocked from before
    // it exists (the relay's threads inherit the mask).
    let all = nix::sys::signalfd::SigSet::all();
    if relay.is_some() {
        all.thread_block().context("cannot block signals")?;
    }
    let env: HashMap<String, String> = args.env.iter().cloned().collect();
    let pid = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_executor(NvbindExecutor::for_exec())
        .with_seccomp_compiler(crate::seccomp_cache::compiler(&ctx.root))
        // canonical (prepare_root): not resolved again
        .with_canonical_root_path(ctx.root.clone())
        .with_console_socket(console_socket.as_ref().or(args.console_socket.as_ref()))
        .with_pid_file(args.pid_file.as_ref())?
        .with_preserved_fds(args.preserve_fds)
        .as_tenant()
        .with_tty(args.tty)
        .with_detach(args.detach)
        .with_cwd(args.cwd.as_ref())
        .with_env(env)
        .with_process(args.process.as_ref())
        .with_no_new_privs(args.no_new_privs)
        .with_container_args(args.command.clone())
        .with_additional_gids(args.additional_gids.clone())
        .with_user(args.user.map(|(u, _)| u))
        .with_group(args.user.and_then(|(_, g)| g))
        .with_capabilities(args.cap.clone())
        .with_ignore_paused(args.ignore_paused)
        .with_sub_cgroups(sub_cgroups)
        .build()
        .with_context(|| format!("cannot exec in container {:?}", args.id))?;
    if args.detach {
        return Ok(0);
    }
    if let Some(relay) = relay {
        let console = match relay.attach() {
            Ok(c) => c,
            Err(e) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
                let _ = waitpid(pid, None);
                return Err(e);
            }
        };
        let code = forward_signals_until_exit(pid, &all, &|| console.resize());
        console.finish();
        return code;
    }
    let status = waitpid(pid, None).context("waiting for the exec'd process failed")?;
    Ok(exit_code(status))
}

/// Whether the --process object asks for a terminal (an unreadable one is libcontainer's to
/// report).
fn process_wants_terminal(process: Option<&std::path::Path>) -> bool {
    process
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("terminal").and_then(|t| t.as_bool()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_without_user_runs_as_root_as_with_runc() {
        let out = with_runc_defaults(br#"{"args": ["true"], "cwd": "/"}"#).unwrap();
        let p: oci_spec::runtime::Process = serde_json::from_slice(&out).unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
        let out =
            with_runc_defaults(br#"{"args": ["id"], "cwd": "/", "user": {"uid": 7, "gid": 8}}"#)
                .unwrap();
        let p: oci_spec::runtime::Process = serde_json::from_slice(&out).unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (7, 8));
        assert!(with_runc_defaults(b"[1]").is_err());
        assert!(with_runc_defaults(br#"{"args": 5, "cwd": "/"}"#).is_err());
    }

    #[test]
    fn cgroup_arguments_as_runc_reads_them() {
        let s = |v: &[&str]| sub_cgroup_paths(&v.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        let m = |v: &[(&str, &str)]| -> BTreeMap<String, String> {
            v.iter()
                .map(|(k, p)| (k.to_string(), p.to_string()))
                .collect()
        };
        assert_eq!(s(&[]).unwrap(), m(&[]));
        assert_eq!(s(&["sub"]).unwrap(), m(&[("", "sub")]));
        assert_eq!(
            s(&["memory:submem", "cpu,cpuacct:subcpu"]).unwrap(),
            m(&[
                ("memory", "submem"),
                ("cpu", "subcpu"),
                ("cpuacct", "subcpu")
            ])
        );
        for bad in [
            &["a", "b"][..],
            &["memory:x", "y"],
            &["a:b:c"],
            &[":x"],
            &["cpu,:x"],
        ] {
            let e = s(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid --cgroup argument: "), "{bad:?}: {e}");
        }
    }
}
