//! Containers run in the foreground (`run`, `restore` without --detach, `exec`): the caller
//! waits for the process, forwards signals to it as runc does, and exits with its code.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{self, kill, Signal};
use nix::sys::signalfd::SigSet;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::bundle::Bundle;
use crate::lifecycle::console::ConsoleRelay;
use crate::lifecycle::create::create_container_from;
use crate::lifecycle::delete::remove_exited;
use crate::lifecycle::halfmade::Intent;
use crate::options::CreateOpts;
use crate::state_root::id::validate_id;
use crate::state_root::Ctx;

/// `run`: create and start the container; with `detach`, return once it started, else wait
/// for its init, forwarding signals, and delete it afterwards unless `keep`.
pub fn run(ctx: &Ctx, opts: &CreateOpts, detach: bool, keep: bool) -> Result<u8> {
    if !detach && opts.console_socket.is_some() {
        bail!(FOREGROUND_CONSOLE_SOCKET);
    }
    // Block every signal before the container exists, so none that is meant for it can slip
    // through between its start and our forwarding loop (the relay's threads inherit the mask).
    let all = SigSet::all();
    if !detach {
        all.thread_block().context("cannot block signals")?;
    }
    // The bundle is loaded once, here: a bad one fails before anything is made, as create's
    // own load would, and create gets it as it was read.
    validate_id(&opts.id)?;
    let bundle = Bundle::load(&opts.bundle)?;
    // A terminal in the foreground: nvbind takes the pty and relays it to its stdio (runc).
    let relay = match detach {
        false if wants_terminal(&bundle) => Some(ConsoleRelay::new()?),
        _ => None,
    };
    let mut opts = opts.clone();
    if let Some(r) = &relay {
        opts.console_socket = Some(r.path());
    }
    let opts = &opts;
    let mut container = create_container_from(ctx, opts, detach, bundle)?;
    let console = match relay.map(ConsoleRelay::attach).transpose() {
        Ok(c) => c,
        Err(e) => {
            let _ = container.delete(true);
            let _ = crate::snapshot::release(ctx, &opts.id);
            return Err(e).with_context(|| format!("cannot start container {:?}", opts.id));
        }
    };
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
    let result = forward_signals_until_exit(pid, &all, &|| {
        if let Some(c) = &console {
            c.resize()
        }
    });
    if let Some(c) = console {
        c.finish();
    }
    if !keep {
        remove_exited(ctx, &mut container)?;
    }
    result
}

/// What runc says too: a foreground container's terminal is relayed by the runtime itself.
pub const FOREGROUND_CONSOLE_SOCKET: &str =
    "--console-socket is for a container that detaches (-d); in the foreground nvbind relays \
     the terminal itself";

/// Whether the bundle's process asks for a terminal.
fn wants_terminal(b: &Bundle) -> bool {
    b.spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
}

/// Like runc in the foreground: reap children, forward every signal except the ones that are
/// about us (SIGCHLD) or the terminal (SIGWINCH: `on_winch`, which resizes a relayed pty), and
/// return the init's exit code.
pub fn forward_signals_until_exit(init: Pid, set: &SigSet, on_winch: &dyn Fn()) -> Result<u8> {
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
            Signal::SIGWINCH => on_winch(),
            Signal::SIGURG => {}
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
