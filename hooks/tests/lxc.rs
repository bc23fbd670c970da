//! LXC (Debian's lxc 5.0) with `nvbind-hook lxc` as `lxc.hook.mount`: a privileged busybox
//! container started with `lxc-execute` gets the requested GPU nodes, the driver libraries
//! and its ld.so.cache; the device cgroup lines printed by `nvbind-hook lxc-config` make the
//! nodes usable, and without them the hook says which lines are missing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

const PROBE: &str =
    "test -c /dev/nvidia1 && echo has-nvidia1; test -e /dev/nvidia0 || echo no-nvidia0; \
    cat /dev/nvidia1 2>&1 | head -n1; /bin/cudaprobe 2>&1; true";

fn lxc_config(dir: &Path, rootfs: &Path, hook_line: &str, extra: &str) {
    let text = format!(
        "lxc.rootfs.path = dir:{rootfs}\n\
         lxc.uts.name = gpu\n\
         lxc.net.0.type = empty\n\
         lxc.apparmor.profile = unconfined\n\
         lxc.autodev = 1\n\
         lxc.mount.auto = proc:mixed sys:ro cgroup:mixed\n\
         lxc.cgroup.devices.deny = a\n\
         lxc.cgroup.devices.allow = c 1:* rwm\n\
         lxc.cgroup.devices.allow = c 5:* rwm\n\
         lxc.cgroup.devices.allow = c 136:* rwm\n\
         lxc.hook.mount = {hook_line}\n\
         {extra}",
        rootfs = rootfs.display()
    );
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("config"), text).unwrap();
}

fn lxc_execute(lxcpath: &Path, name: &str, log: &Path) -> Output {
    run(Command::new("timeout")
        .arg("60")
        .arg("lxc-execute")
        .arg("-P")
        .arg(lxcpath)
        .args(["-n", name, "-l", "DEBUG", "-o"])
        .arg(log)
        .args(["--", "sh", "-c", PROBE])
        .stdin(Stdio::null()))
}

#[test]
fn lxc_mount_hook_injects_gpus() {
    require_root();
    if !have("lxc-execute") || !have("gcc") {
        return;
    }
    let tmp = tempdir();
    let dir = tmp.path();
    let host = FakeHost::new(&dir.join("host"), 2);
    let specs = host.write_spec(&dir.join("cdi"), &hook_bin());
    let lxcpath = dir.join("lxc");
    let cdir = lxcpath.join("gpu");
    let rootfs = cdir.join("rootfs");
    busybox_rootfs(&rootfs, &host);
    let hook_line = format!(
        "{} lxc --cdi-spec-dir {}",
        hook_bin().display(),
        specs.display()
    );

    // 1. GPUs requested through lxc.environment, no device cgroup lines: the nodes and
    //    libraries are there, the cgroup denies opening, and the hook says what to add.
    lxc_config(
        &cdir,
        &rootfs,
        &hook_line,
        "lxc.environment = NVIDIA_VISIBLE_DEVICES=1\n",
    );
    let log = dir.join("lxc1.log");
    let out = lxc_execute(&lxcpath, "gpu", &log);
    let so = String::from_utf8_lossy(&out.stdout);
    let logtext = fs::read_to_string(&log).unwrap_or_default();
    assert!(out.status.success(), "{so}\n{logtext}");
    assert!(
        so.contains("has-nvidia1") && so.contains("no-nvidia0"),
        "{so}"
    );
    assert!(so.contains("Operation not permitted"), "{so}");
    assert!(so.contains("cuInit=42"), "{so}\n{logtext}");
    assert!(
        logtext.contains("lxc.cgroup.devices.allow = c 195:1 rwm"),
        "{logtext}"
    );

    // 2. With the lines lxc-config prints (v1 keys on this hybrid host, found by itself;
    //    --cgroup-v1 makes it explicit) and the
    //    devices on the hook line instead of the environment.
    let lines = ok(Command::new(hook_bin()).args([
        "lxc-config",
        "--cgroup-v1",
        "--cdi-spec-dir",
        specs.to_str().unwrap(),
        "--device",
        "1",
    ]));
    assert!(
        lines.contains("lxc.cgroup.devices.allow = c 195:1 rwm"),
        "{lines}"
    );
    assert!(
        lines.contains("lxc.cgroup.devices.allow = c 195:255 rwm"),
        "{lines}"
    );
    assert!(
        lines.contains("lxc.environment = NVIDIA_VISIBLE_DEVICES=1"),
        "{lines}"
    );
    let allow: String = lines
        .lines()
        .filter(|l| l.starts_with("lxc.cgroup"))
        .map(|l| format!("{l}\n"))
        .collect();
    lxc_config(
        &cdir,
        &rootfs,
        &format!("{hook_line} --device nvidia.com/gpu=1"),
        &allow,
    );
    let log = dir.join("lxc2.log");
    let out = lxc_execute(&lxcpath, "gpu", &log);
    let so = String::from_utf8_lossy(&out.stdout);
    let logtext = fs::read_to_string(&log).unwrap_or_default();
    assert!(out.status.success(), "{so}\n{logtext}");
    assert!(so.contains("has-nvidia1"), "{so}");
    assert!(so.contains("No such device or address"), "{so}");
    assert!(
        !logtext.contains("does not allow these devices"),
        "{logtext}"
    );

    // 3. A GPU that does not exist: the hook fails and LXC does not start the container.
    lxc_config(&cdir, &rootfs, &format!("{hook_line} --device 9"), &allow);
    let log = dir.join("lxc3.log");
    let out = lxc_execute(&lxcpath, "gpu", &log);
    let logtext = fs::read_to_string(&log).unwrap_or_default();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("has-nvidia"));
    assert!(
        logtext.contains("unresolvable CDI device nvidia.com/gpu=9"),
        "{logtext}"
    );
    assert!(host_mounts_containing(dir).is_empty());
}

/// Restores /etc/subuid and /etc/subgid on drop.
struct SubIds(Vec<(PathBuf, Option<String>)>);

impl SubIds {
    /// Makes sure root may map 100000-165535 (LXC uses newuidmap when it is installed).
    fn ensure() -> SubIds {
        let mut saved = Vec::new();
        for f in ["/etc/subuid", "/etc/subgid"] {
            let p = PathBuf::from(f);
            let old = fs::read_to_string(&p).ok();
            let text = old.clone().unwrap_or_default();
            if !text.lines().any(|l| l.starts_with("root:100000:65536")) {
                fs::write(&p, format!("{text}root:100000:65536\n")).unwrap();
            }
            saved.push((p, old));
        }
        SubIds(saved)
    }
}

impl Drop for SubIds {
    fn drop(&mut self) {
        for (p, old) in &self.0 {
            match old {
                Some(t) => {
                    let _ = fs::write(p, t);
                }
                None => {
                    let _ = fs::remove_file(p);
                }
            }
        }
    }
}

/// An unprivileged (user-namespaced) container, as Proxmox creates by default: the hook runs
/// as the container's root, may not mknod, so the host nodes are bind-mounted; the spec
/// files, owned by host root, show up as the overflow uid and are still read.
#[test]
fn lxc_mount_hook_in_an_unprivileged_container() {
    require_root();
    if !have("lxc-start") || !have("gcc") {
        return;
    }
    let _ids = SubIds::ensure();
    let tmp = tempdir();
    let dir = tmp.path();
    let host = FakeHost::new(&dir.join("host"), 2);
    let specs = host.write_spec(&dir.join("cdi"), &hook_bin());
    let lxcpath = dir.join("lxc");
    let cdir = lxcpath.join("ugpu");
    let rootfs = cdir.join("rootfs");
    busybox_rootfs(&rootfs, &host);
    fs::write(
        rootfs.join("probe.sh"),
        format!("#!/bin/sh\nexec >/tmp/out 2>&1\n{PROBE}\n"),
    )
    .unwrap();
    fs::set_permissions(
        rootfs.join("probe.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    ok(Command::new("chown")
        .args(["-R", "-h", "100000:100000"])
        .arg(&rootfs));
    let hook_line = format!(
        "{} lxc --cdi-spec-dir {} --device 1",
        hook_bin().display(),
        specs.display()
    );
    lxc_config(
        &cdir,
        &rootfs,
        &hook_line,
        "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n\
         lxc.cgroup.devices.allow = c 195:* rwm\nlxc.init.cmd = /probe.sh\n",
    );
    let log = dir.join("ulxc.log");
    let out = run(Command::new("timeout")
        .arg("60")
        .arg("lxc-start")
        .arg("-P")
        .arg(&lxcpath)
        .args(["-n", "ugpu", "-F", "-l", "DEBUG", "-o"])
        .arg(&log)
        .stdin(Stdio::null()));
    let logtext = fs::read_to_string(&log).unwrap_or_default();
    let so = fs::read_to_string(rootfs.join("tmp/out")).unwrap_or_default();
    assert!(out.status.success(), "{so}\n{logtext}");
    assert!(
        so.contains("has-nvidia1") && so.contains("no-nvidia0"),
        "{so}"
    );
    // The bind-mounted host node reaches the (absent) driver: ENXIO, not EPERM.
    assert!(so.contains("No such device or address"), "{so}");
    assert!(so.contains("cuInit=42"), "{so}\n{logtext}");
    assert!(host_mounts_containing(dir).is_empty());
}
