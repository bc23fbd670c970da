//! Applying the same devices with nvbind-cdi and with the `container-device-interface` crate
//! gives the same devices, cgroup rules, env, hooks, GIDs, net devices and RDT settings.
//! (Mount order is compared as a set: the Go reference sorts mounts by depth, that crate does
//! not.) The fixtures' nodes are fully described, so no host lookup happens there; the specs
//! `nvbind cdi generate` writes for the fake hosts (every vendor, MIG, WSL2, every driver
//! capability's files, 32-bit libraries) leave the numbers to be read from the fake tree's
//! mknod nodes, by both implementations.

mod generate_common;

use std::path::{Path, PathBuf};

use generate_common::{a100x2_mig_nvml, options, FakeHost};
use nvbind_cdi::discover::amd::AmdDiscoverer;
use nvbind_cdi::discover::intel::IntelDiscoverer;
use nvbind_cdi::discover::nvidia::{NvidiaDiscoverer, NvmlSource};
use nvbind_cdi::discover::wsl::WslDiscoverer;
use nvbind_cdi::discover::Inventory;
use nvbind_cdi::generate::{render, specs_for, GenerateOptions, NameStrategy};
use nvbind_cdi::registry::{Registry, Trust};
use nvbind_cdi::spec::Format;
use nvbind_cdi::{apply, QualifiedName, RealHost};
use oci_spec::runtime::Spec as OciSpec;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

fn base() -> OciSpec {
    serde_json::from_str(&std::fs::read_to_string(testdata("golden/base-config.json")).unwrap())
        .unwrap()
}

fn compare(files: &[&str], devices: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(testdata(&format!("specs/{f}")), tmp.path().join(f)).unwrap();
    }
    compare_dir(tmp.path(), devices, base());
}

/// Resolves and applies `devices` from the spec files in `dir` to `base` with both
/// implementations and compares the results.
fn compare_dir(dir: &Path, devices: &[&str], base: OciSpec) {
    let registry = Registry::with_trust(vec![dir.into()], Trust::Any);
    assert!(registry.errors().is_empty(), "{:?}", registry.errors());
    let names: Vec<QualifiedName> = devices.iter().map(|d| d.parse().unwrap()).collect();
    let ours = apply(&registry.resolve(&names).unwrap(), &base, &RealHost).unwrap();

    let cache = container_device_interface::cache::new_cache(vec![
        container_device_interface::spec_dirs::with_spec_dirs(&[dir.to_str().unwrap()]),
        container_device_interface::cache::with_auto_refresh(false),
    ]);
    let mut theirs = base;
    cache
        .lock()
        .unwrap()
        .inject_devices(
            Some(&mut theirs),
            devices.iter().map(|d| d.to_string()).collect(),
        )
        .unwrap();

    let (o, t) = (
        serde_json::to_value(&ours).unwrap(),
        serde_json::to_value(&theirs).unwrap(),
    );
    // Not vacuous: every case injects device nodes.
    assert!(
        o.pointer("/linux/devices")
            .and_then(|d| d.as_array())
            .is_some_and(|d| !d.is_empty()),
        "{devices:?}: no device nodes"
    );
    for ptr in [
        "/linux/devices",
        "/linux/resources/devices",
        "/linux/netDevices",
        "/linux/intelRdt",
        "/process/env",
        "/process/user/additionalGids",
        "/hooks",
    ] {
        assert_eq!(o.pointer(ptr), t.pointer(ptr), "{devices:?}: {ptr} differs");
    }
    let set = |v: &serde_json::Value| {
        let mut m: Vec<String> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.to_string())
            .collect();
        m.sort();
        m
    };
    assert_eq!(set(&o), set(&t), "{devices:?}: mounts differ");
}

#[test]
fn amd_devices_apply_like_the_reference_crate() {
    compare(&["amd.yaml"], &["amd.com/gpu=all"]);
    compare(&["amd.yaml"], &["amd.com/gpu=1", "amd.com/gpu=0"]);
}

#[test]
fn v1_1_features_apply_like_the_reference_crate() {
    compare(
        &["example-net.json", "amd.yaml"],
        &["example.com/net=rdma0", "amd.com/gpu=0"],
    );
}

/// The base config less its `NVIDIA_VISIBLE_DEVICES`: the generated specs set it to `void`,
/// which replaces the container's value in nvbind-cdi as in the Go reference (runtime-tools'
/// AddMultipleProcessEnv), while the Rust crate appends a second entry (its generator's key
/// index starts empty). That one divergence is the crate's; everything else must match.
fn base_without_visible_devices() -> OciSpec {
    let mut spec = base();
    let mut process = spec.process().clone().unwrap();
    let env = process.env().clone().unwrap_or_default();
    process.set_env(Some(
        env.into_iter()
            .filter(|e| !e.starts_with("NVIDIA_VISIBLE_DEVICES="))
            .collect(),
    ));
    spec.set_process(Some(process));
    spec
}

/// Writes the specs `nvbind cdi generate` makes from `inv` into a fresh directory (YAML: the
/// reference crate's loader wants a .yaml name) and compares every device of them, a pair of
/// devices, and one device of each spec together. Returns how many comparisons were made.
fn compare_generated(inv: &Inventory, opts: &GenerateOptions) -> usize {
    let specs = specs_for(inv, opts, &mut Vec::new());
    assert!(!specs.is_empty());
    let tmp = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for spec in &specs {
        let vendor = spec.kind.split('.').next().unwrap();
        let path = tmp.path().join(format!("{vendor}.yaml"));
        std::fs::write(&path, render(spec, Format::Yaml, &path).unwrap()).unwrap();
    }
    let mut every: Vec<String> = Vec::new();
    for spec in &specs {
        let names: Vec<String> = spec
            .devices
            .iter()
            .map(|d| format!("{}={}", spec.kind, d.name))
            .collect();
        for n in &names {
            compare_dir(tmp.path(), &[n], base_without_visible_devices());
            compared += 1;
        }
        if names.len() > 1 {
            let pair = [names[names.len() - 1].as_str(), names[0].as_str()];
            compare_dir(tmp.path(), &pair, base_without_visible_devices());
            compared += 1;
        }
        every.push(names[0].clone());
    }
    let every: Vec<&str> = every.iter().map(String::as_str).collect();
    compare_dir(tmp.path(), &every, base_without_visible_devices());
    compared + 1
}

fn nvidia_procfs() -> NvidiaDiscoverer {
    NvidiaDiscoverer {
        nvml: NvmlSource::Disabled,
    }
}

#[test]
fn generated_nvidia_specs_apply_like_the_reference_crate() {
    // Every capability's files and the 32-bit libraries, /dev/dri of each GPU, names by
    // index and UUID.
    let host = FakeHost::h100x8();
    host.nvidia_userspace_all_capabilities();
    let inv = Inventory::collect(&host.roots(), &[&nvidia_procfs()]);
    let mut opts = options(NameStrategy::Both);
    opts.compat32 = true;
    let n = compare_generated(&inv, &opts);
    assert!(n >= 17, "{n} comparisons");
    // MIG devices (their capability nodes) beside whole GPUs.
    let host = FakeHost::a100x2_mig();
    let nvidia = NvidiaDiscoverer {
        nvml: NvmlSource::Given(Box::new(a100x2_mig_nvml())),
    };
    let inv = Inventory::collect(&host.roots(), &[&nvidia]);
    let specs = specs_for(&inv, &options(NameStrategy::Both), &mut Vec::new());
    assert!(specs[0].devices.iter().any(|d| d.name.starts_with("MIG-")));
    compare_generated(&inv, &options(NameStrategy::Both));
}

#[test]
fn generated_amd_intel_and_wsl_specs_apply_like_the_reference_crate() {
    let host = FakeHost::empty();
    host.amd_x2();
    // cards 0-1 and render nodes 128-129 are the AMD GPUs'.
    host.intel_x1(2, 130);
    let inv = Inventory::collect(
        &host.roots(),
        &[&nvidia_procfs(), &AmdDiscoverer, &IntelDiscoverer],
    );
    assert_eq!(inv.found.len(), 2);
    compare_generated(&inv, &options(NameStrategy::Both));
    let host = FakeHost::wsl();
    let inv = Inventory::collect(&host.roots(), &[&WslDiscoverer]);
    compare_generated(&inv, &options(NameStrategy::Index));
}
