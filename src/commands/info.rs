//! `nvbind info`: the GPUs and driver files discovery finds on this host, and how it found
//! them (NVML, procfs, /dev, sysfs).
//!
//! Show what GPU discovery finds, per vendor: how it was found (NVML, procfs, /dev scan or
//! sysfs), driver and CUDA versions, each GPU and MIG device with its device nodes, and the
//! driver's control nodes, libraries, binaries, firmware and IPC sockets, with warnings about
//! what could not be read. Exits non-zero when no GPU at all is found.
//!
//! The paragraph above was this struct's clap `long_about`, never shown: the verb's one-line
//! doc comment (src/cli.rs) sets long_about to None after it. With the verbs' arguments deferred
//! (issue 19) the struct's attributes come last and it would show, so it moved here and --help
//! stays as it was; to show it, give the verb this text as its long_about.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use nvbind_cdi::discover::{DiscoverError, HostFile, Inventory, VendorInventory};

use crate::discovery::{requested_vendors, HostArgs, VendorArg};

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfoFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = InfoFormat::Text)]
    pub format: InfoFormat,
    /// Vendors to look for, comma-separated or repeated [default: all]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "VENDOR")]
    pub vendor: Vec<VendorArg>,
    #[command(flatten)]
    pub host: HostArgs,
}

pub fn run(args: &InfoArgs) -> anyhow::Result<()> {
    let inventory = args.host.discover(&requested_vendors(&args.vendor));
    let text = match args.format {
        InfoFormat::Json => {
            let mut t = serde_json::to_string_pretty(&json(&inventory))?;
            t.push('\n');
            t
        }
        InfoFormat::Text => text(&inventory),
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")?;
    if inventory.gpu_count() == 0 {
        bail!("no GPU found");
    }
    Ok(())
}

fn json(inv: &Inventory) -> serde_json::Value {
    let absent: Vec<serde_json::Value> = inv
        .absent
        .iter()
        .map(|e| {
            let DiscoverError::NotPresent { vendor, looked_for } = e;
            serde_json::json!({ "vendor": vendor, "reason": looked_for })
        })
        .collect();
    serde_json::json!({ "vendors": inv.found, "absent": absent })
}

fn text(inv: &Inventory) -> String {
    let mut out = String::new();
    for v in &inv.found {
        vendor_text(&mut out, v);
    }
    for e in &inv.absent {
        let DiscoverError::NotPresent { vendor, looked_for } = e;
        let _ = writeln!(out, "{vendor}: not found ({looked_for})");
    }
    out
}

fn paths(files: &[HostFile]) -> String {
    files
        .iter()
        .map(|f| f.path.display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn vendor_text(out: &mut String, v: &VendorInventory) {
    let _ = write!(
        out,
        "{}: {} GPU(s) via {}",
        v.vendor,
        v.gpus.len(),
        v.method
    );
    if let Some(d) = &v.driver_version {
        let _ = write!(out, ", driver {d}");
    }
    if let Some(c) = &v.cuda_version {
        let _ = write!(out, ", CUDA {c}");
    }
    out.push('\n');
    for g in &v.gpus {
        let _ = write!(out, "  GPU {}", g.index);
        for field in [&g.name, &g.uuid, &g.pci_bus_id].into_iter().flatten() {
            let _ = write!(out, "  {field}");
        }
        let nodes: Vec<String> = g
            .nodes
            .iter()
            .map(|n| n.path.display().to_string())
            .collect();
        let _ = writeln!(out, "  {}", nodes.join(" "));
        for m in &g.migs {
            let nodes: Vec<String> = m
                .nodes
                .iter()
                .map(|n| n.path.display().to_string())
                .collect();
            let _ = writeln!(
                out,
                "    MIG {}:{}  {}gi {} ci {}  {}",
                g.index,
                m.index,
                m.uuid
                    .as_ref()
                    .map(|u| format!("{u}  "))
                    .unwrap_or_default(),
                m.gpu_instance,
                m.compute_instance,
                nodes.join(" ")
            );
        }
    }
    let sh = &v.shared;
    if !sh.device_nodes.is_empty() {
        let nodes: Vec<String> = sh
            .device_nodes
            .iter()
            .map(|n| n.path.display().to_string())
            .collect();
        let _ = writeln!(out, "  control nodes: {}", nodes.join(" "));
    }
    if !sh.libraries.is_empty() {
        let _ = writeln!(
            out,
            "  libraries ({}): {}",
            sh.libraries.len(),
            paths(&sh.libraries)
        );
    }
    for (label, files) in [
        ("binaries", &sh.binaries),
        ("firmware", &sh.firmware),
        ("ipc", &sh.ipc),
        ("configs", &sh.configs),
    ] {
        if !files.is_empty() {
            let _ = writeln!(out, "  {label}: {}", paths(files));
        }
    }
    for w in &v.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
}
