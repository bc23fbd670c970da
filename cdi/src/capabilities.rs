//! `NVIDIA_DRIVER_CAPABILITIES`: which driver files a container that asks for GPUs through
//! `NVIDIA_VISIBLE_DEVICES` gets, as NVIDIA's container stack defines them.
//!
//! The lists are libnvidia-container's (src/nvc_info.c: `utility_bins`, `compute_bins`,
//! `utility_libs`, `compute_libs`, `video_libs`, `graphics_libs`, `graphics_libs_glvnd`,
//! `graphics_libs_compat`, `ngx_libs`, `dxcore_libs`) with its capability flags
//! (src/options.h): `utility` = utility libraries and binaries, `compute` = compute
//! libraries and binaries, `video` = video and compute libraries, `graphics` = graphics
//! libraries, `display` = graphics libraries plus the display files, `ngx` = the NGX
//! library, `compat32` = the 32-bit variants of the selected libraries. From its mount
//! code (src/nvc_mount.c): the persistenced and fabricmanager sockets need `utility`, the
//! MPS directory and the nvidia-uvm nodes `compute`, nvidia-modeset `display`; GPU nodes,
//! nvidiactl, capability nodes and GSP firmware are always given. From the toolkit's
//! graphics discovery (internal/discover/graphics.go): the GBM and Wayland EGL platform
//! libraries, the Vulkan, GLVND and EGL configs, nvoptix.bin and the GPUs' /dev/dri nodes
//! (matched by PCI bus id) come with `graphics` (or `display`); the X driver
//! `nvidia_drv.so`, `libglxserver_nvidia.so` and the xorg.conf.d files with `display`.
//!
//! A file the lists do not know is kept: the spec that names it is the authority on it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::requests::DriverCapabilities;
use crate::spec::{ContainerEdits, Hook};

/// What a file needs, libnvidia-container's option flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Need {
    UtilityLibs,
    UtilityBins,
    ComputeLibs,
    ComputeBins,
    VideoLibs,
    GraphicsLibs,
    NgxLibs,
    /// The display capability itself (nvidia-modeset, the X driver and its configs).
    Display,
    /// Always given (firmware, GPU and control nodes, dxcore).
    Always,
}

impl Need {
    /// How many there are (`Always` is the last).
    const COUNT: usize = Need::Always as usize + 1;
}

/// The flags a set of capabilities turns on (libnvidia-container's `container_opts`).
pub fn flags(caps: &DriverCapabilities) -> HashSet<Need> {
    let mut f = HashSet::from([Need::Always]);
    for c in &caps.0 {
        match c.as_str() {
            "utility" => f.extend([Need::UtilityLibs, Need::UtilityBins]),
            "compute" => f.extend([Need::ComputeLibs, Need::ComputeBins]),
            "video" => f.extend([Need::VideoLibs, Need::ComputeLibs]),
            "graphics" => f.extend([Need::GraphicsLibs]),
            "display" => f.extend([Need::Display, Need::GraphicsLibs]),
            "ngx" => f.extend([Need::NgxLibs]),
            _ => {}
        }
    }
    f
}

const UTILITY_BINS: &[&str] = &[
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nv-fabricmanager",
    // The toolkit's own additions: the IMEX tools manage the same driver state.
    "nvidia-imex",
    "nvidia-imex-ctl",
];
const COMPUTE_BINS: &[&str] = &["nvidia-cuda-mps-control", "nvidia-cuda-mps-server"];
const UTILITY_LIBS: &[&str] = &["libnvidia-ml.so", "libnvidia-cfg.so", "libnvidia-nscq.so"];
const COMPUTE_LIBS: &[&str] = &[
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
    "libnvidia-tileiras.so",
];
const VIDEO_LIBS: &[&str] = &[
    "libvdpau_nvidia.so",
    "libnvidia-encode.so",
    "libnvidia-opticalflow.so",
    "libnvcuvid.so",
];
const GRAPHICS_LIBS: &[&str] = &[
    "libnvidia-eglcore.so",
    "libnvidia-glcore.so",
    "libnvidia-tls.so",
    "libnvidia-glsi.so",
    "libnvidia-fbc.so",
    "libnvidia-ifr.so",
    "libnvidia-rtcore.so",
    "libnvoptix.so",
    // graphics_libs_glvnd
    "libGLX_nvidia.so",
    "libEGL_nvidia.so",
    "libGLESv2_nvidia.so",
    "libGLESv1_CM_nvidia.so",
    "libnvidia-glvkspirv.so",
    "libnvidia-cbl.so",
    // graphics_libs_compat
    "libGL.so",
    "libEGL.so",
    "libGLESv1_CM.so",
    "libGLESv2.so",
    // The toolkit's graphics discovery.
    "libnvidia-egl-gbm.so",
    "libnvidia-egl-wayland.so",
    "libnvidia-egl-xcb.so",
    "libnvidia-egl-xlib.so",
    "libnvidia-vulkan-producer.so",
];
const NGX_LIBS: &[&str] = &["libnvidia-ngx.so"];
const DXCORE_LIBS: &[&str] = &["libdxcore.so"];
const DISPLAY_FILES: &[&str] = &["nvidia_drv.so", "libglxserver_nvidia.so"];

/// Whether `name` starts with one of `prefixes` (libnvidia-container's
/// `str_array_match_prefix`).
fn listed(name: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| name.starts_with(p))
}

/// `Path::file_name` of a path given as text, without `Path`'s component parsing for the
/// usual shape (a last segment that is a plain name): every mount of a spec is classified.
fn file_name(path: &str) -> Option<&str> {
    match path.rsplit_once('/').map_or(path, |(_, last)| last) {
        "" | "." | ".." => Path::new(path).file_name()?.to_str(),
        name => Some(name),
    }
}

/// What a mounted file needs; None for a file the lists do not know.
pub fn need_of_file(container_path: &str) -> Option<Need> {
    let name = file_name(container_path)?;
    let s = container_path;
    if s.starts_with("/lib/firmware/") {
        return Some(Need::Always);
    }
    if s.ends_with("/nvidia-persistenced/socket") || s.ends_with("/nvidia-fabricmanager/socket") {
        return Some(Need::UtilityLibs);
    }
    if name == "nvidia-mps" {
        return Some(Need::ComputeLibs);
    }
    if s.contains("/xorg.conf.d/") || listed(name, DISPLAY_FILES) {
        return Some(Need::Display);
    }
    if s.contains("/vulkan/")
        || s.contains("/glvnd/")
        || s.contains("/egl/")
        || name == "nvoptix.bin"
    {
        return Some(Need::GraphicsLibs);
    }
    if listed(name, DXCORE_LIBS) {
        return Some(Need::Always);
    }
    let lib_lists: [(&[&str], Need); 5] = [
        (UTILITY_LIBS, Need::UtilityLibs),
        (COMPUTE_LIBS, Need::ComputeLibs),
        (VIDEO_LIBS, Need::VideoLibs),
        (GRAPHICS_LIBS, Need::GraphicsLibs),
        (NGX_LIBS, Need::NgxLibs),
    ];
    for (list, need) in lib_lists {
        if listed(name, list) {
            return Some(need);
        }
    }
    // Binaries are matched by their whole name.
    if UTILITY_BINS.contains(&name) {
        return Some(Need::UtilityBins);
    }
    if COMPUTE_BINS.contains(&name) {
        return Some(Need::ComputeBins);
    }
    None
}

/// Whether a library path is a 32-bit one (needs `compat32` as well).
pub fn is_32bit_path(container_path: &str) -> bool {
    [
        "/i386-linux-gnu/",
        "/lib32/",
        "/usr/lib/i686/",
        "/lib/i686/",
    ]
    .iter()
    .any(|d| container_path.contains(d))
}

/// What a device node needs.
pub fn need_of_node(path: &str) -> Need {
    match path {
        "/dev/nvidia-uvm" | "/dev/nvidia-uvm-tools" => Need::ComputeLibs,
        "/dev/nvidia-modeset" => Need::Display,
        p if p.starts_with("/dev/dri/") => Need::GraphicsLibs,
        _ => Need::Always,
    }
}

/// `libcuda.so.550.54.14` -> `libcuda.so`; None for a name without `.so`.
fn library_stem(name: &str) -> Option<&str> {
    // A byte scan: `str::find`'s searcher costs more to set up than a file name takes.
    let at = name.as_bytes().windows(3).position(|w| w == b".so")?;
    Some(&name[..at + 3])
}

/// A path as `Path` compares and hashes it: its components joined by `/` (`/a//b/./c/` ->
/// `/a/b/c`). Borrowed when already so, as the paths of a spec are: `select` compares paths
/// as text, since `Path`'s hashing and component parsing were a quarter of its cost
/// (callgrind, the 8-GPU spec with the default capabilities: 252k -> 192k instructions).
fn canonical(p: &str) -> Cow<'_, str> {
    if crate::path_text::is_canonical(p.as_bytes()) {
        return Cow::Borrowed(p);
    }
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        out.push(c);
    }
    // Components of a str are str.
    Cow::Owned(out.to_string_lossy().into_owned())
}

/// `Path::parent` of a canonical path: `/a` -> `/`, `a` -> ``, `/` and `` -> None.
fn parent(p: &str) -> Option<&str> {
    if p.is_empty() || p == "/" {
        return None;
    }
    Some(match p.rsplit_once('/') {
        Some(("", _)) => "/",
        Some((dir, _)) => dir,
        None => "",
    })
}

/// (directory, library stem) of a canonical path: `/usr/lib/libcuda.so.1` -> (`/usr/lib`,
/// `libcuda.so`).
fn dir_stem(p: &str) -> Option<(&str, &str)> {
    let name = p.rsplit_once('/').map_or(p, |(_, last)| last);
    let stem = library_stem(name)?;
    Some((parent(p)?, stem))
}

/// Where `target` points from the link `link` (canonical), worked out on the names alone:
/// `Path`'s lexical join (`..` takes off a component), as a canonical path.
fn lexical_target(link: &str, target: &str) -> String {
    let mut out = String::with_capacity(link.len() + target.len());
    if target.starts_with('/') {
        out.push('/');
    } else if let Some(dir) = parent(link) {
        out.push_str(dir);
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                // `PathBuf::pop`: the parent is a prefix of the path.
                if let Some(dir) = parent(&out) {
                    out.truncate(dir.len());
                }
            }
            n => {
                if !out.is_empty() && out != "/" {
                    out.push('/');
                }
                out.push_str(n);
            }
        }
    }
    out
}

/// Removes from `edits` what `caps` does not select. Returns the container paths removed.
pub fn select(edits: &mut ContainerEdits, caps: &DriverCapabilities) -> Vec<String> {
    // Looked up once a file: an array, not the set `flags` returns.
    let mut on = [false; Need::COUNT];
    for n in flags(caps) {
        on[n as usize] = true;
    }
    let compat32 = caps.contains("compat32");
    let wanted_file = |p: &str| match need_of_file(p) {
        None => true,
        Some(n) => on[n as usize] && (!is_32bit_path(p) || compat32),
    };
    let mut removed = Vec::new();
    edits.mounts.retain(|m| {
        let keep = wanted_file(&m.container_path);
        if !keep {
            removed.push(m.container_path.clone());
        }
        keep
    });
    edits.device_nodes.retain(|n| {
        let keep = on[need_of_node(&n.path) as usize];
        if !keep {
            removed.push(n.path.clone());
        }
        keep
    });
    // Links are judged by what they point at, resolved from the link's directory: a link
    // into a removed file (or to another version of a removed library in the same
    // directory) goes too.
    let mut gone_files: HashSet<Cow<str>> = HashSet::with_capacity(removed.len());
    gone_files.extend(removed.iter().map(|p| canonical(p)));
    let mut gone_stems: HashSet<(&str, &str)> = HashSet::with_capacity(removed.len());
    gone_stems.extend(gone_files.iter().filter_map(|p| dir_stem(p)));
    let graphics = on[Need::GraphicsLibs as usize];
    let link_wanted = |target: &str, link: &str| {
        // The GBM backend link is the toolkit's graphics discovery.
        if link.contains("/gbm/") && !graphics {
            return false;
        }
        if gone_files.is_empty() {
            return true;
        }
        let link = canonical(link);
        let target = lexical_target(&link, target);
        if gone_files.contains(target.as_str()) {
            return false;
        }
        ![target.as_str(), &link]
            .iter()
            .filter_map(|p| dir_stem(p))
            .any(|k| gone_stems.contains(&k))
    };
    for h in edits.hooks.iter_mut() {
        filter_link_hook(h, &link_wanted);
    }
    // A linker-cache folder no library is mounted into any more (vdpau without video).
    let mount_paths: Vec<Cow<str>> = edits
        .mounts
        .iter()
        .map(|m| canonical(&m.container_path))
        .collect();
    let mut lib_dirs: HashSet<&str> = HashSet::with_capacity(mount_paths.len());
    lib_dirs.extend(mount_paths.iter().filter_map(|p| parent(p)));
    for h in edits.hooks.iter_mut().filter(|h| is_ldcache_hook(h)) {
        drop_flag_values(h, "--folder", &|v| lib_dirs.contains(&*canonical(v)));
    }
    // A hook left with nothing to do goes.
    let empty = |h: &Hook| {
        let no_links = is_link_hook(h) && !h.args.iter().any(|a| a.contains("::"));
        let no_folders = is_ldcache_hook(h) && !h.args.iter().any(|a| a.starts_with("--folder"));
        no_links || no_folders
    };
    edits.hooks.retain(|h| !empty(h));
    removed
}

fn is_ldcache_hook(h: &Hook) -> bool {
    h.args.iter().any(|a| a == "update-ldcache")
}

/// Keeps the `FLAG V` / `FLAG=V` pairs whose value `keep` accepts.
fn drop_flag_values(h: &mut Hook, flag: &str, keep: &dyn Fn(&str) -> bool) {
    let eq = format!("{flag}=");
    let mut out = Vec::with_capacity(h.args.len());
    let mut it = h.args.iter();
    while let Some(a) = it.next() {
        if a == flag {
            if let Some(v) = it.next() {
                if keep(v) {
                    out.push(a.clone());
                    out.push(v.clone());
                }
            }
        } else if let Some(v) = a.strip_prefix(&eq) {
            if keep(v) {
                out.push(a.clone());
            }
        } else {
            out.push(a.clone());
        }
    }
    h.args = out;
}

fn is_link_hook(h: &Hook) -> bool {
    h.args.iter().any(|a| a == "create-symlinks")
}

/// Drops the `--link T::L` pairs of a create-symlinks hook that `keep` refuses.
fn filter_link_hook(h: &mut Hook, keep: &dyn Fn(&str, &str) -> bool) {
    if !is_link_hook(h) {
        return;
    }
    let mut out = Vec::with_capacity(h.args.len());
    let mut it = h.args.iter().peekable();
    while let Some(a) = it.next() {
        if a == "--link" {
            if let Some(v) = it.peek() {
                if let Some((t, l)) = v.split_once("::") {
                    let v = it.next().expect("peeked");
                    if keep(t, l) {
                        out.push(a.clone());
                        out.push(v.clone());
                    }
                    continue;
                }
            }
        } else if let Some(v) = a.strip_prefix("--link=") {
            if let Some((t, l)) = v.split_once("::") {
                if keep(t, l) {
                    out.push(a.clone());
                }
                continue;
            }
        }
        out.push(a.clone());
    }
    h.args = out;
}

#[cfg(test)]
mod tests;
