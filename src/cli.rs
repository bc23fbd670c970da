//! Command line: runc's global options and verbs, with runc's flag names, so that engines which
//! were written against runc (containerd's shim, conmon, dockerd) can call nvbind unchanged.

use clap::{ArgAction, Parser, Subcommand};

use crate::commands;
use crate::options::GlobalOpts;

/// `nvbind -v` in runc's three-line shape (`runc version X`, `commit: C`, `spec: S`), which
/// tools parse; the commit is NVBIND_COMMIT at build time, where the packaging sets it.
const VERSION: &str = const_format::concatcp!(
    "version ",
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    match option_env!("NVBIND_COMMIT") {
        Some(c) => c,
        None => "unknown (built without NVBIND_COMMIT)",
    },
    "\nspec: ",
    oci_spec::runtime::VERSION,
);

#[derive(Parser, Debug)]
#[command(
    name = "nvbind",
    version = VERSION,
    disable_version_flag = true,
    about = "An OCI container runtime that injects GPUs through CDI",
    long_about = "nvbind is a runc-compatible OCI runtime. Container engines (Docker, Podman, \
containerd) call it in place of runc; while it creates a container it injects the devices the \
bundle asks for through CDI specs (cdi.k8s.io/* annotations or NVIDIA_VISIBLE_DEVICES)."
)]
pub struct Cli {
    /// Print the version (runc's -v, and clap's -V)
    #[arg(short = 'v', long = "version", short_alias = 'V', action = ArgAction::Version)]
    version: (),
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

// `defer`: a verb's arguments are added to its clap Command only when clap builds that verb,
// i.e. when it is the one invoked (or help, completion and man pages ask for all). Every engine
// call execs nvbind, and building the arguments of all ~25 verbs for each one was ~245k of the
// ~1.05M instructions of `nvbind state ID` (callgrind, bench/analysis.md, issue 19). With it
// the struct-level #[command(...)] of a verb's Args comes after the variant's doc comment
// instead of before, so those must not set what the variant sets (about, long_about, hide):
// tests::deferred_verbs_are_built_as_eagerly_built_ones checks.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum Command {
    /// Create a container from a bundle; its process waits for `start`
    Create(commands::create::CreateArgs),
    /// Start the user process of a created container
    Start(commands::start::StartArgs),
    /// Print the state of a container as JSON
    State(commands::state::StateArgs),
    /// Send a signal to the container's init process (or all its processes)
    Kill(commands::kill::KillArgs),
    /// Delete a container and release its resources
    Delete(commands::delete::DeleteArgs),
    /// Create and start a container; in the foreground, exit with its exit code
    Run(commands::run::RunArgs),
    /// Run a new process inside a running container
    Exec(commands::exec::ExecArgs),
    /// List the processes running inside a container
    Ps(commands::ps::PsArgs),
    /// List the containers under --root
    List(commands::list::ListArgs),
    /// Freeze all processes of a container
    Pause(commands::pause::PauseArgs),
    /// Thaw a paused container
    Resume(commands::pause::ResumeArgs),
    /// Print container events (OOM, stats) as JSON lines
    Events(commands::events::EventsArgs),
    /// Change the resource limits of a running container
    Update(commands::update::UpdateArgs),
    /// Write a default config.json into a bundle
    Spec(commands::spec::SpecArgs),
    /// Container Device Interface: generate specs, list known devices
    #[command(subcommand)]
    Cdi(commands::cdi::CdiCommand),
    /// Show the GPUs and driver files found on this host
    Info(commands::info::InfoArgs),
    /// Print what this build of nvbind supports, as OCI features JSON
    Features(commands::features::FeaturesArgs),
    /// Checkpoint a running container with CRIU
    Checkpoint(commands::checkpoint::CheckpointArgs),
    /// Restore a container from a CRIU checkpoint
    Restore(commands::restore::RestoreArgs),
    /// Rootfs snapshots: create, list, restore, delete
    // A verb with subcommands is a #[command(subcommand)] variant, not Args holding the
    // subcommand: clap copies the tree for its `help` subcommand before it builds the deferred
    // verbs, so subcommands inside a deferred verb's Args would be missing from `nvbind help
    // snapshot <TAB>` (tests::help_knows_every_command).
    #[command(subcommand)]
    Snapshot(commands::snapshot::SnapshotCmd),
    /// Register nvbind in Docker's, Podman's or containerd's config (merging, with a backup)
    Setup(commands::setup::args::SetupArgs),
    /// Check that this host is ready for nvbind, and what to do where it is not
    Doctor(commands::doctor::DoctorArgs),
    /// Print a shell completion script (bash, zsh or fish)
    Completion(commands::completion::CompletionArgs),
    /// Write the man pages (the package build runs it)
    #[command(hide = true)]
    Man(commands::man::ManArgs),
}

#[cfg(test)]
mod tests;
