//! GPU discovery as the command line exposes it: where to look (the driver, /dev, /proc and
//! /sys roots, NVML or not) and which vendors. Shared by `nvbind info` and `nvbind cdi
//! generate`, so that neither verb imports the other.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use nvbind_cdi::discover::amd::AmdDiscoverer;
use nvbind_cdi::discover::intel::IntelDiscoverer;
use nvbind_cdi::discover::nvidia::{NvidiaDiscoverer, NvmlSource};
use nvbind_cdi::discover::wsl::{self, WslDiscoverer};
use nvbind_cdi::discover::{Discover, HostRoots, Inventory, Vendor};

// Where discovery looks: the driver, /dev, /proc and /sys roots, and whether to use NVML.
// (Not a doc comment: clap makes a flattened struct's doc comment the about of the verb it is
// flattened into, after the verb's own since the verbs are deferred; src/cli.rs.)
#[derive(Args, Debug, Clone)]
pub struct HostArgs {
    /// Root of the driver installation (libraries, binaries, firmware, ld.so.cache), e.g.
    /// /run/nvidia/driver when the driver is installed in a container image
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub driver_root: PathBuf,
    /// Root under which /dev is found [default: the driver root]
    #[arg(long, value_name = "DIR")]
    pub dev_root: Option<PathBuf>,
    /// Root under which /proc is found (for chroots and test trees)
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub proc_root: PathBuf,
    /// Root under which /sys is found (for chroots and test trees)
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub sys_root: PathBuf,
    /// Do not load NVML (libnvidia-ml.so.1); find NVIDIA GPUs through /proc and /dev only
    #[arg(long)]
    pub no_nvml: bool,
    /// How NVIDIA GPUs are reached: `wsl` (WSL2: /dev/dxg and the Windows driver store under
    /// /usr/lib/wsl), `native` (/dev/nvidia*), or `auto`: wsl when /dev/dxg exists and
    /// /dev/nvidiactl does not
    #[arg(long, value_enum, default_value_t = NvidiaMode::Auto)]
    pub mode: NvidiaMode,
}

/// `--mode`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvidiaMode {
    Auto,
    Wsl,
    Native,
}

impl HostArgs {
    pub fn roots(&self) -> HostRoots {
        HostRoots {
            driver_root: self.driver_root.clone(),
            dev_root: self
                .dev_root
                .clone()
                .unwrap_or_else(|| self.driver_root.clone()),
            proc_root: self.proc_root.clone(),
            sys_root: self.sys_root.clone(),
        }
    }

    /// Discover the given vendors (all when empty).
    pub fn discover(&self, vendors: &[Vendor]) -> Inventory {
        let native = NvidiaDiscoverer {
            nvml: if self.no_nvml {
                NvmlSource::Disabled
            } else {
                NvmlSource::Load
            },
        };
        let roots = self.roots();
        let use_wsl = match self.mode {
            NvidiaMode::Wsl => true,
            NvidiaMode::Native => false,
            NvidiaMode::Auto => wsl::detected(&roots),
        };
        let nvidia: &dyn Discover = if use_wsl { &WslDiscoverer } else { &native };
        let all: [&dyn Discover; 3] = [nvidia, &AmdDiscoverer, &IntelDiscoverer];
        let chosen: Vec<&dyn Discover> = all
            .into_iter()
            .filter(|d| vendors.is_empty() || vendors.contains(&d.vendor()))
            .collect();
        Inventory::collect(&self.roots(), &chosen)
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorArg {
    Nvidia,
    Amd,
    Intel,
    /// Every vendor whose driver is present
    All,
}

pub fn requested_vendors(args: &[VendorArg]) -> Vec<Vendor> {
    if args.contains(&VendorArg::All) {
        return Vec::new();
    }
    args.iter()
        .filter_map(|v| match v {
            VendorArg::Nvidia => Some(Vendor::Nvidia),
            VendorArg::Amd => Some(Vendor::Amd),
            VendorArg::Intel => Some(Vendor::Intel),
            VendorArg::All => None,
        })
        .collect()
}
