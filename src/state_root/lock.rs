//! The locks that keep concurrent invocations on one state root from corrupting each other:
//! the root lock (creates, and whatever waits for one) and a lock per container.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libcontainer::container::state::State;
use libcontainer::container::ContainerStatus;

use super::id::validate_id;

/// An exclusive POSIX record lock (fcntl F_SETLKW) on a lock file, released on drop.
///
/// Not flock: libcontainer clones the container's init process from ours, and a flock belongs
/// to the open file description, which the clone would inherit and hold until `start`.
/// POSIX locks belong to the process and are not inherited across fork.
///
/// The price of POSIX locks: closing *any* descriptor of the file releases the process's
/// lock, and taking it again succeeds at once. So this process never opens a lock file it
/// holds (see `FileLock::held_here`), and a second `exclusive` of one it holds returns a guard
/// that owns no descriptor (its drop must not release the first).
pub struct FileLock {
    /// None for a nested guard.
    file: Option<File>,
    path: PathBuf,
}

/// The lock files this process holds, once per guard.
static HELD: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn held() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FileLock {
    pub fn exclusive(path: &Path) -> Result<Self> {
        if FileLock::held_here(path) {
            held().push(path.to_path_buf());
            return Ok(Self {
                file: None,
                path: path.to_path_buf(),
            });
        }
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        // SAFETY: a zeroed flock is a valid "whole file" range; we set the lock type.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        loop {
            // SAFETY: fcntl on a valid, owned descriptor with a valid flock struct.
            let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLKW, &fl) };
            if rc == 0 {
                held().push(path.to_path_buf());
                return Ok(Self {
                    file: Some(file),
                    path: path.to_path_buf(),
                });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != ErrorKind::Interrupted {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
    }

    /// Whether this process holds a lock on `path` (then it must not open the file).
    pub fn held_here(path: &Path) -> bool {
        held().iter().any(|p| p == path)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let mut held = held();
        if let Some(i) = held.iter().rposition(|p| *p == self.path) {
            held.remove(i);
        }
        // The descriptor (if this guard owns one) closes after this, releasing the lock.
    }
}

impl FileLock {
    /// The descriptor that holds the lock; None for a nested guard (the first one has it).
    pub fn descriptor(&self) -> Option<std::os::fd::RawFd> {
        self.file.as_ref().map(|f| f.as_raw_fd())
    }
}

/// The root lock's file, in the root next to the containers.
pub fn root_lock_path(root: &Path) -> PathBuf {
    root.join(".nvbind.lock")
}

/// Serialises creates on one root.
pub fn lock_root(root: &Path) -> Result<FileLock> {
    FileLock::exclusive(&root_lock_path(root))
}

/// The pid of the process holding the root lock (a create), if any.
pub fn root_lock_holder(root: &Path) -> Option<i32> {
    let path = root_lock_path(root);
    // Opening and closing the file would release our own lock (delete inspects under it).
    if FileLock::held_here(&path) {
        return Some(std::process::id() as i32);
    }
    let file = fs::File::open(&path).ok()?;
    // SAFETY: a zeroed flock is a valid "whole file" range; F_GETLK fills it in.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: fcntl on a valid, owned descriptor with a valid flock struct.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) };
    (rc == 0 && fl.l_type != libc::F_UNLCK as libc::c_short).then_some(fl.l_pid)
}

/// Takes the per-container lock for a state-changing verb: a flock on the state directory
/// itself. A lock file inside it would not do: a verb opening (and so creating) it while
/// delete empties the directory makes delete's rmdir fail and leaves a directory without
/// state that no verb can remove or reuse. The directory can vanish while we wait (a
/// concurrent delete) or be made anew by a create, so once the lock is held we check that the
/// state is still there and that we locked the directory now at that path.
///
/// A flock is inherited by forked children, but no verb forks a container init while holding
/// this lock (create and restore hold only the root lock), and std opens it close-on-exec.
///
/// `create` builds a container under the root lock, not the container's, and its state.json
/// says "creating" (which libcontainer reports as stopped) before its init exists: a verb
/// that went ahead would act on a half-built container, and delete would remove the directory
/// from under the create. So while the state says creating we hold the root lock as well,
/// which waits for the create to finish or fail; one that was killed left it free. No one
/// takes the root lock while holding a container's, so the two cannot deadlock.
///
/// Another runtime's state directory (a root shared with runc) is refused before it is locked:
/// nvbind does not even flock what is not its own. `foreign` is `owner::foreign`, passed in
/// because owner takes the root lock itself (an import either way would be a circle).
pub fn lock_container<E>(
    root: &Path,
    id: &str,
    foreign: impl Fn(&Path, &str) -> Option<E>,
) -> Result<DirLock>
where
    E: std::error::Error + Send + Sync + 'static,
{
    validate_id(id)?;
    let dir = root.join(id);
    let missing = || anyhow::anyhow!("container {id:?} does not exist under {}", root.display());
    let mut root_lock = None;
    loop {
        if let Some(theirs) = foreign(root, id) {
            return Err(theirs.into());
        }
        if !State::file_path(&dir).exists() {
            return Err(missing());
        }
        if root_lock.is_none() && being_created(&dir) {
            root_lock = Some(lock_root(root)?);
        }
        let lock =
            DirLock::exclusive(&dir).map_err(|e| if dir.exists() { e } else { missing() })?;
        if !State::file_path(&dir).exists() {
            return Err(missing());
        }
        if !lock.is_of(&dir) {
            continue;
        }
        // Deleted and created again while we waited: go round once more under the root lock.
        if root_lock.is_some() || !being_created(&dir) {
            return Ok(lock);
        }
    }
}

fn being_created(dir: &Path) -> bool {
    matches!(State::load(dir), Ok(s) if s.status == ContainerStatus::Creating)
}

/// An advisory flock on a directory, released on drop. Only for code paths that do not fork
/// a container init while holding it (see `FileLock` for why).
pub struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn exclusive(dir: &Path) -> Result<Self> {
        let file = File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
        loop {
            // SAFETY: flock on a valid, owned descriptor.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Self { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != ErrorKind::Interrupted {
                return Err(err).with_context(|| format!("cannot lock {}", dir.display()));
            }
        }
    }

    /// Whether the locked directory is still the one at `dir` (not removed, not replaced).
    pub fn is_of(&self, dir: &Path) -> bool {
        match (self._file.metadata(), fs::metadata(dir)) {
            (Ok(locked), Ok(now)) => (locked.dev(), locked.ino()) == (now.dev(), now.ino()),
            _ => false,
        }
    }
}
