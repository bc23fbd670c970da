//! Host access through roots: every path the discoverers read is an absolute path *inside*
//! one of four roots, so tests (and drivers installed in a container image) point the same
//! code at another tree.

use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

/// A character device node: `path` as the container sees it, `host_path` where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceNode {
    pub path: PathBuf,
    pub host_path: PathBuf,
    pub major: u64,
    pub minor: u64,
    /// Whether the host has the node (false: known by its numbers alone, from /proc, and
    /// made in the container from them).
    pub on_host: bool,
}

/// A file or directory to bind mount: `path` in the container, `host_path` on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFile {
    pub path: PathBuf,
    pub host_path: PathBuf,
}

/// The four trees discovery reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoots {
    /// Where the driver's libraries, binaries, firmware and config files live (`/`, or e.g.
    /// `/run/nvidia/driver` when the driver is installed in a container image).
    pub driver_root: PathBuf,
    /// Where `/dev` is found.
    pub dev_root: PathBuf,
    /// Where `/proc` is found.
    pub proc_root: PathBuf,
    /// Where `/sys` is found.
    pub sys_root: PathBuf,
}

impl Default for HostRoots {
    fn default() -> Self {
        HostRoots::under("/")
    }
}

impl HostRoots {
    /// All four roots at `root` (a fake host tree, or `/`).
    pub fn under(root: impl Into<PathBuf>) -> HostRoots {
        let root = root.into();
        HostRoots {
            driver_root: root.clone(),
            dev_root: root.clone(),
            proc_root: root.clone(),
            sys_root: root,
        }
    }

    pub fn driver(&self, abs: impl AsRef<Path>) -> PathBuf {
        join_root(&self.driver_root, abs.as_ref())
    }
    pub fn dev(&self, abs: impl AsRef<Path>) -> PathBuf {
        join_root(&self.dev_root, abs.as_ref())
    }
    pub fn proc(&self, abs: impl AsRef<Path>) -> PathBuf {
        join_root(&self.proc_root, abs.as_ref())
    }
    pub fn sys(&self, abs: impl AsRef<Path>) -> PathBuf {
        join_root(&self.sys_root, abs.as_ref())
    }

    /// The character device at `container_path` (e.g. `/dev/nvidia0`) under the dev root,
    /// or None when it is missing or not a character device.
    pub fn char_device(&self, container_path: impl AsRef<Path>) -> Option<DeviceNode> {
        let container_path = container_path.as_ref();
        let host_path = self.dev(container_path);
        let meta = fs::metadata(&host_path).ok()?;
        if !meta.file_type().is_char_device() {
            return None;
        }
        let rdev = meta.rdev();
        Some(DeviceNode {
            path: container_path.to_path_buf(),
            host_path,
            major: nix::sys::stat::major(rdev),
            minor: nix::sys::stat::minor(rdev),
            on_host: true,
        })
    }

    /// A file under the driver root, resolved through symlinks as the container would see
    /// it, when it exists. The container path is the path asked for (not the link target).
    pub fn driver_file(&self, container_path: impl AsRef<Path>) -> Option<HostFile> {
        let container_path = container_path.as_ref();
        let host_path = self.driver(container_path);
        fs::metadata(&host_path).ok()?;
        Some(HostFile {
            path: container_path.to_path_buf(),
            host_path,
        })
    }

    /// The first executable regular file named `name` in the usual binary directories
    /// under the driver root.
    pub fn driver_executable(&self, name: &str) -> Option<HostFile> {
        for dir in [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ] {
            let container_path = Path::new(dir).join(name);
            let host_path = self.driver(&container_path);
            if let Ok(meta) = fs::metadata(&host_path) {
                if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                    return Some(HostFile {
                        path: container_path,
                        host_path,
                    });
                }
            }
        }
        None
    }

    /// Resolve `abs` inside the driver root the way the kernel would inside a chroot:
    /// absolute link targets restart at the root, `..` never climbs above it. Returns the
    /// resolved path *inside* the root, or None when a component is missing or there are
    /// more than 40 links.
    pub fn resolve_in_driver_root(&self, abs: &Path) -> Option<PathBuf> {
        resolve_in_root(&self.driver_root, abs)
    }

    /// A walker for many [`HostRoots::resolve_in_driver_root`]s in a row.
    pub fn in_driver_root(&self) -> InRoot<'_> {
        InRoot::new(&self.driver_root)
    }
}

/// `root` joined with the absolute path `abs` (its leading `/` dropped).
///
/// Discovery joins a few hundred paths per resolve (every library, node and link of an
/// 8-GPU host, each component of a link walk), and `Path`'s component-wise strip and join
/// cost about 1,800 instructions each (callgrind). A path and a root already in canonical
/// form (one leading `/`, no empty or `.` component, no trailing `/`) are their own
/// component lists, so they are joined as text; anything else takes `Path`'s way, which
/// tidies it. The unit test `join_root_matches_paths_own_join` holds the two to the same
/// answers.
pub fn join_root(root: &Path, abs: &Path) -> PathBuf {
    let bytes = abs.as_os_str().as_bytes();
    let root_bytes = root.as_os_str().as_bytes();
    if is_canonical_absolute(bytes) {
        if root_bytes.is_empty() || root_bytes == b"/" {
            return abs.to_path_buf();
        }
        if is_canonical_absolute(root_bytes) {
            let mut out = Vec::with_capacity(root_bytes.len() + bytes.len());
            out.extend_from_slice(root_bytes);
            out.extend_from_slice(bytes);
            return PathBuf::from(std::ffi::OsString::from_vec(out));
        }
    }
    join_root_by_components(root, abs)
}

/// An absolute path other than `/` in the form `Path` gives back (`path_text::is_canonical`).
fn is_canonical_absolute(p: &[u8]) -> bool {
    p.len() > 1 && p[0] == b'/' && crate::path_text::is_canonical(p)
}

fn join_root_by_components(root: &Path, abs: &Path) -> PathBuf {
    let rel = abs.strip_prefix("/").unwrap_or(abs);
    if root == Path::new("/") || root.as_os_str().is_empty() {
        Path::new("/").join(rel)
    } else {
        root.join(rel)
    }
}

/// See [`HostRoots::resolve_in_driver_root`].
pub fn resolve_in_root(root: &Path, abs: &Path) -> Option<PathBuf> {
    InRoot::new(root).resolve(abs)
}

/// Resolves many paths inside one root, as [`resolve_in_root`] does each, remembering the
/// directories it has seen (in-root paths that are real directories, not links), so that
/// the 19 driver libraries of one directory do not lstat `/usr`, `/usr/lib` and
/// `/usr/lib/x86_64-linux-gnu` 19 times each (54 of the 247 statx of a resolve with the
/// spec made at create time, 8-GPU fake host). The host is taken not to change while one
/// walker is in use, as any one discovery pass already takes it.
pub struct InRoot<'a> {
    root: &'a Path,
    dirs: std::collections::HashSet<PathBuf>,
}

impl<'a> InRoot<'a> {
    pub fn new(root: &'a Path) -> InRoot<'a> {
        InRoot {
            root,
            dirs: Default::default(),
        }
    }

    /// [`resolve_in_root`] of `abs`.
    pub fn resolve(&mut self, abs: &Path) -> Option<PathBuf> {
        let root = self.root;
        let mut pending: Vec<std::ffi::OsString> = components_reversed(abs);
        let mut resolved = PathBuf::from("/");
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                resolved.pop();
                continue;
            }
            let candidate = resolved.join(&part);
            if self.dirs.contains(&candidate) {
                resolved = candidate;
                continue;
            }
            let meta = fs::symlink_metadata(join_root(root, &candidate)).ok()?;
            if meta.file_type().is_symlink() {
                links += 1;
                if links > 40 {
                    return None;
                }
                let target = fs::read_link(join_root(root, &candidate)).ok()?;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                pending.extend(components_reversed(&target));
            } else {
                if meta.is_dir() {
                    self.dirs.insert(candidate.clone());
                }
                resolved = candidate;
            }
        }
        Some(resolved)
    }
}

fn components_reversed(p: &Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    v.reverse();
    v
}

/// Read a small text file; None when missing or unreadable.
pub fn read_text(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// The values of `keys` in a `Key: value` text file (a /proc/driver/nvidia `information`
/// file), reading only as far as the last of them: one open and, for these files, one
/// read, where [`read_text`] also stats the file and reads again to see its end (the
/// check of a spec file against the host reads one such file per GPU). A key the file
/// lacks is None; the whole answer is None when the file cannot be read.
pub fn read_fields<const N: usize>(path: &Path, keys: [&str; N]) -> Option<[Option<String>; N]> {
    use std::io::Read;
    let mut file = fs::File::open(path).ok()?;
    let mut text = Vec::new();
    // The files are a few hundred bytes; a larger buffer is zeroed for nothing.
    let mut buf = [0u8; 1024];
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    let mut parsed = 0;
    loop {
        let n = file.read(&mut buf).ok()?;
        text.extend_from_slice(&buf[..n]);
        // Only whole lines are judged, unless the file has ended.
        let upto = if n == 0 {
            text.len()
        } else {
            text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
        };
        let lines = &text[parsed..upto];
        let lines = match std::str::from_utf8(lines) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(lines),
        };
        for line in lines.lines() {
            if let Some((k, v)) = line.split_once(':') {
                if let Some(i) = keys.iter().position(|key| *key == k.trim()) {
                    out[i].get_or_insert_with(|| v.trim().to_string());
                }
            }
        }
        parsed = upto;
        if n == 0 || out.iter().all(Option::is_some) {
            return Some(out);
        }
    }
}

/// The names in a directory, sorted; empty when it cannot be read.
pub fn sorted_dir_names(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(path) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Paths of up to three components drawn from names that `Path` treats specially
    /// (empty, `.`, `..`, dot-names), with and without a leading and a trailing `/`.
    fn awkward_paths() -> Vec<String> {
        crate::path_text::awkward_paths(
            &["a", "..", ".", "", ".hidden", "...", "libx.so.1"],
            3,
            &[("", ""), ("/", ""), ("", "/"), ("//", ""), ("/", "/")],
        )
    }

    #[test]
    fn join_root_matches_paths_own_join() {
        let paths = awkward_paths();
        let mut roots: Vec<String> = paths.iter().step_by(7).cloned().collect();
        roots.extend(["/", "", "/tmp/tree", "/tmp/tree/", "tree", "/."].map(String::from));
        let mut text_joins = 0;
        for root in &roots {
            for abs in &paths {
                let (root, abs) = (Path::new(root), Path::new(abs));
                let got = join_root(root, abs);
                let want = join_root_by_components(root, abs);
                assert_eq!(
                    got.as_os_str(),
                    want.as_os_str(),
                    "root {root:?}, path {abs:?}"
                );
                if is_canonical_absolute(abs.as_os_str().as_bytes()) {
                    text_joins += 1;
                }
            }
        }
        // The comparison covers the text join, not only the fallback.
        assert!(text_joins > 10_000, "{text_joins} text joins");
    }

    #[test]
    fn resolves_links_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let lib = t.path().join("usr/lib/x86_64-linux-gnu");
        fs::create_dir_all(&lib).unwrap();
        fs::write(lib.join("libcuda.so.550.54.14"), b"").unwrap();
        symlink("libcuda.so.550.54.14", lib.join("libcuda.so.1")).unwrap();
        symlink(
            "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
            lib.join("libcuda.so"),
        )
        .unwrap();
        fs::create_dir_all(t.path().join("lib")).unwrap();
        symlink("../usr/lib", t.path().join("lib64")).unwrap();
        let roots = HostRoots::under(t.path());
        assert_eq!(
            roots.resolve_in_driver_root(Path::new("/usr/lib/x86_64-linux-gnu/libcuda.so")),
            Some(PathBuf::from(
                "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.14"
            ))
        );
        assert_eq!(
            roots.resolve_in_driver_root(Path::new("/lib64/x86_64-linux-gnu/libcuda.so.1")),
            Some(PathBuf::from(
                "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.14"
            ))
        );
        assert_eq!(roots.resolve_in_driver_root(Path::new("/missing")), None);
        symlink("loop", lib.join("loop")).unwrap();
        assert_eq!(
            roots.resolve_in_driver_root(Path::new("/usr/lib/x86_64-linux-gnu/loop")),
            None
        );
    }

    #[test]
    fn a_walker_resolves_as_each_resolve_does_and_lstats_a_directory_once() {
        let t = tempfile::tempdir().unwrap();
        let lib = t.path().join("usr/lib/x86_64-linux-gnu");
        fs::create_dir_all(lib.join("vdpau")).unwrap();
        fs::write(lib.join("libcuda.so.550.54.14"), b"").unwrap();
        fs::write(lib.join("vdpau/libvdpau_nvidia.so.550.54.14"), b"").unwrap();
        symlink("libcuda.so.550.54.14", lib.join("libcuda.so.1")).unwrap();
        symlink("/usr/lib", t.path().join("lib64")).unwrap();
        symlink("x86_64-linux-gnu/vdpau", lib.join("../vd")).unwrap();
        let paths = [
            "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
            "/lib64/x86_64-linux-gnu/libcuda.so.1",
            "/usr/lib/x86_64-linux-gnu/vdpau/../libcuda.so.1",
            "/usr/lib/vd/../libcuda.so.1",
            "/usr/lib/vd/libvdpau_nvidia.so.550.54.14",
            "/lib64/../lib64/x86_64-linux-gnu/vdpau/libvdpau_nvidia.so.550.54.14",
            "/usr/lib/missing",
            "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.14/x",
            "/../usr/lib/x86_64-linux-gnu/libcuda.so.1",
        ];
        let each: Vec<_> = paths
            .iter()
            .map(|p| resolve_in_root(t.path(), Path::new(p)))
            .collect();
        let cuda = Some(PathBuf::from(
            "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.14",
        ));
        assert_eq!(
            [&each[0], &each[1], &each[2], &each[3], &each[8]],
            [&cuda; 5]
        );
        assert_eq!([&each[6], &each[7]], [&None; 2]);
        for order in [paths.to_vec(), paths.iter().rev().copied().collect()] {
            let mut walk = InRoot::new(t.path());
            let got: Vec<_> = order.iter().map(|p| walk.resolve(Path::new(p))).collect();
            let want: Vec<_> = order
                .iter()
                .map(|p| each[paths.iter().position(|q| q == p).unwrap()].clone())
                .collect();
            assert_eq!(got, want);
        }
        // Seen once, a directory is not looked at again: /usr made a link to a copy
        // elsewhere is still /usr to the walker that saw it, and the copy to a new one.
        let mut walk = InRoot::new(t.path());
        assert!(walk.resolve(Path::new(paths[0])).is_some());
        fs::rename(t.path().join("usr"), t.path().join("usr2")).unwrap();
        symlink("usr2", t.path().join("usr")).unwrap();
        assert_eq!(walk.resolve(Path::new(paths[0])), each[0]);
        assert_eq!(
            InRoot::new(t.path()).resolve(Path::new(paths[0])),
            Some(PathBuf::from(
                "/usr2/lib/x86_64-linux-gnu/libcuda.so.550.54.14"
            ))
        );
    }

    #[test]
    fn read_fields_takes_the_first_value_of_each_key_from_whole_lines() {
        let t = tempfile::tempdir().unwrap();
        let info = t.path().join("information");
        fs::write(
            &info,
            "Model: \t\t NVIDIA H100\nGPU UUID: \t GPU-1\nBus Location: \t 0000:18:00.0\n\
             Device Minor: \t 3\nDevice Minor: \t 9\n",
        )
        .unwrap();
        assert_eq!(
            read_fields(&info, ["Device Minor", "GPU UUID", "Bus Location", "IRQ"]),
            Some([
                Some("3".to_string()),
                Some("GPU-1".to_string()),
                Some("0000:18:00.0".to_string()),
                None
            ])
        );
        // A key line that straddles the first read's 1 KiB, and a last line without '\n'.
        let long = format!(
            "Pad: {}\nDevice Minor: 12345\nGPU UUID: GPU-2",
            "x".repeat(1010)
        );
        fs::write(&info, long).unwrap();
        assert_eq!(
            read_fields(&info, ["Device Minor", "GPU UUID"]),
            Some([Some("12345".to_string()), Some("GPU-2".to_string())])
        );
        assert_eq!(
            read_fields(&t.path().join("missing"), ["Device Minor"]),
            None
        );
    }
}
