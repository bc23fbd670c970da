//! `nvbind setup lxc` on real LXC 5 containers with a fake GPU: the config it writes starts a
//! privileged and an unprivileged container whose GPU nodes are usable, and still usable after
//! nvidia-uvm's major changed between two starts (what a reboot does); a control container
//! with the major written into its config (what hand-written guides do) is denied the second
//! time. Bad inputs (unknown container, unparseable config, no permission) leave everything as
//! it was.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// The nvbind binary, built beside nvbind-hook (`cargo test --workspace` builds both).
fn nvbind_bin() -> PathBuf {
    let p = hook_bin().with_file_name("nvbind");
    assert!(
        p.is_file(),
        "{} is missing: cargo build -p nvbind first",
        p.display()
    );
    p
}

const PROBE: &str = "#!/bin/sh\nexec >/tmp/out 2>&1\nls -ln /dev/nvidia-uvm /dev/nvidia0\n\
    cat /dev/nvidia-uvm 2>&1 | head -n1\ncat /dev/nvidia0 2>&1 | head -n1\ntrue\n";

/// A container directory with a rootfs and a config that nvbind setup has not touched.
fn container(lxcpath: &Path, name: &str, host: &FakeHost, unprivileged: bool, v2: bool) -> PathBuf {
    let key = if v2 {
        "lxc.cgroup2.devices"
    } else {
        "lxc.cgroup.devices"
    };
    let cdir = lxcpath.join(name);
    let rootfs = cdir.join("rootfs");
    busybox_rootfs(&rootfs, host);
    fs::write(rootfs.join("probe.sh"), PROBE).unwrap();
    fs::set_permissions(rootfs.join("probe.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let idmap = if unprivileged {
        ok(Command::new("chown")
            .args(["-R", "-h", "100000:100000"])
            .arg(&rootfs));
        "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n"
    } else {
        ""
    };
    fs::write(
        cdir.join("config"),
        format!(
            "# a container made by hand\nlxc.rootfs.path = dir:{}\nlxc.uts.name = {name}\n\
             lxc.net.0.type = empty\nlxc.apparmor.profile = unconfined\n\
             lxc.mount.auto = proc:mixed sys:ro cgroup:mixed\n\
             {key}.deny = a\n{key}.allow = c 1:* rwm\n\
             {key}.allow = c 5:* rwm\n{key}.allow = c 136:* rwm\n\
             {idmap}lxc.init.cmd = /probe.sh\n",
            rootfs.display()
        ),
    )
    .unwrap();
    cdir
}

/// Starts the container in the foreground; returns what the probe wrote and LXC's log. With
/// `v2`, LXC runs in a pure cgroup v2 view of this hybrid machine (a private mount namespace
/// with the v1 hierarchies unmounted and cgroup2 at /sys/fs/cgroup), where it filters devices
/// with an eBPF program, as on Proxmox VE 7+.
fn start(lxcpath: &Path, name: &str, log: &Path, v2: bool) -> (Output, String, String) {
    let lxc = format!(
        "timeout 60 lxc-start -P '{}' -n '{name}' -F -l DEBUG -o '{}'",
        lxcpath.display(),
        log.display()
    );
    let script = if v2 {
        format!("umount -R /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec {lxc}")
    } else {
        format!("exec {lxc}")
    };
    let out = run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null()));
    let probe = fs::read_to_string(lxcpath.join(name).join("rootfs/tmp/out")).unwrap_or_default();
    let _ = fs::remove_file(lxcpath.join(name).join("rootfs/tmp/out"));
    (out, probe, fs::read_to_string(log).unwrap_or_default())
}

/// nvbind-hook with the test's spec directory: what --hook-path points the container at.
fn hook_wrapper(dir: &Path, specs: &Path) -> PathBuf {
    let w = dir.join("bin/nvbind-hook");
    fs::create_dir_all(w.parent().unwrap()).unwrap();
    fs::write(
        &w,
        format!(
            "#!/bin/sh\nsub=$1; shift\nexec {} \"$sub\" --cdi-spec-dir {} \"$@\"\n",
            hook_bin().display(),
            specs.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&w, fs::Permissions::from_mode(0o755)).unwrap();
    w
}

fn renode_uvm(host_root: &Path, major: u32) {
    let p = host_root.join("dev/nvidia-uvm");
    fs::remove_file(&p).unwrap();
    nix::sys::stat::mknod(
        &p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(major as u64, 0),
    )
    .unwrap();
}

fn setup_lxc(lxcpath: &Path, name: &str, hook: &Path) -> String {
    ok(Command::new(nvbind_bin())
        .args(["setup", "lxc", name, "--device", "0", "--lxcpath"])
        .arg(lxcpath)
        .arg("--hook-path")
        .arg(hook))
}

/// Opening a node the cgroup allows reaches the (absent) driver: ENXIO. Denied: EPERM.
fn usable(probe: &str, node: &str) -> bool {
    probe
        .lines()
        .any(|l| l.contains(node) && l.contains("No such device or address"))
}

fn survives_a_new_uvm_major(unprivileged: bool, v2: bool) {
    require_root();
    if !have("lxc-start") || !have("gcc") {
        return;
    }
    let _ids = unprivileged.then(SubIds::ensure);
    let tmp = tempdir();
    let dir = tmp.path();
    let host = FakeHost::new(&dir.join("host"), 1);
    let specs = host.write_spec(&dir.join("cdi"), &hook_bin());
    let hook = hook_wrapper(dir, &specs);
    let lxcpath = dir.join("lxc");
    let cdir = container(&lxcpath, "gpu", &host, unprivileged, v2);
    let before = fs::read_to_string(cdir.join("config")).unwrap();

    let said = setup_lxc(&lxcpath, "gpu", &hook);
    assert!(said.contains("Set up LXC container gpu"), "{said}");
    let config = fs::read_to_string(cdir.join("config")).unwrap();
    assert!(config.starts_with(&before), "other lines kept:\n{config}");
    assert!(config.contains(&format!(
        "lxc.hook.start-host = {} lxc-devices\n",
        hook.display()
    )));
    assert!(config.contains("lxc.environment = NVIDIA_VISIBLE_DEVICES=0\n"));
    assert!(!config.contains("510"), "no major in the config:\n{config}");
    let backups: Vec<_> = fs::read_dir(&cdir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("config.bak-"))
        .collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(fs::read_to_string(backups[0].path()).unwrap(), before);
    // Idempotent: nothing written, no second backup.
    let again = setup_lxc(&lxcpath, "gpu", &hook);
    assert!(again.contains("nothing changed"), "{again}");
    assert_eq!(fs::read_to_string(cdir.join("config")).unwrap(), config);

    // The control: the same GPU with the major written in, as hand-made guides do.
    let control = container(&lxcpath, "fixed", &host, unprivileged, v2);
    let mut text = fs::read_to_string(control.join("config")).unwrap();
    text.push_str(&format!(
        "lxc.autodev = 1\nlxc.hook.mount = {} lxc\nlxc.environment = NVIDIA_VISIBLE_DEVICES=0\n\
         {key}.allow = c 195:* rwm\n{key}.allow = c {UVM_MAJOR}:0 rwm\n",
        hook.display(),
        key = if v2 {
            "lxc.cgroup2.devices"
        } else {
            "lxc.cgroup.devices"
        }
    ));
    fs::write(control.join("config"), text).unwrap();

    for (round, major) in [(1, UVM_MAJOR), (2, UVM_MAJOR + 1)] {
        renode_uvm(&host.root, major);
        let (out, probe, log) = start(&lxcpath, "gpu", &dir.join(format!("gpu{round}.log")), v2);
        assert!(out.status.success(), "round {round}: {probe}\n{log}");
        assert!(
            probe.contains(&format!("{major},")) || probe.contains(&format!("{major}, ")),
            "round {round}: the node has the host's major {major}:\n{probe}"
        );
        assert!(
            usable(&probe, "nvidia-uvm"),
            "round {round}: uvm usable:\n{probe}\n{log}"
        );
        assert!(
            usable(&probe, "nvidia0"),
            "round {round}: nvidia0 usable:\n{probe}"
        );
        assert!(!log.contains("does not allow these devices"), "{log}");

        let (out, probe, log) = start(
            &lxcpath,
            "fixed",
            &dir.join(format!("fixed{round}.log")),
            v2,
        );
        assert!(
            out.status.success(),
            "control round {round}: {probe}\n{log}"
        );
        if round == 1 {
            assert!(usable(&probe, "nvidia-uvm"), "control round 1:\n{probe}");
        } else {
            // The config's major is the old one: opening is refused by the cgroup.
            assert!(
                probe.contains("Operation not permitted") && !usable(&probe, "nvidia-uvm"),
                "control round 2 denied:\n{probe}"
            );
        }
    }
    assert!(host_mounts_containing(dir).is_empty());
}

#[test]
fn setup_lxc_privileged_survives_a_new_uvm_major() {
    survives_a_new_uvm_major(false, false);
}

#[test]
fn setup_lxc_unprivileged_survives_a_new_uvm_major() {
    survives_a_new_uvm_major(true, false);
}

#[test]
fn setup_lxc_cgroup_v2_privileged_survives_a_new_uvm_major() {
    survives_a_new_uvm_major(false, true);
}

#[test]
fn setup_lxc_cgroup_v2_unprivileged_survives_a_new_uvm_major() {
    survives_a_new_uvm_major(true, true);
}

/// Restores /etc/subuid and /etc/subgid on drop (LXC maps through newuidmap, which reads them).
struct SubIds(Vec<(PathBuf, Option<String>)>);

impl SubIds {
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

/// The files of a directory with their contents, to show nothing changed.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

fn setup_fails(args: &[&str], as_nobody: bool) -> String {
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(nvbind_bin());
        c
    } else {
        Command::new(nvbind_bin())
    };
    let out = run(cmd.args(["setup", "lxc"]).args(args));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn setup_lxc_bad_inputs_change_nothing() {
    require_root();
    let tmp = tempdir();
    let dir = tmp.path();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let lxcpath = dir.join("lxc");
    fs::create_dir_all(lxcpath.join("bad")).unwrap();
    let lp = lxcpath.to_str().unwrap();

    let err = setup_fails(&["nosuch", "--lxcpath", lp], false);
    assert!(
        err.contains("no container nosuch") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!lxcpath.join("nosuch").exists());

    let broken = "lxc.uts.name = bad\nlxc.rootfs.path = dir:/x\nthis line is broken\n";
    fs::write(lxcpath.join("bad/config"), broken).unwrap();
    let before = snapshot(&lxcpath.join("bad"));
    let err = setup_fails(&["bad", "--lxcpath", lp], false);
    assert!(
        err.contains("line 3") && err.contains("left untouched"),
        "{err}"
    );
    assert_eq!(snapshot(&lxcpath.join("bad")), before);

    // A config the user may read but not write (nor its directory).
    fs::write(lxcpath.join("bad/config"), "lxc.uts.name = bad\n").unwrap();
    fs::set_permissions(
        lxcpath.join("bad/config"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs::set_permissions(lxcpath.join("bad"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&lxcpath, fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(&lxcpath.join("bad"));
    let err = setup_fails(&["bad", "--lxcpath", lp, "--hook-path", "/bin/sh"], true);
    assert!(
        err.contains("nothing was changed") && err.contains("Permission denied"),
        "{err}"
    );
    assert_eq!(snapshot(&lxcpath.join("bad")), before);

    // Proxmox IDs are numbers; the container must be named.
    let err = setup_fails(&[], false);
    assert!(err.contains("needs the container"), "{err}");
}
