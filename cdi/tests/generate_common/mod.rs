//! Fake host trees for the discovery and generation tests, built at test time in a temp dir:
//! /proc and /sys text from cdi/testdata/hosts, device nodes made with mknod, versioned ELF
//! libraries compiled with gcc and an ld.so.cache written by the real `ldconfig -r`, firmware,
//! binaries, IPC sockets, ICD files, and /sys/class/drm links for AMD and Intel.
//! Needs root (mknod, ldconfig -r chroots), gcc and ldconfig; CI runs as root.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nvbind_cdi::discover::nvml::{NvmlApi, NvmlError, NvmlGpu, NvmlMig};
use nvbind_cdi::discover::HostRoots;
use nvbind_cdi::generate::{GenerateOptions, NameStrategy};

pub const DRIVER: &str = "550.54.14";
pub const H100_BUSES: [&str; 8] = [
    "0000:18:00.0",
    "0000:2a:00.0",
    "0000:3a:00.0",
    "0000:5d:00.0",
    "0000:9a:00.0",
    "0000:ab:00.0",
    "0000:ba:00.0",
    "0000:db:00.0",
];
/// Device minors of the 8 H100s, in bus order (two are swapped, as on real hosts).
pub const H100_MINORS: [u32; 8] = [0, 1, 2, 3, 5, 4, 6, 7];
pub const UVM_MAJOR: u64 = 510;
pub const CAPS_MAJOR: u64 = 508;

/// (soname, file name) of the fake driver libraries; `{v}` is the driver version.
const LIBS: &[(&str, &str)] = &[
    ("libcuda.so.1", "libcuda.so.{v}"),
    ("libcudadebugger.so.1", "libcudadebugger.so.{v}"),
    ("libnvidia-ml.so.1", "libnvidia-ml.so.{v}"),
    ("libnvidia-cfg.so.1", "libnvidia-cfg.so.{v}"),
    (
        "libnvidia-ptxjitcompiler.so.1",
        "libnvidia-ptxjitcompiler.so.{v}",
    ),
    ("libnvidia-nvvm.so.4", "libnvidia-nvvm.so.{v}"),
    ("libnvidia-opencl.so.1", "libnvidia-opencl.so.{v}"),
    ("libnvidia-gpucomp.so.{v}", "libnvidia-gpucomp.so.{v}"),
    ("libnvidia-allocator.so.1", "libnvidia-allocator.so.{v}"),
    (
        "libnvidia-pkcs11-openssl3.so.{v}",
        "libnvidia-pkcs11-openssl3.so.{v}",
    ),
    ("libnvidia-encode.so.1", "libnvidia-encode.so.{v}"),
    ("libnvcuvid.so.1", "libnvcuvid.so.{v}"),
    ("libGLX_nvidia.so.0", "libGLX_nvidia.so.{v}"),
    ("libEGL_nvidia.so.0", "libEGL_nvidia.so.{v}"),
    ("libnvidia-eglcore.so.{v}", "libnvidia-eglcore.so.{v}"),
    ("libnvidia-glcore.so.{v}", "libnvidia-glcore.so.{v}"),
    ("libnvidia-egl-gbm.so.1", "libnvidia-egl-gbm.so.1.1.1"),
    (
        "libnvidia-egl-wayland.so.1",
        "libnvidia-egl-wayland.so.1.1.13",
    ),
    // Not part of the driver: must not be picked up.
    ("libnvrtc.so.12", "libnvrtc.so.12.4.99"),
    ("libzstd-fake.so.1", "libzstd-fake.so.1.5.4"),
];
pub const LIBDIR: &str = "/usr/lib/x86_64-linux-gnu";

pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// A host tree in a temp dir, removed on drop (or at a kept path, see [`FakeHost::at`]).
pub struct FakeHost {
    _temp: Option<tempfile::TempDir>,
    root: PathBuf,
}

impl FakeHost {
    pub fn empty() -> FakeHost {
        let temp = tempfile::Builder::new()
            .prefix("nvbind-fakehost-")
            .tempdir()
            .unwrap();
        FakeHost {
            root: temp.path().to_path_buf(),
            _temp: Some(temp),
        }
    }

    /// A tree at `root` that is kept (for benchmarks); `root` must not exist yet.
    pub fn at(root: &Path) -> FakeHost {
        fs::create_dir(root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
        FakeHost {
            _temp: None,
            root: root.to_path_buf(),
        }
    }

    /// A tree seeded with the text files of cdi/testdata/hosts/<name>.
    pub fn from_testdata(name: &str) -> FakeHost {
        FakeHost::empty().seeded(name)
    }

    /// Copy the text files of cdi/testdata/hosts/<name> into this tree.
    pub fn seeded(self, name: &str) -> FakeHost {
        copy_tree(&testdata().join("hosts").join(name), self.root());
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn roots(&self) -> HostRoots {
        HostRoots::under(self.root())
    }

    pub fn path(&self, abs: &str) -> PathBuf {
        self.root().join(abs.trim_start_matches('/'))
    }

    pub fn file(&self, abs: &str, contents: &str) {
        let p = self.path(abs);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, contents).unwrap();
    }

    pub fn executable(&self, abs: &str) {
        self.file(abs, "#!/bin/sh\nexit 0\n");
        fs::set_permissions(self.path(abs), fs::Permissions::from_mode(0o755)).unwrap();
    }

    pub fn dir(&self, abs: &str) {
        fs::create_dir_all(self.path(abs)).unwrap();
    }

    pub fn link(&self, target: &str, abs: &str) {
        let p = self.path(abs);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    pub fn remove(&self, abs: &str) {
        let p = self.path(abs);
        if p.is_dir() {
            fs::remove_dir_all(p).unwrap();
        } else {
            fs::remove_file(p).unwrap();
        }
    }

    /// A character device node (mknod; needs root).
    pub fn char_dev(&self, abs: &str, major: u64, minor: u64) {
        let p = self.path(abs);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        nix::sys::stat::mknod(
            &p,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        )
        .unwrap_or_else(|e| panic!("mknod {}: {e} (the tests need root)", p.display()));
    }

    /// /dev/nvidiactl, nvidia-modeset, nvidia-uvm, nvidia-uvm-tools and /dev/nvidiaN.
    pub fn nvidia_nodes(&self, minors: &[u32]) {
        self.char_dev("/dev/nvidiactl", 195, 255);
        self.char_dev("/dev/nvidia-modeset", 195, 254);
        self.char_dev("/dev/nvidia-uvm", UVM_MAJOR, 0);
        self.char_dev("/dev/nvidia-uvm-tools", UVM_MAJOR, 1);
        for m in minors {
            self.char_dev(&format!("/dev/nvidia{m}"), 195, u64::from(*m));
        }
    }

    /// The NVIDIA DRM nodes of one GPU: sysfs entries, /dev/dri nodes, by-path links.
    pub fn nvidia_drm(&self, bus: &str, card: u32, render: u32) {
        self.dir(&format!("/sys/bus/pci/devices/{bus}/drm/card{card}"));
        self.dir(&format!("/sys/bus/pci/devices/{bus}/drm/renderD{render}"));
        self.dri_nodes(bus, card, render);
    }

    fn dri_nodes(&self, bus: &str, card: u32, render: u32) {
        self.char_dev(&format!("/dev/dri/card{card}"), 226, u64::from(card));
        self.char_dev(&format!("/dev/dri/renderD{render}"), 226, u64::from(render));
        self.link(
            &format!("../card{card}"),
            &format!("/dev/dri/by-path/pci-{bus}-card"),
        );
        self.link(
            &format!("../renderD{render}"),
            &format!("/dev/dri/by-path/pci-{bus}-render"),
        );
    }

    /// A DRM GPU as sysfs shows it: /sys/class/drm/{cardN,renderDN} links into
    /// /sys/devices, `device` and `driver` links, plus the /dev/dri nodes.
    pub fn drm_gpu(&self, bus: &str, driver: &str, card: u32, render: u32) {
        let dev = format!("/sys/devices/pci0000:00/{bus}");
        self.dir(&format!("/sys/bus/pci/drivers/{driver}"));
        if !self.path(&format!("{dev}/driver")).exists() {
            self.link(
                &format!("../../../bus/pci/drivers/{driver}"),
                &format!("{dev}/driver"),
            );
        }
        for node in [format!("card{card}"), format!("renderD{render}")] {
            self.dir(&format!("{dev}/drm/{node}"));
            self.link(
                &format!("../../../{bus}"),
                &format!("{dev}/drm/{node}/device"),
            );
            self.link(
                &format!("../../devices/pci0000:00/{bus}/drm/{node}"),
                &format!("/sys/class/drm/{node}"),
            );
        }
        // A connector entry that is not a device node.
        self.dir(&format!("{dev}/drm/card{card}/card{card}-DP-1"));
        self.link(
            &format!("../../devices/pci0000:00/{bus}/drm/card{card}/card{card}-DP-1"),
            &format!("/sys/class/drm/card{card}-DP-1"),
        );
        self.dri_nodes(bus, card, render);
    }

    /// NVIDIA user space: libraries (+ ld.so.cache by `ldconfig -r`), binaries, firmware,
    /// IPC sockets, ICD files.
    pub fn nvidia_userspace(&self) {
        let built = fake_libs();
        let libdir = self.path(LIBDIR);
        fs::create_dir_all(&libdir).unwrap();
        for (_, file) in LIBS {
            let file = file.replace("{v}", DRIVER);
            fs::copy(built.join(&file), libdir.join(&file)).unwrap();
        }
        fs::create_dir_all(libdir.join("vdpau")).unwrap();
        let vdpau = format!("libvdpau_nvidia.so.{DRIVER}");
        fs::copy(built.join(&vdpau), libdir.join("vdpau").join(&vdpau)).unwrap();
        self.file("/etc/ld.so.conf", &format!("{LIBDIR}\n"));
        self.ldconfig(&[]);
        for b in [
            "nvidia-smi",
            "nvidia-debugdump",
            "nvidia-persistenced",
            "nvidia-cuda-mps-control",
            "nvidia-cuda-mps-server",
        ] {
            self.executable(&format!("/usr/bin/{b}"));
        }
        // Present but not executable: must be skipped.
        self.file("/usr/bin/nvidia-imex", "not executable\n");
        for fw in ["gsp_ga10x.bin", "gsp_tu10x.bin"] {
            self.file(&format!("/lib/firmware/nvidia/{DRIVER}/{fw}"), "firmware\n");
        }
        self.socket("/run/nvidia-persistenced/socket");
        self.dir("/tmp/nvidia-mps");
        self.file("/usr/share/vulkan/icd.d/nvidia_icd.json", "{}\n");
        self.file("/usr/share/glvnd/egl_vendor.d/10_nvidia.json", "{}\n");
        self.file(
            "/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json",
            "{}\n",
        );
        self.file("/etc/vulkan/implicit_layer.d/nvidia_layers.json", "{}\n");
    }

    /// Files for every `NVIDIA_DRIVER_CAPABILITIES` value on top of [`Self::nvidia_userspace`]:
    /// utility, video, graphics and NGX libraries, 32-bit libraries (compat32), the X driver,
    /// GLX module and xorg.conf.d file (display), nvoptix.bin and the Wayland EGL config.
    pub fn nvidia_userspace_all_capabilities(&self) {
        let libdir = self.path(LIBDIR);
        let built = build_libs(CAPABILITY_LIBS, false);
        for (_, file) in CAPABILITY_LIBS {
            let file = file.replace("{v}", DRIVER);
            fs::copy(built.join(&file), libdir.join(&file)).unwrap();
        }
        let libdir32 = self.path(LIBDIR32);
        fs::create_dir_all(&libdir32).unwrap();
        let built32 = build_libs(LIBS32, true);
        for (_, file) in LIBS32 {
            let file = file.replace("{v}", DRIVER);
            fs::copy(built32.join(&file), libdir32.join(&file)).unwrap();
        }
        self.file("/etc/ld.so.conf", &format!("{LIBDIR}\n{LIBDIR32}\n"));
        self.ldconfig(&[]);
        self.file("/usr/lib/xorg/modules/drivers/nvidia_drv.so", "x driver\n");
        self.file(
            &format!("/usr/lib/xorg/modules/extensions/libglxserver_nvidia.so.{DRIVER}"),
            "glx module\n",
        );
        self.file("/usr/share/X11/xorg.conf.d/10-nvidia.conf", "Section\n");
        self.file("/usr/share/nvidia/nvoptix.bin", "optix\n");
        self.file(
            "/usr/share/egl/egl_external_platform.d/10_nvidia_wayland.json",
            "{}\n",
        );
    }

    /// Put the fake NVML (fake_nvml.c, built with the real soname) in place of the tree's
    /// libnvidia-ml stub, answering from `conf` (see fake_nvml.c for the format).
    pub fn install_fake_nvml(&self, conf: &str) {
        let lib = self.path(&format!("{LIBDIR}/libnvidia-ml.so.{DRIVER}"));
        fs::copy(fake_nvml_lib(), lib).unwrap();
        self.file(&format!("{LIBDIR}/fake-nvml.conf"), conf);
    }

    /// Run the real ldconfig over the tree (`-r ROOT`), with extra arguments.
    pub fn ldconfig(&self, extra: &[&str]) {
        let out = Command::new("ldconfig")
            .arg("-r")
            .arg(self.root())
            .args(extra)
            .output()
            .expect("ldconfig");
        assert!(
            out.status.success(),
            "ldconfig: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn socket(&self, abs: &str) {
        let p = self.path(abs);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&p).unwrap());
    }

    /// The complete 8 x H100 host: procfs from testdata, nodes, DRM, user space.
    pub fn h100x8() -> FakeHost {
        FakeHost::empty().h100x8_in()
    }

    /// Build the 8 x H100 host into this (empty) tree.
    pub fn h100x8_in(self) -> FakeHost {
        let h = self.seeded("nvidia-h100x8");
        h.nvidia_nodes(&H100_MINORS);
        for (i, bus) in H100_BUSES.iter().enumerate() {
            h.nvidia_drm(bus, i as u32 + 1, 128 + i as u32);
        }
        h.nvidia_userspace();
        h
    }

    /// 2 x A100, GPU 0 with two MIG devices (gi1/ci0, gi2/ci0).
    pub fn a100x2_mig() -> FakeHost {
        let h = FakeHost::from_testdata("nvidia-a100x2-mig");
        h.nvidia_nodes(&[0, 1]);
        h.char_dev("/dev/nvidia-caps/nvidia-cap1", CAPS_MAJOR, 1);
        h.char_dev("/dev/nvidia-caps/nvidia-cap2", CAPS_MAJOR, 2);
        for minor in [12, 13, 21, 22] {
            h.char_dev(
                &format!("/dev/nvidia-caps/nvidia-cap{minor}"),
                CAPS_MAJOR,
                minor,
            );
        }
        h.nvidia_userspace();
        h
    }

    /// A WSL2 host: /dev/dxg, the NVIDIA driver store under /usr/lib/wsl/drivers (fake ELF
    /// libraries, nvcubins.bin, nvidia-smi) and /usr/lib/wsl/lib (libdxcore.so and the
    /// loader links WSL makes there); a second, non-NVIDIA store that must be ignored.
    pub fn wsl() -> FakeHost {
        let h = FakeHost::empty();
        h.char_dev("/dev/dxg", 10, 125);
        let store = "/usr/lib/wsl/drivers/nv_dispi.inf_amd64_3d5e7b8f1a2c4d6e";
        let built = build_libs(WSL_LIBS, false);
        for (_, file) in WSL_LIBS {
            let dir = if *file == "libdxcore.so" {
                "/usr/lib/wsl/lib"
            } else {
                store
            };
            h.dir(dir);
            fs::copy(built.join(file), h.path(&format!("{dir}/{file}"))).unwrap();
        }
        h.file(&format!("{store}/nvcubins.bin"), "cubins\n");
        h.executable(&format!("{store}/nvidia-smi"));
        // What WSL puts in /usr/lib/wsl/lib besides libdxcore: links into the store.
        h.link(
            &format!("{store}/libcuda.so.1.1"),
            "/usr/lib/wsl/lib/libcuda.so.1",
        );
        h.executable("/usr/lib/wsl/drivers/iigd_dch.inf_amd64_0a1b2c3d4e5f6a7b/libigd.so");
        h
    }

    /// 2 AMD GPUs (amdgpu) and /dev/kfd.
    pub fn amd_x2(&self) {
        self.char_dev("/dev/kfd", 235, 0);
        self.drm_gpu("0000:03:00.0", "amdgpu", 0, 128);
        self.drm_gpu("0000:83:00.0", "amdgpu", 1, 129);
        self.file("/sys/module/amdgpu/version", "6.3.6\n");
        self.file(
            "/sys/devices/pci0000:00/0000:03:00.0/unique_id",
            "7e5b3c1d2a4f6e80\n",
        );
        self.file(
            "/sys/devices/pci0000:00/0000:03:00.0/product_name",
            "Instinct MI210\n",
        );
    }

    /// 1 Intel GPU (i915).
    pub fn intel_x1(&self, card: u32, render: u32) {
        self.drm_gpu("0000:00:02.0", "i915", card, render);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            fs::create_dir_all(&dest).unwrap();
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// The fake libraries, compiled once per build (gcc -shared with the right soname) into
/// the target's test temp dir.
fn fake_libs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let mut all = LIBS.to_vec();
        all.push(("libvdpau_nvidia.so.1", "libvdpau_nvidia.so.{v}"));
        build_libs(&all, false)
    })
}

/// `list` compiled (32-bit with `m32`) into a directory keyed by the list. One build at a
/// time in a process (tests run on threads and would share the work directory).
fn build_libs(list: &[(&str, &str)], m32: bool) -> PathBuf {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    // Keyed by the library list, so a changed list is rebuilt rather than reused.
    let key = list
        .iter()
        .flat_map(|(a, b)| a.bytes().chain(b.bytes()))
        .chain([u8::from(m32)])
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("fake-nvidia-libs-{DRIVER}-{key:016x}"));
    let stamp = dir.join(".complete");
    if stamp.exists() {
        return dir;
    }
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "fake-nvidia-libs-{DRIVER}-{key:016x}.{}",
        std::process::id()
    ));
    fs::create_dir_all(&work).unwrap();
    let src = work.join("fake.c");
    fs::write(&src, "int nvbind_fake_driver_symbol(void) { return 0; }\n").unwrap();
    for (soname, file) in list {
        let (soname, file) = (soname.replace("{v}", DRIVER), file.replace("{v}", DRIVER));
        let mut cmd = Command::new("gcc");
        if m32 {
            cmd.arg("-m32");
        }
        let out = cmd
            .args(["-shared", "-fPIC", "-nostdlib"])
            .arg(format!("-Wl,-soname,{soname}"))
            .arg("-o")
            .arg(work.join(&file))
            .arg(&src)
            .output()
            .expect("gcc (the tests need gcc)");
        assert!(
            out.status.success(),
            "gcc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::write(work.join(".complete"), "").unwrap();
    // Another test binary may have finished first; either copy is good.
    if fs::rename(&work, &dir).is_err() {
        let _ = fs::remove_dir_all(&work);
    }
    dir
}

/// Driver libraries of the capabilities the base tree has none of (64-bit).
const CAPABILITY_LIBS: &[(&str, &str)] = &[
    ("libnvidia-nscq.so.2", "libnvidia-nscq.so.{v}"),
    ("libnvidia-opticalflow.so.1", "libnvidia-opticalflow.so.{v}"),
    ("libnvidia-tls.so.{v}", "libnvidia-tls.so.{v}"),
    ("libnvidia-glsi.so.{v}", "libnvidia-glsi.so.{v}"),
    ("libnvidia-fbc.so.1", "libnvidia-fbc.so.{v}"),
    ("libnvidia-rtcore.so.{v}", "libnvidia-rtcore.so.{v}"),
    ("libnvoptix.so.1", "libnvoptix.so.{v}"),
    ("libGLESv2_nvidia.so.2", "libGLESv2_nvidia.so.{v}"),
    ("libnvidia-glvkspirv.so.{v}", "libnvidia-glvkspirv.so.{v}"),
    ("libnvidia-ngx.so.1", "libnvidia-ngx.so.{v}"),
];
/// 32-bit driver libraries (compat32).
const LIBS32: &[(&str, &str)] = &[
    ("libcuda.so.1", "libcuda.so.{v}"),
    ("libnvidia-ml.so.1", "libnvidia-ml.so.{v}"),
    ("libGLX_nvidia.so.0", "libGLX_nvidia.so.{v}"),
    ("libnvidia-glcore.so.{v}", "libnvidia-glcore.so.{v}"),
    ("libnvcuvid.so.1", "libnvcuvid.so.{v}"),
];
pub const LIBDIR32: &str = "/usr/lib/i386-linux-gnu";

/// The WSL2 driver store's libraries (and libdxcore from /usr/lib/wsl/lib).
const WSL_LIBS: &[(&str, &str)] = &[
    ("libcuda.so.1", "libcuda.so.1.1"),
    ("libcuda_loader.so", "libcuda_loader.so"),
    (
        "libnvidia-ptxjitcompiler.so.1",
        "libnvidia-ptxjitcompiler.so.1",
    ),
    ("libnvidia-ml.so.1", "libnvidia-ml.so.1"),
    ("libnvidia-ml_loader.so", "libnvidia-ml_loader.so"),
    ("libdxcore.so", "libdxcore.so"),
    ("libnvdxgdmal.so.1", "libnvdxgdmal.so.1"),
];

/// fake_nvml.c compiled once per build into the target's test temp dir.
fn fake_nvml_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/generate_common/fake_nvml.c");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let out = dir.join(format!("fake-nvml.so.{}", std::process::id()));
        let r = Command::new("gcc")
            .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror"])
            .arg("-Wl,-soname,libnvidia-ml.so.1")
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .output()
            .expect("gcc (the tests need gcc)");
        assert!(
            r.status.success(),
            "gcc fake_nvml.c: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        // Rebuilt by every test process (the source may have changed), renamed into place.
        let lib = dir.join("fake-nvml.so");
        fs::rename(&out, &lib).unwrap();
        lib
    })
}

/// fake-nvml.conf for the 8 x H100 host (same UUIDs, minors and buses as its procfs);
/// the GPUs at the indexes in `lost` have fallen off the bus.
pub fn h100x8_nvml_conf(lost: &[usize]) -> String {
    let mut conf = format!("driver {DRIVER}\ncuda 12040\n");
    for (i, bus) in H100_BUSES.iter().enumerate() {
        conf.push_str(&format!(
            "gpu GPU-5a0b{i}c3d-8e7f-4a1b-9c2d-3e4f5a6b7c{i:02} {} 0000{} NVIDIA H100 80GB HBM3\n",
            H100_MINORS[i],
            bus.to_uppercase()
        ));
        if lost.contains(&i) {
            conf.push_str("lost\n");
        }
    }
    conf
}

/// Options with a fixed hook path, so goldens do not depend on where tests run.
pub fn options(strategy: NameStrategy) -> GenerateOptions {
    GenerateOptions {
        name_strategy: strategy,
        hook_path: "/usr/bin/nvbind-hook".into(),
        compat32: false,
    }
}

/// Replace the temp root with `$ROOT` so goldens are stable.
pub fn normalize(text: &str, host: &FakeHost) -> String {
    text.replace(&host.root().display().to_string(), "$ROOT")
}

/// Compare with cdi/testdata/golden-generate/<name>; UPDATE_GOLDEN=1 rewrites the file.
pub fn assert_golden(name: &str, actual: &str) {
    assert_golden_in("golden-generate", name, actual)
}

/// Compare with cdi/testdata/<dir>/<name>; UPDATE_GOLDEN=1 rewrites the file.
pub fn assert_golden_in(dir: &str, name: &str, actual: &str) {
    let path = testdata().join(dir).join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden {} unreadable ({e}); run with UPDATE_GOLDEN=1 and review it",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the generated spec at line {}:\n  golden:    {:?}\n  generated: {:?}\n--- generated ---\n{actual}",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

/// A fake NVML: what a driver would answer. `None` in `gpus` is a GPU that is lost.
pub struct FakeNvml {
    pub driver: String,
    pub cuda: i32,
    pub gpus: Vec<Option<NvmlGpu>>,
}

impl NvmlApi for FakeNvml {
    fn driver_version(&self) -> Result<String, NvmlError> {
        Ok(self.driver.clone())
    }
    fn cuda_driver_version(&self) -> Result<i32, NvmlError> {
        Ok(self.cuda)
    }
    fn device_count(&self) -> Result<u32, NvmlError> {
        Ok(self.gpus.len() as u32)
    }
    fn device(&self, index: u32) -> Result<NvmlGpu, NvmlError> {
        match self.gpus.get(index as usize) {
            Some(Some(g)) => Ok(g.clone()),
            Some(None) => Err(NvmlError::GpuLost),
            None => Err(NvmlError::InvalidArg),
        }
    }
}

/// NVML's view of the 8 x H100 host (same UUIDs, minors and buses as its procfs).
pub fn h100x8_nvml() -> FakeNvml {
    FakeNvml {
        driver: DRIVER.into(),
        cuda: 12040,
        gpus: H100_BUSES
            .iter()
            .enumerate()
            .map(|(i, bus)| {
                Some(NvmlGpu {
                    uuid: format!("GPU-5a0b{i}c3d-8e7f-4a1b-9c2d-3e4f5a6b7c{i:02}"),
                    minor: H100_MINORS[i],
                    pci_bus_id: format!("0000{}", bus.to_uppercase()),
                    name: Some("NVIDIA H100 80GB HBM3".into()),
                    migs: Vec::new(),
                    warnings: Vec::new(),
                })
            })
            .collect(),
    }
}

/// NVML's view of the A100 MIG host.
pub fn a100x2_mig_nvml() -> FakeNvml {
    let gpu = |i: u32, bus: &str, migs: Vec<NvmlMig>| NvmlGpu {
        uuid: format!("GPU-a100{i}a1b-2c3d-4e5f-6a7b-8c9d0e1f2a{i:02}"),
        minor: i,
        pci_bus_id: format!("0000{}", bus.to_uppercase()),
        name: Some("NVIDIA A100-SXM4-40GB".into()),
        migs,
        warnings: Vec::new(),
    };
    FakeNvml {
        driver: DRIVER.into(),
        cuda: 12040,
        gpus: vec![
            Some(gpu(
                0,
                "0000:07:00.0",
                vec![
                    NvmlMig {
                        index: 0,
                        uuid: "MIG-1d2e3f40-5a6b-5c7d-8e9f-0a1b2c3d4e5f".into(),
                        gpu_instance_id: 1,
                        compute_instance_id: 0,
                    },
                    NvmlMig {
                        index: 1,
                        uuid: "MIG-6f7a8b9c-0d1e-5f2a-3b4c-5d6e7f8a9b0c".into(),
                        gpu_instance_id: 2,
                        compute_instance_id: 0,
                    },
                ],
            )),
            Some(gpu(1, "0000:0f:00.0", Vec::new())),
        ],
    }
}
