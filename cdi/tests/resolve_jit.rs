//! The resolver on fake hosts (device nodes made with mknod, fake ELF libraries, a real
//! ld.so.cache): specs generated at create time when none is on disk, and spec files checked
//! against the live host (stale majors, missing files, GPUs and MIG devices gone), failing
//! with one line or regenerated in memory.

mod generate_common;

use std::fs;
use std::path::{Path, PathBuf};

use generate_common::*;
use nvbind_cdi::discover::nvidia::{NvidiaDiscoverer, NvmlSource};
use nvbind_cdi::discover::{Discover, HostRoots};
use nvbind_cdi::generate::{self, NameStrategy};
use nvbind_cdi::registry::Trust;
use nvbind_cdi::resolver::{ResolveFailure, Resolver, ResolverConfig, StalePolicy};
use nvbind_cdi::spec::{Format, Spec};
use oci_spec::runtime::Spec as OciSpec;

/// A default OCI config asking for `visible` through NVIDIA_VISIBLE_DEVICES.
fn config(visible: &str) -> OciSpec {
    let mut spec = OciSpec::default();
    let mut process = spec.process().clone().unwrap();
    let mut env = process.env().clone().unwrap_or_default();
    env.push(format!("NVIDIA_VISIBLE_DEVICES={visible}"));
    process.set_env(Some(env));
    spec.set_process(Some(process));
    spec
}

fn resolver(spec_dir: &Path, host: &FakeHost, stale: StalePolicy) -> Resolver {
    let mut c = ResolverConfig::new(vec![spec_dir.to_path_buf()], Trust::Any);
    c.roots = host.roots();
    c.stale = stale;
    c.hook_path = "/usr/bin/nvbind-hook".into();
    Resolver::new(c)
}

/// The spec `nvbind cdi generate` would write for the host (procfs discovery).
fn generated(host: &FakeHost) -> Spec {
    let inv = NvidiaDiscoverer {
        nvml: NvmlSource::Disabled,
    }
    .discover(&host.roots())
    .unwrap();
    generate::spec_for(&inv, &options(NameStrategy::Index), &mut Vec::new()).unwrap()
}

fn write_spec(dir: &Path, spec: &Spec) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join("nvidia.yaml");
    fs::write(&path, spec.to_string(Format::Yaml, &path).unwrap()).unwrap();
    path
}

fn err_line(r: Result<Option<nvbind_cdi::Resolution>, ResolveFailure>) -> String {
    match r {
        Ok(r) => panic!("expected a failure, got {r:?}"),
        Err(e) => {
            let mut s = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                s.push_str(": ");
                s.push_str(&c.to_string());
                cur = c.source();
            }
            assert!(!s.contains('\n'), "one line: {s}");
            s
        }
    }
}

#[test]
fn a_spec_is_generated_at_create_time_when_none_is_on_disk_and_matches_the_file_one() {
    let host = FakeHost::h100x8();
    let empty = host.path("/etc/cdi-empty");
    fs::create_dir_all(&empty).unwrap();
    let jit = resolver(&empty, &host, StalePolicy::Fail)
        .resolve(&config("0,5"))
        .unwrap()
        .unwrap();
    assert_eq!(jit.generated, ["nvidia.com/gpu"]);
    let names: Vec<String> = jit.names.iter().map(|n| n.to_string()).collect();
    assert_eq!(names, ["nvidia.com/gpu=0", "nvidia.com/gpu=5"]);
    let nodes: Vec<&str> = jit
        .edits
        .device_nodes
        .iter()
        .map(|n| n.path.as_str())
        .collect();
    // GPU index 5 is minor 4 on this host.
    assert!(
        nodes.contains(&"/dev/nvidia0") && nodes.contains(&"/dev/nvidia4"),
        "{nodes:?}"
    );
    assert!(!nodes.contains(&"/dev/nvidia5"), "{nodes:?}");
    assert!(nodes.contains(&"/dev/nvidiactl"), "{nodes:?}");

    // The same devices from the spec `nvbind cdi generate` writes give the same edits.
    let dir = host.path("/etc/cdi");
    write_spec(&dir, &generated(&host));
    let file = resolver(&dir, &host, StalePolicy::Fail)
        .resolve(&config("0,5"))
        .unwrap()
        .unwrap();
    assert!(file.generated.is_empty());
    assert_eq!(file.edits, jit.edits);
}

#[test]
fn no_driver_and_no_spec_is_one_line_saying_both() {
    let host = FakeHost::empty();
    let dir = host.path("/cdi");
    fs::create_dir_all(&dir).unwrap();
    let line = err_line(resolver(&dir, &host, StalePolicy::Fail).resolve(&config("all")));
    assert!(
        line.contains("unresolvable CDI device nvidia.com/gpu=all"),
        "{line}"
    );
    assert!(
        line.contains("no spec for nvidia.com/gpu could be generated"),
        "{line}"
    );
    assert!(line.contains("no NVIDIA GPU driver found"), "{line}");
}

#[test]
fn a_declared_major_the_host_no_longer_has_is_stale() {
    let host = FakeHost::h100x8();
    let mut spec = generated(&host);
    // As nvidia-ctk 1.19 writes it: type and numbers in the spec.
    for n in &mut spec.container_edits.device_nodes {
        if n.path == "/dev/nvidia-uvm" {
            n.node_type = Some("c".into());
            n.major = Some(UVM_MAJOR as i64);
            n.minor = Some(0);
        }
    }
    let dir = host.path("/etc/cdi");
    let path = write_spec(&dir, &spec);
    let r = resolver(&dir, &host, StalePolicy::Fail);
    assert!(r.resolve(&config("0")).unwrap().is_some());

    // The driver came back with another major (a reboot after an upgrade).
    host.remove("/dev/nvidia-uvm");
    host.char_dev("/dev/nvidia-uvm", UVM_MAJOR - 1, 0);
    let line = err_line(r.resolve(&config("0")));
    assert_eq!(
        line,
        format!(
            "CDI spec {p} is stale: containerEdits: device node /dev/nvidia-uvm is c 510:0 in the spec but c 509:0 on the host; regenerate it with `nvbind cdi generate --vendor nvidia --output {p}` (or set NVBIND_CDI_STALE_SPECS=regenerate to have it regenerated in memory at create time)",
            p = path.display()
        )
    );

    // Without the host node, /proc/devices says what the driver has now.
    host.remove("/dev/nvidia-uvm");
    host.file(
        "/proc/devices",
        "Character devices:\n195 nvidia-frontend\n509 nvidia-uvm\n\nBlock devices:\n  8 sd\n",
    );
    let line = err_line(r.resolve(&config("0")));
    assert!(
        line.contains("device node /dev/nvidia-uvm has major 510 in the spec but the nvidia-uvm driver now has major 509 (/proc/devices)"),
        "{line}"
    );
    // ... and a node the driver still has that major for needs no host node.
    host.file("/proc/devices", "Character devices:\n510 nvidia-uvm\n");
    assert!(r.resolve(&config("0")).unwrap().is_some());
}

#[test]
fn a_missing_library_or_node_is_stale() {
    let host = FakeHost::h100x8();
    let dir = host.path("/etc/cdi");
    let path = write_spec(&dir, &generated(&host));
    let r = resolver(&dir, &host, StalePolicy::Fail);
    host.remove(&format!("{LIBDIR}/libcuda.so.{DRIVER}"));
    let line = err_line(r.resolve(&config("1")));
    assert!(
        line.starts_with(&format!(
            "CDI spec {} is stale: containerEdits: mount {LIBDIR}/libcuda.so.{DRIVER}: ",
            path.display()
        )),
        "{line}"
    );
    assert!(
        line.contains("does not exist on the host; regenerate it with `nvbind cdi generate"),
        "{line}"
    );

    let host = FakeHost::h100x8();
    let dir = host.path("/etc/cdi");
    write_spec(&dir, &generated(&host));
    host.remove("/dev/nvidia2");
    let line = err_line(resolver(&dir, &host, StalePolicy::Fail).resolve(&config("2")));
    assert!(
        line.contains("is stale: device nvidia.com/gpu=2: device node /dev/nvidia2: "),
        "{line}"
    );
    assert!(
        line.contains("/dev/nvidia2 does not exist on the host"),
        "{line}"
    );
    // Other GPUs are not affected.
    assert!(resolver(&dir, &host, StalePolicy::Fail)
        .resolve(&config("1"))
        .unwrap()
        .is_some());
}

#[test]
fn a_gpu_gone_from_the_driver_is_stale_even_when_its_node_remains() {
    let host = FakeHost::h100x8();
    let dir = host.path("/etc/cdi");
    write_spec(&dir, &generated(&host));
    // The GPU at 0000:5d:00.0 (index 3, minor 3) fell off the bus; nvidia-modprobe's node stays.
    host.remove("/proc/driver/nvidia/gpus/0000:5d:00.0");
    let line = err_line(resolver(&dir, &host, StalePolicy::Fail).resolve(&config("3")));
    assert!(
        line.contains("device nvidia.com/gpu=3: /dev/nvidia3: no GPU with device minor 3 in /proc/driver/nvidia/gpus any more"),
        "{line}"
    );
    let line = err_line(resolver(&dir, &host, StalePolicy::Fail).resolve(&config("all")));
    assert!(
        line.contains("device nvidia.com/gpu=all: /dev/nvidia3"),
        "{line}"
    );
}

#[test]
fn a_uuid_now_on_another_minor_is_stale() {
    let host = FakeHost::h100x8();
    let inv = NvidiaDiscoverer {
        nvml: NvmlSource::Disabled,
    }
    .discover(&host.roots())
    .unwrap();
    let spec = generate::spec_for(&inv, &options(NameStrategy::Uuid), &mut Vec::new()).unwrap();
    let dir = host.path("/etc/cdi");
    write_spec(&dir, &spec);
    let uuid = inv.gpus[1].uuid.clone().unwrap();
    assert!(resolver(&dir, &host, StalePolicy::Fail)
        .resolve(&config(&uuid))
        .unwrap()
        .is_some());
    // After a reboot the GPUs were probed in another order: this one is minor 7 now.
    let info = host.path("/proc/driver/nvidia/gpus/0000:2a:00.0/information");
    let text = fs::read_to_string(&info).unwrap();
    fs::write(
        &info,
        text.replace("Device Minor: \t 1", "Device Minor: \t 7")
            .replace("Device Minor:\t 1", "Device Minor:\t 7"),
    )
    .unwrap();
    let text = fs::read_to_string(&info).unwrap();
    assert!(text.contains('7'), "fixture format changed: {text}");
    let line = err_line(resolver(&dir, &host, StalePolicy::Fail).resolve(&config(&uuid)));
    assert!(
        line.contains(&format!(
            "GPU {uuid} is /dev/nvidia1 in the spec but /dev/nvidia7 on the host"
        )),
        "{line}"
    );
}

#[test]
fn a_mig_device_whose_instance_is_gone_is_stale() {
    let host = FakeHost::a100x2_mig();
    let dir = host.path("/etc/cdi");
    write_spec(&dir, &generated(&host));
    let r = resolver(&dir, &host, StalePolicy::Fail);
    assert!(r.resolve(&config("0:1")).unwrap().is_some());
    // The GPU instance 2 was destroyed and the layout changed.
    host.remove("/proc/driver/nvidia/capabilities/gpu0/mig/gi2");
    let line = err_line(r.resolve(&config("0:1")));
    assert!(
        line.contains("device nvidia.com/gpu=0:1: /dev/nvidia-caps/nvidia-cap"),
        "{line}"
    );
    assert!(line.contains("MIG capability gpu0/gi2/"), "{line}");
    assert!(
        line.contains("no longer exists (MIG layout changed)"),
        "{line}"
    );
    // MIG device 0:0 is still there.
    assert!(r.resolve(&config("0:0")).unwrap().is_some());
}

#[test]
fn with_regenerate_a_stale_spec_is_replaced_in_memory_with_a_warning() {
    let host = FakeHost::h100x8();
    let dir = host.path("/etc/cdi");
    let path = write_spec(&dir, &generated(&host));
    // GPU 3 is gone; the file still lists it and the others.
    host.remove("/proc/driver/nvidia/gpus/0000:5d:00.0");
    host.remove("/dev/nvidia3");
    let r = resolver(&dir, &host, StalePolicy::Regenerate);
    // GPU 0's entries still describe the host: the file is used.
    let res = r.resolve(&config("0")).unwrap().unwrap();
    assert!(
        res.generated.is_empty() && res.warnings.is_empty(),
        "{res:?}"
    );
    let res = r.resolve(&config("all")).unwrap().unwrap();
    assert_eq!(res.generated, ["nvidia.com/gpu"]);
    assert_eq!(res.warnings.len(), 1, "{:?}", res.warnings);
    assert!(
        res.warnings[0].starts_with(&format!(
            "CDI spec {} is stale: device nvidia.com/gpu=all",
            path.display()
        )),
        "{}",
        res.warnings[0]
    );
    assert!(res.warnings[0].ends_with("; regenerated in memory from the host"));
    let nodes: Vec<&str> = res
        .edits
        .device_nodes
        .iter()
        .map(|n| n.path.as_str())
        .collect();
    assert!(!nodes.contains(&"/dev/nvidia3"), "{nodes:?}");
    assert!(nodes.contains(&"/dev/nvidia7"), "{nodes:?}");
    // Regenerated, the host has 7 GPUs: indices 0-6, as `nvbind cdi generate` numbers them.
    let line = err_line(r.resolve(&config("3,7")));
    assert!(
        line.starts_with("unresolvable CDI device nvidia.com/gpu=7"),
        "{line}"
    );
}

#[test]
fn a_spec_on_disk_for_the_kind_is_used_as_is_and_nothing_is_discovered() {
    // A host without any driver: the spec's nodes are its own fake ones.
    let host = FakeHost::empty();
    host.char_dev("/dev/gpu0", 195, 0);
    let dir = host.path("/cdi");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("x.yaml"),
        format!(
            "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes:\n    - {{path: /dev/nvidia0, hostPath: {}}}\n",
            host.path("/dev/gpu0").display()
        ),
    )
    .unwrap();
    let r = resolver(&dir, &host, StalePolicy::Fail);
    let res = r.resolve(&config("0")).unwrap().unwrap();
    assert!(res.generated.is_empty());
    assert_eq!(res.edits.device_nodes.len(), 1);
    let line = err_line(r.resolve(&config("1")));
    assert!(
        line.starts_with("unresolvable CDI device nvidia.com/gpu=1 (known kinds: nvidia.com/gpu"),
        "{line}"
    );
    // Nothing requested, nothing resolved.
    assert!(r.resolve(&config("void")).unwrap().is_none());
    let _ = HostRoots::default();
}

#[test]
fn on_wsl2_the_spec_made_at_create_time_is_the_dxg_one() {
    let host = FakeHost::wsl();
    let empty = host.path("/etc/cdi-empty");
    fs::create_dir_all(&empty).unwrap();
    let r = resolver(&empty, &host, StalePolicy::Fail);
    let res = r.resolve(&config("all")).unwrap().unwrap();
    assert_eq!(res.generated, ["nvidia.com/gpu"]);
    let nodes: Vec<&str> = res
        .edits
        .device_nodes
        .iter()
        .map(|n| n.path.as_str())
        .collect();
    assert_eq!(nodes, ["/dev/dxg"]);
    assert!(res
        .edits
        .mounts
        .iter()
        .any(|m| m.container_path.ends_with("/libcuda.so.1.1")));
    // WSL2 has no per-GPU device: an index is one line saying what exists.
    let line = err_line(r.resolve(&config("0")));
    assert!(
        line.starts_with("unresolvable CDI device nvidia.com/gpu=0 (known kinds: nvidia.com/gpu"),
        "{line}"
    );
}

/// Fails every lstat: what a resolution of a spec file must not need when it applies its
/// edits, since the live check has just lstat'ed every node the request uses.
struct NoSecondLstat;

impl nvbind_cdi::apply::HostDevices for NoSecondLstat {
    fn stat(&self, path: &Path) -> std::io::Result<nvbind_cdi::apply::HostNode> {
        Err(std::io::Error::other(format!(
            "second lstat of {}",
            path.display()
        )))
    }
}

#[test]
fn nodes_the_live_check_saw_are_applied_without_a_second_lstat() {
    let host = FakeHost::h100x8();
    let dir = host.path("/etc/cdi");
    write_spec(&dir, &generated(&host));
    let r = resolver(&dir, &host, StalePolicy::Fail)
        .resolve(&config("all"))
        .unwrap()
        .unwrap();
    assert!(
        r.edits.device_nodes.iter().all(|n| n.major.is_none()),
        "the generated spec leaves type and numbers to the host: {:?}",
        r.edits.device_nodes
    );
    let base = config("all");
    let remembered = r.apply(&base, &NoSecondLstat).unwrap();
    // The same as lstat-ing each node now (and the annotation apply adds).
    let mut now = nvbind_cdi::apply::apply(&r.edits, &base, &nvbind_cdi::apply::RealHost).unwrap();
    now.annotations_mut()
        .get_or_insert_with(Default::default)
        .insert(
            nvbind_cdi::requests::INJECTED_ANNOTATION.to_string(),
            r.names_line(),
        );
    assert_eq!(remembered, now);
    let ctl = remembered
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .and_then(|d| d.iter().find(|d| d.path() == Path::new("/dev/nvidiactl")))
        .expect("/dev/nvidiactl injected");
    assert_eq!((ctl.major(), ctl.minor()), (195, 255));
}
