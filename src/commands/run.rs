use anyhow::{Context, Result};
use nix::sys::signal::{self, kill, Signal};
use nix::sys::signalfd::SigSet;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::commands::exit_code;
use crate::lifecycle::create::create_container;
use crate::options::CreateOpts;
use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub opts: CreateOpts,
    /// Return once the container is started instead of waiting for it
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the stopped container (do not delete it) after it exits
    #[arg(long)]
    pub keep: bool,
}

pub fn run(args: &RunArgs, ctx: &Ctx) -> Result<u8> {
    // Block every signal before the container exists, so none that is meant for it can slip
    // through between its start and our forwarding loop.
    let all = SigSet::all();
    if !args.detach {
        all.thread_block().context("cannot block signals")?;
    }
    let mut container = create_container(ctx, &args.opts, args.detach)?;
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        let _ = crate::snapshot::release(ctx, &args.opts.id);
        return Err(e).with_context(|| format!("cannot start container {:?}", args.opts.id));
    }
    if args.detach {
        return Ok(0);
    }
    let pid = container
        .pid()
        .context("the container has no init process after start")?;
    let result = forward_signals_until_exit(pid, &all);
    if !args.keep {
        container
            .delete(true)
            .with_context(|| format!("cannot delete container {:?}", args.opts.id))?;
        crate::snapshot::release(ctx, &args.opts.id)?;
    }
    result
}

/// Like runc in the foreground: reap children, forward every signal except the ones that are
/// about us (SIGCHLD) or the terminal (SIGWINCH), and return the init's exit code.
pub(crate) fn forward_signals_until_exit(init: Pid, set: &SigSet) -> Result<u8> {
    loop {
        match set.wait().context("sigwait failed")? {
            Signal::SIGCHLD => loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                    Ok(st @ (WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _)))
                        if p == init =>
                    {
                        return Ok(exit_code(st));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e).context("waitpid failed"),
                }
            },
            Signal::SIGWINCH | Signal::SIGURG => {}
            sig => {
                if let Err(e) = kill(init, Some(sig)) {
                    tracing::warn!("cannot forward {sig} to the container: {e}");
                }
                if sig == signal::SIGKILL {
                    continue;
                }
            }
        }
    }
}
