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
use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::fstat;

use crate::rootfs::{self, DirFd, Kind, Root, RootError};
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
/// Directories kept open from their lookup to their scan.
const MAX_OPEN_DIRS: usize = 64;

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

/// (device, inode) of a file.
type FileId = (u64, u64);

/// One directory's scan: the libraries to index, one per soname, and what each entry
/// looked at resolved to (a regular file), by name, for [`link_soname`].
#[derive(Default)]
struct Scan {
    libs: Vec<DirLib>,
    ids: std::collections::HashMap<String, FileId>,
}

/// The (device, inode) of the open `file`, its ELF reading noted in `seen` (read once per
/// file), or None when it is not a regular file.
fn read_lib(file: std::fs::File, seen: &mut ElfSeen) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata().ok().filter(|m| m.is_file())?;
    let id = (m.dev(), m.ino());
    seen.entry(id).or_insert_with(|| elf::read(&file));
    Some(id)
}

/// ldconfig's `search_dir` for one directory: the libraries to index, one per soname.
///
/// `dir` is the directory opened when the directories were collected (None: it is opened
/// by path here, as every one once was). A regular file (as `getdents` says) is opened
/// through that fd, never through a link (a name replaced by a link since is opened by its
/// path instead); a link whose target is the plain name of a regular file of the same
/// directory resolves to that file without being opened (`readlinkat`); anything else is
/// opened by its path inside the rootfs, as before. Same answers, far fewer lookups.
fn scan_dir(root: &Root, path: &Path, dir: Option<&DirFd>, seen: &mut ElfSeen) -> Scan {
    let (entries, dirfd) = match dir {
        Some(d) => (rootfs::dir_entries(d, path), Some(d.as_raw_fd())),
        None => (root.read_dir(path), None),
    };
    let Ok(mut entries) = entries else {
        return Scan::default();
    };
    entries.truncate(MAX_ENTRIES_PER_DIR);
    // readdir order is the filesystem's; ldconfig's choices below do not depend on it
    // except for ties, which sorting settles the same way every time.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<(String, Kind)> = entries
        .into_iter()
        .filter_map(|(n, k)| Some((n.into_string().ok()?, k)))
        .filter(|(n, k)| {
            is_dso_name(n)
                && !n.contains(".#prelink#")
                && matches!(k, Kind::Symlink | Kind::File | Kind::Other)
        })
        .collect();
    let mut scan = Scan::default();
    let by_path =
        |name: &str, seen: &mut ElfSeen| read_lib(root.open_read(&path.join(name)).ok()?, seen);
    // Regular files first, so that links to them find them.
    for (name, kind) in &names {
        if *kind != Kind::File {
            continue;
        }
        let id = match dirfd.and_then(|fd| {
            rootfs::open_entry(&fd, OsStr::new(name), OFlag::O_RDONLY | OFlag::O_NONBLOCK).ok()
        }) {
            Some(fd) => read_lib(std::fs::File::from(fd), seen),
            None => by_path(name, seen),
        };
        if let Some(id) = id {
            scan.ids.insert(name.clone(), id);
        }
    }
    let mut is_link_of: Vec<bool> = Vec::with_capacity(names.len());
    for (name, kind) in &names {
        let is_link = match kind {
            Kind::File => false,
            Kind::Symlink => true,
            _ => root.read_link(&path.join(name)).ok().flatten().is_some(),
        };
        is_link_of.push(is_link);
        if *kind == Kind::File {
            continue;
        }
        let sibling = match (kind, dirfd) {
            (Kind::Symlink, Some(fd)) => nix::fcntl::readlinkat(Some(fd), name.as_str())
                .ok()
                .and_then(|t| t.into_string().ok())
                .and_then(|t| scan.ids.get(&t).copied()),
            _ => None,
        };
        if let Some(id) = sibling.or_else(|| by_path(name, seen)) {
            scan.ids.insert(name.clone(), id);
        }
    }
    for ((name, _), is_link) in names.into_iter().zip(is_link_of) {
        let Some(id) = scan.ids.get(&name) else {
            continue;
        };
        let Some(Some(lib)) = seen.get(id).cloned() else {
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
        match scan.libs.iter_mut().find(|l| l.soname == soname) {
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
            None => scan.libs.push(DirLib {
                name,
                soname,
                flags,
                is_link,
            }),
        }
    }
    scan
}

/// ldconfig's `create_links`: `dir/soname` -> `name`, unless it already leads to the same
/// file or is not a link. What the scan saw each name resolve to is used where it looked
/// (`scan.ids`, kept up to date with the links made here); other names are `stat`ed.
fn link_soname(root: &Root, dir: &Path, dirfd: Option<&DirFd>, scan: &mut Scan, i: usize) -> bool {
    let lib = &scan.libs[i];
    if lib.is_link || lib.name == lib.soname {
        return false;
    }
    let link = dir.join(&lib.soname);
    let id = |name: &str| {
        scan.ids.get(name).copied().or_else(|| {
            root.stat(&dir.join(name))
                .ok()
                .map(|st| (st.st_dev, st.st_ino))
        })
    };
    if let (Some(a), Some(b)) = (id(&lib.soname), id(&lib.name)) {
        if a == b {
            return false;
        }
    }
    let made = match dirfd {
        Some(d) => root.replace_symlink_in(d, OsStr::new(&lib.soname), Path::new(&lib.name), &link),
        None => root.replace_symlink(Path::new(&lib.name), &link),
    }
    .unwrap_or(false);
    if made {
        // `soname` now names `name`, a plain name in this directory.
        match scan.ids.get(&lib.name).copied() {
            Some(id) => scan.ids.insert(lib.soname.clone(), id),
            None => scan.ids.remove(&lib.soname),
        };
    }
    made
}

/// Refreshes the container's linker cache and links; see the module documentation.
pub fn update(root: &Root, req: &LdRequest) -> Result<LdReport, LdsoError> {
    let folders = clean_folders(&req.folders)?;
    let compat = req
        .host_driver_version
        .as_deref()
        .and_then(|v| cuda_compat_dir(root, v));
    // The conf.d entries written here, with their text: read back from memory when
    // ld.so.conf includes them.
    let mut written: Vec<(&Path, String)> = Vec::new();
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
        written.push((Path::new(CONF_ENTRY), text));
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
        written.push((Path::new(COMPAT_CONF_ENTRY), text));
    }
    // Read once: its text is what the directories come from below.
    let conf_text = match root.read_file(Path::new(LD_SO_CONF)) {
        Ok(Some(text)) => Some(text),
        Ok(None) => {
            root.replace_file(Path::new(LD_SO_CONF), DEFAULT_CONF.as_bytes(), 0o644)
                .map_err(|source| LdsoError::Conf {
                    path: LD_SO_CONF,
                    source,
                })?;
            None
        }
        // Not a regular file (a FIFO, a device) or unreadable: the image's, left as it is;
        // the default configuration is read in its place.
        Err(_) => None,
    };

    let mut candidates: Vec<PathBuf> = compat.iter().cloned().collect();
    candidates.extend(folders.iter().cloned());
    let known: Vec<(&Path, &[u8])> = written.iter().map(|(p, t)| (*p, t.as_bytes())).collect();
    candidates.extend(conf::directories_in(
        root,
        Path::new(LD_SO_CONF),
        conf_text.as_deref().unwrap_or(DEFAULT_CONF.as_bytes()),
        &known,
    ));
    candidates.extend(SYSTEM_DIRS.iter().map(PathBuf::from));
    // Every candidate is resolved once, here: the directory opened for reading is the one
    // scanned (and the parent of the links made in it), its identity from fstat. At most
    // MAX_OPEN_DIRS stay open; any others are opened again by path when scanned.
    // A path named twice (a folder that ld.so.conf.d names too) is looked up once.
    let mut seen: HashSet<FileId> = HashSet::new();
    let mut looked_up: HashSet<PathBuf> = HashSet::new();
    let mut dirs: Vec<(PathBuf, Option<DirFd>)> = Vec::new();
    for d in candidates {
        if !looked_up.insert(d.clone()) {
            continue;
        }
        let (id, dir) = match root.open_dir(&d) {
            Ok(dir) => {
                let Ok(st) = fstat(dir.as_raw_fd()) else {
                    continue;
                };
                ((st.st_dev, st.st_ino), Some(dir))
            }
            // Missing, or not a directory: what a stat would have said too.
            Err(RootError::Io {
                source: Errno::ENOENT | Errno::ENOTDIR,
                ..
            }) => continue,
            // A directory that cannot be read is still listed (and found empty).
            Err(_) => {
                let Ok(st) = root.stat(&d) else {
                    continue;
                };
                if Kind::of_mode(st.st_mode) != Kind::Dir {
                    continue;
                }
                ((st.st_dev, st.st_ino), None)
            }
        };
        if seen.insert(id) {
            let open = dirs.iter().filter(|(_, d)| d.is_some()).count();
            dirs.push((d, dir.filter(|_| open < MAX_OPEN_DIRS)));
        }
    }
    let mut entries = Vec::new();
    let mut links = 0;
    let mut seen = ElfSeen::new();
    for (dir, fd) in &mut dirs {
        let mut scan = scan_dir(root, dir, fd.as_ref(), &mut seen);
        for i in 0..scan.libs.len() {
            if link_soname(root, dir, fd.as_ref(), &mut scan, i) {
                links += 1;
            }
        }
        for lib in scan.libs {
            entries.push(CacheEntry {
                value: format!("{}/{}", dir.display(), lib.soname),
                key: lib.soname,
                flags: lib.flags,
            });
        }
        // Closed once scanned.
        *fd = None;
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
