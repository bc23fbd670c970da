//! Test bundles: a busybox-static rootfs plus the probe, and a config.json built from a
//! runc-like default that each case edits.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// A rootfs template made once per run; bundles hard-link its two binaries.
#[derive(Debug)]
pub struct Template {
    pub busybox: PathBuf,
    pub probe: PathBuf,
    pub applets: Vec<String>,
}

impl Template {
    /// Copy busybox and the probe into `dir` (same filesystem as the bundles, for hard links).
    pub fn prepare(dir: &Path, busybox_src: &Path, probe_src: &Path) -> Result<Self, String> {
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let busybox = dir.join("busybox");
        let probe = dir.join("probe");
        fs::copy(busybox_src, &busybox)
            .map_err(|e| format!("copy {}: {e}", busybox_src.display()))?;
        fs::copy(probe_src, &probe).map_err(|e| format!("copy {}: {e}", probe_src.display()))?;
        for p in [&busybox, &probe] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        }
        let out = std::process::Command::new(&busybox)
            .arg("--list")
            .output()
            .map_err(|e| format!("busybox --list: {e}"))?;
        let applets = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|a| !a.is_empty() && a != "busybox")
            .collect();
        Ok(Template {
            busybox,
            probe,
            applets,
        })
    }

    /// Lay out a rootfs under `rootfs`.
    pub fn populate(&self, rootfs: &Path) -> Result<(), String> {
        let e = |what: &str, err: std::io::Error| format!("{what}: {err}");
        for d in [
            "bin",
            "proc",
            "sys",
            "dev",
            "tmp",
            "etc",
            "root",
            "home/user",
            "var",
        ] {
            fs::create_dir_all(rootfs.join(d)).map_err(|x| e(d, x))?;
        }
        fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))
            .map_err(|x| e("tmp", x))?;
        link_or_copy(&self.busybox, &rootfs.join("bin/busybox"))?;
        link_or_copy(&self.probe, &rootfs.join("probe"))?;
        for a in &self.applets {
            let _ = symlink("busybox", rootfs.join("bin").join(a));
        }
        fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n\
             nobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        .map_err(|x| e("passwd", x))?;
        fs::write(
            rootfs.join("etc/group"),
            "root:x:0:\ntty:x:5:\nuser:x:1000:\nextra:x:2000:user\nnogroup:x:65534:\n",
        )
        .map_err(|x| e("group", x))?;
        Ok(())
    }
}

fn link_or_copy(src: &Path, dst: &Path) -> Result<(), String> {
    if fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    fs::copy(src, dst)
        .map(|_| ())
        .map_err(|e| format!("copy {} -> {}: {e}", src.display(), dst.display()))
}

pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

pub const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A runc-`spec`-like default config, not a terminal, running `/probe report`.
pub fn base_config() -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["/probe", "report"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": DEFAULT_CAPS, "effective": DEFAULT_CAPS,
                "permitted": DEFAULT_CAPS, "inheritable": [], "ambient": []
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": false
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": "conformance",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }
            ],
            "maskedPaths": MASKED,
            "readonlyPaths": READONLY
        }
    })
}

/// Set `process.args` to the probe with the given mode and checks.
pub fn probe_args(cfg: &mut Value, mode: &str, checks: &[&str]) {
    let mut args = vec!["/probe".to_string(), mode.to_string()];
    args.extend(checks.iter().map(|s| s.to_string()));
    cfg["process"]["args"] = json!(args);
}

/// Append a namespace entry (replacing one of the same type).
pub fn set_namespace(cfg: &mut Value, ty: &str, path: Option<&str>) {
    let ns = cfg["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces");
    ns.retain(|n| n["type"] != ty);
    match path {
        Some(p) => ns.push(json!({ "type": ty, "path": p })),
        None => ns.push(json!({ "type": ty })),
    }
}

pub fn remove_namespace(cfg: &mut Value, ty: &str) {
    if let Some(ns) = cfg["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != ty);
    }
}

pub fn push_mount(cfg: &mut Value, m: Value) {
    cfg["mounts"].as_array_mut().expect("mounts").push(m);
}
