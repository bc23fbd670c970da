//! GPU discovery: what a host has, as plain data ([`VendorInventory`]), before any CDI.
//!
//! Each vendor is a [`Discover`] implementation that reads the host through [`HostRoots`]
//! (driver, /dev, /proc and /sys roots), so a fake host tree goes through the same code as
//! a real one. NVIDIA additionally asks NVML, behind the [`nvml::NvmlApi`] trait.
//! Discovery never fails half way: what cannot be read becomes a warning in the
//! inventory, and a vendor whose driver is absent is a [`DiscoverError::NotPresent`].

pub mod amd;
pub mod drm;
pub mod host;
pub mod intel;
pub mod ldcache;
pub mod nvidia;
pub mod nvidia_files;
pub mod nvml;
pub mod wsl;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use host::{DeviceNode, HostFile, HostRoots};

/// A GPU vendor, and the CDI kind its devices get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    Nvidia,
    Amd,
    Intel,
}

impl Vendor {
    pub const ALL: [Vendor; 3] = [Vendor::Nvidia, Vendor::Amd, Vendor::Intel];

    /// The CDI kind: `nvidia.com/gpu`, `amd.com/gpu`, `intel.com/gpu`.
    pub fn kind(self) -> &'static str {
        match self {
            Vendor::Nvidia => "nvidia.com/gpu",
            Vendor::Amd => "amd.com/gpu",
            Vendor::Intel => "intel.com/gpu",
        }
    }

    /// Lower-case short name, also the spec file stem (`nvidia.yaml`).
    pub fn name(self) -> &'static str {
        match self {
            Vendor::Nvidia => "nvidia",
            Vendor::Amd => "amd",
            Vendor::Intel => "intel",
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Vendor::Nvidia => "NVIDIA",
            Vendor::Amd => "AMD",
            Vendor::Intel => "Intel",
        })
    }
}

/// How the GPUs of a vendor were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// NVIDIA Management Library (libnvidia-ml.so.1), loaded at run time.
    Nvml,
    /// /proc/driver/nvidia/{version,gpus/*/information}.
    Procfs,
    /// Only /dev/nvidia* nodes: no NVML and no per-GPU /proc entries.
    DevScan,
    /// /sys/class/drm (AMD, Intel).
    Sysfs,
    /// WSL2: /dev/dxg and the Windows driver store.
    Wsl,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Nvml => "NVML",
            Method::Procfs => "procfs",
            Method::DevScan => "/dev scan",
            Method::Sysfs => "sysfs",
            Method::Wsl => "WSL2 driver store",
        })
    }
}

/// A symlink for the `create-symlinks` hook: `link` (in the container) points to `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Symlink {
    pub target: PathBuf,
    pub link: PathBuf,
}

/// One physical GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    /// Enumeration index (NVML order, which is PCI bus order; for AMD/Intel the order of
    /// their PCI addresses).
    pub index: u32,
    /// NVIDIA `GPU-...` UUID; AMD `unique_id` when the card exposes one.
    pub uuid: Option<String>,
    /// Model name.
    pub name: Option<String>,
    /// PCI address, `0000:3b:00.0` form.
    pub pci_bus_id: Option<String>,
    /// NVIDIA device minor (the N of /dev/nvidiaN).
    pub minor: Option<u32>,
    /// Every node that belongs to this GPU only.
    pub nodes: Vec<DeviceNode>,
    /// Links to recreate in the container (`/dev/dri/by-path/...`).
    pub symlinks: Vec<Symlink>,
    /// MIG devices carved out of this GPU.
    pub migs: Vec<MigDevice>,
}

/// A MIG device (one compute instance of one GPU instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigDevice {
    /// Index among the parent's MIG devices.
    pub index: u32,
    pub uuid: Option<String>,
    pub gpu_instance: u32,
    pub compute_instance: u32,
    /// The parent's /dev/nvidiaN and the GI and CI access nodes under /dev/nvidia-caps.
    pub nodes: Vec<DeviceNode>,
}

/// What every device of a vendor needs: driver-wide nodes and files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Shared {
    /// Control nodes (nvidiactl, nvidia-uvm, ..., /dev/kfd).
    pub device_nodes: Vec<DeviceNode>,
    /// Driver libraries, by their versioned file names.
    pub libraries: Vec<HostFile>,
    /// The 32-bit driver libraries (i386 on x86_64), for `NVIDIA_DRIVER_CAPABILITIES`
    /// compat32; not in a spec `nvbind cdi generate` writes, as in the toolkit's.
    pub libraries32: Vec<HostFile>,
    /// The X server's NVIDIA driver and GLX module (the display capability).
    pub display: Vec<HostFile>,
    pub binaries: Vec<HostFile>,
    /// IPC sockets and directories (persistenced, fabricmanager, MPS).
    pub ipc: Vec<HostFile>,
    pub firmware: Vec<HostFile>,
    /// Vulkan / EGL / GLX ICD and other config files.
    pub configs: Vec<HostFile>,
    /// Links the `create-symlinks` hook makes (`libcuda.so -> libcuda.so.1`, ...).
    pub symlinks: Vec<Symlink>,
}

/// Everything found for one vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VendorInventory {
    pub vendor: Vendor,
    pub method: Method,
    pub driver_version: Option<String>,
    /// CUDA driver API version (NVML only), e.g. `12.4`.
    pub cuda_version: Option<String>,
    pub gpus: Vec<Gpu>,
    pub shared: Shared,
    /// What could not be read; the inventory lists what could.
    pub warnings: Vec<String>,
}

impl VendorInventory {
    pub(crate) fn new(vendor: Vendor, method: Method) -> VendorInventory {
        VendorInventory {
            vendor,
            method,
            driver_version: None,
            cuda_version: None,
            gpus: Vec::new(),
            shared: Shared::default(),
            warnings: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The vendor's driver is not on this host (or not under the given roots).
    #[error("no {vendor} GPU driver found: {looked_for}")]
    NotPresent {
        vendor: Vendor,
        /// What was looked for, for the message.
        looked_for: String,
    },
}

/// A GPU vendor's discoverer.
pub trait Discover {
    fn vendor(&self) -> Vendor;
    /// Everything the host has for this vendor, or `NotPresent`.
    fn discover(&self, roots: &HostRoots) -> Result<VendorInventory, DiscoverError>;
}

/// The result of asking several discoverers.
#[derive(Debug, Default)]
pub struct Inventory {
    pub found: Vec<VendorInventory>,
    pub absent: Vec<DiscoverError>,
}

impl Inventory {
    /// Run each discoverer in turn.
    pub fn collect(roots: &HostRoots, discoverers: &[&dyn Discover]) -> Inventory {
        let mut inv = Inventory::default();
        for d in discoverers {
            match d.discover(roots) {
                Ok(v) => inv.found.push(v),
                Err(e) => inv.absent.push(e),
            }
        }
        inv
    }

    /// Total number of GPUs found, MIG devices not counted.
    pub fn gpu_count(&self) -> usize {
        self.found.iter().map(|v| v.gpus.len()).sum()
    }
}
