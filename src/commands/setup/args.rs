//! The flags of `nvbind setup`: the engine (or `lxc CTID`) and what to register; the LXC
//! ones apply to `setup lxc` only.

use std::path::PathBuf;

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum EngineName {
    Docker,
    Podman,
    Containerd,
    /// An LXC or Proxmox VE container (give its CTID or name)
    Lxc,
}

#[derive(clap::Args, Debug)]
pub struct SetupArgs {
    /// The engine to configure
    #[arg(value_enum)]
    pub engine: EngineName,
    /// lxc: the container (Proxmox CTID, or the LXC container's name)
    #[arg(value_name = "CTID")]
    pub container: Option<String>,
    /// Print the change as a diff and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// The engine's config file (default: /etc/docker/daemon.json,
    /// /etc/containers/containers.conf, /etc/containerd/config.toml)
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The nvbind binary the engine should run (default: this binary)
    #[arg(long, value_name = "PATH")]
    pub runtime_path: Option<PathBuf>,
    /// The runtime's name in the engine (docker --runtime NAME, RuntimeClass handler NAME)
    #[arg(long, default_value = "nvbind")]
    pub name: String,
    /// Also make nvbind the engine's default runtime
    #[arg(long)]
    pub default: bool,
    #[command(flatten)]
    pub lxc: LxcArgs,
}

#[derive(clap::Args, Debug)]
#[command(next_help_heading = "LXC and Proxmox (setup lxc CTID)")]
pub struct LxcArgs {
    /// lxc: the GPUs, as NVIDIA_VISIBLE_DEVICES takes them (0,1 / GPU-uuid / all / a CDI name)
    #[arg(
        long,
        value_name = "NAME",
        value_delimiter = ',',
        default_value = "all"
    )]
    pub device: Vec<String>,
    /// lxc: the nvbind-hook binary the container runs (default: the one beside this nvbind,
    /// else /usr/bin/nvbind-hook)
    #[arg(long, value_name = "PATH")]
    pub hook_path: Option<PathBuf>,
    /// lxc: the LXC containers' directory, for plain LXC (default /var/lib/lxc)
    #[arg(long, value_name = "DIR")]
    pub lxcpath: Option<PathBuf>,
}
