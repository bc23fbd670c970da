//! Fixtures for the hook's integration tests: a fake GPU host tree (device nodes made with
//! mknod, versioned ELF libraries compiled with gcc, an ld.so.cache written by the real
//! `ldconfig -r`), a CDI spec for it, busybox bundles with `runc spec` configs, and a small
//! dynamically linked probe that calls into the fake libcuda (found only through the
//! container's ld.so.cache). Needs root, gcc, ldconfig, busybox-static and runc.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use nvbind_cdi::spec::{ContainerEdits, Device, DeviceNode, Format, Hook, Mount, Spec};
use serde_json::{json, Value};

pub const DRIVER: &str = "550.54.14";
/// Where the spec mounts the libraries in the container: not a default linker directory,
/// so a program finds them only through the container's ld.so.cache.
pub const CONTAINER_LIBDIR: &str = "/usr/lib/nvidia-fake";
pub const HOST_LIBDIR: &str = "usr/lib/x86_64-linux-gnu";
pub const UVM_MAJOR: u32 = 510;

pub fn hook_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nvbind-hook"))
}

/// Panics unless running as root (mknod, mounts, runc).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root (mknod, mount namespaces, runc)"
    );
}

/// True when `tool` is on PATH; prints a SKIP line otherwise.
pub fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP: {tool} not installed");
    }
    ok
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    out
}

pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mknod(path: &Path, major: u32, minor: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(major as u64, minor as u64),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

/// Compiles a shared library with a soname exporting `int FUNC(unsigned)` returning `value`.
pub fn fake_lib(path: &Path, soname: &str, func: &str, value: i32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let src = path.with_extension("c");
    fs::write(
        &src,
        format!("int {func}(unsigned f) {{ (void)f; return {value}; }}\n"),
    )
    .unwrap();
    ok(Command::new("gcc")
        .args(["-shared", "-fPIC", &format!("-Wl,-soname,{soname}"), "-o"])
        .arg(path)
        .arg(&src));
    fs::remove_file(src).unwrap();
}

/// A fake NVIDIA host: /dev/nvidia0..N-1, nvidiactl, nvidia-uvm; libcuda and libnvidia-ml
/// under usr/lib/x86_64-linux-gnu with an ld.so.cache; /proc/driver/nvidia/version.
pub struct FakeHost {
    pub root: PathBuf,
    pub gpus: u32,
}

impl FakeHost {
    pub fn new(root: &Path, gpus: u32) -> FakeHost {
        for i in 0..gpus {
            mknod(&root.join(format!("dev/nvidia{i}")), 195, i);
        }
        mknod(&root.join("dev/nvidiactl"), 195, 255);
        mknod(&root.join("dev/nvidia-uvm"), UVM_MAJOR, 0);
        let lib = root.join(HOST_LIBDIR);
        fake_lib(
            &lib.join(format!("libcuda.so.{DRIVER}")),
            "libcuda.so.1",
            "cuInit",
            42,
        );
        fake_lib(
            &lib.join(format!("libnvidia-ml.so.{DRIVER}")),
            "libnvidia-ml.so.1",
            "nvmlInitFake",
            7,
        );
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/ld.so.conf"), format!("/{HOST_LIBDIR}\n")).unwrap();
        ok(Command::new("ldconfig").arg("-r").arg(root));
        fs::create_dir_all(root.join("proc/driver/nvidia")).unwrap();
        fs::write(
            root.join("proc/driver/nvidia/version"),
            format!("NVRM version: NVIDIA UNIX x86_64 Kernel Module  {DRIVER}  Thu Feb 1 00:00:00 UTC 2024\nGCC version:  gcc version 12.2.0\n"),
        )
        .unwrap();
        FakeHost {
            root: root.to_path_buf(),
            gpus,
        }
    }

    fn node(&self, name: &str) -> DeviceNode {
        DeviceNode {
            path: format!("/dev/{name}"),
            host_path: Some(self.root.join("dev").join(name).display().to_string()),
            ..Default::default()
        }
    }

    fn lib_mount(&self, file: &str) -> Mount {
        Mount {
            host_path: self.root.join(HOST_LIBDIR).join(file).display().to_string(),
            container_path: format!("{CONTAINER_LIBDIR}/{file}"),
            options: ["ro", "nosuid", "nodev", "bind"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            mount_type: None,
        }
    }

    /// The CDI spec for this host, as `nvbind cdi generate` would lay it out, with hooks
    /// calling `hook` (devices `0`..`N-1` and `all`).
    pub fn spec(&self, hook: &Path) -> Spec {
        let hook_path = hook.display().to_string();
        let mut devices: Vec<Device> = (0..self.gpus)
            .map(|i| Device {
                name: i.to_string(),
                container_edits: ContainerEdits {
                    device_nodes: vec![self.node(&format!("nvidia{i}"))],
                    ..Default::default()
                },
                ..Default::default()
            })
            .collect();
        devices.push(Device {
            name: "all".into(),
            container_edits: ContainerEdits {
                device_nodes: (0..self.gpus)
                    .map(|i| self.node(&format!("nvidia{i}")))
                    .collect(),
                ..Default::default()
            },
            ..Default::default()
        });
        Spec {
            cdi_version: "0.5.0".into(),
            kind: "nvidia.com/gpu".into(),
            devices,
            container_edits: ContainerEdits {
                env: vec!["NVIDIA_VISIBLE_DEVICES=void".into()],
                device_nodes: vec![self.node("nvidiactl"), self.node("nvidia-uvm")],
                mounts: vec![
                    self.lib_mount(&format!("libcuda.so.{DRIVER}")),
                    self.lib_mount(&format!("libnvidia-ml.so.{DRIVER}")),
                ],
                hooks: vec![
                    Hook {
                        hook_name: "createContainer".into(),
                        path: hook_path.clone(),
                        args: vec![
                            "nvbind-hook".into(),
                            "update-ldcache".into(),
                            "--folder".into(),
                            CONTAINER_LIBDIR.into(),
                        ],
                        ..Default::default()
                    },
                    Hook {
                        hook_name: "createContainer".into(),
                        path: hook_path,
                        args: vec![
                            "nvbind-hook".into(),
                            "create-symlinks".into(),
                            "--link".into(),
                            format!("libcuda.so.1::{CONTAINER_LIBDIR}/libcuda.so"),
                        ],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Writes the spec as `dir/nvidia.json` and returns `dir`.
    pub fn write_spec(&self, dir: &Path, hook: &Path) -> PathBuf {
        fs::create_dir_all(dir).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("nvidia.json");
        let text = self.spec(hook).to_string(Format::Json, &path).unwrap();
        fs::write(&path, text).unwrap();
        dir.to_path_buf()
    }
}

/// A busybox rootfs at `rootfs`, plus glibc and `/bin/cudaprobe`, a dynamically linked
/// program calling `cuInit` from libcuda.so.1 (found through ld.so.cache only).
pub fn busybox_rootfs(rootfs: &Path, host: &FakeHost) {
    for d in [
        "bin", "proc", "sys", "dev", "tmp", "etc", "root", "run", "usr/lib",
    ] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let list = ok(Command::new("/bin/busybox").arg("--list"));
    for applet in list.lines() {
        let p = rootfs.join("bin").join(applet);
        if !p.exists() {
            symlink("busybox", p).unwrap();
        }
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .unwrap();
    fs::write(rootfs.join("etc/group"), "root:x:0:\nnobody:x:65534:\n").unwrap();
    // glibc for the probe.
    fs::create_dir_all(rootfs.join("lib/x86_64-linux-gnu")).unwrap();
    fs::create_dir_all(rootfs.join("lib64")).unwrap();
    fs::copy(
        "/lib/x86_64-linux-gnu/libc.so.6",
        rootfs.join("lib/x86_64-linux-gnu/libc.so.6"),
    )
    .unwrap();
    fs::copy(
        "/lib64/ld-linux-x86-64.so.2",
        rootfs.join("lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    // The probe, linked against the fake libcuda through a link-time-only directory.
    let build = rootfs.parent().unwrap().join("probe-build");
    fs::create_dir_all(&build).unwrap();
    let _ = symlink(
        host.root
            .join(HOST_LIBDIR)
            .join(format!("libcuda.so.{DRIVER}")),
        build.join("libcuda.so"),
    );
    fs::write(
        build.join("probe.c"),
        "#include <stdio.h>\nint cuInit(unsigned);\nint main(void) { printf(\"cuInit=%d\\n\", cuInit(0)); return 0; }\n",
    )
    .unwrap();
    ok(Command::new("gcc")
        .arg("-o")
        .arg(rootfs.join("bin/cudaprobe"))
        .arg(build.join("probe.c"))
        .arg(format!("-L{}", build.display()))
        .arg("-lcuda"));
}

/// `runc spec` config for `bundle`, with `args`, extra `env`, no terminal, and the hook
/// `nvbind-hook prestart` (with `hook_env`) unless `hook_env` is None.
pub fn write_config(bundle: &Path, args: &[&str], env: &[String], hook_env: Option<&[String]>) {
    let _ = fs::remove_file(bundle.join("config.json"));
    ok(Command::new("runc").args(["spec", "--bundle"]).arg(bundle));
    let text = fs::read_to_string(bundle.join("config.json")).unwrap();
    let mut cfg: Value = serde_json::from_str(&text).unwrap();
    cfg["process"]["terminal"] = json!(false);
    cfg["process"]["args"] = json!(args);
    let penv = cfg["process"]["env"].as_array_mut().unwrap();
    for e in env {
        penv.push(json!(e));
    }
    cfg["root"]["readonly"] = json!(false);
    if let Some(hook_env) = hook_env {
        cfg["hooks"] = json!({
            "prestart": [{
                "path": hook_bin(),
                "args": ["nvbind-hook", "prestart"],
                "env": hook_env,
            }]
        });
    }
    fs::write(
        bundle.join("config.json"),
        serde_json::to_string_pretty(&cfg).unwrap(),
    )
    .unwrap();
}

/// Edits the bundle's config.json with `f`.
pub fn edit_config(bundle: &Path, f: impl FnOnce(&mut Value)) {
    let mut cfg: Value =
        serde_json::from_str(&fs::read_to_string(bundle.join("config.json")).unwrap()).unwrap();
    f(&mut cfg);
    fs::write(
        bundle.join("config.json"),
        serde_json::to_string_pretty(&cfg).unwrap(),
    )
    .unwrap();
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique container id.
pub fn cid(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// `RUNTIME --root STATE run --bundle B ID`, returning the output (the container is gone
/// afterwards: `run` deletes it).
pub fn runtime_run(runtime: &str, state: &Path, bundle: &Path, id: &str) -> Output {
    let out = run(Command::new(runtime)
        .arg("--root")
        .arg(state)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null()));
    // A failed start may leave a stopped container behind; delete it.
    let _ = Command::new(runtime)
        .arg("--root")
        .arg(state)
        .args(["delete", "-f", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    out
}

/// Mount points on the host whose path contains `needle`.
pub fn host_mounts_containing(needle: &Path) -> Vec<String> {
    let needle = needle.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// The hook environment for the fixture's spec directory.
pub fn hook_env(spec_dir: &Path) -> Vec<String> {
    vec![
        format!("NVBIND_CDI_SPEC_DIRS={}", spec_dir.display()),
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin".into(),
    ]
}

/// A temp dir under /tmp that root-owned trust accepts (0755 for spec dirs below it).
pub fn tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("nvbind-hook-test")
        .tempdir()
        .unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}
