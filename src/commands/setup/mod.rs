//! `nvbind setup docker|podman|containerd`: register nvbind in the engine's config file;
//! `nvbind setup lxc CTID`: the hook lines of an LXC or Proxmox container (lxc.rs); the
//! flags of both are in args.rs.

use anyhow::{bail, Context, Result};

pub mod args;
pub mod lxc;

use self::args::{EngineName, SetupArgs};
use crate::setup::{self, containerd::Containerd, docker::Docker, podman::Podman, Engine, Outcome};

pub fn run(args: &SetupArgs) -> Result<()> {
    if let EngineName::Lxc = args.engine {
        return lxc::run(args);
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
