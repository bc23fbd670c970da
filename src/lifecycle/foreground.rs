//! Containers run in the foreground (`run`, `restore` without --detach, `exec`): the caller
//! waits for the process, forwards signals to it as runc does, and exits with its code.

use anyhow::{Context, Result};
use nix::sys::signal::{self, kill, Signal};
use nix::sys::signalfd::SigSet;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::lifecycle::create::create_container;
use crate::lifecycle::delete::remove_exited;
use crate::lifecycle::halfmade::Intent;
use crate::options::CreateOpts;
use crate::state_root::Ctx;

/// `run`: create and start the container; with `detach`, return once it started, else wait
/// for its init, forwarding signals, and delete it afterwards unless `keep`.
pub fn run(ctx: &Ctx, opts: &CreateOpts, detach: bool, keep: bool) -> Result<u8> {
    // Block every signal before the container exists, so none that is meant for it can slip
    // through between its start and our forwarding loop.
    let all = SigSet::all();
    if !detach {
        all.thread_block().context("cannot block signals")?;
    }
    let mut container = create_container(ctx, opts, detach)?;
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        let _ = Intent::forget_deleted(ctx, &opts.id);
        let _ = crate::snapshot::release(ctx, &opts.id);
        return Err(e).with_context(|| format!("cannot start container {:?}", opts.id));
    }
    if detach {
        return Ok(0);
    }
    let pid = container
        .pid()
        .context("the container has no init process after start")?;
    let result = forward_signals_until_exit(pid, &all);
    if !keep {
        remove_exited(ctx, &mut container)?;
    }
    result
}

/// Like runc in the foreground: reap children, forward every signal except the ones that are
/// about us (SIGCHLD) or the terminal (SIGWINCH), and return the init's exit code.
pub fn forward_signals_until_exit(init: Pid, set: &SigSet) -> Result<u8> {
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

/// Converts a wait status into the exit code a shell would report: the code itself, or
/// 128 + the signal number for a process killed by a signal (runc does the same).
pub fn exit_code(status: WaitStatus) -> u8 {
    match status {
        WaitStatus::Exited(_, code) => code as u8,
        WaitStatus::Signaled(_, sig, _) => 128u8.wrapping_add(sig as u8),
        _ => 0,
    }
}
