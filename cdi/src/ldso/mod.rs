//! The container's linker cache and library links, made by nvbind itself inside the rootfs,
//! never by running a host's or the image's `ldconfig`.
//!
//! What `ldconfig -r ROOTFS FOLDER...` would do, through [`Root`] (openat2
//! `RESOLVE_IN_ROOT`): the directories are the injected library folders, then those the
//! container's `/etc/ld.so.conf` names, then the system directories; each is scanned for
//! `lib*.so*` / `ld-*.so*` files whose ELF soname is read; the newest file of each soname
//! (glibc's version order) is linked to by its soname, as ldconfig links it; and the
//! cache is written, in glibc's layout and order, to `/etc/ld.so.cache` (replaced with a
//! rename). The folders are also written to `/etc/ld.so.conf.d/00-nvbind-cdi.conf`, so an
//! `ldconfig` run later inside the container keeps them.
//!
//! CUDA forward compatibility (the toolkit's `enable-cuda-compat`): when the image carries
//! one `/usr/local/cuda/compat/libcuda.so.X.Y...` whose major version is newer than the host
//! driver's, that directory comes first (and `/etc/ld.so.conf.d/00-compat-nvbind.conf` names
//! it), so the loader picks the compat libcuda; never when it is older or the same.
//!
//! Nothing here runs a program. The image chose every file read; reads are bounded and a
//! file that is not a readable ELF library is skipped, as ldconfig skips it.

pub mod cache;
pub mod conf;
pub mod elf;

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use crate::rootfs::{Kind, Root, RootError};
use cache::CacheEntry;

/// The conf.d entry naming the injected folders.
pub const CONF_ENTRY: &str = "/etc/ld.so.conf.d/00-nvbind-cdi.conf";
/// The conf.d entry naming the CUDA compat directory ("00-compat" sorts first, as the
/// toolkit's `00-compat-*.conf`).
pub const COMPAT_CONF_ENTRY: &str = "/etc/ld.so.conf.d/00-compat-nvbind.conf";
pub const CUDA_COMPAT_DIR: &str = "/usr/local/cuda/compat";
const LD_SO_CONF: &str = "/etc/ld.so.conf";
const LD_SO_CACHE: &str = "/etc/ld.so.cache";
const DEFAULT_CONF: &str = "include /etc/ld.so.conf.d/*.conf\n";
/// Searched after the configured directories (glibc's system directories for x86_64 on
/// Debian and Red Hat layouts; missing ones are skipped, the same directory once).
const SYSTEM_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];
const MAX_ENTRIES_PER_DIR: usize = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum LdsoError {
    #[error("linker cache: folder {0:?} is not an absolute path without `..`")]
    BadFolder(String),
    #[error("cannot write the container's linker cache")]
    Write(#[source] RootError),
    #[error("cannot write {path} in the container")]
    Conf {
        path: &'static str,
        #[source]
        source: RootError,
    },
}

/// What to do.
#[derive(Debug, Clone, Default)]
pub struct LdRequest {
    /// Where the injected libraries are (searched first, their soname links made there).
    pub folders: Vec<PathBuf>,
    /// The host driver's version (`550.54.14`), for CUDA forward compatibility; None: no
    /// compat directory is considered.
    pub host_driver_version: Option<String>,
}

/// What was done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LdReport {
    /// The directories scanned, in order.
    pub dirs: Vec<PathBuf>,
    pub entries: usize,
    /// Soname links made or corrected.
    pub links: usize,
    /// The CUDA compat directory put first, when it was.
    pub compat: Option<PathBuf>,
}

/// Checks the folders (absolute, no `..`, no newline) and removes duplicates, keeping the
/// order.
pub fn clean_folders(folders: &[PathBuf]) -> Result<Vec<PathBuf>, LdsoError> {
    let mut out: Vec<PathBuf> = Vec::new();
    for f in folders {
        let ok = f.is_absolute()
            && f.components().all(|c| !matches!(c, Component::ParentDir))
            && !f.to_string_lossy().contains('\n');
        if !ok {
            return Err(LdsoError::BadFolder(f.display().to_string()));
        }
        let f: PathBuf = f.components().collect();
        if !out.contains(&f) {
            out.push(f);
        }
    }
    Ok(out)
}

/// The leading number of a version (`550` of `550.54.14`).
fn major(version: &str) -> Option<u64> {
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The image's CUDA compat directory, when its libcuda is newer than the host driver.
pub fn cuda_compat_dir(root: &Root, host_version: &str) -> Option<PathBuf> {
    let host = major(host_version)?;
    let entries = root.read_dir(Path::new(CUDA_COMPAT_DIR)).ok()?;
    // The toolkit's glob: libcuda.so.*.*, exactly one.
    let libs: Vec<String> = entries
        .into_iter()
        .filter_map(|(n, _)| n.into_string().ok())
        .filter(|n| {
            n.strip_prefix("libcuda.so.")
                .is_some_and(|v| v.contains('.') && !v.starts_with('.'))
        })
        .collect();
    let [lib] = libs.as_slice() else {
        return None;
    };
    let compat = major(lib.strip_prefix("libcuda.so.")?)?;
    (compat > host).then(|| PathBuf::from(CUDA_COMPAT_DIR))
}

/// `_dl_is_dso`: a name ldconfig looks at.
fn is_dso_name(name: &str) -> bool {
    (name.starts_with("lib") || name.starts_with("ld-")) && name.contains(".so")
}

struct DirLib {
    name: String,
    soname: String,
    flags: i32,
    is_link: bool,
}

/// The ELF reading of each file already read in this update, by (device, inode): a soname
/// link and the file it names are the same file, read once.
type ElfSeen = std::collections::HashMap<(u64, u64), Option<elf::ElfLib>>;

/// ldconfig's `search_dir` for one directory: the libraries to index, one per soname.
fn scan_dir(root: &Root, dir: &Path, seen: &mut ElfSeen) -> Vec<DirLib> {
    let Ok(mut entries) = root.read_dir(dir) else {
        return Vec::new();
    };
    entries.truncate(MAX_ENTRIES_PER_DIR);
    // readdir order is the filesystem's; ldconfig's choices below do not depend on it
    // except for ties, which sorting settles the same way every time.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut libs: Vec<DirLib> = Vec::new();
    for (name, kind) in entries {
        let Some(name) = name.to_str().map(str::to_string) else {
            continue;
        };
        if !is_dso_name(&name) || name.contains(".#prelink#") {
            continue;
        }
        let path = dir.join(&name);
        let is_link = match kind {
            Kind::Symlink => true,
            Kind::File => false,
            Kind::Other => root.read_link(&path).ok().flatten().is_some(),
            _ => continue,
        };
        let Ok(file) = root.open_read(&path) else {
            continue;
        };
        let id = match file.metadata() {
            Ok(m) if m.is_file() => {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            }
            _ => continue,
        };
        let Some(lib) = seen.entry(id).or_insert_with(|| elf::read(&file)).clone() else {
            continue;
        };
        let Some(flags) = elf::cache_flags(&lib) else {
            continue;
        };
        let mut soname = lib.soname.clone().unwrap_or_else(|| name.clone());
        // A link counts as a link only when it is the soname itself or the `.so` name of
        // it (libfoo.so -> libfoo.so.1); any other link is treated as a file.
        let mut is_link = is_link;
        if is_link && name != soname && !(name.ends_with(".so") && soname.starts_with(&name)) {
            is_link = false;
        }
        if is_link {
            soname = name.clone();
        }
        match libs.iter_mut().find(|l| l.soname == soname) {
            Some(l) => {
                let newer = (!is_link && l.is_link)
                    || (is_link == l.is_link
                        && cache::libcmp(l.name.as_bytes(), name.as_bytes()) < 0);
                if newer {
                    l.name = name;
                    l.is_link = is_link;
                    l.flags = flags;
                }
            }
            None => libs.push(DirLib {
                name,
                soname,
                flags,
                is_link,
            }),
        }
    }
    libs
}

/// ldconfig's `create_links`: `dir/soname` -> `name`, unless it already leads to the same
/// file or is not a link.
fn link_soname(root: &Root, dir: &Path, lib: &DirLib) -> bool {
    if lib.is_link || lib.name == lib.soname {
        return false;
    }
    let link = dir.join(&lib.soname);
    if let (Ok(a), Ok(b)) = (root.stat(&link), root.stat(&dir.join(&lib.name))) {
        if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) {
            return false;
        }
    }
    root.replace_symlink(Path::new(&lib.name), &link)
        .unwrap_or(false)
}

/// Refreshes the container's linker cache and links; see the module documentation.
pub fn update(root: &Root, req: &LdRequest) -> Result<LdReport, LdsoError> {
    let folders = clean_folders(&req.folders)?;
    let compat = req
        .host_driver_version
        .as_deref()
        .and_then(|v| cuda_compat_dir(root, v));
    if !folders.is_empty() {
        let mut text = String::from("# Written by nvbind: the GPU driver's libraries\n");
        for f in &folders {
            text.push_str(&f.to_string_lossy());
            text.push('\n');
        }
        root.replace_file(Path::new(CONF_ENTRY), text.as_bytes(), 0o644)
            .map_err(|source| LdsoError::Conf {
                path: CONF_ENTRY,
                source,
            })?;
    }
    if let Some(c) = &compat {
        let text = format!(
            "# Written by nvbind: CUDA forward compatibility (newer than the host driver)\n{}\n",
            c.display()
        );
        root.replace_file(Path::new(COMPAT_CONF_ENTRY), text.as_bytes(), 0o644)
            .map_err(|source| LdsoError::Conf {
                path: COMPAT_CONF_ENTRY,
                source,
            })?;
    }
    if root
        .read_file(Path::new(LD_SO_CONF))
        .ok()
        .flatten()
        .is_none()
    {
        root.replace_file(Path::new(LD_SO_CONF), DEFAULT_CONF.as_bytes(), 0o644)
            .map_err(|source| LdsoError::Conf {
                path: LD_SO_CONF,
                source,
            })?;
    }

    let mut candidates: Vec<PathBuf> = compat.iter().cloned().collect();
    candidates.extend(folders.iter().cloned());
    candidates.extend(conf::directories(root, Path::new(LD_SO_CONF)));
    candidates.extend(SYSTEM_DIRS.iter().map(PathBuf::from));
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut dirs: Vec<(PathBuf, (u64, u64))> = Vec::new();
    for d in candidates {
        let Ok(st) = root.stat(&d) else {
            continue;
        };
        if Kind::of_mode(st.st_mode) != Kind::Dir {
            continue;
        }
        let id = (st.st_dev, st.st_ino);
        if seen.insert(id) {
            dirs.push((d, id));
        }
    }
    let mut entries = Vec::new();
    let mut links = 0;
    let mut seen = ElfSeen::new();
    for (dir, _) in &dirs {
        for lib in scan_dir(root, dir, &mut seen) {
            if link_soname(root, dir, &lib) {
                links += 1;
            }
            entries.push(CacheEntry {
                value: format!("{}/{}", dir.display(), lib.soname),
                key: lib.soname,
                flags: lib.flags,
            });
        }
    }
    let report = LdReport {
        dirs: dirs.into_iter().map(|(d, _)| d).collect(),
        entries: entries.len(),
        links,
        compat,
    };
    root.replace_file(Path::new(LD_SO_CACHE), &cache::build(entries), 0o644)
        .map_err(LdsoError::Write)?;
    Ok(report)
}
