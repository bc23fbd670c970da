//! Isolation, attacked from inside real containers (issue #9). Each test runs the attack with
//! the bundle `nvbind spec --hardened` writes and asserts it fails with the expected errno, then runs
//! the same attack in a control container where the spec does not ask for that protection
//! and asserts it succeeds, so a protection that silently stopped working fails the test.
//!
//! The attacker is tests/fixtures/isolation.c (`cc -static` into each rootfs): one line
//! "OP ERRNO [DETAIL]" per operation. Needs root, gcc and libc6-dev (scripts/test installs
//! them). GPUs are faked with mknod'ed nodes (c 195:N): with no driver, opening a node the
//! device cgroup allows gives ENXIO, one it denies gives EPERM. Making a node is allowed for
//! every device ("c *:* m", as runc does); opening it is what the cgroup refuses.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use common::*;
use serde_json::{json, Value};

const EPERM: i32 = libc::EPERM;
const ENXIO: i32 = libc::ENXIO;
const EROFS: i32 = libc::EROFS;
const ENOSYS: i32 = libc::ENOSYS;

/// Builds the attacker once per test into the Env's dir; `bundle` copies it into a rootfs.
struct Attacker {
    bin: PathBuf,
}

impl Attacker {
    fn new(env: &Env) -> Self {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/isolation.c");
        let bin = env.dir.path().join("isolation");
        let out = Command::new("cc")
            .args(["-static", "-O2", "-o"])
            .arg(&bin)
            .arg(&src)
            .output()
            .expect("cannot run cc: apt-get install gcc libc6-dev (scripts/test does)");
        assert!(
            out.status.success(),
            "cc -static {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self { bin }
    }

    /// A bundle from `nvbind spec --hardened` whose process runs the attacker with OPS.
    fn bundle(&self, env: &Env, name: &str, ops: &[&str]) -> PathBuf {
        let mut args = vec!["/isolation"];
        args.extend_from_slice(ops);
        let b = env.bundle(name, &args);
        fs::copy(&self.bin, b.join("rootfs/isolation")).unwrap();
        b
    }
}

/// `nvbind run` of the bundle; OP -> (errno, detail).
fn attack(env: &Env, b: &Path, id: &str, extra: &[&str]) -> BTreeMap<String, (i32, String)> {
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["run", "-b", b.to_str().unwrap(), id]);
    let out = env.ok(&args);
    println!("{id}:\n{out}");
    out.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            let op = f.next()?.to_string();
            let errno = f.next()?.parse().ok()?;
            Some((op, (errno, f.next().unwrap_or("").to_string())))
        })
        .collect()
}

fn errno(r: &BTreeMap<String, (i32, String)>, op: &str) -> i32 {
    r.get(op)
        .unwrap_or_else(|| panic!("{op} not reported: {r:?}"))
        .0
}

fn add_caps(env: &Env, b: &Path, caps: &[&str]) {
    env.edit(b, |c| {
        let set = &mut c["process"]["capabilities"];
        for kind in ["bounding", "effective", "permitted"] {
            let list = set[kind].as_array_mut().unwrap();
            for cap in caps {
                list.push(json!(cap));
            }
        }
    });
}

fn config(b: &Path) -> Value {
    serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap()
}

#[test]
fn masked_paths_read_empty_and_readonly_paths_refuse_writes() {
    let env = Env::new();
    let attacker = Attacker::new(&env);
    let ops = [
        "read:/proc/kcore",
        "read:/proc/keys",
        "read:/etc/secret",
        "openw:/proc/sysrq-trigger",
        "write:/proc/sys/kernel/hostname=pwned",
        "create:/data/f",
    ];
    // The spec's own protections plus one extra masked file and one extra read-only mount.
    let protected = |name: &str, extra: bool| {
        let b = attacker.bundle(&env, name, &ops);
        fs::write(b.join("rootfs/etc/secret"), "host secret\n").unwrap();
        fs::create_dir_all(b.join("rootfs/data")).unwrap();
        env.edit(&b, |c| {
            c["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/data", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "size=1m"],
            }));
            if extra {
                c["linux"]["maskedPaths"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("/etc/secret"));
                c["linux"]["readonlyPaths"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("/data"));
            } else {
                c["linux"]["maskedPaths"] = json!([]);
                c["linux"]["readonlyPaths"] = json!([]);
            }
        });
        b
    };
    let b = protected("masked", true);
    let c = config(&b);
    for p in ["/proc/kcore", "/proc/keys"] {
        assert!(
            c["linux"]["maskedPaths"]
                .as_array()
                .unwrap()
                .contains(&json!(p)),
            "nvbind spec does not mask {p}"
        );
    }
    for p in ["/proc/sys", "/proc/sysrq-trigger"] {
        assert!(
            c["linux"]["readonlyPaths"]
                .as_array()
                .unwrap()
                .contains(&json!(p)),
            "nvbind spec does not make {p} read-only"
        );
    }
    // Kernels built without CONFIG_PROC_KCORE or CONFIG_MAGIC_SYSRQ (this CI's VM) have no
    // /proc/kcore or /proc/sysrq-trigger: nothing to protect, and the runtime skips them.
    let kcore = Path::new("/proc/kcore").exists();
    let sysrq = Path::new("/proc/sysrq-trigger").exists();
    if !kcore || !sysrq {
        println!("host kernel: /proc/kcore exists: {kcore}, /proc/sysrq-trigger exists: {sysrq}");
    }
    let r = attack(&env, &b, "m1", &[]);
    for masked in ["read:/proc/keys", "read:/etc/secret"] {
        assert_eq!(r[masked], (0, "0".into()), "{masked} is not empty: {r:?}");
    }
    if kcore {
        assert_eq!(r["read:/proc/kcore"], (0, "0".into()), "{r:?}");
    }
    if sysrq {
        assert_eq!(errno(&r, "openw:/proc/sysrq-trigger"), EROFS);
    }
    assert_eq!(errno(&r, "write:/proc/sys/kernel/hostname=pwned"), EROFS);
    assert_eq!(errno(&r, "create:/data/f"), EROFS);

    // Control: the same attacks where the spec asks for nothing. sysrq-trigger is only
    // opened, never written. /proc/kcore needs CAP_SYS_RAWIO, so unmasked it refuses to
    // open instead of reading empty.
    let b = protected("open", false);
    let r = attack(&env, &b, "m2", &[]);
    assert_ne!(r["read:/proc/keys"], (0, "0".into()), "{r:?}");
    assert_eq!(r["read:/etc/secret"], (0, "12".into()), "{r:?}");
    if kcore {
        assert_ne!(r["read:/proc/kcore"], (0, "0".into()), "{r:?}");
    }
    if sysrq {
        assert_eq!(errno(&r, "openw:/proc/sysrq-trigger"), 0);
    }
    assert_eq!(errno(&r, "write:/proc/sys/kernel/hostname=pwned"), 0);
    assert_eq!(errno(&r, "create:/data/f"), 0);
    env.assert_clean();
}

fn mknod(path: &Path, major: u32, minor: u32) {
    let st = Command::new("mknod")
        .args(["-m", "666"])
        .arg(path)
        .args(["c", &major.to_string(), &minor.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "mknod {} needs root", path.display());
}

/// Fake GPU nodes on the host (c 195:0, 195:1, 195:255) and a CDI spec for them.
fn fake_gpus(env: &Env) -> (PathBuf, PathBuf) {
    let dev = env.dir.path().join("host-dev");
    fs::create_dir_all(&dev).unwrap();
    for i in 0..2 {
        mknod(&dev.join(format!("nvidia{i}")), 195, i);
    }
    mknod(&dev.join("nvidiactl"), 195, 255);
    let spec_dir = env.dir.path().join("cdi");
    fs::create_dir(&spec_dir).unwrap();
    let d = dev.display();
    let mut yaml = "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n".to_string();
    for i in 0..2 {
        yaml.push_str(&format!(
            "- name: \"{i}\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia{i}\n      hostPath: {d}/nvidia{i}\n"
        ));
    }
    yaml.push_str(&format!(
        "containerEdits:\n  deviceNodes:\n  - path: /dev/nvidiactl\n    hostPath: {d}/nvidiactl\n"
    ));
    fs::write(spec_dir.join("nvidia.yaml"), yaml).unwrap();
    (dev, spec_dir)
}

/// Bind-mounts a host node into the container, as an attacker who got one there would have.
fn bind_node(env: &Env, b: &Path, host: &Path, at: &str) {
    env.edit(b, |c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": at, "type": "bind", "source": host, "options": ["bind"],
        }))
    });
}

#[test]
fn a_container_without_gpus_cannot_use_gpu_nodes_it_makes_or_is_given() {
    let env = Env::new();
    let attacker = Attacker::new(&env);
    let (dev, _) = fake_gpus(&env);
    let ops = [
        "mknod:/dev/made0:195:0",
        "open:/dev/made0",
        "open:/dev/nvidia0",
        "open:/dev/null",
    ];
    let mk = |name: &str| {
        let b = attacker.bundle(&env, name, &ops);
        // CAP_MKNOD, so that only the device cgroup stands in the way.
        add_caps(&env, &b, &["CAP_MKNOD"]);
        bind_node(&env, &b, &dev.join("nvidia0"), "/dev/nvidia0");
        b
    };
    let b = mk("nogpu");
    let r = attack(&env, &b, "d1", &[]);
    assert_eq!(errno(&r, "open:/dev/null"), 0);
    // As with runc, the device cgroup lets any node be made ("c *:* m") and refuses to open
    // it: the node exists, the GPU behind it is out of reach.
    assert_eq!(errno(&r, "mknod:/dev/made0:195:0"), 0);
    assert_eq!(errno(&r, "open:/dev/made0"), EPERM);
    assert_eq!(errno(&r, "open:/dev/nvidia0"), EPERM);

    // Control: the device cgroup allows c 195:*; the same node opens as far as the (absent)
    // driver, and mknod works.
    let b = mk("allowed");
    env.edit(&b, |c| {
        c["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(json!({"allow": true, "type": "c", "major": 195, "access": "rwm"}))
    });
    let r = attack(&env, &b, "d2", &[]);
    assert_eq!(errno(&r, "open:/dev/made0"), ENXIO);
    assert_eq!(errno(&r, "open:/dev/nvidia0"), ENXIO);
    env.assert_clean();
}

#[test]
fn a_container_given_gpu_0_cannot_use_gpu_1() {
    let env = Env::new();
    let attacker = Attacker::new(&env);
    let (dev, spec_dir) = fake_gpus(&env);
    let flag = format!("--cdi-spec-dir={}", spec_dir.display());
    let ops = [
        "open:/dev/nvidia0",
        "open:/dev/nvidiactl",
        "mknod:/dev/made0:195:0",
        "open:/dev/made0",
        "mknod:/dev/made1:195:1",
        "open:/dev/made1",
        "open:/dev/stolen1",
    ];
    let mk = |name: &str, request: &str| {
        let b = attacker.bundle(&env, name, &ops);
        add_caps(&env, &b, &["CAP_MKNOD"]);
        bind_node(&env, &b, &dev.join("nvidia1"), "/dev/stolen1");
        env.edit(&b, |c| {
            c["annotations"] = json!({"cdi.k8s.io/test": request})
        });
        b
    };
    let b = mk("gpu0", "nvidia.com/gpu=0");
    let r = attack(&env, &b, "g1", &[&flag]);
    for allowed in [
        "open:/dev/nvidia0",
        "open:/dev/nvidiactl",
        "open:/dev/made0",
    ] {
        assert_eq!(errno(&r, allowed), ENXIO, "{allowed}: {r:?}");
    }
    assert_eq!(errno(&r, "mknod:/dev/made1:195:1"), 0);
    assert_eq!(errno(&r, "open:/dev/made1"), EPERM);
    assert_eq!(errno(&r, "open:/dev/stolen1"), EPERM);

    // Control: given both GPUs, the same node 195:1 opens as far as the driver.
    let b = mk("gpu01", "nvidia.com/gpu=0,nvidia.com/gpu=1");
    let r = attack(&env, &b, "g2", &[&flag]);
    assert_eq!(errno(&r, "open:/dev/made1"), ENXIO);
    assert_eq!(errno(&r, "open:/dev/stolen1"), ENXIO);
    env.assert_clean();
}

/// /proc/self/status fields as the container's process sees them.
fn status(env: &Env, b: &Path, id: &str) -> BTreeMap<String, String> {
    env.edit(b, |c| {
        c["process"]["args"] = json!(["cat", "/proc/self/status"])
    });
    env.ok(&["run", "-b", b.to_str().unwrap(), id])
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn cap_mask(names: &Value) -> u64 {
    names
        .as_array()
        .unwrap()
        .iter()
        .map(|n| caps::Capability::from_str(n.as_str().unwrap()).unwrap())
        .fold(0, |m, c| m | (1u64 << c.index()))
}

#[test]
fn no_new_privs_and_the_capability_sets_of_the_spec_are_in_force() {
    let env = Env::new();
    let attacker = Attacker::new(&env);
    let ops = ["mount:/mnt", "sethostname:pwned"];
    let b = attacker.bundle(&env, "caps", &ops);
    fs::create_dir_all(b.join("rootfs/mnt")).unwrap();
    let c = config(&b);
    assert_eq!(c["process"]["noNewPrivileges"], json!(true));
    let st = status(&env, &b, "s1");
    assert_eq!(st["NoNewPrivs"], "1");
    assert_eq!(
        st["Seccomp"], "2",
        "the spec's seccomp filter is not loaded"
    );
    let want = |set: &str| cap_mask(&c["process"]["capabilities"][set]);
    for (field, set) in [("CapBnd", "bounding"), ("CapEff", "effective")] {
        let got = u64::from_str_radix(&st[field], 16).unwrap();
        assert_eq!(
            got,
            want(set),
            "{field} {:#x} != {set} {:#x}",
            got,
            want(set)
        );
    }

    env.edit(&b, |c| {
        let mut args = vec![json!("/isolation")];
        args.extend(ops.iter().map(|o| json!(o)));
        c["process"]["args"] = json!(args);
    });
    let r = attack(&env, &b, "s2", &[]);
    assert_eq!(errno(&r, "mount:/mnt"), EPERM);
    assert_eq!(errno(&r, "sethostname:pwned"), EPERM);

    // Control: with CAP_SYS_ADMIN granted (and the same seccomp profile), both work, so the
    // EPERM above came from the capability set.
    let b = attacker.bundle(&env, "admin", &ops);
    fs::create_dir_all(b.join("rootfs/mnt")).unwrap();
    add_caps(&env, &b, &["CAP_SYS_ADMIN"]);
    let r = attack(&env, &b, "s3", &[]);
    assert_eq!(errno(&r, "mount:/mnt"), 0);
    assert_eq!(errno(&r, "sethostname:pwned"), 0);
    env.assert_clean();
}

/// Denied by the profile and reachable without it (from a container with the default
/// capabilities): the control shows the filter is what refuses them.
const REACHABLE: &[&str] = &[
    "unshare_user",
    "clone_user",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "io_uring_setup",
    "settimeofday",
    "clock_settime",
];
/// Denied by the profile; without it a capability refuses most of them too (or the kernel
/// lacks them), so the control result is printed, not asserted.
const CAPABILITY_GUARDED: &[&str] = &[
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "bpf",
    "perf_event_open",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "syslog",
    "quotactl",
    "iopl",
    "ioperm",
];

#[test]
fn the_seccomp_profile_of_nvbind_spec_refuses_dangerous_syscalls() {
    let env = Env::new();
    let attacker = Attacker::new(&env);
    let ops: Vec<String> = REACHABLE
        .iter()
        .chain(CAPABILITY_GUARDED)
        .chain(&["clone3", "clone"])
        .map(|s| format!("sys:{s}"))
        .collect();
    let ops: Vec<&str> = ops.iter().map(String::as_str).collect();
    let b = attacker.bundle(&env, "filtered", &ops);
    assert!(config(&b)["linux"]["seccomp"].is_object());
    let r = attack(&env, &b, "f1", &[]);
    for name in REACHABLE.iter().chain(CAPABILITY_GUARDED) {
        assert_eq!(errno(&r, &format!("sys:{name}")), EPERM, "{name}: {r:?}");
    }
    // clone3 is refused with ENOSYS so that libc falls back to clone, which still forks.
    assert_eq!(errno(&r, "sys:clone3"), ENOSYS);
    assert_eq!(errno(&r, "sys:clone"), 0);

    // A process exec'd into the container is filtered too.
    let b = attacker.bundle(&env, "sleeper", &["sys:clone"]);
    env.edit(&b, |c| c["process"]["args"] = json!(["sleep", "1000"]));
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "f3"]);
    let out = env.ok(&["exec", "f3", "/isolation", "sys:unshare_user", "sys:bpf"]);
    assert_eq!(out, "sys:unshare_user 1\nsys:bpf 1\n", "exec: {out}");
    env.ok(&["delete", "-f", "f3"]);

    // Control: the same container without the profile.
    let b = attacker.bundle(&env, "unfiltered", &ops);
    env.edit(&b, |c| {
        c["linux"].as_object_mut().unwrap().remove("seccomp");
    });
    let r = attack(&env, &b, "f2", &[]);
    for name in REACHABLE {
        assert_ne!(errno(&r, &format!("sys:{name}")), EPERM, "{name}: {r:?}");
    }
    assert_eq!(errno(&r, "sys:clone3"), 0);
    env.assert_clean();
}

#[test]
fn a_cdi_spec_with_a_hook_others_can_write_is_refused_and_leaves_nothing() {
    let env = Env::new();
    let hooks = env.dir.path().join("hooks");
    fs::create_dir(&hooks).unwrap();
    let marker = env.dir.path().join("hook-ran");
    let hook = hooks.join("hook.sh");
    fs::write(
        &hook,
        format!("#!/bin/sh\necho ran > {}\n", marker.display()),
    )
    .unwrap();
    let spec_dir = env.dir.path().join("cdi");
    fs::create_dir(&spec_dir).unwrap();
    let spec = spec_dir.join("vendor.yaml");
    fs::write(
        &spec,
        format!(
            "cdiVersion: 0.5.0\nkind: vendor.com/dev\ndevices:\n- name: x\n  containerEdits:\n    env: [X=1]\ncontainerEdits:\n  hooks:\n  - hookName: createRuntime\n    path: {}\n",
            hook.display()
        ),
    )
    .unwrap();
    let flag = format!("--cdi-spec-dir={}", spec_dir.display());
    let b = env.bundle("b", &["true"]);
    env.edit(&b, |c| {
        c["annotations"] = json!({"cdi.k8s.io/test": "vendor.com/dev=x"})
    });
    let before = fs::read(b.join("config.json")).unwrap();

    fs::set_permissions(&hook, fs::Permissions::from_mode(0o777)).unwrap();
    let err = env.fails(&[&flag, "run", "-b", b.to_str().unwrap(), "h1"]);
    for needle in [
        spec.to_str().unwrap(),
        &format!(
            "hook {} is writable by group or others (mode 0777)",
            hook.display()
        ),
        "CDI hooks run as root on the host",
        "chmod go-w",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    assert!(!marker.exists(), "the refused hook ran");
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before);
    env.assert_clean();

    // Control: the same hook, root's alone, runs.
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    env.ok(&[&flag, "run", "-b", b.to_str().unwrap(), "h2"]);
    assert!(marker.exists(), "the hook did not run");
    env.assert_clean();
}
