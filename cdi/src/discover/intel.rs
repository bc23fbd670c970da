//! Intel GPUs: the /dev/dri card and render nodes of every PCI device whose driver is
//! `i915` or `xe` in /sys/class/drm.

use super::drm::{cards_by_driver, gpus_from_cards};
use super::{Discover, DiscoverError, HostRoots, Method, Vendor, VendorInventory};

/// Discovers Intel GPUs through sysfs.
#[derive(Debug, Default, Clone, Copy)]
pub struct IntelDiscoverer;

impl Discover for IntelDiscoverer {
    fn vendor(&self) -> Vendor {
        Vendor::Intel
    }

    fn discover(&self, roots: &HostRoots) -> Result<VendorInventory, DiscoverError> {
        let cards = cards_by_driver(roots, &["i915", "xe"]);
        if cards.is_empty() {
            return Err(DiscoverError::NotPresent {
                vendor: Vendor::Intel,
                looked_for: format!(
                    "no DRM device with driver i915 or xe in {}",
                    roots.sys("/sys/class/drm").display()
                ),
            });
        }
        let mut inv = VendorInventory::new(Vendor::Intel, Method::Sysfs);
        inv.gpus = gpus_from_cards(roots, &cards, &mut inv.warnings);
        Ok(inv)
    }
}
