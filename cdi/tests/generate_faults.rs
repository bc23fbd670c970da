//! Bad input and faults: missing driver, partial /proc, lost GPU, broken ld.so.cache, missing
//! nodes, missing output directory. Each gives a clear message and a spec of what could be
//! found (or none), never a panic.

mod generate_common;

use std::fs;
use std::path::Path;

use generate_common::*;
use nvbind_cdi::discover::amd::AmdDiscoverer;
use nvbind_cdi::discover::intel::IntelDiscoverer;
use nvbind_cdi::discover::nvidia::{NvidiaDiscoverer, NvmlSource};
use nvbind_cdi::discover::{Discover, DiscoverError, Inventory, Method};
use nvbind_cdi::generate::{spec_for, specs_for, write_atomic, GenerateError, NameStrategy};

fn procfs() -> NvidiaDiscoverer {
    NvidiaDiscoverer {
        nvml: NvmlSource::Disabled,
    }
}

fn has_warning(warnings: &[String], needle: &str) -> bool {
    warnings.iter().any(|w| w.contains(needle))
}

#[test]
fn empty_host_has_no_driver_and_no_spec() {
    let host = FakeHost::empty();
    // Load: the tree has no libnvidia-ml, so NVML is not used (quietly).
    let nvidia = NvidiaDiscoverer::default();
    let inv = Inventory::collect(&host.roots(), &[&nvidia, &AmdDiscoverer, &IntelDiscoverer]);
    assert!(inv.found.is_empty());
    assert_eq!(inv.absent.len(), 3);
    let DiscoverError::NotPresent { looked_for, .. } = &inv.absent[0];
    assert!(
        looked_for.contains("/proc/driver/nvidia/version"),
        "{looked_for}"
    );
    assert!(inv.absent[0]
        .to_string()
        .starts_with("no NVIDIA GPU driver found"));
    let mut warnings = Vec::new();
    assert!(specs_for(&inv, &options(NameStrategy::Index), &mut warnings).is_empty());
}

#[test]
fn nvml_that_does_not_load_falls_back_to_procfs_quietly() {
    // The tree's libnvidia-ml.so.1 is a gcc-built stub without NVML's symbols: loading it
    // from the driver root fails and procfs is used, with no warning about NVML.
    let host = FakeHost::h100x8();
    let inv = NvidiaDiscoverer::default().discover(&host.roots()).unwrap();
    assert_eq!(inv.method, Method::Procfs);
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    assert_eq!(inv.gpus.len(), 8);
}

#[test]
fn partial_proc_entries_list_what_can_be_found() {
    let host = FakeHost::h100x8();
    let gpus = "/proc/driver/nvidia/gpus";
    // GPU 2: no Device Minor; GPU 5: no UUID; GPU 6: information file missing.
    let info2 = format!("{gpus}/{}/information", H100_BUSES[2]);
    let text = fs::read_to_string(host.path(&info2)).unwrap();
    host.file(&info2, &text.replace("Device Minor", "Device Mnr"));
    let info5 = format!("{gpus}/{}/information", H100_BUSES[5]);
    let text = fs::read_to_string(host.path(&info5)).unwrap();
    let truncated: String = text
        .lines()
        .filter(|l| !l.starts_with("GPU UUID"))
        .map(|l| format!("{l}\n"))
        .collect();
    host.file(&info5, &truncated);
    host.remove(&format!("{gpus}/{}/information", H100_BUSES[6]));

    let inv = procfs().discover(&host.roots()).unwrap();
    let indexes: Vec<u32> = inv.gpus.iter().map(|g| g.index).collect();
    assert_eq!(indexes, [0, 1, 3, 4, 5, 7]);
    assert!(
        has_warning(&inv.warnings, "GPU 2 (0000:3a:00.0): no \"Device Minor\""),
        "{:?}",
        inv.warnings
    );
    assert!(has_warning(
        &inv.warnings,
        "GPU 5 (0000:ab:00.0): no \"GPU UUID\""
    ));
    assert!(has_warning(&inv.warnings, "GPU 6 (0000:ba:00.0)"));

    let mut warnings = Vec::new();
    let spec = spec_for(&inv, &options(NameStrategy::Uuid), &mut warnings).unwrap();
    let names: Vec<&str> = spec.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names.len(), 7);
    assert_eq!(names[4], "5", "GPU 5 falls back to its index");
    assert!(has_warning(&warnings, "NVIDIA GPU 5 has no UUID"));
}

#[test]
fn gpu_lost_in_nvml_is_left_out_with_a_warning() {
    let host = FakeHost::h100x8();
    let mut nvml = h100x8_nvml();
    nvml.gpus[3] = None;
    let inv = NvidiaDiscoverer {
        nvml: NvmlSource::Given(Box::new(nvml)),
    }
    .discover(&host.roots())
    .unwrap();
    assert_eq!(inv.method, Method::Nvml);
    assert_eq!(inv.gpus.len(), 7);
    assert!(!inv.gpus.iter().any(|g| g.index == 3));
    assert!(
        has_warning(&inv.warnings, "NVML reports GPU 3 as lost"),
        "{:?}",
        inv.warnings
    );
    let mut warnings = Vec::new();
    let spec = spec_for(&inv, &options(NameStrategy::Index), &mut warnings).unwrap();
    let all = spec.devices.last().unwrap();
    assert_eq!(all.name, "all");
    assert!(!all
        .container_edits
        .device_nodes
        .iter()
        .any(|n| n.path == "/dev/nvidia3"));
    assert_eq!(all.container_edits.device_nodes.len(), 7 * 3);
}

#[test]
fn every_gpu_lost_gives_no_spec_and_a_clear_error() {
    let host = FakeHost::h100x8();
    let mut nvml = h100x8_nvml();
    nvml.gpus.iter_mut().for_each(|g| *g = None);
    let inv = NvidiaDiscoverer {
        nvml: NvmlSource::Given(Box::new(nvml)),
    }
    .discover(&host.roots())
    .unwrap();
    assert!(inv.gpus.is_empty());
    let err = spec_for(&inv, &options(NameStrategy::Index), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, GenerateError::NoDevices { .. }));
    assert_eq!(
        err.to_string(),
        "NVIDIA driver found but no usable GPU: no spec for nvidia.com/gpu"
    );
}

fn libraries_left_out(host: &FakeHost, expect: &str) {
    let inv = procfs().discover(&host.roots()).unwrap();
    assert!(inv.shared.libraries.is_empty());
    assert!(has_warning(&inv.warnings, expect), "{:?}", inv.warnings);
    assert!(has_warning(&inv.warnings, "driver libraries are left out"));
    // Everything else is still there.
    assert_eq!(inv.gpus.len(), 8);
    assert!(!inv.shared.binaries.is_empty());
    let spec = spec_for(&inv, &options(NameStrategy::Index), &mut Vec::new()).unwrap();
    assert!(!spec
        .container_edits
        .hooks
        .iter()
        .any(|h| h.args.iter().any(|a| a == "update-ldcache")));
}

#[test]
fn garbage_ld_so_cache() {
    let host = FakeHost::h100x8();
    fs::write(
        host.path("/etc/ld.so.cache"),
        b"\x7fELF\x02\x01\x01 definitely not a cache",
    )
    .unwrap();
    libraries_left_out(&host, "not an ld.so.cache file");
}

#[test]
fn truncated_ld_so_cache() {
    let host = FakeHost::h100x8();
    let data = fs::read(host.path("/etc/ld.so.cache")).unwrap();
    fs::write(host.path("/etc/ld.so.cache"), &data[..100]).unwrap();
    libraries_left_out(&host, "truncated");
}

#[test]
fn unreadable_ld_so_cache() {
    let host = FakeHost::h100x8();
    // Root reads any file, so make it unreadable by being a directory.
    fs::remove_file(host.path("/etc/ld.so.cache")).unwrap();
    fs::create_dir(host.path("/etc/ld.so.cache")).unwrap();
    libraries_left_out(&host, "cannot read ld.so.cache");
}

#[test]
fn missing_ld_so_cache() {
    let host = FakeHost::h100x8();
    fs::remove_file(host.path("/etc/ld.so.cache")).unwrap();
    libraries_left_out(&host, "No such file or directory");
}

#[test]
fn missing_device_node_leaves_that_gpu_out() {
    let host = FakeHost::h100x8();
    host.remove("/dev/nvidia7");
    // A regular file where a node should be is not a device either.
    host.remove("/dev/nvidia0");
    host.file("/dev/nvidia0", "");
    let inv = procfs().discover(&host.roots()).unwrap();
    let minors: Vec<u32> = inv.gpus.iter().filter_map(|g| g.minor).collect();
    assert_eq!(minors, [1, 2, 3, 5, 4, 6]);
    assert!(has_warning(
        &inv.warnings,
        "/dev/nvidia7 is not a character device"
    ));
    assert!(has_warning(
        &inv.warnings,
        "/dev/nvidia0 is not a character device"
    ));
}

#[test]
fn only_dev_nodes_without_proc_gpus() {
    let host = FakeHost::h100x8();
    host.remove("/proc/driver/nvidia/gpus");
    let inv = procfs().discover(&host.roots()).unwrap();
    assert_eq!(inv.method, Method::DevScan);
    assert_eq!(inv.gpus.len(), 8);
    assert!(inv.gpus.iter().all(|g| g.uuid.is_none()));
    assert_eq!(inv.driver_version.as_deref(), Some(DRIVER));
    assert!(has_warning(
        &inv.warnings,
        "GPUs found from /dev/nvidia* only"
    ));
}

#[test]
fn unknown_driver_version_selects_libraries_by_name() {
    let host = FakeHost::h100x8();
    host.file("/proc/driver/nvidia/version", "garbage\n");
    let inv = procfs().discover(&host.roots()).unwrap();
    assert_eq!(inv.driver_version, None);
    assert!(has_warning(&inv.warnings, "driver version unknown"));
    assert!(has_warning(&inv.warnings, "GSP firmware is left out"));
    assert!(inv.shared.firmware.is_empty());
    let names: Vec<String> = inv
        .shared
        .libraries
        .iter()
        .map(|l| l.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&format!("libcuda.so.{DRIVER}")), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("nvrtc")));
}

#[test]
fn mig_without_cap_nodes_is_left_out() {
    // No host node and no nvidia-caps major in /proc/devices to make one from.
    let host = FakeHost::a100x2_mig();
    host.remove("/dev/nvidia-caps/nvidia-cap22");
    let inv = procfs().discover(&host.roots()).unwrap();
    assert_eq!(inv.gpus[0].migs.len(), 1);
    assert!(
        has_warning(&inv.warnings, "gpu0/gi2/ci0/access"),
        "{:?}",
        inv.warnings
    );
    // With the major, the node is given by its numbers.
    host.file("/proc/devices", "Character devices:\n508 nvidia-caps\n");
    let inv = procfs().discover(&host.roots()).unwrap();
    assert_eq!(inv.gpus[0].migs.len(), 2);
    let n = &inv.gpus[0].migs[1].nodes[2];
    assert_eq!((n.major, n.minor, n.on_host), (508, 22, false));
    // No minors anywhere (neither /proc/driver/nvidia/capabilities nor mig-minors): every
    // MIG device is left out, the GPUs stay.
    host.remove("/proc/driver/nvidia-caps/mig-minors");
    for a in [
        "gi1/access",
        "gi1/ci0/access",
        "gi2/access",
        "gi2/ci0/access",
    ] {
        host.remove(&format!("/proc/driver/nvidia/capabilities/gpu0/mig/{a}"));
    }
    let inv = procfs().discover(&host.roots()).unwrap();
    assert_eq!(inv.gpus.len(), 2);
    assert!(inv.gpus[0].migs.is_empty());
}

#[test]
fn amd_without_kfd_still_lists_render_nodes() {
    let host = FakeHost::empty();
    host.amd_x2();
    host.remove("/dev/kfd");
    host.remove("/dev/dri/renderD129");
    let inv = AmdDiscoverer.discover(&host.roots()).unwrap();
    assert!(has_warning(&inv.warnings, "/dev/kfd is missing"));
    assert!(has_warning(
        &inv.warnings,
        "/dev/dri/renderD129 is listed in sysfs"
    ));
    assert_eq!(inv.gpus.len(), 2);
    assert_eq!(inv.gpus[1].nodes.len(), 1);
}

#[test]
fn output_dir_missing_is_a_clear_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("no/such/dir/nvidia.yaml");
    let err = write_atomic(&target, b"x").unwrap_err();
    assert!(matches!(err, GenerateError::NoOutputDir { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "cannot write {}: directory {} does not exist",
            target.display(),
            dir.path().join("no/such/dir").display()
        )
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn atomic_write_replaces_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("nvidia.yaml");
    fs::write(&target, "old").unwrap();
    write_atomic(&target, b"new").unwrap();
    assert_eq!(fs::read_to_string(&target).unwrap(), "new");
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["nvidia.yaml"]);
    // A target that is a directory: the rename fails, the temp file is removed.
    let sub = dir.path().join("sub.yaml");
    fs::create_dir(&sub).unwrap();
    fs::write(sub.join("keep"), "").unwrap();
    let err = write_atomic(&sub, b"x").unwrap_err();
    assert!(matches!(err, GenerateError::Write { .. }), "{err}");
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["nvidia.yaml", "sub.yaml"]);
    assert!(Path::new(&sub).join("keep").exists());
}
