//! nvbind: a runc-compatible OCI runtime that injects GPUs through CDI.
//!
//! This is the one place that prints the final error and chooses the exit code; everything
//! below returns errors with their sources attached.

// nvbind starts itself (crate nvbind-rt: std's start less its main-thread stack probe, which
// reads /proc/self/maps on every engine call); the condition is nvbind_rt::entry!'s.
#![cfg_attr(all(not(test), target_os = "linux", target_env = "gnu"), no_main)]

mod cli;
mod commands;
mod criu;
mod default_spec;
mod discovery;
mod doctor;
mod executor;
mod inject;
mod lifecycle;
mod logging;
mod options;
mod retry;
mod rootless;
mod seal;
mod seccomp_cache;
mod setup;
mod snapshot;
mod state_root;
mod warning;

use clap::{CommandFactory as _, Parser as _};
// The library half (src/lib.rs); imported at the root so `crate::bundle` works everywhere.
use nvbind::bundle;

use crate::cli::{Cli, Command};
use crate::commands as cmd;
use crate::state_root::Ctx;

nvbind_rt::entry!(nvbind_main);

/// The exit status is runc's: 0, 1 on any error, 255 when exec could not run its process.
fn nvbind_main() -> u8 {
    // Rust ignores SIGPIPE by default, and an ignored signal stays ignored across exec: the
    // container's processes would inherit that. Restore the default, as every C runtime has it
    // (it also makes `nvbind events | head` end quietly).
    // SAFETY: setting a signal disposition to SIG_DFL before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return 0;
        }
        Err(e) => {
            // `nvbind foo -h`: runc's words, which scripts match (runc's help.bats).
            if let Some(topic) = unknown_help_topic(&e) {
                eprintln!("nvbind: No help topic for '{topic}' (see --help for the commands)");
                return 1;
            }
            // clap's message is several lines (usage, hints); the first says what is wrong.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("nvbind: {first} (see --help)");
            return 1;
        }
    };
    let logger = match &cli.global.log {
        Some(path) => match logging::Logger::install(path, cli.global.log_format, cli.global.debug)
        {
            Ok(l) => Some(l),
            Err(e) => return fail(None, &e, 1),
        },
        // The final error is printed to stderr anyway: `fail` gets no logger, or it would be
        // printed twice.
        None if cli.global.debug => match logging::Logger::install_stderr(cli.global.log_format) {
            Ok(_) => None,
            Err(e) => return fail(None, &e, 1),
        },
        None => None,
    };
    tracing::debug!(args = ?std::env::args().collect::<Vec<_>>(), "nvbind started");
    // runc's exec exits 255 when it could not run the process (so a caller tells that from
    // the process's own exit status, which exec passes through); every other verb exits 1.
    let failed = if matches!(cli.command, Command::Exec(_)) {
        EXEC_FAILED
    } else {
        1
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => fail(logger, &e, failed),
    }
}

/// The unknown command of `nvbind CMD -h` (help asked for a command that does not exist).
fn unknown_help_topic(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::InvalidSubcommand
        || !std::env::args().any(|a| a == "-h" || a == "--help")
    {
        return None;
    }
    match e.get(ContextKind::InvalidSubcommand)? {
        ContextValue::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// The exit status of an `exec` that could not run its process (runc's).
const EXEC_FAILED: u8 = 255;

/// Prints one line: the error and its causes joined by ": ", as runc does.
fn fail(logger: Option<&logging::Logger>, err: &anyhow::Error, code: u8) -> u8 {
    let msg = format!("{err:#}");
    if let Some(l) = logger {
        l.write(tracing::Level::ERROR, &msg);
    }
    eprintln!("nvbind: {}", msg.replace('\n', " "));
    code
}

fn dispatch(mut cli: Cli) -> anyhow::Result<u8> {
    // Verbs that need no state root must not create one.
    match cli.command {
        Command::Spec(args) => return cmd::spec::run(&args, &cli.global).map(|_| 0),
        Command::Features(args) => return cmd::features::run(&args).map(|_| 0),
        Command::Setup(args) => return cmd::setup::run(&args).map(|_| 0),
        Command::Cdi(args) => return cmd::cdi::run(&args, &cli.global.cdi_spec_dirs).map(|_| 0),
        Command::Info(args) => return cmd::info::run(&args).map(|_| 0),
        Command::Doctor(args) => return cmd::doctor::run(&args),
        Command::Completion(args) => return cmd::completion::run(&args, Cli::command()).map(|_| 0),
        Command::Man(args) => return cmd::man::run(&args, Cli::command()).map(|_| 0),
        _ => {}
    }
    let ctx = Ctx::new(&cli.global)?;
    // Verbs that put nvbind's clones into a container: they run from a sealed copy of the
    // binary (CVE-2019-5736) and keep no inherited descriptor the container is not meant to
    // get. restore leaves the descriptors to CRIU, which rebuilds the processes from images.
    let preserve_fds = match &cli.command {
        Command::Create(a) => Some(a.opts.preserve_fds),
        Command::Run(a) => Some(a.opts.preserve_fds),
        Command::Exec(a) => Some(a.preserve_fds),
        _ => None,
    };
    if preserve_fds.is_some() || matches!(cli.command, Command::Restore(_)) {
        match seal::ensure_sealed(&ctx.root)? {
            seal::Sealed::Disabled => tracing::warn!(
                "{}=1: the container can reach this nvbind binary",
                seal::DISABLE_VAR
            ),
            how => tracing::debug!(?how, "nvbind binary out of the container's reach"),
        }
    }
    if let Command::Exec(a) = &mut cli.command {
        cmd::exec::keep_process_file(a)?;
    }
    if let Some(n) = preserve_fds {
        seal::close_inherited_fds(n)?;
    }
    let ok = |r: anyhow::Result<()>| r.map(|_| 0u8);
    match cli.command {
        Command::Create(a) => ok(cmd::create::run(&a, &ctx)),
        Command::Start(a) => ok(cmd::start::run(&a, &ctx)),
        Command::State(a) => ok(cmd::state::run(&a, &ctx)),
        Command::Kill(a) => ok(cmd::kill::run(&a, &ctx)),
        Command::Delete(a) => ok(cmd::delete::run(&a, &ctx)),
        Command::Run(a) => cmd::run::run(&a, &ctx),
        Command::Exec(a) => cmd::exec::run(&a, &ctx),
        Command::Ps(a) => ok(cmd::ps::run(&a, &ctx)),
        Command::List(a) => ok(cmd::list::run(&a, &ctx)),
        Command::Pause(a) => ok(cmd::pause::run_pause(&a, &ctx)),
        Command::Resume(a) => ok(cmd::pause::run_resume(&a, &ctx)),
        Command::Events(a) => ok(cmd::events::run(&a, &ctx)),
        Command::Update(a) => ok(cmd::update::run(&a, &ctx)),
        Command::Checkpoint(a) => ok(cmd::checkpoint::run(&a, &ctx, cli.global.criu.as_deref())),
        Command::Restore(a) => cmd::restore::run(&a, &ctx, cli.global.criu.as_deref()),
        Command::Snapshot(a) => ok(cmd::snapshot::run(&a, &ctx)),
        Command::Spec(_)
        | Command::Features(_)
        | Command::Setup(_)
        | Command::Cdi(_)
        | Command::Info(_)
        | Command::Doctor(_)
        | Command::Completion(_)
        | Command::Man(_) => {
            unreachable!("handled above")
        }
    }
}
