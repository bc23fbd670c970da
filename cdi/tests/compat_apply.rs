//! Applying the same devices with nvbind-cdi and with the `container-device-interface` crate
//! gives the same devices, cgroup rules, env, hooks, GIDs, net devices and RDT settings.
//! (Mount order is compared as a set: the Go reference sorts mounts by depth, that crate does
//! not.) Only fixtures whose nodes are fully described are used, so no host lookup happens.

use std::path::{Path, PathBuf};

use nvbind_cdi::registry::{Registry, Trust};
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

    let registry = Registry::with_trust(vec![tmp.path().into()], Trust::Any);
    let names: Vec<QualifiedName> = devices.iter().map(|d| d.parse().unwrap()).collect();
    let ours = apply(&registry.resolve(&names).unwrap(), &base(), &RealHost).unwrap();

    let cache = container_device_interface::cache::new_cache(vec![
        container_device_interface::spec_dirs::with_spec_dirs(&[tmp.path().to_str().unwrap()]),
        container_device_interface::cache::with_auto_refresh(false),
    ]);
    let mut theirs = base();
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
