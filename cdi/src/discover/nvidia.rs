//! NVIDIA GPUs: through NVML when it loads, otherwise through
//! /proc/driver/nvidia/{version,gpus/*/information}, and as a last resort from the
//! /dev/nvidiaN nodes alone. Then the driver-wide nodes and files
//! ([`super::nvidia_files`]), the per-GPU DRM nodes and the MIG capability nodes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::drm::{by_path_links, dri_nodes, node_names_for_bus, normalize_bus_id};
use super::host::{read_text, sorted_dir_names, HostRoots};
use super::ldcache::LdCache;
use super::nvml::{format_cuda_version, NvmlApi, NvmlError, RealNvml};
use super::{
    nvidia_files, DeviceNode, Discover, DiscoverError, Gpu, Method, MigDevice, Vendor,
    VendorInventory,
};

/// Control nodes every NVIDIA device needs (common-nvml.go).
const CONTROL_NODES: &[&str] = &[
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
];

/// Where NVML comes from.
pub enum NvmlSource {
    /// Load libnvidia-ml.so.1 (from the driver root's ld.so.cache when the driver root is
    /// not `/`); fall back to procfs quietly when it cannot be loaded.
    Load,
    /// Do not use NVML (procfs and /dev only).
    Disabled,
    /// Use this NVML (a fake in tests, or one the caller already initialized).
    Given(Box<dyn NvmlApi>),
}

/// Discovers NVIDIA GPUs and driver files.
pub struct NvidiaDiscoverer {
    pub nvml: NvmlSource,
}

impl Default for NvidiaDiscoverer {
    fn default() -> Self {
        NvidiaDiscoverer {
            nvml: NvmlSource::Load,
        }
    }
}

impl Discover for NvidiaDiscoverer {
    fn vendor(&self) -> Vendor {
        Vendor::Nvidia
    }

    fn discover(&self, roots: &HostRoots) -> Result<VendorInventory, DiscoverError> {
        let mut warnings = Vec::new();
        // Parsed once; used for the NVML library path and for the driver libraries.
        let cache_path = roots.driver("/etc/ld.so.cache");
        let cache = match LdCache::open(&cache_path) {
            Ok(c) => Some(c),
            Err(e) => {
                warnings.push(format!(
                    "{}; driver libraries are left out",
                    error_chain(&e)
                ));
                None
            }
        };

        let loaded;
        let nvml: Option<&dyn NvmlApi> = match &self.nvml {
            NvmlSource::Disabled => None,
            NvmlSource::Given(n) => Some(n.as_ref()),
            NvmlSource::Load => {
                loaded = load_nvml(roots, cache.as_ref(), &mut warnings);
                loaded.as_ref().map(|n| n as &dyn NvmlApi)
            }
        };

        let proc_version = roots.proc("/proc/driver/nvidia/version");
        let procfs_version = read_text(&proc_version).and_then(|t| parse_driver_version(&t));
        let control: Vec<DeviceNode> = CONTROL_NODES
            .iter()
            .filter_map(|p| roots.char_device(p))
            .collect();

        let mut inv = match nvml.and_then(|n| from_nvml(n, roots, &mut warnings)) {
            Some(inv) => inv,
            None => {
                let driver_loaded = proc_version.exists() || !control.is_empty();
                if !driver_loaded {
                    return Err(DiscoverError::NotPresent {
                        vendor: Vendor::Nvidia,
                        looked_for: format!(
                            "NVML unavailable, no {} and no /dev/nvidiactl under {}",
                            proc_version.display(),
                            roots.dev_root.display()
                        ),
                    });
                }
                from_procfs(roots, &mut warnings)
            }
        };
        if inv.driver_version.is_none() {
            inv.driver_version = procfs_version;
        }
        if inv.driver_version.is_none() {
            warnings.push(format!(
                "driver version unknown ({} unreadable): libraries are selected by name",
                proc_version.display()
            ));
        }
        inv.shared.device_nodes = control;
        if !inv
            .shared
            .device_nodes
            .iter()
            .any(|n| n.path == Path::new("/dev/nvidiactl"))
        {
            warnings.push(format!(
                "/dev/nvidiactl is missing under {}",
                roots.dev_root.display()
            ));
        }
        add_drm_and_mig_nodes(roots, &mut inv.gpus, &mut warnings);
        let version = inv.driver_version.clone();
        nvidia_files::collect(
            roots,
            cache.as_ref(),
            version.as_deref(),
            &mut inv.shared,
            &mut warnings,
        );
        inv.warnings.extend(warnings);
        Ok(inv)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// NVML from the host (driver root `/`) or from the driver root's ld.so.cache. A library
/// that is absent or is not NVML falls back to procfs quietly; NVML refusing to start (no
/// permission, driver/library mismatch, ...) is a warning.
fn load_nvml(
    roots: &HostRoots,
    cache: Option<&LdCache>,
    warnings: &mut Vec<String>,
) -> Option<RealNvml> {
    let lib: Option<PathBuf> = if roots.driver_root == Path::new("/") {
        None
    } else {
        // The driver root's own libnvidia-ml, never the one the system loader would find.
        let found = cache?
            .lookup(&["libnvidia-ml.so.1"])
            .find_map(|e| roots.resolve_in_driver_root(&e.path))?;
        Some(roots.driver(found))
    };
    match RealNvml::load(lib.as_deref()) {
        Ok(n) => Some(n),
        Err(e @ (NvmlError::LibloadingError(_) | NvmlError::FailedToLoadSymbol(_))) => {
            tracing::debug!("NVML not used: {e}");
            None
        }
        Err(e) => {
            warnings.push(format!("NVML failed to start ({e}); using procfs"));
            None
        }
    }
}

/// `550.54.14` from the `NVRM version:` line of /proc/driver/nvidia/version (proprietary:
/// "NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb ..."; open: "NVIDIA UNIX Open
/// Kernel Module for x86_64  550.54.14  Release Build ...").
pub fn parse_driver_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    line.split_whitespace()
        .find(|w| {
            w.contains('.')
                && w.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && w.bytes().next().is_some_and(|b| b.is_ascii_digit())
        })
        .map(str::to_owned)
}

/// Inventory from NVML; None when even the device count cannot be read.
fn from_nvml(
    nvml: &dyn NvmlApi,
    roots: &HostRoots,
    warnings: &mut Vec<String>,
) -> Option<VendorInventory> {
    let count = match nvml.device_count() {
        Ok(c) => c,
        Err(e) => {
            warnings.push(format!(
                "NVML loaded but cannot count GPUs ({e}); using procfs"
            ));
            return None;
        }
    };
    let mut inv = VendorInventory::new(Vendor::Nvidia, Method::Nvml);
    inv.driver_version = nvml.driver_version().ok();
    inv.cuda_version = nvml.cuda_driver_version().ok().map(format_cuda_version);
    for index in 0..count {
        let d = match nvml.device(index) {
            Ok(d) => d,
            Err(NvmlError::GpuLost) => {
                warnings.push(format!(
                    "NVML reports GPU {index} as lost (fallen off the bus); it is left out"
                ));
                continue;
            }
            Err(e) => {
                warnings.push(format!(
                    "NVML cannot read GPU {index} ({e}); it is left out"
                ));
                continue;
            }
        };
        warnings.extend(d.warnings.iter().cloned());
        let bus = normalize_bus_id(&d.pci_bus_id);
        let Some(node) = gpu_node(roots, d.minor, index, warnings) else {
            continue;
        };
        let migs = d
            .migs
            .iter()
            .map(|m| MigDevice {
                index: m.index,
                uuid: Some(m.uuid.clone()),
                gpu_instance: m.gpu_instance_id,
                compute_instance: m.compute_instance_id,
                nodes: Vec::new(),
            })
            .collect();
        inv.gpus.push(Gpu {
            index,
            uuid: Some(d.uuid.clone()),
            name: d.name.clone(),
            pci_bus_id: Some(bus),
            minor: Some(d.minor),
            nodes: vec![node],
            symlinks: Vec::new(),
            migs,
        });
    }
    Some(inv)
}

fn gpu_node(
    roots: &HostRoots,
    minor: u32,
    index: u32,
    warnings: &mut Vec<String>,
) -> Option<DeviceNode> {
    let path = format!("/dev/nvidia{minor}");
    let node = roots.char_device(&path);
    if node.is_none() {
        warnings.push(format!(
            "GPU {index}: {path} is not a character device under {}; it is left out",
            roots.dev_root.display()
        ));
    }
    node
}

/// Fields of /proc/driver/nvidia/gpus/<bus>/information.
fn parse_information(text: &str) -> HashMap<&str, &str> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

/// Inventory from /proc/driver/nvidia/gpus, or from /dev/nvidiaN when that is empty.
fn from_procfs(roots: &HostRoots, warnings: &mut Vec<String>) -> VendorInventory {
    let gpus_dir = roots.proc("/proc/driver/nvidia/gpus");
    let buses = sorted_dir_names(&gpus_dir);
    if buses.is_empty() {
        return from_dev_scan(roots, warnings);
    }
    let mut inv = VendorInventory::new(Vendor::Nvidia, Method::Procfs);
    for (index, bus) in buses.iter().enumerate() {
        let index = index as u32;
        let info_path = gpus_dir.join(bus).join("information");
        let Some(text) = read_text(&info_path) else {
            warnings.push(format!(
                "GPU {index} ({bus}): {} unreadable; it is left out",
                info_path.display()
            ));
            continue;
        };
        let info = parse_information(&text);
        let Some(minor) = info.get("Device Minor").and_then(|m| m.parse::<u32>().ok()) else {
            warnings.push(format!(
                "GPU {index} ({bus}): no \"Device Minor\" in {}; it is left out",
                info_path.display()
            ));
            continue;
        };
        let uuid = info
            .get("GPU UUID")
            .filter(|u| u.starts_with("GPU-"))
            .map(|u| u.to_string());
        if uuid.is_none() {
            warnings.push(format!(
                "GPU {index} ({bus}): no \"GPU UUID\" in {}; it gets no UUID name",
                info_path.display()
            ));
        }
        let Some(node) = gpu_node(roots, minor, index, warnings) else {
            continue;
        };
        let pci = info
            .get("Bus Location")
            .filter(|b| !b.is_empty())
            .map(|b| normalize_bus_id(b))
            .unwrap_or_else(|| normalize_bus_id(bus));
        inv.gpus.push(Gpu {
            index,
            uuid,
            name: info
                .get("Model")
                .filter(|m| !m.is_empty())
                .map(|m| m.to_string()),
            pci_bus_id: Some(pci),
            minor: Some(minor),
            nodes: vec![node],
            symlinks: Vec::new(),
            migs: procfs_migs(roots, minor),
        });
    }
    inv
}

/// GPUs from /dev/nvidiaN alone: index = minor order, no UUID, no PCI address.
fn from_dev_scan(roots: &HostRoots, warnings: &mut Vec<String>) -> VendorInventory {
    let mut inv = VendorInventory::new(Vendor::Nvidia, Method::DevScan);
    let mut minors: Vec<u32> = sorted_dir_names(&roots.dev("/dev"))
        .iter()
        .filter_map(|n| n.strip_prefix("nvidia")?.parse::<u32>().ok())
        .collect();
    minors.sort_unstable();
    warnings.push(format!(
        "no NVML and no {}: GPUs found from /dev/nvidia* only (no UUIDs)",
        roots.proc("/proc/driver/nvidia/gpus").display()
    ));
    for minor in minors {
        let index = inv.gpus.len() as u32;
        if let Some(node) = gpu_node(roots, minor, index, warnings) {
            inv.gpus.push(Gpu {
                index,
                uuid: None,
                name: None,
                pci_bus_id: None,
                minor: Some(minor),
                nodes: vec![node],
                symlinks: Vec::new(),
                migs: Vec::new(),
            });
        }
    }
    inv
}

/// MIG devices that exist, from /proc/driver/nvidia/capabilities/gpu<minor>/mig/gi*/ci*.
fn procfs_migs(roots: &HostRoots, minor: u32) -> Vec<MigDevice> {
    let mig_dir = roots.proc(format!("/proc/driver/nvidia/capabilities/gpu{minor}/mig"));
    let mut pairs = Vec::new();
    for gi in sorted_dir_names(&mig_dir) {
        let Some(g) = gi.strip_prefix("gi").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        for ci in sorted_dir_names(&mig_dir.join(&gi)) {
            if let Some(c) = ci.strip_prefix("ci").and_then(|n| n.parse::<u32>().ok()) {
                pairs.push((g, c));
            }
        }
    }
    pairs.sort_unstable();
    pairs
        .into_iter()
        .enumerate()
        .map(|(i, (g, c))| MigDevice {
            index: i as u32,
            uuid: None,
            gpu_instance: g,
            compute_instance: c,
            nodes: Vec::new(),
        })
        .collect()
}

/// /proc/driver/nvidia-caps/mig-minors: `gpu0/gi1/access 12`, `gpu0/gi1/ci0/access 13`.
fn mig_minors(roots: &HostRoots) -> HashMap<String, u32> {
    read_text(&roots.proc("/proc/driver/nvidia-caps/mig-minors"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (cap, minor) = l.trim().split_once(' ')?;
            Some((cap.to_owned(), minor.trim().parse().ok()?))
        })
        .collect()
}

/// The capability node for `cap` (`gpu0/gi1/access`, `gpu0/gi1/ci0/access`): its minor from
/// /proc/driver/nvidia/capabilities (else /proc/driver/nvidia-caps/mig-minors), the host's
/// /dev/nvidia-caps node when there is one, else the numbers alone (major from
/// /proc/devices), so a MIG layout made after boot needs no nvidia-modprobe on the host.
fn mig_cap_node(
    roots: &HostRoots,
    cap: &str,
    minors: &HashMap<String, u32>,
    caps_major: Option<i64>,
) -> Option<DeviceNode> {
    let (gpu, rest) = cap.split_once('/')?;
    let proc_path = format!("/proc/driver/nvidia/capabilities/{gpu}/mig/{rest}");
    let minor = crate::gated::capability_minor(roots, &proc_path)
        .and_then(|m| u32::try_from(m).ok())
        .or_else(|| minors.get(cap).copied())?;
    let path = format!("/dev/nvidia-caps/nvidia-cap{minor}");
    if let Some(n) = roots.char_device(&path) {
        return Some(n);
    }
    Some(DeviceNode {
        host_path: roots.dev(&path),
        path: path.into(),
        major: u64::try_from(caps_major?).ok()?,
        minor: u64::from(minor),
        on_host: false,
    })
}

/// Per GPU: the DRM nodes of its PCI device and their by-path links; per MIG device: the
/// parent node plus the GI and CI access nodes. MIG devices whose nodes are missing are
/// dropped with a warning.
fn add_drm_and_mig_nodes(roots: &HostRoots, gpus: &mut [Gpu], warnings: &mut Vec<String>) {
    let any_mig = gpus.iter().any(|g| !g.migs.is_empty());
    let minors = if any_mig {
        mig_minors(roots)
    } else {
        HashMap::new()
    };
    let caps_major = if any_mig {
        crate::gated::registered_major(roots, "nvidia-caps")
    } else {
        None
    };
    for gpu in gpus.iter_mut() {
        if let Some(bus) = gpu.pci_bus_id.clone() {
            let names = node_names_for_bus(roots, &bus);
            let drm = dri_nodes(roots, &names, warnings);
            gpu.symlinks = by_path_links(roots, &bus, &drm);
            gpu.nodes.extend(drm);
        }
        let (Some(minor), Some(parent)) = (gpu.minor, gpu.nodes.first().cloned()) else {
            continue;
        };
        let index = gpu.index;
        gpu.migs.retain_mut(|mig| {
            let gi_cap = format!("gpu{minor}/gi{}/access", mig.gpu_instance);
            let ci_cap = format!("gpu{minor}/gi{}/ci{}/access", mig.gpu_instance, mig.compute_instance);
            let mut nodes = vec![parent.clone()];
            for cap in [&gi_cap, &ci_cap] {
                let node = mig_cap_node(roots, cap, &minors, caps_major);
                match node {
                    Some(n) => nodes.push(n),
                    None => {
                        warnings.push(format!(
                            "GPU {index} MIG {}: no device node for capability {cap} (/proc/driver/nvidia/capabilities, mig-minors, /proc/devices); it is left out",
                            mig.index
                        ));
                        return false;
                    }
                }
            }
            mig.nodes = nodes;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_version_from_both_module_flavours() {
        let prop = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n";
        assert_eq!(parse_driver_version(prop).as_deref(), Some("550.54.14"));
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  535.104.05  Release Build  (dvs-builder@U16-I3-B03-4-3)  Sat Aug 19 01:13:38 UTC 2023\n";
        assert_eq!(parse_driver_version(open).as_deref(), Some("535.104.05"));
        assert_eq!(parse_driver_version("garbage\n"), None);
        assert_eq!(parse_driver_version(""), None);
    }

    #[test]
    fn information_fields() {
        let info = parse_information(
            "Model: \t\t Tesla V100-SXM2-16GB\nIRQ:   \t\t 0\nGPU UUID: \t GPU-abc\nBus Location: \t 0000:3b:00.0\nDevice Minor: \t 3\n",
        );
        assert_eq!(info["Model"], "Tesla V100-SXM2-16GB");
        assert_eq!(info["Device Minor"], "3");
        assert_eq!(info["Bus Location"], "0000:3b:00.0");
        assert_eq!(info["GPU UUID"], "GPU-abc");
    }
}
