//! IMEX channels, MIG capability nodes at create time, MIG config/monitor and the toolkit's
//! feature gates, on fake hosts, through the resolver (as create and nvbind-hook use it).

mod generate_common;

use std::fs;
use std::path::Path;

use generate_common::*;
use nvbind_cdi::registry::Trust;
use nvbind_cdi::resolver::{ResolveFailure, Resolver, ResolverConfig};
use nvbind_cdi::spec::{ContainerEdits, DeviceNode};
use oci_spec::runtime::{Capability, LinuxCapabilitiesBuilder, Spec as OciSpec};

const PROC_DEVICES: &str = "Character devices:\n  1 mem\n195 nvidia-frontend\n234 nvidia-caps-imex-channels\n508 nvidia-caps\n510 nvidia-uvm\n\nBlock devices:\n  8 sd\n";

fn config(env: &[&str], privileged: bool) -> OciSpec {
    let mut spec = OciSpec::default();
    let mut process = spec.process().clone().unwrap();
    let mut e = process.env().clone().unwrap_or_default();
    e.extend(env.iter().map(|s| s.to_string()));
    process.set_env(Some(e));
    if privileged {
        let all: std::collections::HashSet<Capability> = [Capability::SysAdmin, Capability::Chown]
            .into_iter()
            .collect();
        process.set_capabilities(Some(
            LinuxCapabilitiesBuilder::default()
                .bounding(all.clone())
                .effective(all)
                .build()
                .unwrap(),
        ));
    }
    spec.set_process(Some(process));
    spec
}

fn resolver(host: &FakeHost) -> Resolver {
    let empty = host.path("/etc/cdi-empty");
    fs::create_dir_all(&empty).unwrap();
    let mut c = ResolverConfig::new(vec![empty], Trust::Any);
    c.roots = host.roots();
    c.hook_path = "/usr/bin/nvbind-hook".into();
    Resolver::new(c)
}

fn nodes_under<'a>(e: &'a ContainerEdits, prefix: &str) -> Vec<&'a DeviceNode> {
    e.device_nodes
        .iter()
        .filter(|n| n.path.starts_with(prefix))
        .collect()
}

fn numbered(n: &DeviceNode) -> (String, Option<String>, Option<i64>, Option<i64>, bool) {
    (
        n.path.clone(),
        n.node_type.clone(),
        n.major,
        n.minor,
        n.host_path.is_some(),
    )
}

fn err(r: Result<Option<nvbind_cdi::Resolution>, ResolveFailure>) -> String {
    r.map(|_| ()).unwrap_err().to_string()
}

#[test]
fn imex_channels_are_given_by_number_never_made_on_the_host() {
    let host = FakeHost::h100x8();
    host.file("/proc/devices", PROC_DEVICES);
    host.char_dev("/dev/nvidia-caps-imex-channels/channel0", 234, 0);
    host.char_dev("/dev/nvidia-caps-imex-channels/channel5", 234, 5);
    let r = resolver(&host);
    let imex = |v: &str| {
        let res = r
            .resolve(&config(
                &[
                    "NVIDIA_VISIBLE_DEVICES=0",
                    &format!("NVIDIA_IMEX_CHANNELS={v}"),
                ],
                false,
            ))
            .unwrap()
            .unwrap();
        nodes_under(&res.edits, "/dev/nvidia-caps-imex-channels/")
            .into_iter()
            .map(numbered)
            .collect::<Vec<_>>()
    };
    let c = |n: i64| {
        (
            format!("/dev/nvidia-caps-imex-channels/channel{n}"),
            Some("c".to_string()),
            Some(234),
            Some(n),
            false,
        )
    };
    assert_eq!(imex("0,3"), [c(0), c(3)]);
    assert_eq!(imex("all"), [c(0), c(5)]);
    assert!(imex("none").is_empty());
    // Nothing was created on the host for channel 3.
    assert!(!host
        .path("/dev/nvidia-caps-imex-channels/channel3")
        .exists());

    let line = err(r.resolve(&config(
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=0,x"],
        false,
    )));
    assert_eq!(
        line,
        "NVIDIA_IMEX_CHANNELS=\"0,x\": expected all, none or channel numbers below 2048 (0,1,...)"
    );
    let line = err(r.resolve(&config(
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=4096"],
        false,
    )));
    assert!(line.contains("below 2048"), "{line}");
    // Only with GPUs requested the NVIDIA runtime's way.
    assert!(r
        .resolve(&config(&["NVIDIA_IMEX_CHANNELS=0"], false))
        .unwrap()
        .is_none());

    // A driver without IMEX.
    host.file("/proc/devices", "Character devices:\n195 nvidia-frontend\n");
    let line = err(r.resolve(&config(
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=0"],
        false,
    )));
    assert!(line.contains("the NVIDIA driver has no IMEX channels on this host (no nvidia-caps-imex-channels in /proc/devices)"), "{line}");
}

#[test]
fn mig_devices_get_their_capability_nodes_from_proc_at_create_time() {
    let host = FakeHost::a100x2_mig();
    host.file("/proc/devices", PROC_DEVICES);
    let r = resolver(&host);
    let caps = |host: &FakeHost| {
        let _ = host;
        let res = r
            .resolve(&config(&["NVIDIA_VISIBLE_DEVICES=0:1"], false))
            .unwrap()
            .unwrap();
        nodes_under(&res.edits, "/dev/nvidia-caps/")
            .into_iter()
            .map(numbered)
            .collect::<Vec<_>>()
    };
    // With the host's nodes: by host path, as a spec file lists them.
    let with_nodes = caps(&host);
    assert_eq!(with_nodes.len(), 2);
    assert!(with_nodes.iter().all(|n| n.4), "{with_nodes:?}");
    // A MIG layout made after the nodes were (or no nvidia-modprobe on the host): the minors
    // come from /proc/driver/nvidia/capabilities/gpu0/mig/gi2{,/ci0}/access, the major from
    // /proc/devices.
    for m in [12, 13, 21, 22] {
        host.remove(&format!("/dev/nvidia-caps/nvidia-cap{m}"));
    }
    fs::write(
        host.path("/proc/driver/nvidia/capabilities/gpu0/mig/gi2/access"),
        "DeviceFileMinor: 21\nDeviceFileMode: 292\nDeviceFileModify: 1\n",
    )
    .unwrap();
    fs::write(
        host.path("/proc/driver/nvidia/capabilities/gpu0/mig/gi2/ci0/access"),
        "DeviceFileMinor: 22\nDeviceFileMode: 292\nDeviceFileModify: 1\n",
    )
    .unwrap();
    // mig-minors would say otherwise: /proc/driver/nvidia/capabilities wins.
    let mm = host.path("/proc/driver/nvidia-caps/mig-minors");
    let text = fs::read_to_string(&mm).unwrap();
    fs::write(
        &mm,
        text.replace("gpu0/gi2/access 21", "gpu0/gi2/access 99"),
    )
    .unwrap();
    let cap = |m: i64| {
        (
            format!("/dev/nvidia-caps/nvidia-cap{m}"),
            Some("c".to_string()),
            Some(508),
            Some(m),
            false,
        )
    };
    assert_eq!(caps(&host), [cap(21), cap(22)]);
}

#[test]
fn mig_config_and_monitor_need_a_privileged_container() {
    let host = FakeHost::a100x2_mig();
    host.file("/proc/devices", PROC_DEVICES);
    let r = resolver(&host);
    let line = err(r.resolve(&config(
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_MIG_CONFIG_DEVICES=all"],
        false,
    )));
    assert_eq!(line, "NVIDIA_MIG_CONFIG_DEVICES=all: only a privileged container may use the MIG config capability (it needs CAP_SYS_ADMIN)");
    let res = r
        .resolve(&config(
            &[
                "NVIDIA_VISIBLE_DEVICES=0",
                "NVIDIA_MIG_CONFIG_DEVICES=all",
                "NVIDIA_MIG_MONITOR_DEVICES=all",
            ],
            true,
        ))
        .unwrap()
        .unwrap();
    let got: Vec<_> = res
        .edits
        .device_nodes
        .iter()
        .filter(|n| {
            n.path == "/dev/nvidia-caps/nvidia-cap1" || n.path == "/dev/nvidia-caps/nvidia-cap2"
        })
        .map(numbered)
        .collect();
    assert_eq!(
        got,
        [
            (
                "/dev/nvidia-caps/nvidia-cap1".into(),
                Some("c".into()),
                Some(508),
                Some(1),
                false
            ),
            (
                "/dev/nvidia-caps/nvidia-cap2".into(),
                Some("c".into()),
                Some(508),
                Some(2),
                false
            ),
        ]
    );
    let line = err(r.resolve(&config(
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_MIG_MONITOR_DEVICES=0"],
        true,
    )));
    assert!(line.contains("expected all (or none)"), "{line}");
}

#[test]
fn feature_gates_add_their_nodes_only_when_enabled() {
    let host = FakeHost::h100x8();
    host.char_dev("/dev/nvidia-fs0", 243, 0);
    host.char_dev("/dev/nvidia-fs1", 243, 1);
    host.file("/etc/cufile.json", "{}\n");
    host.char_dev("/dev/infiniband/uverbs0", 231, 192);
    host.char_dev("/dev/infiniband/rdma_cm", 10, 58);
    host.char_dev("/dev/nvidia-nvswitch0", 240, 0);
    host.char_dev("/dev/gdrdrv", 244, 0);
    let r = resolver(&host);
    let extra = |vars: &[&str]| {
        let mut env = vec!["NVIDIA_VISIBLE_DEVICES=0"];
        env.extend(vars);
        let res = r.resolve(&config(&env, false)).unwrap().unwrap();
        let mut v: Vec<String> = res
            .edits
            .device_nodes
            .iter()
            .map(|n| n.path.clone())
            .chain(res.edits.mounts.iter().map(|m| m.container_path.clone()))
            .filter(|p| {
                [
                    "/dev/nvidia-fs",
                    "/dev/infiniband/",
                    "/dev/nvidia-nvswitch",
                    "/dev/gdrdrv",
                    "/etc/cufile.json",
                ]
                .iter()
                .any(|x| p.starts_with(x))
            })
            .collect();
        v.sort();
        v
    };
    assert!(extra(&[]).is_empty());
    assert!(extra(&["NVIDIA_GDS=disabled", "NVIDIA_MOFED=yes"]).is_empty());
    assert_eq!(
        extra(&["NVIDIA_GDS=enabled"]),
        ["/dev/nvidia-fs0", "/dev/nvidia-fs1", "/etc/cufile.json"]
    );
    assert_eq!(
        extra(&["NVIDIA_MOFED=enabled"]),
        ["/dev/infiniband/rdma_cm", "/dev/infiniband/uverbs0"]
    );
    assert_eq!(
        extra(&["NVIDIA_NVSWITCH=enabled"]),
        ["/dev/nvidia-nvswitch0"]
    );
    assert_eq!(extra(&["NVIDIA_GDRCOPY=enabled"]), ["/dev/gdrdrv"]);
    let _ = Path::new("/");
}
