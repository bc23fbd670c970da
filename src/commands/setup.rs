//! `nvbind setup docker|podman|containerd`: register nvbind in the engine's config file;
//! `nvbind setup lxc CTID`: the hook lines of an LXC or Proxmox container (setup_lxc.rs).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::setup::{self, containerd::Containerd, docker::Docker, podman::Podman, Engine, Outcome};

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
    pub lxc: super::setup_lxc::LxcArgs,
}

pub fn run(args: &SetupArgs) -> Result<()> {
    if let EngineName::Lxc = args.engine {
        return super::setup_lxc::run(args);
    }
    if let Some(c) = &args.container {
        bail!("unexpected argument {c:?}: only `nvbind setup lxc` takes a container");
    }
    let engine: &dyn Engine = match args.engine {
        EngineName::Lxc => unreachable!("handled above"),
        EngineName::Docker => &Docker,
        EngineName::Podman => &Podman,
        EngineName::Containerd => &Containerd,
    };
    if args.name.is_empty()
        || !args
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!(
            "invalid runtime name {:?}: use letters, digits, '-', '_' or '.'",
            args.name
        );
    }
    let runtime = match &args.runtime_path {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => std::env::current_dir()
            .context("cannot resolve --runtime-path")?
            .join(p),
        None => std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .context("cannot find the path of this nvbind binary; pass --runtime-path")?,
    };
    if !runtime.is_file() {
        crate::warning::warn(format!(
            "{} does not exist (yet); the engine will fail to run it until it does",
            runtime.display()
        ));
    }
    let reg = setup::Registration {
        name: args.name.clone(),
        path: runtime,
        default: args.default,
    };
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| engine.default_config().to_path_buf());
    let outcome = setup::apply(engine, &config, &reg, args.dry_run)?;
    let what = format!("runtime \"{}\" -> {}", reg.name, reg.path.display());
    match outcome {
        Outcome::AlreadyConfigured => {
            println!(
                "{} is already configured in {} ({what}); nothing changed.",
                engine.name(),
                config.display()
            );
        }
        Outcome::WouldWrite { old, new } => {
            for note in engine.notes(&new) {
                eprintln!("nvbind: note: {note}");
            }
            print!("{}", setup::render_diff(&config, old.as_deref(), &new));
            println!(
                "Dry run: {} would be {} ({what}); nothing was written.",
                config.display(),
                if old.is_some() { "updated" } else { "created" }
            );
        }
        Outcome::Written { backup } => {
            let new = std::fs::read_to_string(&config).unwrap_or_default();
            for note in engine.notes(&new) {
                eprintln!("nvbind: note: {note}");
            }
            match backup {
                Some(b) => println!(
                    "Configured {}: updated {} ({what}); the previous file is saved as {}.",
                    engine.name(),
                    config.display(),
                    b.display()
                ),
                None => println!(
                    "Configured {}: created {} ({what}).",
                    engine.name(),
                    config.display()
                ),
            }
            println!("To apply it: {}", engine.restart_hint());
        }
    }
    Ok(())
}
