//! Who may have written what the registry loads. A CDI spec becomes mounts, device nodes and
//! hooks that run as root on the host, so under [`Trust::RootOwned`] a spec file, its spec
//! directory and every hook it names must be owned by root and not writable by group or
//! others, and so must every directory above them (as written and as resolved through
//! symlinks): whoever can write a directory can replace what is in it. A world-writable
//! directory with the sticky bit (/tmp) is accepted above the object, since others cannot
//! rename or remove root's entries in it.
//!
//! "Every directory above" means every directory the path's resolution goes through, the
//! ones holding intermediate symlinks included: a link in a user's directory on the way could
//! be pointed elsewhere after the check. A spec file is then read from the descriptor that
//! was judged (fstat), so what is parsed is the file that passed, not whatever the path names
//! a moment later.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Which spec files the registry is willing to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Only files and directories owned by root and not writable by group or others, whose
    /// hooks are root's too.
    RootOwned,
    /// Any readable file (unprivileged use, tests).
    Any,
}

impl Trust {
    /// [`Trust::RootOwned`] when this process runs as the host's root, else [`Trust::Any`]:
    /// root in a user namespace that another user made (rootless Podman runs its runtime so)
    /// has only that user's privileges, and sees the host's root as the overflow uid.
    pub fn for_current_user() -> Trust {
        let uid_map = std::fs::read_to_string("/proc/self/uid_map").ok();
        Trust::for_user(nix::unistd::geteuid().as_raw(), uid_map.as_deref())
    }

    /// The policy for effective uid `euid` with `uid_map` (/proc/self/uid_map; unreadable:
    /// None, taken as the initial namespace).
    pub fn for_user(euid: u32, uid_map: Option<&str>) -> Trust {
        // The initial namespace maps all IDs: "0 0 4294967295".
        let initial = uid_map.is_none_or(|m| m.contains("4294967295"));
        if euid == 0 && initial {
            Trust::RootOwned
        } else {
            Trust::Any
        }
    }
}

/// Why a file or directory was refused under [`Trust::RootOwned`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error("owned by uid {0}, not root")]
    Owner(u32),
    #[error("writable by group or others (mode {0:04o})")]
    Writable(u32),
    /// A directory above the object (which could replace it) is untrusted.
    #[error("in directory {dir}, which is {reason}")]
    Parent {
        dir: PathBuf,
        reason: Box<Untrusted>,
    },
}

/// Why a hook named by a spec was refused under [`Trust::RootOwned`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookProblem {
    #[error("does not exist")]
    Missing,
    #[error("cannot be inspected ({0})")]
    Inspect(std::io::ErrorKind),
    #[error("is not a regular file")]
    NotAFile,
    #[error("is {0}")]
    Untrusted(Untrusted),
}

impl HookProblem {
    /// What the host's administrator can do about it, for the one-line error.
    pub fn remedy(&self) -> &'static str {
        match self {
            HookProblem::Missing => "install it at that path or remove it from the spec",
            HookProblem::Inspect(_) | HookProblem::NotAFile => {
                "point the spec at the hook's executable or remove the hook from the spec"
            }
            HookProblem::Untrusted(_) => {
                "make it and the directories above it owned by root and not writable by group \
                 or others (chown root, chmod go-w), or remove it from the spec"
            }
        }
    }
}

const STICKY: u32 = 0o1000;

fn judge(meta: &std::fs::Metadata, sticky_ok: bool) -> Option<Untrusted> {
    let mode = meta.mode() & 0o7777;
    if meta.uid() != 0 {
        Some(Untrusted::Owner(meta.uid()))
    } else if mode & 0o022 != 0 && !(sticky_ok && meta.is_dir() && mode & STICKY != 0) {
        Some(Untrusted::Writable(mode))
    } else {
        None
    }
}

fn parent_problem(dir: &Path, meta: &std::fs::Metadata) -> Option<Untrusted> {
    // A symlinked directory is judged by the directory holding the link (checked as the
    // next ancestor) and, through the resolved path, by its target.
    if meta.file_type().is_symlink() {
        return None;
    }
    judge(meta, true).map(|reason| Untrusted::Parent {
        dir: dir.to_path_buf(),
        reason: Box::new(reason),
    })
}

/// What `lstat` said of each real directory met while resolving paths for the trust checks
/// of one registry load (a spec directory, its files and their hooks share most ancestors),
/// so that each is looked up once. Only directories are kept: the object a check is about
/// (a spec file, a hook) is always looked up afresh. A directory that passed could only have
/// been changed since by root (its parents passed too); one that failed refuses the object.
#[derive(Default)]
pub(crate) struct Lookups(HashMap<PathBuf, std::fs::Metadata>);

impl Lookups {
    fn lstat(&mut self, path: &Path) -> std::io::Result<std::fs::Metadata> {
        if let Some(meta) = self.0.get(path) {
            return Ok(meta.clone());
        }
        let meta = std::fs::symlink_metadata(path)?;
        if meta.is_dir() {
            self.0.insert(path.to_path_buf(), meta.clone());
        }
        Ok(meta)
    }
}

/// `path` resolved as the kernel resolves it, with what each step's `lstat` said.
pub(crate) struct Resolved {
    /// Every directory (a real one, not a link) the resolution went through, in order.
    dirs: Vec<(PathBuf, std::fs::Metadata)>,
    /// What the path leads to, every symlink followed (`stat` of the path).
    pub(crate) meta: std::fs::Metadata,
}

impl Resolved {
    /// Resolves `path` following each symlink on the way as the kernel would (40 at most,
    /// then ELOOP), `lstat`ing each component once. I/O errors (a missing file, an
    /// unreadable directory) are returned as such.
    pub(crate) fn new(path: &Path, lookups: &mut Lookups) -> std::io::Result<Resolved> {
        use std::collections::VecDeque;
        use std::ffi::OsString;
        use std::path::Component;
        fn parts(p: &Path) -> impl Iterator<Item = Option<OsString>> + '_ {
            // None stands for the root directory.
            p.components().filter_map(|c| match c {
                Component::RootDir => Some(None),
                Component::ParentDir => Some(Some(OsString::from(".."))),
                Component::Normal(n) => Some(Some(n.to_os_string())),
                Component::CurDir | Component::Prefix(_) => None,
            })
        }
        let start = if path.is_absolute() {
            PathBuf::from("/")
        } else {
            std::env::current_dir()?
        };
        let mut dirs: Vec<(PathBuf, std::fs::Metadata)> = vec![];
        let mut cur = start;
        // What lstat said of `cur`, when the step that made it did one.
        let mut cur_meta: Option<std::fs::Metadata> = None;
        let mut pending: VecDeque<Option<OsString>> = parts(path).collect();
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            let Some(name) = part else {
                cur = PathBuf::from("/");
                cur_meta = None;
                continue;
            };
            if name == ".." {
                cur.pop();
                cur_meta = None;
                continue;
            }
            if dirs.last().map(|(d, _)| d) != Some(&cur) {
                let meta = match cur_meta.take() {
                    Some(m) => m,
                    None => lookups.lstat(&cur)?,
                };
                dirs.push((cur.clone(), meta));
            }
            let next = cur.join(&name);
            let meta = lookups.lstat(&next)?;
            if meta.file_type().is_symlink() {
                links += 1;
                if links > 40 {
                    return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&next)?;
                for p in parts(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(p);
                }
                continue;
            }
            cur = next;
            cur_meta = Some(meta);
        }
        let meta = match cur_meta {
            Some(m) => m,
            None => match dirs.last() {
                Some((d, m)) if *d == cur => m.clone(),
                _ => lookups.lstat(&cur)?,
            },
        };
        Ok(Resolved { dirs, meta })
    }

    /// The first reason not to trust what the path leads to: itself, then the directories
    /// its resolution went through, nearest the object first.
    pub(crate) fn problem(&self) -> Option<Untrusted> {
        judge(&self.meta, false).or_else(|| self.directories_problem())
    }

    fn directories_problem(&self) -> Option<Untrusted> {
        self.dirs
            .iter()
            .rev()
            .find_map(|(dir, meta)| parent_problem(dir, meta))
    }
}

/// Reads the spec file at `path` if root alone could have written it: the file is judged
/// through the descriptor it is read from, and so are the directories on the way to it,
/// which must lead to that same file. Ok(Err(reason)) when it is untrusted.
pub(crate) fn read_trusted(
    path: &Path,
    lookups: &mut Lookups,
) -> std::io::Result<Result<Vec<u8>, Untrusted>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: a FIFO planted as a spec must not hang the registry at open.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if let Some(reason) = judge(&meta, false) {
        return Ok(Err(reason));
    }
    // Resolved after the open: its last lookup (never one kept in `lookups`, which holds
    // directories only) is where the path leads now, through the directories judged here.
    let resolved = Resolved::new(path, lookups)?;
    if let Some(reason) = resolved.directories_problem() {
        return Ok(Err(reason));
    }
    let now = &resolved.meta;
    if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
        return Err(std::io::Error::other(
            "the file was replaced while it was being checked",
        ));
    }
    // Through `Read for &mut File` wrapped in `take`: File's own read_to_end asks the size
    // again (fstat and lseek) although the fstat above gave it. One more byte than the
    // size, so a file that did not grow is read whole by the first read.
    let mut data = Vec::with_capacity(meta.len() as usize + 1);
    (&mut file).take(u64::MAX).read_to_end(&mut data)?;
    Ok(Ok(data))
}

/// Why the hook at `path` must not be run as root, or None.
pub(crate) fn hook_problem(path: &Path, lookups: &mut Lookups) -> Option<HookProblem> {
    let problem = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => HookProblem::Missing,
        kind => HookProblem::Inspect(kind),
    };
    let resolved = match Resolved::new(path, lookups) {
        Err(e) => return Some(problem(e)),
        Ok(r) => r,
    };
    if !resolved.meta.is_file() {
        return Some(HookProblem::NotAFile);
    }
    resolved.problem().map(HookProblem::Untrusted)
}

#[cfg(test)]
mod tests;
