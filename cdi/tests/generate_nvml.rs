//! The real NVML code path (nvml-wrapper loading libnvidia-ml.so.1 from the driver root's
//! ld.so.cache, the GPU and MIG queries, the lost-GPU error) against a fake libnvidia-ml
//! compiled from generate_common/fake_nvml.c with the real library's ABI.

mod generate_common;

use generate_common::*;
use nvbind_cdi::discover::nvidia::{NvidiaDiscoverer, NvmlSource};
use nvbind_cdi::discover::{Discover, Method};
use nvbind_cdi::generate::{spec_for, NameStrategy};

fn procfs() -> NvidiaDiscoverer {
    NvidiaDiscoverer {
        nvml: NvmlSource::Disabled,
    }
}

#[test]
fn real_nvml_loader_finds_the_8_gpus() {
    let host = FakeHost::h100x8();
    host.install_fake_nvml(&h100x8_nvml_conf(&[]));
    let inv = NvidiaDiscoverer::default().discover(&host.roots()).unwrap();
    assert_eq!(inv.method, Method::Nvml, "{:?}", inv.warnings);
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    assert_eq!(inv.driver_version.as_deref(), Some(DRIVER));
    assert_eq!(inv.cuda_version.as_deref(), Some("12.4"));
    // Same GPUs (UUIDs, minors, normalized bus ids, names, nodes) as procfs reports.
    let proc = procfs().discover(&host.roots()).unwrap();
    assert_eq!(inv.gpus, proc.gpus);
    assert_eq!(inv.shared, proc.shared);
}

#[test]
fn real_nvml_lost_gpu_is_left_out() {
    let host = FakeHost::h100x8();
    host.install_fake_nvml(&h100x8_nvml_conf(&[6]));
    let inv = NvidiaDiscoverer::default().discover(&host.roots()).unwrap();
    assert_eq!(inv.method, Method::Nvml);
    let indexes: Vec<u32> = inv.gpus.iter().map(|g| g.index).collect();
    assert_eq!(indexes, [0, 1, 2, 3, 4, 5, 7]);
    assert_eq!(inv.warnings.len(), 1, "{:?}", inv.warnings);
    assert!(inv.warnings[0].contains("NVML reports GPU 6 as lost"));
}

#[test]
fn real_nvml_without_a_driver_falls_back_to_procfs_with_a_warning() {
    let host = FakeHost::h100x8();
    host.install_fake_nvml(&h100x8_nvml_conf(&[]));
    // The library loads but nvmlInit_v2 answers DRIVER_NOT_LOADED (no config).
    host.remove(&format!("{LIBDIR}/fake-nvml.conf"));
    let inv = NvidiaDiscoverer::default().discover(&host.roots()).unwrap();
    assert_eq!(inv.method, Method::Procfs);
    assert_eq!(inv.gpus.len(), 8);
    assert_eq!(inv.warnings.len(), 1, "{:?}", inv.warnings);
    assert!(
        inv.warnings[0].starts_with("NVML failed to start"),
        "{:?}",
        inv.warnings
    );
}

#[test]
fn real_nvml_mig_devices_keep_their_slots() {
    let host = FakeHost::a100x2_mig();
    // MIG devices in NVML slots 0 and 2 (slot 1 empty); GI 1 / CI 0 and GI 2 / CI 0.
    host.install_fake_nvml(&format!(
        "driver {DRIVER}\ncuda 12040\n\
         gpu GPU-a1000a1b-2c3d-4e5f-6a7b-8c9d0e1f2a00 0 00000000:07:00.0 NVIDIA A100-SXM4-40GB\n\
         mig 0 MIG-1d2e3f40-5a6b-5c7d-8e9f-0a1b2c3d4e5f 1 0\n\
         mig 2 MIG-6f7a8b9c-0d1e-5f2a-3b4c-5d6e7f8a9b0c 2 0\n\
         gpu GPU-a1001a1b-2c3d-4e5f-6a7b-8c9d0e1f2a01 1 00000000:0F:00.0 NVIDIA A100-SXM4-40GB\n"
    ));
    let inv = NvidiaDiscoverer::default().discover(&host.roots()).unwrap();
    assert_eq!(inv.method, Method::Nvml);
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    let migs = &inv.gpus[0].migs;
    assert_eq!(migs.len(), 2);
    assert_eq!(
        (
            migs[1].index,
            migs[1].gpu_instance,
            migs[1].compute_instance
        ),
        (2, 2, 0)
    );
    let nodes: Vec<String> = migs[1]
        .nodes
        .iter()
        .map(|n| n.path.display().to_string())
        .collect();
    assert_eq!(
        nodes,
        [
            "/dev/nvidia0",
            "/dev/nvidia-caps/nvidia-cap21",
            "/dev/nvidia-caps/nvidia-cap22"
        ]
    );
    let spec = spec_for(&inv, &options(NameStrategy::Both), &mut Vec::new()).unwrap();
    let names: Vec<&str> = spec.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "0",
            "GPU-a1000a1b-2c3d-4e5f-6a7b-8c9d0e1f2a00",
            "0:0",
            "MIG-1d2e3f40-5a6b-5c7d-8e9f-0a1b2c3d4e5f",
            "0:2",
            "MIG-6f7a8b9c-0d1e-5f2a-3b4c-5d6e7f8a9b0c",
            "1",
            "GPU-a1001a1b-2c3d-4e5f-6a7b-8c9d0e1f2a01",
            "all"
        ]
    );
}
