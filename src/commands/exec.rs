use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::waitpid;

use crate::executor::NvbindExecutor;
use crate::lifecycle::foreground::exit_code;
use crate::lifecycle::guard::{ensure, Action};
use crate::state_root::Ctx;

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

pub fn run(args: &ExecArgs, ctx: &Ctx) -> Result<u8> {
    let container = ctx.load(&args.id)?;
    ensure(&container, Action::Exec)?;
    if args.process.is_none() && args.command.is_empty() {
        bail!("no command given; usage: nvbind exec ID -- CMD [ARGS...]");
    }
    if let Some(p) = &args.process {
        if !p.exists() {
            bail!("--process {} does not exist", p.display());
        }
    }
    let env: HashMap<String, String> = args.env.iter().cloned().collect();
    let pid = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_executor(NvbindExecutor::for_exec())
        .with_root_path(ctx.root.clone())?
        .with_console_socket(args.console_socket.as_ref())
        .with_pid_file(args.pid_file.as_ref())?
        .with_preserved_fds(args.preserve_fds)
        .as_tenant()
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
        .build()
        .with_context(|| format!("cannot exec in container {:?}", args.id))?;
    if args.detach {
        return Ok(0);
    }
    let status = waitpid(pid, None).context("waiting for the exec'd process failed")?;
    Ok(exit_code(status))
}
