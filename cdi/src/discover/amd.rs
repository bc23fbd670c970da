//! AMD GPUs: /dev/kfd (ROCm compute) plus, per GPU, the /dev/dri card and render nodes of
//! every PCI device whose driver is `amdgpu` in /sys/class/drm.

use super::drm::{cards_by_driver, gpus_from_cards};
use super::{Discover, DiscoverError, HostRoots, Method, Vendor, VendorInventory};

/// Discovers AMD GPUs through sysfs.
#[derive(Debug, Default, Clone, Copy)]
pub struct AmdDiscoverer;

impl Discover for AmdDiscoverer {
    fn vendor(&self) -> Vendor {
        Vendor::Amd
    }

    fn discover(&self, roots: &HostRoots) -> Result<VendorInventory, DiscoverError> {
        let cards = cards_by_driver(roots, &["amdgpu"]);
        let kfd = roots.char_device("/dev/kfd");
        if cards.is_empty() {
            return Err(DiscoverError::NotPresent {
                vendor: Vendor::Amd,
                looked_for: format!(
                    "no DRM device with driver amdgpu in {}",
                    roots.sys("/sys/class/drm").display()
                ),
            });
        }
        let mut inv = VendorInventory::new(Vendor::Amd, Method::Sysfs);
        inv.driver_version = super::host::read_text(&roots.sys("/sys/module/amdgpu/version"))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        match kfd {
            Some(node) => inv.shared.device_nodes.push(node),
            None => inv.warnings.push(format!(
                "/dev/kfd is missing under {}: ROCm compute will not work, graphics nodes are still listed",
                roots.dev_root.display()
            )),
        }
        inv.gpus = gpus_from_cards(roots, &cards, &mut inv.warnings);
        Ok(inv)
    }
}
