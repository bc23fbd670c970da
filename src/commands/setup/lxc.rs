//! `nvbind setup lxc CTID`: GPU injection for an LXC or Proxmox VE container, written into its
//! config (Proxmox: /etc/pve/lxc/CTID.conf; LXC: LXCPATH/NAME/config; or --config), merged
//! with what is there, with a backup, atomically; running it again changes nothing.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::args::SetupArgs;
use crate::setup::lxc::{Flavor, Lxc};
use crate::setup::{self, Engine as _, Outcome, Registration};

/// Where Proxmox VE keeps its containers' configs (the cluster filesystem).
const PVE_DIR: &str = "/etc/pve/lxc";
/// LXC's default lxcpath for root.
const LXC_PATH: &str = "/var/lib/lxc";

fn default_hook() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .map(|p| p.with_file_name("nvbind-hook"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/nvbind-hook"))
}

/// The container's config file: --config, else Proxmox's when this is a Proxmox host, else LXC's.
fn config_path(args: &SetupArgs, ctid: &str) -> Result<PathBuf> {
    if let Some(c) = &args.config {
        return Ok(c.clone());
    }
    if args.lxc.lxcpath.is_none() && Path::new(PVE_DIR).is_dir() {
        if ctid.is_empty() || !ctid.chars().all(|c| c.is_ascii_digit()) {
            bail!("invalid CTID {ctid:?}: Proxmox container IDs are numbers (pct list shows them)");
        }
        return Ok(Path::new(PVE_DIR).join(format!("{ctid}.conf")));
    }
    if ctid.is_empty() || ctid.contains('/') || ctid == "." || ctid == ".." {
        bail!("invalid container name {ctid:?}");
    }
    let lxcpath = args
        .lxc
        .lxcpath
        .clone()
        .unwrap_or_else(|| PathBuf::from(LXC_PATH));
    Ok(lxcpath.join(ctid).join("config"))
}

pub fn run(args: &SetupArgs) -> Result<()> {
    let Some(ctid) = &args.container else {
        bail!("nvbind setup lxc needs the container: nvbind setup lxc CTID (pct list / lxc-ls show them)");
    };
    if args.default || args.runtime_path.is_some() {
        bail!("--default and --runtime-path are for engines; for lxc give --hook-path");
    }
    let devices = args.lxc.device.join(",");
    if devices.is_empty() || devices.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "invalid --device {devices:?}: give indices, UUIDs, all or CDI names, comma-separated"
        );
    }
    let path = config_path(args, ctid)?;
    // A container that does not exist is an error, not a config to create.
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no container {ctid}: {} does not exist (pct list / lxc-ls list the containers; --config PATH for another file)",
            path.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    let hook = match &args.lxc.hook_path {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => std::env::current_dir()
            .context("cannot resolve --hook-path")?
            .join(p),
        None => default_hook(),
    };
    if !hook.is_file() {
        eprintln!(
            "nvbind: warning: {} does not exist (yet); the container will not start until it does",
            hook.display()
        );
    }
    let lxc = Lxc {
        flavor: Flavor::detect(&path, &text),
        devices,
    };
    let reg = Registration {
        name: "nvbind-hook".into(),
        path: hook.clone(),
        default: false,
    };
    let outcome = setup::apply(&lxc, &path, &reg, args.dry_run)?;
    let what = format!("GPUs {} through {}", lxc.devices, hook.display());
    let restart = match lxc.flavor {
        Flavor::Proxmox => format!("pct reboot {ctid}"),
        Flavor::Lxc => format!("lxc-stop -n {ctid}; lxc-start -n {ctid}"),
    };
    match outcome {
        Outcome::AlreadyConfigured => println!(
            "{} is already set up ({what}); nothing changed.",
            path.display()
        ),
        Outcome::WouldWrite { old, new } => {
            print!("{}", setup::render_diff(&path, old.as_deref(), &new));
            println!(
                "Dry run: {} would be updated ({what}); nothing was written.",
                path.display()
            );
        }
        Outcome::Written { backup } => {
            match backup {
                Some(b) => println!(
                    "Set up {} container {ctid}: updated {} ({what}); the previous file is saved as {}.",
                    lxc.name(),
                    path.display(),
                    b.display()
                ),
                None => println!("Set up {}: {} ({what}).", lxc.name(), path.display()),
            }
            println!("Device rules are added at each start by the lxc.hook.start-host hook. To apply it: {restart}");
        }
    }
    Ok(())
}
