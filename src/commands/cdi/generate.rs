//! `nvbind cdi generate`: discover the GPUs on this host and write CDI specs for them.
//!
//! Discover the NVIDIA (NVML or /proc), AMD and Intel (/sys/class/drm) GPUs on this host and
//! write a CDI spec per vendor: one device per GPU and MIG device, an `all` device, and the
//! driver's control nodes, libraries, binaries, firmware and IPC sockets as spec-wide edits.
//! Hooks call nvbind-hook. Warnings about what could not be found go to stderr; the exit status
//! is non-zero when no GPU at all is found or a vendor named with --vendor is missing.
//!
//! The paragraph above was this struct's clap `long_about`, never shown: the verb's one-line
//! doc comment (CdiCommand in mod.rs) sets long_about to None after it. With the verbs' arguments deferred
//! (issue 19) the struct's attributes come last and it would show, so it moved here and --help
//! stays as it was; to show it, give the verb this text as its long_about.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use nvbind_cdi::generate::{
    default_hook_path, render, render_all, specs_for, write_atomic, GenerateOptions, NameStrategy,
};
use nvbind_cdi::spec::{Format, Spec};

use crate::discovery::{requested_vendors, HostArgs, VendorArg};

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatArg {
    Yaml,
    Json,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyArg {
    /// `0`, `1`, ... and `0:1` for MIG devices
    Index,
    /// `GPU-<uuid>` / `MIG-<uuid>` (devices without a UUID keep their index)
    Uuid,
    /// Both, as separate device names
    Both,
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Vendors to generate specs for, comma-separated or repeated
    /// [default: every vendor whose driver is present]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "VENDOR")]
    pub vendor: Vec<VendorArg>,
    /// Output format [default: from the --output extension, else yaml]
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Write the spec to FILE, replacing it atomically, instead of stdout (one vendor only;
    /// use --output-dir for several). Several specs on stdout are YAML documents separated
    /// by `---`, or one JSON object per line
    #[arg(long, short = 'o', value_name = "FILE", conflicts_with = "output_dir")]
    pub output: Option<PathBuf>,
    /// Write one spec per vendor into DIR as nvidia.yaml, amd.yaml, intel.yaml (or .json),
    /// each replaced atomically, e.g. /var/run/cdi
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// How devices are named
    #[arg(long, value_enum, default_value_t = StrategyArg::Index)]
    pub device_name_strategy: StrategyArg,
    /// Path of nvbind-hook as the container's hooks will run it
    /// [default: nvbind-hook next to this executable, else /usr/bin/nvbind-hook]
    #[arg(long, value_name = "PATH")]
    pub hook_path: Option<PathBuf>,
    #[command(flatten)]
    pub host: HostArgs,
}

/// The explicitly named vendors (empty for "all" or none given).
pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    let hook_path = args.hook_path.clone().unwrap_or_else(default_hook_path);
    if !hook_path.is_absolute() {
        bail!("--hook-path must be absolute: {}", hook_path.display());
    }
    let format = match (args.format, &args.output) {
        (Some(FormatArg::Json), _) => Format::Json,
        (Some(FormatArg::Yaml), _) => Format::Yaml,
        (None, Some(out)) => Format::from_path(out).unwrap_or(Format::Yaml),
        (None, None) => Format::Yaml,
    };
    let vendors = requested_vendors(&args.vendor);
    let inventory = args.host.discover(&vendors);
    if !vendors.is_empty() && !inventory.absent.is_empty() {
        let reasons: Vec<String> = inventory.absent.iter().map(|e| e.to_string()).collect();
        bail!("{}", reasons.join("; "));
    }

    let opts = GenerateOptions {
        name_strategy: match args.device_name_strategy {
            StrategyArg::Index => NameStrategy::Index,
            StrategyArg::Uuid => NameStrategy::Uuid,
            StrategyArg::Both => NameStrategy::Both,
        },
        hook_path,
        compat32: false,
    };
    let mut warnings: Vec<String> = inventory
        .found
        .iter()
        .flat_map(|v| v.warnings.iter().cloned())
        .collect();
    let specs = specs_for(&inventory, &opts, &mut warnings);
    for w in &warnings {
        crate::warning::warn(w);
    }
    if specs.is_empty() {
        let mut reasons: Vec<String> = inventory.absent.iter().map(|e| e.to_string()).collect();
        reasons.extend(
            warnings
                .iter()
                .filter(|w| w.contains("no usable GPU"))
                .cloned(),
        );
        bail!("no GPU found: {}", reasons.join("; "));
    }
    for v in &vendors {
        if !specs.iter().any(|s| s.kind == v.kind()) {
            bail!("{v} driver found but no usable GPU (see the warnings above)");
        }
    }
    write(&specs, format, args)
}

fn write(specs: &[Spec], format: Format, args: &GenerateArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.output_dir {
        let ext = if format == Format::Json {
            "json"
        } else {
            "yaml"
        };
        for spec in specs {
            let vendor = spec.kind.split('.').next().unwrap_or("gpu");
            let path = dir.join(format!("{vendor}.{ext}"));
            let text = render(spec, format, &path)?;
            write_atomic(&path, text.as_bytes())?;
        }
        return Ok(());
    }
    if let Some(path) = &args.output {
        if specs.len() > 1 {
            let kinds: Vec<&str> = specs.iter().map(|s| s.kind.as_str()).collect();
            bail!(
                "--output takes one spec but {} were generated ({}); use --vendor or --output-dir",
                specs.len(),
                kinds.join(", ")
            );
        }
        let text = render(&specs[0], format, path)?;
        return Ok(write_atomic(path, text.as_bytes())?);
    }
    let text = render_all(specs, format)?;
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write the spec to stdout")
}
