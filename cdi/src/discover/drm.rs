//! DRM nodes (/dev/dri/cardN, /dev/dri/renderDN) from sysfs, shared by all vendors.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::host::{read_text, sorted_dir_names, HostRoots};
use super::{DeviceNode, Gpu, Symlink};

/// `0000:3b:00.0` from NVML's `00000000:3B:00.0` or procfs' `0000:3b:00.0`.
pub fn normalize_bus_id(id: &str) -> String {
    let id = id.trim().to_ascii_lowercase();
    // domain:bus:device.function; NVML pads the domain to 8 digits, sysfs uses 4.
    match id.split_once(':') {
        Some((domain, rest)) if domain.len() > 4 => {
            let trimmed = domain.trim_start_matches('0');
            format!("{:0>4}:{rest}", trimmed)
        }
        _ => id,
    }
}

fn is_drm_node_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    name.strip_prefix("card").is_some_and(digits)
        || name.strip_prefix("renderD").is_some_and(digits)
}

/// DRM node names (card*, renderD*) of the PCI device `bus_id`, from
/// /sys/bus/pci/devices/<bus>/drm.
pub fn node_names_for_bus(roots: &HostRoots, bus_id: &str) -> Vec<String> {
    let dir = roots.sys(Path::new("/sys/bus/pci/devices").join(bus_id).join("drm"));
    sorted_dir_names(&dir)
        .into_iter()
        .filter(|n| is_drm_node_name(n))
        .collect()
}

/// The /dev/dri nodes for `names`; missing ones become warnings.
pub fn dri_nodes(
    roots: &HostRoots,
    names: &[String],
    warnings: &mut Vec<String>,
) -> Vec<DeviceNode> {
    let mut nodes = Vec::new();
    for name in names {
        let path = Path::new("/dev/dri").join(name);
        match roots.char_device(&path) {
            Some(n) => nodes.push(n),
            None => warnings.push(format!(
                "{} is listed in sysfs but is not a character device under {}",
                path.display(),
                roots.dev_root.display()
            )),
        }
    }
    nodes
}

/// `/dev/dri/by-path/pci-<bus>-{card,render}` links pointing at one of `nodes`.
pub fn by_path_links(roots: &HostRoots, bus_id: &str, nodes: &[DeviceNode]) -> Vec<Symlink> {
    let mut links = Vec::new();
    for suffix in ["card", "render"] {
        let link = PathBuf::from(format!("/dev/dri/by-path/pci-{bus_id}-{suffix}"));
        let Ok(target) = fs::read_link(roots.dev(&link)) else {
            continue;
        };
        let Some(base) = target.file_name() else {
            continue;
        };
        if nodes.iter().any(|n| n.path.file_name() == Some(base)) {
            links.push(Symlink { target, link });
        }
    }
    links
}

/// A DRM-driven GPU found in /sys/class/drm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrmCard {
    pub bus_id: String,
    pub driver: String,
    pub node_names: Vec<String>,
    /// `device/unique_id` (AMD), when present.
    pub unique_id: Option<String>,
    /// `device/product_name`, when present.
    pub product_name: Option<String>,
}

/// Every PCI device in /sys/class/drm whose driver is one of `drivers`, in PCI order.
pub fn cards_by_driver(roots: &HostRoots, drivers: &[&str]) -> Vec<DrmCard> {
    let class = roots.sys("/sys/class/drm");
    let mut by_bus: BTreeMap<String, DrmCard> = BTreeMap::new();
    for name in sorted_dir_names(&class) {
        if !is_drm_node_name(&name) {
            continue;
        }
        let device = class.join(&name).join("device");
        let Some(bus_id) = fs::read_link(&device)
            .ok()
            .and_then(|t| t.file_name().map(|s| s.to_string_lossy().into_owned()))
        else {
            continue;
        };
        let Some(driver) = fs::read_link(device.join("driver"))
            .ok()
            .and_then(|t| t.file_name().map(|s| s.to_string_lossy().into_owned()))
        else {
            continue;
        };
        if !drivers.contains(&driver.as_str()) {
            continue;
        }
        let card = by_bus.entry(bus_id.clone()).or_insert_with(|| DrmCard {
            bus_id,
            driver,
            node_names: Vec::new(),
            unique_id: read_text(&device.join("unique_id")).map(|s| s.trim().to_owned()),
            product_name: read_text(&device.join("product_name"))
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
        });
        card.node_names.push(name);
    }
    by_bus.into_values().collect()
}

/// GPUs for the DRM cards of one vendor: index in PCI order, nodes, by-path links.
pub fn gpus_from_cards(
    roots: &HostRoots,
    cards: &[DrmCard],
    warnings: &mut Vec<String>,
) -> Vec<Gpu> {
    let mut gpus = Vec::new();
    for card in cards {
        let nodes = dri_nodes(roots, &card.node_names, warnings);
        if nodes.is_empty() {
            warnings.push(format!(
                "GPU {} ({}): no /dev/dri node found; left out",
                card.bus_id, card.driver
            ));
            continue;
        }
        let symlinks = by_path_links(roots, &card.bus_id, &nodes);
        gpus.push(Gpu {
            index: gpus.len() as u32,
            uuid: card.unique_id.clone().filter(|s| !s.is_empty()),
            name: card.product_name.clone(),
            pci_bus_id: Some(card.bus_id.clone()),
            minor: None,
            nodes,
            symlinks,
            migs: Vec::new(),
        });
    }
    gpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_are_normalized() {
        assert_eq!(normalize_bus_id("00000000:3B:00.0"), "0000:3b:00.0");
        assert_eq!(normalize_bus_id("0000:3b:00.0"), "0000:3b:00.0");
        assert_eq!(normalize_bus_id("00000001:AF:00.0\n"), "0001:af:00.0");
    }

    #[test]
    fn node_names() {
        assert!(is_drm_node_name("card0"));
        assert!(is_drm_node_name("renderD128"));
        assert!(!is_drm_node_name("card0-DP-1"));
        assert!(!is_drm_node_name("version"));
        assert!(!is_drm_node_name("card"));
    }
}
