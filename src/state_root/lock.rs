//! The locks that keep concurrent invocations on one state root from corrupting each other:
//! an ID's lock (a byte of the root's lock file: creates, and whatever waits for one) and the
//! lock of a container's state directory.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libcontainer::container::state::State;
use libcontainer::container::ContainerStatus;

use super::id::validate_id;

/// An exclusive POSIX record lock (fcntl F_SETLKW) on one byte of a lock file, released on
/// drop. The root's lock file holds one such byte per container ID (and per cgroup path a
/// create claims), so creates of different IDs never wait for each other while two
/// creates, or a create and a `delete --force`, of one ID still do.
///
/// Not flock: libcontainer clones the container's init process from ours, and a flock belongs
/// to the open file description, which the clone would inherit and hold until `start`.
/// POSIX locks belong to the process and are not inherited across fork; they also name their
/// holder (F_GETLK), which is how a running create is told from a killed one.
///
/// The price of POSIX locks: closing *any* descriptor of the file releases every lock the
/// process holds on it. So the process keeps one descriptor per lock file (`OPEN`) while it
/// holds or waits for any byte of it, never opens a second one meanwhile, and releases a byte
/// with F_UNLCK; a second `exclusive` of a byte it holds returns at once (a nested guard), and
/// the byte is released when its last guard goes.
pub struct FileLock {
    path: PathBuf,
    key: i64,
    fd: std::os::fd::RawFd,
}

/// A lock file this process has open: the bytes it holds (once per guard) and how many
/// threads are waiting for one. Closed when both are none.
struct OpenLockFile {
    path: PathBuf,
    file: File,
    held: Vec<i64>,
    waiting: usize,
}

static OPEN: std::sync::Mutex<Vec<OpenLockFile>> = std::sync::Mutex::new(Vec::new());

fn open_files() -> std::sync::MutexGuard<'static, Vec<OpenLockFile>> {
    OPEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The flock struct for one byte of the file.
fn one_byte(kind: libc::c_int, key: i64) -> libc::flock {
    // SAFETY: a zeroed flock is valid; we set the type and the one-byte range.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = key;
    fl.l_len = 1;
    fl
}

impl FileLock {
    /// Waits for and takes the byte `key` of the lock file at `path` (made if missing).
    pub fn exclusive(path: &Path, key: i64) -> Result<Self> {
        let fd = {
            let mut open = open_files();
            match open.iter_mut().find(|f| f.path == path) {
                Some(f) if f.held.contains(&key) => {
                    f.held.push(key);
                    let fd = f.file.as_raw_fd();
                    return Ok(Self {
                        path: path.to_path_buf(),
                        key,
                        fd,
                    });
                }
                Some(f) => {
                    f.waiting += 1;
                    f.file.as_raw_fd()
                }
                None => {
                    let file = fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(path)
                        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
                    let fd = file.as_raw_fd();
                    open.push(OpenLockFile {
                        path: path.to_path_buf(),
                        file,
                        held: vec![],
                        waiting: 1,
                    });
                    fd
                }
            }
        };
        // Not under OPEN's mutex: this may wait for another process for as long as its
        // create takes, and this process's other threads must be able to release their locks.
        let taken = loop {
            let fl = one_byte(libc::F_WRLCK, key);
            // SAFETY: fcntl on the descriptor OPEN keeps open, with a valid flock struct.
            if unsafe { libc::fcntl(fd, libc::F_SETLKW, &fl) } == 0 {
                break Ok(());
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != ErrorKind::Interrupted {
                break Err(err);
            }
        };
        let mut open = open_files();
        let i = open
            .iter()
            .position(|f| f.path == path)
            .expect("a lock file being waited for stays open");
        open[i].waiting -= 1;
        match taken {
            Ok(()) => {
                open[i].held.push(key);
                Ok(Self {
                    path: path.to_path_buf(),
                    key,
                    fd,
                })
            }
            Err(err) => {
                if open[i].held.is_empty() && open[i].waiting == 0 {
                    open.remove(i);
                }
                Err(err).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    /// Whether this process holds the byte `key` of the lock file at `path`.
    pub fn held_here(path: &Path, key: i64) -> bool {
        open_files()
            .iter()
            .any(|f| f.path == path && f.held.contains(&key))
    }

    /// The pid of the process holding the byte `key` of the lock file at `path`, if any.
    pub fn holder(path: &Path, key: i64) -> Option<i32> {
        let open = open_files();
        let probe = |fd| {
            let mut fl = one_byte(libc::F_WRLCK, key);
            // SAFETY: fcntl on a valid descriptor with a valid flock struct.
            let rc = unsafe { libc::fcntl(fd, libc::F_GETLK, &mut fl) };
            (rc == 0 && fl.l_type != libc::F_UNLCK as libc::c_short).then_some(fl.l_pid)
        };
        match open.iter().find(|f| f.path == path) {
            // F_GETLK does not see the process's own locks.
            Some(f) if f.held.contains(&key) => Some(std::process::id() as i32),
            // Opening and closing the file again would release what this process holds.
            Some(f) => probe(f.file.as_raw_fd()),
            // Nothing held here, so closing this descriptor releases nothing (and no other
            // thread opens the file meanwhile: we hold OPEN's mutex).
            None => {
                let file = File::open(path).ok()?;
                probe(file.as_raw_fd())
            }
        }
    }

    /// The descriptor that holds the lock: the container's init must not keep it.
    pub fn descriptor(&self) -> std::os::fd::RawFd {
        self.fd
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let mut open = open_files();
        let Some(i) = open.iter().position(|f| f.path == self.path) else {
            return;
        };
        let f = &mut open[i];
        if let Some(j) = f.held.iter().rposition(|k| *k == self.key) {
            f.held.remove(j);
        }
        if !f.held.contains(&self.key) {
            let fl = one_byte(libc::F_UNLCK, self.key);
            // SAFETY: fcntl on the descriptor OPEN keeps open, with a valid flock struct.
            unsafe { libc::fcntl(self.fd, libc::F_SETLK, &fl) };
        }
        if f.held.is_empty() && f.waiting == 0 {
            // Nothing of this process's is left on the file: closing it releases nothing.
            open.remove(i);
        }
    }
}

/// The root's lock file, in the root next to the containers.
pub fn root_lock_path(root: &Path) -> PathBuf {
    root.join(".nvbind.lock")
}

/// The byte of the root's lock file that stands for `name`: FNV-1a, so every nvbind build
/// agrees, below 2^62 so that the range stays inside the kernel's offsets. Two names sharing a
/// byte only wait for each other needlessly; a holder is never taken for another name's
/// (halfmade compares it with the pid in the name's record).
fn key_of(kind: u8, name: &[u8]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(kind).chain(name.iter().copied()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash >> 2) as i64
}

/// The byte of the root's lock file that is the lock of `id`.
pub fn id_key(id: &str) -> i64 {
    key_of(b'i', id.as_bytes())
}

/// Serialises what makes or removes the container `id` as a whole: its creates (and
/// restores), and what waits for one (`delete --force` of a half-made container, the removal
/// of its record). Other IDs' are not held up.
pub fn lock_id(root: &Path, id: &str) -> Result<FileLock> {
    FileLock::exclusive(&root_lock_path(root), id_key(id))
}

/// The pid of the process holding the lock of `id` (a create of it), if any.
pub fn id_lock_holder(root: &Path, id: &str) -> Option<i32> {
    FileLock::holder(&root_lock_path(root), id_key(id))
}

/// Whether this process holds the lock of `id`.
pub fn id_lock_held_here(root: &Path, id: &str) -> bool {
    FileLock::held_here(&root_lock_path(root), id_key(id))
}

/// Held by a create from its check that the cgroup at `path` holds no process until its init
/// is in it, so that two creates of different IDs naming one cgroupsPath cannot both find it
/// empty. Taken after the ID's lock, never the other way round.
pub fn lock_cgroup(root: &Path, path: &Path) -> Result<FileLock> {
    use std::os::unix::ffi::OsStrExt;
    FileLock::exclusive(
        &root_lock_path(root),
        key_of(b'c', path.as_os_str().as_bytes()),
    )
}

/// Takes the per-container lock for a state-changing verb: a flock on the state directory
/// itself. A lock file inside it would not do: a verb opening (and so creating) it while
/// delete empties the directory makes delete's rmdir fail and leaves a directory without
/// state that no verb can remove or reuse. The directory can vanish while we wait (a
/// concurrent delete) or be made anew by a create, so once the lock is held we check that the
/// state is still there and that we locked the directory now at that path.
///
/// A flock is inherited by forked children, but no verb forks a container init while holding
/// this lock (create and restore hold only the ID's lock), and std opens it close-on-exec.
///
/// `create` builds a container under the ID's lock, not the container's, and its state.json
/// says "creating" (which libcontainer reports as stopped) before its init exists: a verb
/// that went ahead would act on a half-built container, and delete would remove the directory
/// from under the create. So while the state says creating we hold the ID's lock as well,
/// which waits for the create to finish or fail; one that was killed left it free. No one
/// takes an ID's lock while holding a container's, so the two cannot deadlock.
///
/// Another runtime's state directory (a root shared with runc) is refused before it is locked:
/// nvbind does not even flock what is not its own. `foreign` is `owner::foreign`, passed in
/// because owner takes the ID's lock itself (an import either way would be a circle).
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
    let mut id_lock = None;
    loop {
        if let Some(theirs) = foreign(root, id) {
            return Err(theirs.into());
        }
        if !State::file_path(&dir).exists() {
            return Err(missing());
        }
        if id_lock.is_none() && being_created(&dir) {
            id_lock = Some(lock_id(root, id)?);
        }
        let lock =
            DirLock::exclusive(&dir).map_err(|e| if dir.exists() { e } else { missing() })?;
        if !State::file_path(&dir).exists() {
            return Err(missing());
        }
        if !lock.is_of(&dir) {
            continue;
        }
        // Deleted and created again while we waited: go round once more under the ID's lock.
        if id_lock.is_some() || !being_created(&dir) {
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

    /// Whether another open file holds a flock on `path` now (without waiting; false when
    /// `path` cannot be opened).
    pub fn held_elsewhere(path: &Path) -> bool {
        let Ok(file) = File::open(path) else {
            return false;
        };
        // SAFETY: flock on a valid, owned descriptor; closing it releases the probe's lock.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
    }

    /// Whether the locked directory is still the one at `dir` (not removed, not replaced).
    pub fn is_of(&self, dir: &Path) -> bool {
        match (self._file.metadata(), fs::metadata(dir)) {
            (Ok(locked), Ok(now)) => (locked.dev(), locked.ino()) == (now.dev(), now.ino()),
            _ => false,
        }
    }
}
