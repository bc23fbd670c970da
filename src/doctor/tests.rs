//! Each check on fake host trees, passing and failing. The trees are plain directories (files
//! for /proc, /sys, /etc; device nodes only where a test needs a real one and runs as root).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use nvbind_cdi::discover::amd::AmdDiscoverer;
use nvbind_cdi::discover::intel::IntelDiscoverer;
use nvbind_cdi::discover::nvidia::{NvidiaDiscoverer, NvmlSource};
use nvbind_cdi::discover::{Discover, HostRoots, Inventory, Method};

use super::*;
use crate::seal::Sealed;

struct FakeHost {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    criu: Option<String>,
    bpf: Result<(), String>,
    seal: Result<Sealed, String>,
    /// Discovery result that pretends NVML answered (None: discover the tree, no NVML).
    nvml_inventory: Option<Inventory>,
}

impl FakeHost {
    fn new() -> FakeHost {
        FakeHost {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
            criu: None,
            bpf: Ok(()),
            seal: Ok(Sealed::Overlay),
            nvml_inventory: None,
        }
    }

    fn write(&self, abs: &str, text: &str) -> &Self {
        let p = self.path(abs);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        self
    }

    fn exe(&self, abs: &str) -> &Self {
        self.write(abs, "#!/bin/sh\n");
        fs::set_permissions(self.path(abs), fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    fn mkdir(&self, abs: &str) -> &Self {
        fs::create_dir_all(self.path(abs)).unwrap();
        self
    }

    fn get<'a>(checks: &'a [Check], id: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no check {id} in {checks:#?}"))
    }
}

impl Host for FakeHost {
    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn env(&self, key: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
    fn criu_version(&self, _criu: &str) -> Option<String> {
        self.criu.clone()
    }
    fn bpf_device_programs(&self) -> Result<(), String> {
        self.bpf.clone()
    }
    fn exe_protection(&self) -> Result<Sealed, String> {
        self.seal.clone()
    }
    fn discover(&self) -> Inventory {
        if let Some(inv) = &self.nvml_inventory {
            return Inventory {
                found: inv.found.clone(),
                absent: Vec::new(),
            };
        }
        let nvidia = NvidiaDiscoverer {
            nvml: NvmlSource::Disabled,
        };
        let all: [&dyn Discover; 3] = [&nvidia, &AmdDiscoverer, &IntelDiscoverer];
        Inventory::collect(&HostRoots::under(self.root()), &all)
    }
}

const V2_MOUNTS: &str = "sysfs /sys sysfs rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n";
const HYBRID_MOUNTS: &str = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
    cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
    cgroup /sys/fs/cgroup/devices cgroup rw,devices 0 0\n";
const V1_MOUNTS: &str = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
    cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n";

#[test]
fn cgroup_modes_and_driver() {
    let h = FakeHost::new();
    h.write("/proc/self/mounts", V2_MOUNTS)
        .mkdir("/run/systemd/system");
    let c = system::cgroups(&h);
    assert_eq!(c.status, Status::Ok, "{c:?}");
    assert!(
        c.summary.contains("v2") && c.summary.contains("systemd"),
        "{c:?}"
    );
    h.write("/proc/self/mounts", HYBRID_MOUNTS);
    let c = system::cgroups(&h);
    assert_eq!(c.status, Status::Warn);
    assert!(c.summary.contains("hybrid") && c.remedy.unwrap().contains("unified_cgroup_hierarchy"));
    h.write("/proc/self/mounts", V1_MOUNTS);
    assert_eq!(system::cgroups(&h).status, Status::Warn);
    h.write("/proc/self/mounts", "proc /proc proc rw 0 0\n");
    assert_eq!(system::cgroups(&h).status, Status::Fail);
}

#[test]
fn device_filter_needs_ebpf_on_v2_and_the_devices_controller_on_v1() {
    let mut h = FakeHost::new();
    h.write("/proc/self/mounts", V2_MOUNTS);
    assert_eq!(system::device_filter(&h).status, Status::Ok);
    h.bpf = Err("Operation not permitted (os error 1)".into());
    let c = system::device_filter(&h);
    assert_eq!(c.status, Status::Fail);
    assert!(c.summary.contains("Operation not permitted"), "{c:?}");
    h.write("/proc/self/mounts", HYBRID_MOUNTS);
    assert_eq!(system::device_filter(&h).status, Status::Fail);
    h.write("/sys/fs/cgroup/devices/devices.allow", "");
    assert_eq!(system::device_filter(&h).status, Status::Ok);
}

#[test]
fn seccomp_needs_the_filter_actions() {
    let h = FakeHost::new();
    assert_eq!(system::seccomp(&h).status, Status::Fail);
    h.write("/proc/self/status", "Name:\tnvbind\nSeccomp:\t0\n")
        .write(
            "/proc/sys/kernel/seccomp/actions_avail",
            "kill_process kill_thread trap errno user_notif trace log allow\n",
        );
    assert_eq!(system::seccomp(&h).status, Status::Ok);
    h.write(
        "/proc/sys/kernel/seccomp/actions_avail",
        "kill_thread allow\n",
    );
    let c = system::seccomp(&h);
    assert_eq!(c.status, Status::Fail);
    assert!(c.summary.contains("kill_process, errno"), "{c:?}");
}

#[test]
fn user_namespaces_for_rootless() {
    let h = FakeHost::new();
    h.write("/proc/sys/user/max_user_namespaces", "0\n");
    assert_eq!(system::user_namespaces(&h).status, Status::Warn);
    h.write("/proc/sys/user/max_user_namespaces", "96000\n");
    h.write("/proc/sys/kernel/unprivileged_userns_clone", "0\n");
    let c = system::user_namespaces(&h);
    assert!(c.status == Status::Warn && c.summary.contains("unprivileged_userns_clone"));
    h.write("/proc/sys/kernel/unprivileged_userns_clone", "1\n");
    h.write(
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        "1\n",
    );
    assert!(system::user_namespaces(&h).summary.contains("AppArmor"));
    h.write(
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        "0\n",
    );
    let c = system::user_namespaces(&h);
    assert!(c.status == Status::Warn && c.remedy.unwrap().contains("uidmap"));
    h.exe("/usr/bin/newuidmap");
    assert_eq!(system::user_namespaces(&h).status, Status::Ok);
}

#[test]
fn criu_present_and_recent_enough() {
    let mut h = FakeHost::new();
    assert_eq!(system::criu(&h).status, Status::Warn);
    h.exe("/usr/sbin/criu")
        .exe("/usr/sbin/iptables-restore")
        .write("/proc/sys/kernel/osrelease", "6.18.0-1-amd64\n");
    h.criu = Some("Version: 3.17.1\n".into());
    let c = system::criu(&h);
    assert_eq!(c.status, Status::Warn);
    assert!(c.summary.contains("vvar_vclock"), "{c:?}");
    h.write("/proc/sys/kernel/osrelease", "6.1.0-28-amd64\n");
    assert_eq!(system::criu(&h).status, Status::Ok);
    h.criu = Some("Version: 3.11\n".into());
    assert!(system::criu(&h).summary.contains("older than 3.15"));
    h.criu = Some("criu: error while loading shared libraries\n".into());
    assert!(system::criu(&h).summary.contains("does not run"));
    h.criu = Some("Version: 4.1.1\n".into());
    h.write("/proc/sys/kernel/osrelease", "6.18.0\n");
    let c = system::criu(&h);
    assert_eq!(c.status, Status::Ok);
    assert!(c.summary.contains("4.1.1 (/usr/sbin/criu)"), "{c:?}");
    fs::remove_file(h.path("/usr/sbin/iptables-restore")).unwrap();
    let c = system::criu(&h);
    assert_eq!(c.status, Status::Warn);
    assert!(
        c.summary.contains("iptables-restore is not installed"),
        "{c:?}"
    );
    assert_eq!(c.remedy.as_deref(), Some("apt-get install iptables"));
    h.exe("/usr/sbin/iptables-restore");
    // NVBIND_CRIU wins over PATH, as for checkpoint.
    h.env
        .push(("NVBIND_CRIU".into(), "/opt/criu/bin/criu".into()));
    assert!(system::criu(&h).summary.contains("/opt/criu/bin/criu"));
}

#[test]
fn exe_protection_kinds() {
    let mut h = FakeHost::new();
    assert_eq!(system::exe_protection(&h).status, Status::Ok);
    h.seal = Ok(Sealed::ReadOnlyMount);
    let c = system::exe_protection(&h);
    assert!(
        c.status == Status::Ok && c.summary.contains("read-only mount"),
        "{c:?}"
    );
    h.seal = Ok(Sealed::Memfd);
    assert_eq!(system::exe_protection(&h).status, Status::Ok);
    h.seal = Ok(Sealed::Tmpfile);
    assert_eq!(system::exe_protection(&h).status, Status::Warn);
    h.seal = Err("cannot make a sealed copy".into());
    assert_eq!(system::exe_protection(&h).status, Status::Fail);
    h.seal = Ok(Sealed::Overlay);
    h.env.push(("NVBIND_UNSAFE_NO_SEAL".into(), "1".into()));
    let c = system::exe_protection(&h);
    assert!(c.status == Status::Warn && c.summary.contains("CVE-2019-5736"));
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn mknod(h: &FakeHost, abs: &str, major: u64, minor: u64) {
    h.mkdir("/dev");
    nix::sys::stat::mknod(
        &h.path(abs),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(major, minor),
    )
    .unwrap();
}

/// A fake NVIDIA host under the tree: the driver's /proc entries and a GPU (its node needs
/// mknod: callers run as root).
fn fake_nvidia(h: &FakeHost) {
    mknod(h, "/dev/nvidia0", 195, 0);
    h.write(
        "/proc/driver/nvidia/version",
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\n",
    )
    .write(
        "/proc/driver/nvidia/gpus/0000:01:00.0/information",
        "Model: \t\t NVIDIA Fake\nIRQ:   \t\t 42\nGPU UUID: \t GPU-11111111-2222-3333-4444-555555555555\nDevice Minor: \t 0\nBus Location: \t 0000:01:00.0\n",
    );
}

#[test]
fn gpu_driver_and_nvml() {
    if !is_root() {
        return;
    }
    let mut h = FakeHost::new();
    let c = gpu::driver(&h.discover(), &h);
    assert_eq!(c.status, Status::Warn);
    assert!(c.summary.contains("no GPU driver"), "{c:?}");
    fake_nvidia(&h);
    let inv = h.discover();
    let c = gpu::driver(&inv, &h);
    assert_eq!(c.status, Status::Warn, "{c:?}");
    assert!(
        c.summary.contains("NVML") && c.summary.contains("550.54.14"),
        "{c:?}"
    );
    // The same host with NVML answering.
    let mut inv = inv;
    inv.found[0].method = Method::Nvml;
    h.nvml_inventory = Some(Inventory {
        found: inv.found.clone(),
        absent: Vec::new(),
    });
    let c = gpu::driver(&h.discover(), &h);
    assert_eq!(c.status, Status::Ok, "{c:?}");
    assert!(
        c.summary.contains("NVIDIA 550.54.14: 1 GPU(s) via NVML"),
        "{c:?}"
    );
}

fn spec(dev: &str, extra: &str) -> String {
    format!(
        "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    \
         deviceNodes: [{{path: /dev/nvidia0, hostPath: {dev}{extra}}}]\n"
    )
}

#[test]
fn cdi_specs_valid_trusted_and_fresh() {
    if !is_root() {
        return;
    }
    let h = FakeHost::new();
    // No spec and no GPU: fine. No spec with a GPU: generate one.
    let checks = gpu::cdi_specs(&h, &h.discover());
    assert_eq!(checks[0].status, Status::Ok, "{checks:?}");
    fake_nvidia(&h);
    let checks = gpu::cdi_specs(&h, &h.discover());
    assert_eq!(checks[0].status, Status::Warn);
    assert!(checks[0].remedy.as_ref().unwrap().contains("cdi generate"));

    // A spec whose node is gone: valid, but stale.
    // Host paths in a spec are absolute on the real host, so they point into the tree.
    let nv7 = h.path("/dev/nvidia7").display().to_string();
    h.write("/etc/cdi/nvidia.yaml", &spec(&nv7, ""));
    let checks = gpu::cdi_specs(&h, &h.discover());
    assert_eq!(
        FakeHost::get(&checks, "cdi-specs").status,
        Status::Ok,
        "{checks:?}"
    );
    let fresh = FakeHost::get(&checks, "cdi-fresh");
    assert_eq!(fresh.status, Status::Fail, "{fresh:?}");
    assert!(
        fresh
            .summary
            .contains("/etc/cdi/nvidia.yaml: device nvidia.com/gpu=0: device node /dev/nvidia0")
            && fresh.summary.contains("does not exist on the host"),
        "{fresh:?}"
    );

    // A regular file where the node should be.
    h.write("/dev/nvidia7", "");
    let checks = gpu::cdi_specs(&h, &h.discover());
    assert!(FakeHost::get(&checks, "cdi-fresh")
        .summary
        .contains("not a device node"));

    // Not parseable: the file is named with the reason.
    h.write("/etc/cdi/broken.yaml", "cdiVersion: [\n");
    let checks = gpu::cdi_specs(&h, &h.discover());
    let c = FakeHost::get(&checks, "cdi-specs");
    assert_eq!(c.status, Status::Fail);
    assert!(c.summary.contains("/etc/cdi/broken.yaml"), "{c:?}");
    fs::remove_file(h.path("/etc/cdi/broken.yaml")).unwrap();

    // Writable by others: untrusted.
    fs::set_permissions(
        h.path("/etc/cdi/nvidia.yaml"),
        fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let checks = gpu::cdi_specs(&h, &h.discover());
    let c = FakeHost::get(&checks, "cdi-specs");
    assert_eq!(c.status, Status::Fail, "{c:?}");
    assert!(c.summary.contains("nvidia.yaml"), "{c:?}");
}

/// Device numbers need mknod (root); the stale major is what a reboot does to nvidia-uvm.
#[test]
fn cdi_fresh_compares_device_numbers() {
    if !is_root() {
        return;
    }
    let h = FakeHost::new();
    mknod(&h, "/dev/nvidia-uvm", 509, 0);
    let uvm = h.path("/dev/nvidia-uvm").display().to_string();
    h.write(
        "/etc/cdi/nvidia.yaml",
        &spec(&uvm, ", type: c, major: 509, minor: 0"),
    );
    let checks = gpu::cdi_specs(&h, &h.discover());
    assert_eq!(
        FakeHost::get(&checks, "cdi-fresh").status,
        Status::Ok,
        "{checks:?}"
    );
    h.write(
        "/etc/cdi/nvidia.yaml",
        &spec(&uvm, ", type: c, major: 510, minor: 0"),
    );
    let checks = gpu::cdi_specs(&h, &h.discover());
    let c = FakeHost::get(&checks, "cdi-fresh");
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.summary
            .contains("is c 510:0 in the spec but c 509:0 on the host"),
        "{c:?}"
    );
}

#[test]
fn no_engine_is_one_clear_warning() {
    let h = FakeHost::new();
    let checks = engines::engines(&h);
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].id, "engines");
    assert_eq!(checks[0].status, Status::Warn);
    assert!(
        checks[0].summary.contains("no container engine"),
        "{checks:?}"
    );
}

#[test]
fn docker_registration_path_cdi_and_default() {
    let h = FakeHost::new();
    h.exe("/usr/sbin/dockerd");
    let c = &engines::engines(&h)[0];
    assert!(
        c.status == Status::Warn && c.remedy.as_deref() == Some("nvbind setup docker"),
        "{c:?}"
    );
    h.write(
        "/etc/docker/daemon.json",
        r#"{"runtimes": {"gpu": {"path": "/usr/bin/nvbind"}}, "default-runtime": "gpu"}"#,
    );
    let c = &engines::engines(&h)[0];
    assert_eq!(c.status, Status::Fail, "{c:?}");
    assert!(c.summary.contains("not an executable"), "{c:?}");
    h.exe("/usr/bin/nvbind");
    let c = &engines::engines(&h)[0];
    assert_eq!(c.status, Status::Warn, "{c:?}");
    assert!(c.summary.contains("default runtime gpu, CDI off"), "{c:?}");
    h.write(
        "/etc/docker/daemon.json",
        r#"{"runtimes": {"nvbind": {"path": "/usr/bin/nvbind"}}, "features": {"cdi": true}}"#,
    );
    let c = &engines::engines(&h)[0];
    assert_eq!(c.status, Status::Ok, "{c:?}");
    h.write("/etc/docker/daemon.json", "{\"runtimes\": ");
    let c = &engines::engines(&h)[0];
    assert!(
        c.status == Status::Fail && c.summary.contains("does not parse"),
        "{c:?}"
    );
}

#[test]
fn podman_layers_and_containerd_versions() {
    let h = FakeHost::new();
    h.exe("/usr/bin/podman")
        .exe("/usr/bin/containerd")
        .exe("/usr/bin/nvbind");
    let checks = engines::engines(&h);
    assert_eq!(checks.len(), 2);
    assert!(checks.iter().all(|c| c.status == Status::Warn));
    h.write(
        "/usr/share/containers/containers.conf",
        "[engine]\nruntime = \"runc\"\n",
    )
    .write(
        "/etc/containers/containers.conf.d/50-nvbind.conf",
        "[engine.runtimes]\nnvbind = [\"/usr/bin/nvbind\"]\n",
    )
    .write(
        "/etc/containerd/config.toml",
        "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nvbind]\n\
         runtime_type = \"io.containerd.runc.v2\"\n\
         [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nvbind.options]\n\
         BinaryName = \"/usr/bin/nvbind\"\n",
    );
    let checks = engines::engines(&h);
    let p = FakeHost::get(&checks, "engine.podman");
    assert_eq!(p.status, Status::Ok, "{p:?}");
    assert!(p.summary.contains("default runtime runc"), "{p:?}");
    let c = FakeHost::get(&checks, "engine.containerd");
    assert_eq!(c.status, Status::Ok, "{c:?}");
    assert!(c.summary.contains("CDI on"), "{c:?}");
    h.write(
        "/etc/containerd/config.toml",
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvbind.options]\n\
         BinaryName = \"/opt/gone/nvbind\"\n",
    );
    let c = engines::engines(&h)
        .into_iter()
        .find(|c| c.id == "engine.containerd")
        .unwrap();
    assert_eq!(c.status, Status::Fail, "{c:?}");
    h.write("/etc/containerd/config.toml", "version = \n");
    let c = engines::engines(&h)
        .into_iter()
        .find(|c| c.id == "engine.containerd")
        .unwrap();
    assert!(c.summary.contains("does not parse"), "{c:?}");
}

#[test]
fn docker_gpus_hook_link() {
    let h = FakeHost::new();
    let c = engines::docker_gpus_hook(&h);
    assert_eq!(c.status, Status::Warn, "{c:?}");
    h.exe("/usr/bin/nvbind-hook");
    assert_eq!(engines::docker_gpus_hook(&h).status, Status::Ok);
    h.exe("/usr/sbin/dockerd");
    let c = engines::docker_gpus_hook(&h);
    assert!(c.status == Status::Warn && c.remedy.unwrap().contains("install-docker-gpus-link"));
    h.mkdir("/usr/local/bin");
    std::os::unix::fs::symlink(
        "/usr/bin/nvbind-hook",
        h.path("/usr/local/bin/nvidia-container-runtime-hook"),
    )
    .unwrap();
    // An absolute link resolves on the real host, not under the tree: point it inside.
    fs::remove_file(h.path("/usr/local/bin/nvidia-container-runtime-hook")).unwrap();
    std::os::unix::fs::symlink(
        "../../bin/nvbind-hook",
        h.path("/usr/local/bin/nvidia-container-runtime-hook"),
    )
    .unwrap();
    let c = engines::docker_gpus_hook(&h);
    assert_eq!(c.status, Status::Ok, "{c:?}");
    assert!(c.summary.contains("uses nvbind-hook"), "{c:?}");
}

#[test]
fn report_text_json_and_exit_status() {
    let h = FakeHost::new();
    h.write("/proc/self/mounts", V2_MOUNTS);
    let checks = run(&h);
    // Without seccomp in the fake /proc the report fails; each check has a remedy unless ok.
    assert_eq!(worst(&checks), Status::Fail);
    assert!(checks
        .iter()
        .all(|c| (c.status == Status::Ok) == c.remedy.is_none()));
    let t = text(&checks);
    assert!(t.contains("[FAIL] seccomp"), "{t}");
    assert!(t.lines().last().unwrap().ends_with("failures"), "{t}");
    let j = json(&checks);
    assert_eq!(j["status"], "fail");
    assert!(j["checks"].as_array().unwrap().len() >= 10);
    let p: PathBuf = h.path("/proc/self/status");
    h.write("/proc/self/status", "Seccomp:\t0\n").write(
        "/proc/sys/kernel/seccomp/actions_avail",
        "kill_process errno allow\n",
    );
    assert!(p.exists());
    assert_eq!(worst(&run(&h)), Status::Warn);
}
