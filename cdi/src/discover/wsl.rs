//! NVIDIA GPUs under WSL2, as `nvidia-ctk cdi generate --mode wsl` finds them
//! (pkg/nvcdi/lib-wsl.go, driver-wsl.go): every GPU is reached through `/dev/dxg`, and the
//! driver's Linux files are in the Windows driver store (`/usr/lib/wsl/drivers/<store>/`) and
//! `/usr/lib/wsl/lib`. The spec has a single device, `all`, with `/dev/dxg`; the spec-wide
//! edits mount the driver store files at their own paths, link `/usr/bin/nvidia-smi` to the
//! store's, and refresh the linker cache for their directories.
//!
//! The toolkit asks dxcore (libdxcore.so) for the driver store paths; without loading a
//! library, the NVIDIA stores are the `/usr/lib/wsl/drivers/nv*` directories that hold
//! `libcuda.so.1.1`, in name order.

use std::path::{Path, PathBuf};

use super::host::{sorted_dir_names, HostRoots};
use super::{Discover, DiscoverError, Method, Symlink, Vendor, VendorInventory};

pub const DXG: &str = "/dev/dxg";
const DRIVERS: &str = "/usr/lib/wsl/drivers";
const WSL_LIB: &str = "/usr/lib/wsl/lib";

/// The driver store files the toolkit mounts (`requiredDriverStoreFiles`), each the first
/// found in the store directories, then /usr/lib/wsl/lib.
pub const DRIVER_STORE_FILES: &[&str] = &[
    "libcuda.so.1.1",
    "libcuda_loader.so",
    "libnvidia-ptxjitcompiler.so.1",
    "libnvidia-ml.so.1",
    "libnvidia-ml_loader.so",
    "libdxcore.so",
    "libnvdxgdmal.so.1",
    "nvcubins.bin",
    "nvidia-smi",
];

/// Whether this is a WSL2 host with GPU support (a `/dev/dxg` character device) and no
/// native NVIDIA driver (`/dev/nvidiactl`).
pub fn detected(roots: &HostRoots) -> bool {
    roots.char_device(DXG).is_some() && roots.char_device("/dev/nvidiactl").is_none()
}

/// The NVIDIA driver store directories, in name order.
pub fn driver_stores(roots: &HostRoots) -> Vec<PathBuf> {
    sorted_dir_names(&roots.driver(DRIVERS))
        .into_iter()
        .filter(|n| n.starts_with("nv"))
        .map(|n| Path::new(DRIVERS).join(n))
        .filter(|d| roots.driver_file(d.join("libcuda.so.1.1")).is_some())
        .collect()
}

/// Discovers the WSL2 driver.
#[derive(Debug, Default, Clone, Copy)]
pub struct WslDiscoverer;

impl Discover for WslDiscoverer {
    fn vendor(&self) -> Vendor {
        Vendor::Nvidia
    }

    fn discover(&self, roots: &HostRoots) -> Result<VendorInventory, DiscoverError> {
        let Some(dxg) = roots.char_device(DXG) else {
            return Err(DiscoverError::NotPresent {
                vendor: Vendor::Nvidia,
                looked_for: format!("no {DXG} under {} (not WSL2)", roots.dev_root.display()),
            });
        };
        let stores = driver_stores(roots);
        let mut inv = VendorInventory::new(Vendor::Nvidia, Method::Wsl);
        if stores.is_empty() {
            inv.warnings.push(format!(
                "no NVIDIA driver store (a {DRIVERS}/nv* directory with libcuda.so.1.1) under {}",
                roots.driver_root.display()
            ));
        }
        if stores.len() > 1 {
            inv.warnings.push(format!(
                "several NVIDIA driver stores, the first one's files are used: {}",
                stores
                    .iter()
                    .map(|s| s.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let mut search = stores.clone();
        search.push(PathBuf::from(WSL_LIB));
        for name in DRIVER_STORE_FILES {
            let Some(found) = search.iter().find_map(|d| roots.driver_file(d.join(name))) else {
                inv.warnings
                    .push(format!("{name} not found in the driver store or {WSL_LIB}"));
                continue;
            };
            if *name == "nvidia-smi" {
                // The store is mounted at its own path: nvidia-smi is linked where it is
                // looked for.
                inv.shared.symlinks.push(Symlink {
                    target: found.path.clone(),
                    link: "/usr/bin/nvidia-smi".into(),
                });
                inv.shared.binaries.push(found);
            } else if name.contains(".so") {
                inv.shared.libraries.push(found);
            } else {
                inv.shared.configs.push(found);
            }
        }
        inv.shared.device_nodes.push(dxg);
        Ok(inv)
    }
}
