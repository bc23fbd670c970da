//! Path operations confined to a container rootfs, for the runtime and nvbind-hook alike.
//!
//! Every lookup goes through `openat2(2)` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`
//! from a directory fd on the rootfs: the kernel resolves the path as if the rootfs were
//! `/` (an absolute symlink starts again at the rootfs, `..` stops at it), the way the
//! container itself will see it, and refuses `/proc/*/fd`-style magic links (`ELOOP`). A
//! hostile image can point its paths anywhere it likes: they all land inside its rootfs.
//!
//! New entries are always created with a single-component name relative to an fd of their
//! already resolved parent directory, so creation never follows a link either.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};

/// The most [`Root::read_file`] reads of a file.
pub const MAX_READ: u64 = 1 << 20;

/// Errors of rootfs-confined path operations. Paths are as the container sees them.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("cannot open container rootfs {path}")]
    OpenRoot {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("refusing {path}: it resolves through a /proc magic link (or a loop of symlinks) in the container rootfs")]
    Escapes { path: PathBuf },
    #[error("invalid container path {path:?}: it must name an entry, not `/`, `.` or `..`")]
    NoName { path: PathBuf },
    #[error("{op} {path} in the container rootfs")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("{path} in the container rootfs exists and is not {expected}")]
    WrongType {
        path: PathBuf,
        expected: &'static str,
    },
}

/// What a path names, as `fstat` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    CharDevice,
    BlockDevice,
    Other,
}

impl Kind {
    pub fn of_mode(mode: u32) -> Kind {
        match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFLNK => Kind::Symlink,
            SFlag::S_IFCHR => Kind::CharDevice,
            SFlag::S_IFBLK => Kind::BlockDevice,
            _ => Kind::Other,
        }
    }
}

/// An open container rootfs.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// `path` with its leading `/` removed, so that it is relative to the rootfs; `/` becomes `.`.
fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

/// Splits a container path into its parent and final name. The name must be a normal
/// component (`/usr/..` and `/` have none).
pub fn split(path: &Path) -> Result<(PathBuf, &OsStr), RootError> {
    match path.components().next_back() {
        Some(Component::Normal(name)) => {
            let parent = path.parent().unwrap_or(Path::new("/"));
            Ok((parent.to_path_buf(), name))
        }
        _ => Err(RootError::NoName {
            path: path.to_path_buf(),
        }),
    }
}

impl Root {
    /// Opens the rootfs directory (a trusted host path).
    pub fn open(path: &Path) -> Result<Root, RootError> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| RootError::OpenRoot {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Root {
            // SAFETY: `open` just returned this fd and nothing else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
        })
    }

    /// The rootfs path this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn map(path: &Path, op: &'static str, e: Errno) -> RootError {
        match e {
            Errno::EXDEV | Errno::ELOOP => RootError::Escapes {
                path: path.to_path_buf(),
            },
            source => RootError::Io {
                op,
                path: path.to_path_buf(),
                source,
            },
        }
    }

    /// Opens `path` (a container path) beneath the rootfs with `flags`; symlinks along the
    /// path, the last one included unless `O_NOFOLLOW` is given, are followed only while
    /// they stay beneath the rootfs.
    pub fn open_at(&self, path: &Path, flags: OFlag) -> Result<OwnedFd, RootError> {
        self.open_at_mode(path, flags, Mode::empty())
    }

    fn open_at_mode(&self, path: &Path, flags: OFlag, mode: Mode) -> Result<OwnedFd, RootError> {
        let rel = relative(path);
        let h = how(flags).mode(mode);
        let fd = openat2(self.fd.as_raw_fd(), &rel, h).map_err(|e| Self::map(path, "open", e))?;
        // SAFETY: openat2 just returned this fd and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Opens directory `path`, creating it and any missing parents (mode 0755).
    pub fn mkdir_all(&self, path: &Path) -> Result<OwnedFd, RootError> {
        match self.open_at(path, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Ok(fd) => return Ok(fd),
            Err(RootError::Io {
                source: Errno::ENOENT,
                ..
            }) => {}
            Err(RootError::Io {
                source: Errno::ENOTDIR,
                ..
            }) => {
                return Err(RootError::WrongType {
                    path: path.to_path_buf(),
                    expected: "a directory",
                })
            }
            Err(e) => return Err(e),
        }
        let (parent, name) = split(path)?;
        let parent_fd = self.mkdir_all(&parent)?;
        match nix::sys::stat::mkdirat(
            Some(parent_fd.as_raw_fd()),
            name,
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(Self::map(path, "create directory", e)),
        }
        self.open_at(path, OFlag::O_PATH | OFlag::O_DIRECTORY)
    }

    /// Resolves the parent of `path` (creating missing directories) and returns its fd with
    /// the final name, for a create-at call.
    pub fn parent_of<'a>(&self, path: &'a Path) -> Result<(OwnedFd, &'a OsStr), RootError> {
        let (parent, name) = split(path)?;
        Ok((self.mkdir_all(&parent)?, name))
    }

    /// Makes sure `path` exists as an empty regular file (or any non-directory) or directory,
    /// as a bind-mount target, and returns an `O_PATH` fd of it.
    pub fn mount_target(&self, path: &Path, dir: bool) -> Result<OwnedFd, RootError> {
        if dir {
            return self.mkdir_all(path);
        }
        match self.open_at(path, OFlag::O_PATH) {
            Ok(fd) => {
                if fd_kind(&fd, path)? == Kind::Dir {
                    return Err(RootError::WrongType {
                        path: path.to_path_buf(),
                        expected: "a file (the mount source is a file)",
                    });
                }
                return Ok(fd);
            }
            Err(RootError::Io {
                source: Errno::ENOENT,
                ..
            }) => {}
            Err(e) => return Err(e),
        }
        let (parent, name) = self.parent_of(path)?;
        match nix::fcntl::openat(
            Some(parent.as_raw_fd()),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        ) {
            // SAFETY: openat just returned this fd; wrapping it closes it.
            Ok(fd) => drop(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(Self::map(path, "create mount target", e)),
        }
        self.open_at(path, OFlag::O_PATH)
    }

    /// Writes `data` to the regular file `path` (created or truncated, mode 0644).
    pub fn write_file(&self, path: &Path, data: &[u8]) -> Result<(), RootError> {
        use std::io::Write;
        let (parent, name) = self.parent_of(path)?;
        let fd = nix::fcntl::openat(
            Some(parent.as_raw_fd()),
            name,
            OFlag::O_CREAT
                | OFlag::O_WRONLY
                | OFlag::O_TRUNC
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| Self::map(path, "write", e))?;
        // SAFETY: openat just returned this fd; the File owns it from here on.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.write_all(data).map_err(|e| RootError::Io {
            op: "write",
            path: path.to_path_buf(),
            source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
    }

    /// Reads the regular file `path` (at most [`MAX_READ`] bytes), or None when it does not
    /// exist. Anything else is an error before a byte is read: the image chooses what is
    /// there, and a FIFO would block the read forever, a link to /dev/zero never end it.
    pub fn read_file(&self, path: &Path) -> Result<Option<Vec<u8>>, RootError> {
        use std::io::Read;
        let fd = match self.open_at(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK) {
            Ok(fd) => fd,
            Err(RootError::Io {
                source: Errno::ENOENT,
                ..
            }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let io = |op, e: std::io::Error| RootError::Io {
            op,
            path: path.to_path_buf(),
            source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        };
        let file = std::fs::File::from(fd);
        let meta = file.metadata().map_err(|e| io("stat", e))?;
        if !meta.is_file() {
            return Err(RootError::WrongType {
                path: path.to_path_buf(),
                expected: "a regular file",
            });
        }
        // Sized from the fstat: read_to_end without a hint probes with a 32-byte read first
        // (three reads for a 33-byte /etc/ld.so.conf, two with it).
        let mut data = Vec::with_capacity(meta.len().min(MAX_READ) as usize + 1);
        file.take(MAX_READ)
            .read_to_end(&mut data)
            .map_err(|e| io("read", e))?;
        Ok(Some(data))
    }

    /// The target of symlink `path` (its last component is not followed), if it is one.
    pub fn read_link(&self, path: &Path) -> Result<Option<PathBuf>, RootError> {
        let (parent, name) = split(path)?;
        let parent_fd = match self.open_at(&parent, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(RootError::Io {
                source: Errno::ENOENT,
                ..
            }) => return Ok(None),
            Err(e) => return Err(e),
        };
        match nix::fcntl::readlinkat(Some(parent_fd.as_raw_fd()), name) {
            Ok(target) => Ok(Some(PathBuf::from(target))),
            Err(Errno::ENOENT) | Err(Errno::EINVAL) => Ok(None),
            Err(e) => Err(Self::map(path, "read link", e)),
        }
    }

    /// `fstat` of what `path` resolves to (symlinks followed inside the rootfs).
    pub fn stat(&self, path: &Path) -> Result<FileStat, RootError> {
        let fd = self.open_at(path, OFlag::O_PATH)?;
        fstat(fd.as_raw_fd()).map_err(|source| RootError::Io {
            op: "stat",
            path: path.to_path_buf(),
            source,
        })
    }

    /// The names in directory `path` with their `d_type` kinds ([`Kind::Other`] when the
    /// filesystem does not say), `.` and `..` left out, in no particular order.
    pub fn read_dir(&self, path: &Path) -> Result<Vec<(std::ffi::OsString, Kind)>, RootError> {
        let dir = self.open_dir(path)?;
        dir_entries(&dir, path)
    }

    /// Opens directory `path` for reading its entries; its fd serves as the parent of
    /// [`open_entry`] and [`Root::replace_symlink_in`] calls.
    pub fn open_dir(&self, path: &Path) -> Result<DirFd, RootError> {
        Ok(DirFd(
            self.open_at(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?,
        ))
    }

    /// Opens the regular file (or what a symlink inside the rootfs leads to) `path` for
    /// reading.
    pub fn open_read(&self, path: &Path) -> Result<std::fs::File, RootError> {
        Ok(std::fs::File::from(
            self.open_at(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?,
        ))
    }

    /// Makes `name` in the directory `parent` (an fd this root gave, container path
    /// `link`, for errors) a symlink to `target`, replacing a symlink already there (never
    /// anything else: a file or directory at `link` is left and `Ok(false)` returned).
    pub fn replace_symlink_in(
        &self,
        parent: &impl AsRawFd,
        name: &OsStr,
        target: &Path,
        link: &Path,
    ) -> Result<bool, RootError> {
        let parent = parent.as_raw_fd();
        match nix::sys::stat::fstatat(Some(parent), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        {
            Ok(st) if Kind::of_mode(st.st_mode) != Kind::Symlink => return Ok(false),
            Ok(_) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(Self::map(link, "stat", e)),
        }
        let tmp = temp_name(name);
        nix::unistd::symlinkat(target, Some(parent), tmp.as_os_str())
            .map_err(|e| Self::map(link, "create symlink", e))?;
        rename_over(&parent, &tmp, name).map_err(|e| Self::map(link, "replace symlink", e))?;
        Ok(true)
    }

    /// Replaces the regular file `path` with `data` (mode `mode`): a new file next to it,
    /// renamed over it, so a reader sees the old contents or the new, never a mix.
    /// A file that already holds exactly that (a regular file with these contents, this mode
    /// and our owner) is left alone: the result is the same, and renaming over an existing
    /// file makes ext4 write the new one out at once (auto_da_alloc), the largest single cost
    /// of refreshing a reused rootfs's linker cache.
    pub fn replace_file(&self, path: &Path, data: &[u8], mode: u32) -> Result<(), RootError> {
        use std::io::Write;
        let (parent, name) = self.parent_of(path)?;
        if holds_already(&parent, name, data, mode) {
            return Ok(());
        }
        let tmp = temp_name(name);
        let fd = nix::fcntl::openat(
            Some(parent.as_raw_fd()),
            tmp.as_os_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| Self::map(path, "write", e))?;
        // SAFETY: openat just returned this fd; the File owns it from here on.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        let unlink = || {
            let _ = nix::unistd::unlinkat(
                Some(parent.as_raw_fd()),
                tmp.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        };
        let written = file
            .write_all(data)
            .and_then(|_| file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode)));
        if let Err(e) = written {
            unlink();
            return Err(RootError::Io {
                op: "write",
                path: path.to_path_buf(),
                source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            });
        }
        rename_over(&parent, &tmp, name).map_err(|e| Self::map(path, "replace", e))
    }

    /// Makes `link` a symlink to `target`, replacing a symlink already there (never
    /// anything else: a file or directory at `link` is left and `Ok(false)` returned).
    pub fn replace_symlink(&self, target: &Path, link: &Path) -> Result<bool, RootError> {
        let (parent, name) = self.parent_of(link)?;
        self.replace_symlink_in(&parent, name, target, link)
    }

    /// Creates symlink `link` -> `target`. Returns false when `link` already exists (left
    /// as it is).
    pub fn symlink(&self, target: &Path, link: &Path) -> Result<bool, RootError> {
        let (parent, name) = self.parent_of(link)?;
        match nix::unistd::symlinkat(target, Some(parent.as_raw_fd()), name) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(Self::map(link, "create symlink", e)),
        }
    }
}

/// Opens `name`, one entry of the directory `dir`, with `flags | O_NOFOLLOW`: never through
/// a symlink (`ELOOP` when it is one) nor outside `dir`. For entries that `getdents` said
/// are regular files, without resolving their directory's path again.
pub fn open_entry(dir: &impl AsRawFd, name: &OsStr, flags: OFlag) -> nix::Result<OwnedFd> {
    if name.as_encoded_bytes().contains(&b'/') || name == "." || name == ".." {
        return Err(Errno::EINVAL);
    }
    let h = OpenHow::new()
        .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let fd = openat2(dir.as_raw_fd(), name, h)?;
    // SAFETY: openat2 just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A directory opened by [`Root::open_dir`]. Its entries are read with `getdents64` on the
/// fd itself ([`dir_entries`]): glibc's `fdopendir` (nix's `Dir`) costs an `fstat` and two
/// `fcntl` on top, and its iterator an `lseek` when dropped, four syscalls a directory that
/// the container's linker cache paid for each one it scans.
pub struct DirFd(OwnedFd);

impl AsRawFd for DirFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The entries of an open directory, as [`Root::read_dir`] gives them (`path` names it in
/// errors), read from the fd's position (a directory just opened: all of them).
pub fn dir_entries(dir: &DirFd, path: &Path) -> Result<Vec<(std::ffi::OsString, Kind)>, RootError> {
    use std::os::unix::ffi::OsStrExt;
    let io = |source| RootError::Io {
        op: "read directory",
        path: path.to_path_buf(),
        source,
    };
    let mut buf = vec![0u8; 32 * 1024];
    let mut out = Vec::new();
    loop {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        let n = usize::try_from(Errno::result(n).map_err(io)?).map_err(|_| io(Errno::EIO))?;
        if n == 0 {
            return Ok(out);
        }
        let mut records = &buf[..n];
        while !records.is_empty() {
            // struct linux_dirent64: d_ino (8 bytes), d_off (8), d_reclen (2), d_type (1),
            // d_name (NUL-terminated, padded to d_reclen).
            let reclen = match records.get(16..18) {
                Some(b) => usize::from(u16::from_ne_bytes([b[0], b[1]])),
                None => return Err(io(Errno::EIO)),
            };
            let Some(record) = records.get(..reclen).filter(|_| reclen > 19) else {
                return Err(io(Errno::EIO));
            };
            let name = &record[19..];
            let name =
                OsStr::from_bytes(&name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())]);
            records = &records[reclen..];
            if name == "." || name == ".." {
                continue;
            }
            let kind = match record[18] {
                libc::DT_DIR => Kind::Dir,
                libc::DT_REG => Kind::File,
                libc::DT_LNK => Kind::Symlink,
                libc::DT_CHR => Kind::CharDevice,
                libc::DT_BLK => Kind::BlockDevice,
                _ => Kind::Other,
            };
            out.push((name.to_os_string(), kind));
        }
    }
}

/// Whether `name` in `parent` is a regular file owned by us, of mode `mode`, holding `data`.
fn holds_already(parent: &OwnedFd, name: &OsStr, data: &[u8], mode: u32) -> bool {
    use std::io::Read;
    let Ok(fd) = nix::fcntl::openat(
        Some(parent.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    // SAFETY: openat just returned this fd; the File owns it from here on.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let Ok(st) = fstat(file.as_raw_fd()) else {
        return false;
    };
    if Kind::of_mode(st.st_mode) != Kind::File
        || st.st_mode & 0o7777 != mode
        || st.st_size != data.len() as i64
        || st.st_uid != nix::unistd::geteuid().as_raw()
        || st.st_gid != nix::unistd::getegid().as_raw()
    {
        return false;
    }
    // One byte more than expected: a file that grew since the fstat is not the same.
    let mut have = Vec::with_capacity(data.len() + 1);
    file.by_ref()
        .take(data.len() as u64 + 1)
        .read_to_end(&mut have)
        .is_ok_and(|_| have == data)
}

/// `.NAME.nvbind-PID-N`: a name next to `name` for a file about to be renamed over it.
/// Renames `tmp` over `name` in `parent`; when that fails, `tmp` is removed.
fn rename_over(parent: &impl AsRawFd, tmp: &OsStr, name: &OsStr) -> nix::Result<()> {
    nix::fcntl::renameat(
        Some(parent.as_raw_fd()),
        tmp,
        Some(parent.as_raw_fd()),
        name,
    )
    .inspect_err(|_| {
        let _ = nix::unistd::unlinkat(
            Some(parent.as_raw_fd()),
            tmp,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    })
}

fn temp_name(name: &OsStr) -> std::ffi::OsString {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut t = std::ffi::OsString::from(".");
    t.push(name);
    t.push(format!(
        ".nvbind-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    t
}

/// `fstat` of an fd, as a [`Kind`].
pub fn fd_kind(fd: &OwnedFd, path: &Path) -> Result<Kind, RootError> {
    let st = fstat(fd.as_raw_fd()).map_err(|source| RootError::Io {
        op: "stat",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Kind::of_mode(st.st_mode))
}

#[cfg(test)]
mod tests;
