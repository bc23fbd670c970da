//! `nvbind cdi ...`: the CDI registry as nvbind sees it, and spec generation.
//!
//! `cdi resolve` resolves the device requests of a bundle's config.json (cdi.k8s.io/*
//! annotations, NVIDIA_VISIBLE_DEVICES) exactly as `create` would, and prints the devices, the
//! kinds whose spec was generated in memory, and the CDI container edits as one JSON object. It
//! reads the same environment as create (NVBIND_CDI_SPEC_DIRS, NVBIND_DRIVER_ROOT,
//! NVBIND_CDI_STALE_SPECS); nvbind-hook's `resolve` prints the same for the same bundle.
//!
//! That paragraph was ResolveArgs' clap `long_about`, never shown: the variant's one-line doc
//! comment below sets long_about to None after it. With the subcommands' arguments deferred
//! (issue 19) the struct's attributes come last and it would show, so it moved here and --help
//! stays as it was; to show it, give the variant this text as its long_about.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Subcommand;

pub mod generate;

use self::generate::GenerateArgs;
use crate::inject::{registry, spec_dirs};
use crate::warning::warn;

// Each subcommand's arguments are built only when it is the one invoked (see Command in
// src/cli.rs).
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum CdiCommand {
    /// Generate CDI specs for the GPUs on this host
    Generate(GenerateArgs),
    /// List the CDI devices the registry knows, and spec files it rejected
    List(ListArgs),
    /// Print the edits `create` would make for a bundle's device requests, as JSON
    Resolve(ResolveArgs),
}

#[derive(clap::Args, Debug)]
pub struct ResolveArgs {
    /// Bundle directory holding config.json
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Spec directory to read (repeatable; later ones win) [default: $NVBIND_CDI_SPEC_DIRS or
    /// /etc/cdi and /var/run/cdi]
    #[arg(long = "spec-dir", value_name = "DIR")]
    pub spec_dirs: Vec<PathBuf>,
    /// Output format
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
}

pub fn run(cmd: &CdiCommand, spec_dirs_flag: &[PathBuf]) -> Result<()> {
    match cmd {
        CdiCommand::Generate(a) => generate::run(a),
        CdiCommand::List(a) => list(a),
        CdiCommand::Resolve(a) => resolve(a, spec_dirs_flag),
    }
}

fn resolve(args: &ResolveArgs, spec_dirs_flag: &[PathBuf]) -> Result<()> {
    let bundle = crate::bundle::Bundle::load(&args.bundle)?;
    let resolver = crate::inject::resolver(spec_dirs_flag)?;
    let Some(r) = resolver.resolve(&bundle.spec)? else {
        println!("{{}}");
        return Ok(());
    };
    for w in &r.warnings {
        eprintln!("nvbind: warning: {w}");
    }
    println!("{}", serde_json::to_string_pretty(&r.to_json())?);
    Ok(())
}

fn list(args: &ListArgs) -> Result<()> {
    let reg = registry(spec_dirs(&args.spec_dirs));
    let devices: Vec<String> = reg.devices().iter().map(|d| d.to_string()).collect();
    let errors: Vec<(String, String)> = reg
        .errors()
        .iter()
        .map(|(p, e)| (p.display().to_string(), e.to_string()))
        .collect();
    if args.format == "json" {
        let errors: Vec<_> = errors
            .iter()
            .map(|(f, e)| serde_json::json!({"file": f, "error": e}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "dirs": reg.dirs(),
                "devices": devices,
                "errors": errors,
            }))?
        );
    } else {
        for d in &devices {
            println!("{d}");
        }
        for (f, e) in &errors {
            warn(format!("{f}: {e}"));
        }
    }
    if devices.is_empty() && !errors.is_empty() {
        bail!(
            "no usable CDI spec in {} ({} rejected)",
            dirs_str(&reg),
            errors.len()
        );
    }
    Ok(())
}

fn dirs_str(reg: &nvbind_cdi::registry::Registry) -> String {
    reg.dirs()
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
