//! The NVIDIA driver's files, as the NVIDIA Container Toolkit mounts them
//! (pkg/nvcdi/driver-nvml.go, internal/discover/{ipc,graphics}.go):
//! - libraries from the driver root's ld.so.cache whose resolved file name ends in
//!   `.so.<driver version>` (plus the EGL platform libraries, versioned on their own, and
//!   the legacy libnvidia-nvvm70), kept under their versioned names;
//! - the utility / MPS / IMEX binaries;
//! - the persistenced, fabricmanager and MPS IPC endpoints;
//! - GSP firmware `nvidia/<version>/gsp*.bin` in the kernel's firmware search path;
//! - Vulkan, EGL, GLX and X11 config files;
//! - symlinks the toolkit has its hook create (`libcuda.so`, the GBM backend).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::host::{read_text, sorted_dir_names, HostRoots};
use super::ldcache::LdCache;
use super::{HostFile, Shared, Symlink};

/// Driver libraries by soname prefix (libnvidia-container's lists, the toolkit's explicit
/// list). Used to select libraries when the driver version is not known.
pub const DRIVER_LIBRARIES: &[&str] = &[
    // utility
    "libnvidia-ml.so",
    "libnvidia-cfg.so",
    "libnvidia-nscq.so",
    // compute
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-opencl.so",
    "libnvidia-gpucomp.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-fatbinaryloader.so",
    "libnvidia-allocator.so",
    "libnvidia-compiler.so",
    "libnvidia-pkcs11.so",
    "libnvidia-pkcs11-openssl3.so",
    "libnvidia-nvvm.so",
    // video
    "libvdpau_nvidia.so",
    "libnvidia-encode.so",
    "libnvidia-opticalflow.so",
    "libnvcuvid.so",
    // graphics
    "libnvidia-eglcore.so",
    "libnvidia-glcore.so",
    "libnvidia-tls.so",
    "libnvidia-glsi.so",
    "libnvidia-fbc.so",
    "libnvidia-ifr.so",
    "libnvidia-rtcore.so",
    "libnvoptix.so",
    "libGLX_nvidia.so",
    "libEGL_nvidia.so",
    "libGLESv2_nvidia.so",
    "libGLESv1_CM_nvidia.so",
    "libnvidia-glvkspirv.so",
    "libnvidia-cbl.so",
    "libnvidia-ngx.so",
    "libnvidia-api.so",
    "libnvidia-egl-gbm.so",
    "libnvidia-egl-wayland.so",
    "libnvidia-vulkan-producer.so",
];

/// Libraries with their own version scheme (`*.so.*.*` in the toolkit).
const SELF_VERSIONED: &[&str] = &[
    "libnvidia-egl-gbm.so.",
    "libnvidia-egl-wayland.so.",
    "libnvidia-nvvm70.so.",
];

/// Binaries the toolkit mounts (utility, MPS, IMEX).
pub const DRIVER_BINARIES: &[&str] = &[
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
    "nvidia-imex",
    "nvidia-imex-ctl",
];

/// IPC endpoints: (preferred path, alternative through /var/run).
const IPC: &[(&str, &str)] = &[
    (
        "/run/nvidia-persistenced/socket",
        "/var/run/nvidia-persistenced/socket",
    ),
    (
        "/run/nvidia-fabricmanager/socket",
        "/var/run/nvidia-fabricmanager/socket",
    ),
    ("/tmp/nvidia-mps", "/tmp/nvidia-mps"),
];

/// Config files, relative to each config directory (graphics.go).
const CONFIGS: &[&str] = &[
    "vulkan/icd.d/nvidia_icd.json",
    "vulkan/icd.d/nvidia_icd.x86_64.json",
    "vulkan/icd.d/nvidia_layers.json",
    "vulkan/implicit_layer.d/nvidia_layers.json",
    "glvnd/egl_vendor.d/10_nvidia.json",
    "egl/egl_external_platform.d/15_nvidia_gbm.json",
    "egl/egl_external_platform.d/10_nvidia_wayland.json",
    "nvidia/nvoptix.bin",
    "X11/xorg.conf.d/10-nvidia.conf",
    "X11/xorg.conf.d/nvidia-drm-outputclass.conf",
];

const CONFIG_DIRS: &[&str] = &["/etc", "/usr/share", "/usr/local/share"];

/// Whether a cache entry's soname may belong to the driver (cheap filter before resolving).
fn may_be_driver_library(soname: &str) -> bool {
    soname.contains("nvidia") || soname.starts_with("libcuda") || soname.starts_with("libnv")
}

fn is_driver_library(file_name: &str, version: Option<&str>) -> bool {
    if SELF_VERSIONED.iter().any(|p| file_name.starts_with(p)) {
        return true;
    }
    match version {
        Some(v) => file_name
            .strip_suffix(v)
            .is_some_and(|head| head.ends_with(".so.")),
        None => DRIVER_LIBRARIES.iter().any(|p| {
            file_name
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1)
        }),
    }
}

/// Driver libraries listed in `cache`, resolved inside the driver root to their versioned
/// files, sorted by path and without duplicates. With no `version`, the known library
/// names are used instead of the version suffix.
pub fn driver_libraries(
    roots: &HostRoots,
    cache: &LdCache,
    version: Option<&str>,
) -> Vec<HostFile> {
    let mut libs = select_libraries(roots, cache.native_libraries(), version);
    // VDPAU is loaded from <libdir>/vdpau, which ldconfig does not index.
    if let Some(v) = version {
        let dirs: Vec<PathBuf> = unique_dirs(&libs);
        for dir in dirs {
            let p = dir.join("vdpau").join(format!("libvdpau_nvidia.so.{v}"));
            if let Some(f) = roots.driver_file(&p) {
                if !libs.iter().any(|l| l.path == p) {
                    libs.push(f);
                }
            }
        }
    }
    libs.sort_by(|a, b| a.path.cmp(&b.path));
    libs
}

/// The 32-bit driver libraries (i386 entries of `cache`), for the `compat32` capability.
pub fn driver_libraries32(
    roots: &HostRoots,
    cache: &LdCache,
    version: Option<&str>,
) -> Vec<HostFile> {
    let mut libs = select_libraries(roots, cache.i386_libraries(), version);
    libs.sort_by(|a, b| a.path.cmp(&b.path));
    libs
}

fn select_libraries<'a>(
    roots: &HostRoots,
    entries: impl Iterator<Item = &'a crate::discover::ldcache::Entry>,
    version: Option<&str>,
) -> Vec<HostFile> {
    let mut seen = HashSet::new();
    let mut libs = Vec::new();
    let mut walk = roots.in_driver_root();
    for entry in entries {
        if !may_be_driver_library(&entry.name) {
            continue;
        }
        let Some(resolved) = walk.resolve(&entry.path) else {
            continue;
        };
        let Some(file_name) = resolved.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !is_driver_library(file_name, version) || !seen.insert(resolved.clone()) {
            continue;
        }
        libs.push(HostFile {
            host_path: roots.driver(&resolved),
            path: resolved,
        });
    }
    libs
}

/// The X server's NVIDIA driver and GLX module, as the toolkit's graphics discovery finds
/// them: the first `nvidia_drv.so` and `libglxserver_nvidia.so.<version>` in the X module
/// directories next to the driver libraries, then the usual X module directories.
pub fn xorg_modules(roots: &HostRoots, libs: &[HostFile], version: &str) -> Vec<HostFile> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(libdir) = libs
        .iter()
        .find(|l| {
            l.path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libcuda.so"))
        })
        .and_then(|l| l.path.parent())
    {
        dirs.push(libdir.join("nvidia/xorg"));
        for sub in [
            "modules/drivers",
            "modules/extensions",
            "modules/updates/drivers",
            "modules/updates/extensions",
        ] {
            dirs.push(libdir.join("xorg").join(sub));
        }
    }
    for base in [
        "/usr/lib/xorg",
        "/usr/lib64/xorg",
        "/usr/X11R6/lib",
        "/usr/X11R6/lib64",
    ] {
        for sub in [
            "modules/drivers",
            "modules/extensions",
            "modules/updates/drivers",
            "modules/updates/extensions",
        ] {
            dirs.push(Path::new(base).join(sub));
        }
    }
    let glx = format!("libglxserver_nvidia.so.{version}");
    [String::from("nvidia_drv.so"), glx]
        .iter()
        .filter_map(|name| dirs.iter().find_map(|d| roots.driver_file(d.join(name))))
        .collect()
}

/// Directories of `files` (container paths), in first-seen order.
pub fn unique_dirs(files: &[HostFile]) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    let mut dirs = Vec::new();
    for f in files {
        if let Some(d) = f.path.parent() {
            if seen.insert(d.to_path_buf()) {
                dirs.push(d.to_path_buf());
            }
        }
    }
    dirs
}

/// Links the create-symlinks hook makes for the libraries found.
pub fn library_symlinks(libs: &[HostFile], version: Option<&str>) -> Vec<Symlink> {
    let mut links = Vec::new();
    for lib in libs {
        let (Some(dir), Some(name)) = (
            lib.path.parent(),
            lib.path.file_name().and_then(|n| n.to_str()),
        ) else {
            continue;
        };
        let versioned = |base: &str| match version {
            Some(v) => name == format!("{base}.{v}"),
            None => name.starts_with(&format!("{base}.")),
        };
        if versioned("libcuda.so") {
            // The development link CUDA applications built with -lcuda look for.
            links.push(Symlink {
                target: "libcuda.so.1".into(),
                link: dir.join("libcuda.so"),
            });
        } else if versioned("libnvidia-allocator.so") {
            // The GBM backend: gbm/nvidia-drm_gbm.so -> ../libnvidia-allocator.so.1.
            links.push(Symlink {
                target: "../libnvidia-allocator.so.1".into(),
                link: dir.join("gbm/nvidia-drm_gbm.so"),
            });
        } else if versioned("libnvidia-vulkan-producer.so") {
            links.push(Symlink {
                target: name.into(),
                link: dir.join("libnvidia-vulkan-producer.so"),
            });
        } else if versioned("libglxserver_nvidia.so") {
            links.push(Symlink {
                target: name.into(),
                link: dir.join("libglxserver_nvidia.so"),
            });
        }
    }
    links
}

pub fn binaries(roots: &HostRoots) -> Vec<HostFile> {
    DRIVER_BINARIES
        .iter()
        .filter_map(|b| roots.driver_executable(b))
        .collect()
}

pub fn ipc(roots: &HostRoots) -> Vec<HostFile> {
    IPC.iter()
        .filter_map(|(a, b)| roots.driver_file(a).or_else(|| roots.driver_file(b)))
        .collect()
}

/// GSP firmware for `version`, searched like the kernel's firmware loader does.
pub fn firmware(roots: &HostRoots, version: &str) -> Vec<HostFile> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(custom) = read_text(&roots.sys("/sys/module/firmware_class/parameters/path")) {
        let custom = custom.trim();
        if custom.starts_with('/') {
            dirs.push(PathBuf::from(custom));
        }
    }
    let release = nix::sys::utsname::uname()
        .ok()
        .map(|u| u.release().to_string_lossy().into_owned());
    if let Some(r) = &release {
        dirs.push(Path::new("/lib/firmware/updates").join(r));
    }
    dirs.push("/lib/firmware/updates".into());
    if let Some(r) = &release {
        dirs.push(Path::new("/lib/firmware").join(r));
    }
    dirs.push("/lib/firmware".into());
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    for dir in dirs {
        let dir = dir.join("nvidia").join(version);
        for name in sorted_dir_names(&roots.driver(&dir)) {
            if name.starts_with("gsp") && name.ends_with(".bin") && seen.insert(name.clone()) {
                if let Some(f) = roots.driver_file(dir.join(&name)) {
                    files.push(f);
                }
            }
        }
    }
    files
}

pub fn configs(roots: &HostRoots) -> Vec<HostFile> {
    CONFIGS
        .iter()
        .filter_map(|rel| {
            CONFIG_DIRS
                .iter()
                .find_map(|dir| roots.driver_file(Path::new(dir).join(rel)))
        })
        .collect()
}

/// Everything file-shaped the driver provides, into `shared`.
pub fn collect(
    roots: &HostRoots,
    cache: Option<&LdCache>,
    version: Option<&str>,
    shared: &mut Shared,
    warnings: &mut Vec<String>,
) {
    if let Some(cache) = cache {
        shared.libraries = driver_libraries(roots, cache, version);
        shared.libraries32 = driver_libraries32(roots, cache, version);
        if shared.libraries.is_empty() {
            warnings.push(format!(
                "no NVIDIA driver library found through {}",
                cache.path().display()
            ));
        }
    }
    shared.binaries = binaries(roots);
    shared.ipc = ipc(roots);
    if let Some(v) = version {
        shared.display = xorg_modules(roots, &shared.libraries, v);
    }
    if cache.is_some() {
        let files: Vec<HostFile> = shared
            .libraries
            .iter()
            .chain(&shared.display)
            .cloned()
            .collect();
        shared.symlinks = library_symlinks(&files, version);
    }
    match version {
        Some(v) => shared.firmware = firmware(roots, v),
        None => warnings.push("driver version unknown: GSP firmware is left out".to_owned()),
    }
    shared.configs = configs(roots);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_suffix_selects_driver_libraries() {
        let v = Some("550.54.14");
        assert!(is_driver_library("libcuda.so.550.54.14", v));
        assert!(is_driver_library("libnvidia-egl-gbm.so.1.1.1", v));
        assert!(!is_driver_library("libcuda.so.1", v));
        assert!(!is_driver_library("libcuda.so.550.54.140", v));
        assert!(!is_driver_library("libnvrtc.so.12.4.99", v));
        assert!(is_driver_library("libnvidia-ml.so.535.1", None));
        assert!(!is_driver_library("libnvidia-mlx.so.1", None));
    }

    #[test]
    fn symlinks_follow_the_toolkit() {
        let lib = |p: &str| HostFile {
            path: p.into(),
            host_path: p.into(),
        };
        let links = library_symlinks(
            &[
                lib("/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.14"),
                lib("/usr/lib/x86_64-linux-gnu/libnvidia-allocator.so.550.54.14"),
                lib("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.14"),
            ],
            Some("550.54.14"),
        );
        assert_eq!(
            links,
            vec![
                Symlink {
                    target: "libcuda.so.1".into(),
                    link: "/usr/lib/x86_64-linux-gnu/libcuda.so".into()
                },
                Symlink {
                    target: "../libnvidia-allocator.so.1".into(),
                    link: "/usr/lib/x86_64-linux-gnu/gbm/nvidia-drm_gbm.so".into()
                },
            ]
        );
    }
}
