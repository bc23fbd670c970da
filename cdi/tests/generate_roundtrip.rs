//! Round trip: generated specs (with the fake trees' real paths) load through our registry,
//! validate, resolve and apply to an OCI spec with the fake device numbers; and they load
//! through the `container-device-interface` crate and inject into an OCI spec there too.

mod generate_common;

use std::path::Path;

use generate_common::*;
use nvbind_cdi::apply::{apply, RealHost};
use nvbind_cdi::discover::amd::AmdDiscoverer;
use nvbind_cdi::discover::intel::IntelDiscoverer;
use nvbind_cdi::discover::nvidia::{NvidiaDiscoverer, NvmlSource};
use nvbind_cdi::discover::Inventory;
use nvbind_cdi::generate::{render, specs_for, write_atomic, NameStrategy};
use nvbind_cdi::name::QualifiedName;
use nvbind_cdi::registry::{Registry, Trust};
use nvbind_cdi::spec::{Format, Spec};

/// Every vendor's spec for `host`, written into a fresh spec dir as <vendor>.<ext>.
fn write_specs(
    host: &FakeHost,
    nvidia: NvidiaDiscoverer,
    strategy: NameStrategy,
    format: Format,
) -> (tempfile::TempDir, Vec<Spec>) {
    let inv = Inventory::collect(&host.roots(), &[&nvidia, &AmdDiscoverer, &IntelDiscoverer]);
    let mut warnings = Vec::new();
    let specs = specs_for(&inv, &options(strategy), &mut warnings);
    assert!(!specs.is_empty());
    let dir = tempfile::tempdir().unwrap();
    for s in &specs {
        let vendor = s.kind.split('.').next().unwrap();
        let ext = if format == Format::Json {
            "json"
        } else {
            "yaml"
        };
        let path = dir.path().join(format!("{vendor}.{ext}"));
        let text = render(s, format, &path).unwrap();
        write_atomic(&path, text.as_bytes()).unwrap();
    }
    (dir, specs)
}

fn check_registry(dir: &Path, specs: &[Spec]) {
    let registry = Registry::with_trust(vec![dir.to_path_buf()], Trust::Any);
    assert!(registry.errors().is_empty(), "{:?}", registry.errors());
    let expected: usize = specs.iter().map(|s| s.devices.len()).sum();
    assert_eq!(registry.devices().len(), expected);
    for spec in specs {
        let all = QualifiedName::parse(&format!("{}=all", spec.kind)).unwrap();
        let edits = registry.resolve(&[all]).unwrap();
        // Applying stats every host device node: the fake nodes' numbers come through.
        let oci = apply(&edits, &oci_spec::runtime::Spec::default(), &RealHost).unwrap();
        let devices = oci
            .linux()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap_or_default();
        assert!(!devices.is_empty());
        for d in &devices {
            let path = d.path().display().to_string();
            if path.starts_with("/dev/nvidia")
                && !path.contains("caps")
                && path != "/dev/nvidia-uvm"
                && path != "/dev/nvidia-uvm-tools"
            {
                assert_eq!(d.major(), 195, "{path}");
            }
            if path.starts_with("/dev/dri/") {
                assert_eq!(d.major(), 226, "{path}");
            }
        }
    }
}

fn check_reference_crate(dir: &Path, specs: &[Spec]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let loaded = container_device_interface::spec::read_spec(&path, 0)
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        let kind = format!("{}/{}", loaded.get_vendor(), loaded.get_class());
        let spec = specs.iter().find(|s| s.kind == kind).unwrap();
        assert_eq!(loaded.get_devices().len(), spec.devices.len());
    }
}

#[test]
fn nvidia_8_gpus_round_trip() {
    let host = FakeHost::h100x8();
    for strategy in [NameStrategy::Index, NameStrategy::Uuid, NameStrategy::Both] {
        let nvidia = NvidiaDiscoverer {
            nvml: NvmlSource::Given(Box::new(h100x8_nvml())),
        };
        let (dir, specs) = write_specs(&host, nvidia, strategy, Format::Yaml);
        check_registry(dir.path(), &specs);
        check_reference_crate(dir.path(), &specs);
    }
}

#[test]
fn mig_and_intel_round_trip_json_and_yaml() {
    let host = FakeHost::a100x2_mig();
    host.intel_x1(0, 128);
    for format in [Format::Yaml, Format::Json] {
        let nvidia = NvidiaDiscoverer {
            nvml: NvmlSource::Given(Box::new(a100x2_mig_nvml())),
        };
        let (dir, specs) = write_specs(&host, nvidia, NameStrategy::Both, format);
        assert_eq!(specs.len(), 2);
        check_registry(dir.path(), &specs);
        if format == Format::Yaml {
            // The reference crate's loader reads YAML (JSON is YAML too, but its path
            // check wants a .yaml name).
            check_reference_crate(dir.path(), &specs);
        }
    }
}

#[test]
fn amd_round_trip() {
    let host = FakeHost::empty();
    host.amd_x2();
    let nvidia = NvidiaDiscoverer {
        nvml: NvmlSource::Disabled,
    };
    let (dir, specs) = write_specs(&host, nvidia, NameStrategy::Both, Format::Yaml);
    assert_eq!(specs[0].kind, "amd.com/gpu");
    check_registry(dir.path(), &specs);
    check_reference_crate(dir.path(), &specs);
}

#[test]
fn reference_crate_injects_the_generated_devices() {
    use container_device_interface::cache::{new_cache, with_auto_refresh};
    use container_device_interface::spec_dirs::with_spec_dirs;
    let host = FakeHost::h100x8();
    let nvidia = NvidiaDiscoverer {
        nvml: NvmlSource::Disabled,
    };
    let (dir, _) = write_specs(&host, nvidia, NameStrategy::Index, Format::Yaml);
    let dirs = [dir.path().to_str().unwrap()];
    let cache = new_cache(vec![with_auto_refresh(false), with_spec_dirs(&dirs)]);
    let mut cache = cache.lock().unwrap();
    assert!(cache
        .list_devices()
        .contains(&"nvidia.com/gpu=all".to_string()));
    let mut oci = oci_spec::runtime::Spec::default();
    cache
        .inject_devices(Some(&mut oci), vec!["nvidia.com/gpu=3".into()])
        .unwrap();
    let devices = oci.linux().as_ref().unwrap().devices().clone().unwrap();
    assert!(devices
        .iter()
        .any(|d| d.path() == Path::new("/dev/nvidia3")));
    assert!(devices
        .iter()
        .any(|d| d.path() == Path::new("/dev/nvidiactl")));
    let env = oci.process().as_ref().unwrap().env().clone().unwrap();
    assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=void".to_string()));
}

#[test]
fn both_loaders_reject_a_version_too_low_for_the_content() {
    // Guards the checks above against passing vacuously: index names need 0.5.0.
    let host = FakeHost::h100x8();
    let nvidia = NvidiaDiscoverer {
        nvml: NvmlSource::Disabled,
    };
    let (dir, mut specs) = write_specs(&host, nvidia, NameStrategy::Index, Format::Yaml);
    specs[0].cdi_version = "0.3.0".into();
    let path = dir.path().join("nvidia.yaml");
    let text = render(&specs[0], Format::Yaml, &path).unwrap();
    write_atomic(&path, text.as_bytes()).unwrap();
    assert!(container_device_interface::spec::read_spec(&path, 0).is_err());
    let registry = Registry::with_trust(vec![dir.path().to_path_buf()], Trust::Any);
    assert_eq!(registry.errors().len(), 1, "{:?}", registry.errors());
}
