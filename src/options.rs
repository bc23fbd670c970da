//! The option groups of the command line that more than one part of nvbind reads: the
//! global options (every verb, the state root, logging) and the flags `create` and `run`
//! share (the lifecycle's create). A leaf: it imports nothing of nvbind, so the command line
//! (src/cli.rs), which names every verb, is never imported from below.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// Directory holding the containers' state
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Write log lines to FILE instead of discarding them (engines read it on failure)
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Format of the log lines
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log debug messages as well
    #[arg(long)]
    pub debug: bool,
    /// Manage cgroups through systemd (cgroupsPath is then "slice:prefix:name")
    #[arg(long)]
    pub systemd_cgroup: bool,
    /// Rootless mode: the state root defaults to $XDG_RUNTIME_DIR/nvbind (else
    /// /tmp/nvbind-UID); "auto" turns it on when not run as root
    #[arg(long, value_enum, default_value_t = Rootless::Auto)]
    pub rootless: Rootless,
    /// CDI spec directory (repeatable, later ones win) [default: $NVBIND_CDI_SPEC_DIRS or
    /// /etc/cdi and /var/run/cdi]
    #[arg(long = "cdi-spec-dir", value_name = "DIR")]
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// Path to the criu binary (default: $NVBIND_CRIU, then criu in PATH)
    #[arg(long, hide = true)]
    pub criu: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rootless {
    Auto,
    True,
    False,
}

// The flags `create` and `run` share, with runc's names.
// (Not a doc comment: clap makes a flattened struct's doc comment the about of the verb it is
// flattened into, after the verb's own since the verbs are deferred; src/cli.rs.)
#[derive(clap::Args, Debug, Clone)]
pub struct CreateOpts {
    /// Path to the bundle directory (holds config.json and usually the rootfs)
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container's init PID to this file
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master (SCM_RIGHTS) when process.terminal is true
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Do not use pivot_root to jail the process inside the rootfs (for ramdisk roots)
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a new session keyring for the container
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass N extra file descriptors (3 .. 3+N-1) into the container
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub preserve_fds: i32,
    /// Start from this rootfs snapshot (a name of a snapshot of the bundle's rootfs, or a
    /// path): the container gets a copy-on-write clone, the base is never modified
    #[arg(long, value_name = "NAME|PATH")]
    pub snapshot: Option<String>,
    /// Container ID (letters, digits, '_', '+', '-', '.')
    pub id: String,
}
