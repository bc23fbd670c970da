//! GPUs and CDI specs: the driver (and NVML), and the specs nvbind would inject from: valid,
//! trusted, and describing the host as it is now.

use nvbind_cdi::discover::{HostRoots, Inventory, Method, Vendor};
use nvbind_cdi::livecheck::first_stale;
use nvbind_cdi::registry::DEFAULT_SPEC_DIRS;

use super::check::Check;
use super::host::Host;

pub fn driver(inv: &Inventory, host: &dyn Host) -> Check {
    let id = "gpu-driver";
    if inv.found.is_empty() {
        return Check::warn(
            id,
            "no GPU driver loaded (NVIDIA, AMD, Intel): containers run, with no GPU to inject",
            "install and load the GPU driver (nvidia-smi / lsmod), then run nvbind doctor again",
        );
    }
    let mut parts = Vec::new();
    let mut nvml_missing = false;
    for v in &inv.found {
        let version = v
            .driver_version
            .as_deref()
            .map(|d| format!(" {d}"))
            .unwrap_or_default();
        parts.push(format!(
            "{}{version}: {} GPU(s) via {}",
            v.vendor, // Display: NVIDIA, AMD, Intel
            v.gpus.len(),
            v.method
        ));
        if v.vendor == Vendor::Nvidia && v.method != Method::Nvml {
            nvml_missing = true;
        }
    }
    let summary = parts.join("; ");
    if nvml_missing {
        let why = if host.exists("/proc/driver/nvidia/version") {
            "the NVIDIA kernel driver is loaded but NVML (libnvidia-ml.so.1) is not loadable"
        } else {
            "NVIDIA device nodes without the kernel driver's /proc/driver/nvidia"
        };
        return Check::warn(
            id,
            format!("{summary}; {why}: discovery falls back to /proc and /dev (no UUIDs, no MIG)"),
            "install the driver's NVML library (Debian: libnvidia-ml1) matching the kernel module",
        );
    }
    if inv.found.iter().all(|v| v.gpus.is_empty()) {
        return Check::warn(
            id,
            format!("{summary}: the driver is loaded but sees no GPU"),
            "check that the GPU is bound to the driver (lspci -k) and not to vfio-pci",
        );
    }
    Check::ok(id, summary)
}

/// Valid and trusted (everything the registry rejected), then fresh against the live host.
pub fn cdi_specs(host: &dyn Host, inv: &Inventory) -> Vec<Check> {
    let dirs: Vec<_> = DEFAULT_SPEC_DIRS.iter().map(|d| host.path(d)).collect();
    let reg = crate::inject::registry(dirs);
    let mut out = Vec::new();
    let gpus: usize = inv.found.iter().map(|v| v.gpus.len()).sum();
    if reg.errors().is_empty() {
        if reg.specs().is_empty() {
            if gpus > 0 {
                out.push(Check::warn(
                    "cdi-specs",
                    format!("no CDI spec in {} although {gpus} GPU(s) are present", DEFAULT_SPEC_DIRS.join(", ")),
                    "nvbind cdi generate --output-dir /var/run/cdi (the package's nvbind-cdi-generate.service does it at boot)",
                ));
            } else {
                out.push(Check::ok(
                    "cdi-specs",
                    format!(
                        "no CDI spec in {} (and no GPU to describe)",
                        DEFAULT_SPEC_DIRS.join(", ")
                    ),
                ));
            }
            return out;
        }
        out.push(Check::ok(
            "cdi-specs",
            format!(
                "{} spec file(s), {} device(s), all valid and owned by root",
                reg.specs().len(),
                reg.devices().len()
            ),
        ));
    } else {
        let (path, err) = &reg.errors()[0];
        let more = match reg.errors().len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        out.push(Check::fail(
            "cdi-specs",
            format!(
                "rejected spec {}: {}{more}",
                host_path(host, path),
                err_chain(err)
            ),
            "fix or remove the file (nvbind cdi list shows every reason); regenerate with nvbind cdi generate",
        ));
    }
    out.push(freshness(host, &reg));
    out
}

fn err_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// A path under the doctor's root, shown as the host path.
fn host_path(host: &dyn Host, p: &std::path::Path) -> String {
    match p.strip_prefix(host.root()) {
        Ok(rel) if host.root() != std::path::Path::new("/") => format!("/{}", rel.display()),
        _ => p.display().to_string(),
    }
}

/// The specs against the host now, with the same check `create` makes before it uses a spec
/// (nvbind-cdi's livecheck): a node that is gone or has another type, major or minor (nvidia-uvm's
/// major is assigned when the module loads), a driver file that is gone, a GPU or MIG device
/// the driver no longer lists. The first stale entry is reported.
fn freshness(host: &dyn Host, reg: &nvbind_cdi::registry::Registry) -> Check {
    let id = "cdi-fresh";
    let names = reg.devices();
    match first_stale(reg, &names, &HostRoots::under(host.root())) {
        None => Check::ok(
            id,
            format!("the specs match the host ({} device(s) checked)", names.len()),
        ),
        Some(stale) => Check::fail(
            id,
            format!(
                "{}: {}: {}",
                host_path(host, &stale.path),
                stale.entry,
                stale.change
            ),
            "regenerate: nvbind cdi generate --output-dir /var/run/cdi (after every driver change; the package's udev rule does it)",
        ),
    }
}
