//! Discovery + generation over fake host trees, compared with reviewed golden specs in
//! cdi/testdata/golden-generate (UPDATE_GOLDEN=1 rewrites them).

mod generate_common;

use generate_common::*;
use nvbind_cdi::discover::amd::AmdDiscoverer;
use nvbind_cdi::discover::intel::IntelDiscoverer;
use nvbind_cdi::discover::nvidia::{NvidiaDiscoverer, NvmlSource};
use nvbind_cdi::discover::{Discover, Inventory, Method, VendorInventory};
use nvbind_cdi::generate::{render, render_all, spec_for, specs_for, NameStrategy};
use nvbind_cdi::spec::{Format, Spec};
use std::path::Path;

fn procfs() -> NvidiaDiscoverer {
    NvidiaDiscoverer {
        nvml: NvmlSource::Disabled,
    }
}

fn with_nvml(n: FakeNvml) -> NvidiaDiscoverer {
    NvidiaDiscoverer {
        nvml: NvmlSource::Given(Box::new(n)),
    }
}

fn generate(inv: &VendorInventory, strategy: NameStrategy) -> (Spec, Vec<String>) {
    let mut warnings = Vec::new();
    let spec = spec_for(inv, &options(strategy), &mut warnings).unwrap();
    (spec, warnings)
}

fn yaml(spec: &Spec, host: &FakeHost) -> String {
    normalize(
        &render(spec, Format::Yaml, Path::new("x.yaml")).unwrap(),
        host,
    )
}

fn names(spec: &Spec) -> Vec<&str> {
    spec.devices.iter().map(|d| d.name.as_str()).collect()
}

#[test]
fn nvidia_8_gpus_from_procfs() {
    let host = FakeHost::h100x8();
    let inv = procfs().discover(&host.roots()).unwrap();
    assert_eq!(inv.method, Method::Procfs);
    assert_eq!(inv.driver_version.as_deref(), Some(DRIVER));
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    assert_eq!(inv.gpus.len(), 8);
    // Index follows PCI order; the node follows the device minor.
    assert_eq!(inv.gpus[4].pci_bus_id.as_deref(), Some("0000:9a:00.0"));
    assert_eq!(inv.gpus[4].minor, Some(5));
    assert_eq!(inv.gpus[4].nodes[0].path, Path::new("/dev/nvidia5"));
    assert_eq!(
        (inv.gpus[4].nodes[0].major, inv.gpus[4].nodes[0].minor),
        (195, 5)
    );
    // Versioned driver libraries only; the unrelated ones in the same dir are not there.
    let libs: Vec<String> = inv
        .shared
        .libraries
        .iter()
        .map(|l| l.path.display().to_string())
        .collect();
    assert!(libs.contains(&format!("{LIBDIR}/libcuda.so.{DRIVER}")));
    assert!(libs.contains(&format!("{LIBDIR}/libnvidia-egl-wayland.so.1.1.13")));
    assert!(libs.contains(&format!("{LIBDIR}/vdpau/libvdpau_nvidia.so.{DRIVER}")));
    assert!(!libs
        .iter()
        .any(|l| l.contains("nvrtc") || l.contains("zstd")));
    assert!(!libs.iter().any(|l| l.ends_with(".so.1")), "{libs:?}");

    let (spec, warnings) = generate(&inv, NameStrategy::Index);
    assert!(warnings.is_empty());
    assert_eq!(
        names(&spec),
        ["0", "1", "2", "3", "4", "5", "6", "7", "all"]
    );
    assert_golden("nvidia-h100x8.yaml", &yaml(&spec, &host));
    let json = render(&spec, Format::Json, Path::new("x.json")).unwrap();
    assert_golden("nvidia-h100x8.json", &normalize(&json, &host));
}

#[test]
fn nvidia_8_gpus_from_nvml_matches_procfs() {
    let host = FakeHost::h100x8();
    let via_nvml = with_nvml(h100x8_nvml()).discover(&host.roots()).unwrap();
    let via_proc = procfs().discover(&host.roots()).unwrap();
    assert_eq!(via_nvml.method, Method::Nvml);
    assert_eq!(via_nvml.cuda_version.as_deref(), Some("12.4"));
    assert_eq!(via_nvml.gpus, via_proc.gpus);
    assert_eq!(via_nvml.shared, via_proc.shared);
    for strategy in [NameStrategy::Index, NameStrategy::Uuid, NameStrategy::Both] {
        assert_eq!(
            generate(&via_nvml, strategy).0,
            generate(&via_proc, strategy).0
        );
    }
}

#[test]
fn name_strategies() {
    let host = FakeHost::h100x8();
    let inv = with_nvml(h100x8_nvml()).discover(&host.roots()).unwrap();
    let (uuid, _) = generate(&inv, NameStrategy::Uuid);
    assert_eq!(uuid.devices.len(), 9);
    assert!(uuid.devices[..8].iter().all(|d| d.name.starts_with("GPU-")));
    // No device name starts with a digit and no node has a hostPath only in a real root,
    // but here hostPath is set (fake dev root): 0.5.0 either way.
    assert_eq!(uuid.cdi_version, "0.5.0");
    let (both, _) = generate(&inv, NameStrategy::Both);
    assert_eq!(both.devices.len(), 17);
    assert_eq!(both.devices[0].name, "0");
    assert_eq!(
        both.devices[1].name,
        "GPU-5a0b0c3d-8e7f-4a1b-9c2d-3e4f5a6b7c00"
    );
    assert_eq!(
        both.devices[0].container_edits,
        both.devices[1].container_edits
    );
}

#[test]
fn mig_from_procfs() {
    let host = FakeHost::a100x2_mig();
    let inv = procfs().discover(&host.roots()).unwrap();
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    assert_eq!(inv.gpus[0].migs.len(), 2);
    let mig = &inv.gpus[0].migs[1];
    assert_eq!((mig.gpu_instance, mig.compute_instance), (2, 0));
    let paths: Vec<_> = mig
        .nodes
        .iter()
        .map(|n| n.path.display().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "/dev/nvidia0",
            "/dev/nvidia-caps/nvidia-cap21",
            "/dev/nvidia-caps/nvidia-cap22"
        ]
    );
    // No UUIDs without NVML: MIG devices are named by index (with a warning under uuid).
    let (spec, warnings) = generate(&inv, NameStrategy::Index);
    assert!(warnings.is_empty());
    assert_eq!(names(&spec), ["0", "0:0", "0:1", "1", "all"]);
    assert_golden("nvidia-a100x2-mig.yaml", &yaml(&spec, &host));
}

#[test]
fn mig_from_nvml_with_both_names() {
    let host = FakeHost::a100x2_mig();
    let inv = with_nvml(a100x2_mig_nvml())
        .discover(&host.roots())
        .unwrap();
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    let (spec, warnings) = generate(&inv, NameStrategy::Both);
    assert!(warnings.is_empty());
    assert_eq!(
        names(&spec),
        [
            "0",
            "GPU-a1000a1b-2c3d-4e5f-6a7b-8c9d0e1f2a00",
            "0:0",
            "MIG-1d2e3f40-5a6b-5c7d-8e9f-0a1b2c3d4e5f",
            "0:1",
            "MIG-6f7a8b9c-0d1e-5f2a-3b4c-5d6e7f8a9b0c",
            "1",
            "GPU-a1001a1b-2c3d-4e5f-6a7b-8c9d0e1f2a01",
            "all"
        ]
    );
    assert_golden("nvidia-a100x2-mig-nvml-both.yaml", &yaml(&spec, &host));
}

#[test]
fn amd_2_gpus() {
    let host = FakeHost::empty();
    host.amd_x2();
    let inv = AmdDiscoverer.discover(&host.roots()).unwrap();
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    assert_eq!(inv.gpus.len(), 2);
    assert_eq!(inv.gpus[0].uuid.as_deref(), Some("7e5b3c1d2a4f6e80"));
    assert_eq!(inv.gpus[0].name.as_deref(), Some("Instinct MI210"));
    assert_eq!(inv.driver_version.as_deref(), Some("6.3.6"));
    assert!(IntelDiscoverer.discover(&host.roots()).is_err());
    let (spec, warnings) = generate(&inv, NameStrategy::Index);
    assert!(warnings.is_empty());
    assert_eq!(spec.kind, "amd.com/gpu");
    assert_golden("amd-x2.yaml", &yaml(&spec, &host));
    // GPU 1 has no unique_id: named by index under the uuid strategy, with a warning.
    let (spec, warnings) = generate(&inv, NameStrategy::Uuid);
    assert_eq!(names(&spec), ["7e5b3c1d2a4f6e80", "1", "all"]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}

#[test]
fn intel_1_gpu() {
    let host = FakeHost::empty();
    host.intel_x1(0, 128);
    let inv = IntelDiscoverer.discover(&host.roots()).unwrap();
    assert_eq!(inv.gpus.len(), 1);
    assert!(AmdDiscoverer.discover(&host.roots()).is_err());
    let (spec, _) = generate(&inv, NameStrategy::Index);
    assert_eq!(spec.kind, "intel.com/gpu");
    assert!(spec.container_edits.is_empty());
    assert_golden("intel-x1.yaml", &yaml(&spec, &host));
}

#[test]
fn mixed_host_gives_one_spec_per_vendor() {
    let host = FakeHost::a100x2_mig();
    host.intel_x1(0, 128);
    let nvidia = procfs();
    let inv = Inventory::collect(&host.roots(), &[&nvidia, &AmdDiscoverer, &IntelDiscoverer]);
    assert_eq!(inv.found.len(), 2);
    assert_eq!(inv.absent.len(), 1);
    assert!(
        inv.absent[0].to_string().contains("amdgpu"),
        "{}",
        inv.absent[0]
    );
    let mut warnings = Vec::new();
    let specs = specs_for(&inv, &options(NameStrategy::Index), &mut warnings);
    assert!(warnings.is_empty(), "{warnings:?}");
    let kinds: Vec<_> = specs.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["nvidia.com/gpu", "intel.com/gpu"]);
    let text = render_all(&specs, Format::Yaml).unwrap();
    assert_golden("mixed.yaml", &normalize(&text, &host));
    // JSON Lines for several specs: each line is one spec.
    let lines = render_all(&specs, Format::Json).unwrap();
    let parsed: Vec<Spec> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed, specs);
}

#[test]
fn ldconfig_old_and_compat_formats_give_the_same_libraries() {
    let host = FakeHost::h100x8();
    let new = procfs().discover(&host.roots()).unwrap().shared.libraries;
    assert!(new.len() > 10);
    for format in ["old", "compat", "new"] {
        host.ldconfig(&["-c", format]);
        let cache =
            nvbind_cdi::discover::ldcache::LdCache::open(host.path("/etc/ld.so.cache")).unwrap();
        let expected = match format {
            "old" => nvbind_cdi::discover::ldcache::Format::Old,
            "compat" => nvbind_cdi::discover::ldcache::Format::Compat,
            _ => nvbind_cdi::discover::ldcache::Format::New,
        };
        assert_eq!(cache.format(), expected);
        assert_eq!(cache.skipped(), 0);
        assert!(cache
            .lookup(&["libcuda.so"])
            .any(|e| e.name == "libcuda.so.1"));
        let libs = procfs().discover(&host.roots()).unwrap().shared.libraries;
        assert_eq!(libs, new, "ldconfig -c {format}");
    }
}

#[test]
fn host_ld_so_cache_parses() {
    // The machine's own cache (Debian 12 writes the new format): every entry readable.
    let cache = nvbind_cdi::discover::ldcache::LdCache::open("/etc/ld.so.cache").unwrap();
    assert_eq!(cache.skipped(), 0);
    assert!(cache.lookup(&["libc.so.6"]).count() >= 1);
}

#[test]
fn wsl2_driver_store_and_dxg() {
    use nvbind_cdi::discover::wsl::{self, WslDiscoverer};
    let host = FakeHost::wsl();
    assert!(wsl::detected(&host.roots()));
    let inv = WslDiscoverer.discover(&host.roots()).unwrap();
    assert_eq!(inv.method, Method::Wsl);
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    let (spec, _) = generate(&inv, NameStrategy::Index);
    // One device, `all`, holding /dev/dxg, as nvidia-ctk's wsl mode makes it.
    assert_eq!(names(&spec), ["all"]);
    assert_golden("nvidia-wsl.yaml", &yaml(&spec, &host));
    // A native driver next to /dev/dxg is not WSL.
    host.char_dev("/dev/nvidiactl", 195, 255);
    assert!(!wsl::detected(&host.roots()));
    // No /dev/dxg: not a WSL2 host.
    let empty = FakeHost::empty();
    assert!(WslDiscoverer.discover(&empty.roots()).is_err());
}
