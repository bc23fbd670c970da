//! What every verb shares: the state root, container IDs, loading a container, and the locks
//! that keep concurrent invocations on one root from corrupting each other.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcgroups::common::{create_cgroup_manager, AnyCgroupManager, CgroupConfig};
use libcontainer::container::state::State;
use libcontainer::container::{Container, ContainerStatus};
use nix::unistd::{access, AccessFlags};

use crate::cli::{GlobalOpts, Rootless};

/// Resolved global options, handed to every verb.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub root: PathBuf,
    pub systemd_cgroup: bool,
    /// --cdi-spec-dir values; empty means $NVBIND_CDI_SPEC_DIRS or the CDI defaults.
    pub cdi_spec_dirs: Vec<PathBuf>,
}

impl Ctx {
    pub fn new(opts: &GlobalOpts) -> Result<Self> {
        let rootless = match opts.rootless {
            Rootless::True => true,
            Rootless::False => false,
            Rootless::Auto => !nix::unistd::geteuid().is_root(),
        };
        let root = match &opts.root {
            Some(root) => root.clone(),
            None if rootless => crate::rootless::default_root(),
            None => PathBuf::from("/run/nvbind"),
        };
        let root = prepare_root(&root)?;
        if crate::rootless::unprivileged() {
            crate::rootless::check_root_owner(&root)?;
        }
        Ok(Self {
            root,
            systemd_cgroup: opts.systemd_cgroup,
            cdi_spec_dirs: opts.cdi_spec_dirs.clone(),
        })
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Loads an existing container, refreshing its status from the kernel.
    pub fn load(&self, id: &str) -> Result<Container> {
        validate_id(id)?;
        let dir = self.container_dir(id);
        if !State::file_path(&dir).exists() {
            bail!(
                "container {id:?} does not exist under {}",
                self.root.display()
            );
        }
        let container = load_state_retrying(&dir)
            .with_context(|| format!("cannot load the state of container {id:?}"))?;
        Ok(container)
    }

    /// Takes the container's lock, then loads it: what every state-changing verb does first.
    pub fn load_locked(&self, id: &str) -> Result<(DirLock, Container)> {
        let lock = lock_container(self, id)?;
        let container = load_state_retrying(&self.container_dir(id))
            .with_context(|| format!("cannot load the state of container {id:?}"))?;
        Ok((lock, container))
    }

    pub fn cgroup_manager(&self, container: &Container) -> Result<AnyCgroupManager> {
        crate::rootless::require_cgroup(container)?;
        let config = container
            .spec()
            .with_context(|| format!("cannot read the saved config of {:?}", container.id()))?;
        create_cgroup_manager(CgroupConfig {
            cgroup_path: config.cgroup_path,
            systemd_cgroup: container.systemd(),
            container_name: container.id().to_string(),
        })
        .with_context(|| format!("cannot open the cgroup of {:?}", container.id()))
    }
}

/// Creates the state root (mode 0700) if needed and checks that we can write into it, so that
/// a bad --root is reported before anything else is touched.
fn prepare_root(root: &Path) -> Result<PathBuf> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
    {
        Ok(()) => {}
        Err(e) => bail!(
            "cannot create the state directory --root {}: {e}; pass a writable directory",
            root.display()
        ),
    }
    if access(root, AccessFlags::W_OK | AccessFlags::X_OK).is_err() {
        bail!(
            "the state directory --root {} is not writable; pass a writable directory",
            root.display()
        );
    }
    // A read-only filesystem passes access(2) for root; probe it the honest way.
    let meta = fs::metadata(root)?;
    if !meta.is_dir() {
        bail!("--root {} is not a directory", root.display());
    }
    if meta.permissions().mode() & 0o200 == 0 && meta.uid() != 0 {
        bail!(
            "the state directory --root {} is not writable",
            root.display()
        );
    }
    if nix::sys::statvfs::statvfs(root)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
    {
        bail!(
            "the state directory --root {} is on a read-only filesystem; pass a writable directory",
            root.display()
        );
    }
    root.canonicalize()
        .with_context(|| format!("cannot resolve --root {}", root.display()))
}

/// Container IDs become directory names under --root, so anything that could escape it or
/// confuse a path join is refused up front (runc accepts the same alphabet).
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        bail!("the container ID is empty; give a name made of letters, digits, '_', '+', '-', '.'");
    }
    if id == "." || id == ".." || id.contains("..") {
        bail!("invalid container ID {id:?}: it must not contain \"..\"");
    }
    if id.starts_with(".nvbind") {
        // The root keeps its lock file and its records (creates, clones) under such names.
        bail!("invalid container ID {id:?}: names starting with \".nvbind\" are reserved");
    }
    if id.len() > 1024 {
        bail!("invalid container ID: longer than 1024 characters");
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.')))
    {
        bail!(
            "invalid container ID {id:?}: character {c:?} is not allowed \
             (use letters, digits, '_', '+', '-', '.')"
        );
    }
    Ok(())
}

/// The vendored libcontainer replaces state.json atomically, but a container being created
/// or deleted can still be seen half-way (directory made, state not yet written; or removed
/// between our existence check and the read). A few short retries turn that race into a delay
/// instead of a spurious error in `state` and `list`.
pub fn load_state_retrying(dir: &Path) -> Result<Container> {
    let mut last = None;
    for _ in 0..50 {
        match Container::load(dir.to_path_buf()) {
            Ok(c) => return Ok(c),
            Err(e) => {
                last = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    }
    Err(last.expect("loop ran at least once").into())
}

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

/// Serialises creates on one root; the lock file lives in the root next to the containers.
pub fn lock_root(ctx: &Ctx) -> Result<FileLock> {
    FileLock::exclusive(&ctx.root.join(".nvbind.lock"))
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
fn lock_container(ctx: &Ctx, id: &str) -> Result<DirLock> {
    validate_id(id)?;
    let dir = ctx.container_dir(id);
    let missing = || {
        anyhow::anyhow!(
            "container {id:?} does not exist under {}",
            ctx.root.display()
        )
    };
    let mut root_lock = None;
    loop {
        if !State::file_path(&dir).exists() {
            return Err(missing());
        }
        if root_lock.is_none() && being_created(&dir) {
            root_lock = Some(lock_root(ctx)?);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_the_root_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a..b",
            "a b",
            "x\n",
            "é",
            ".nvbind-creating",
            ".nvbind.lock",
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "abc-123", "A_b+c.d", "0"] {
            validate_id(good).unwrap();
        }
    }

    #[test]
    fn error_names_the_bad_character() {
        let err = validate_id("a/b").unwrap_err().to_string();
        assert!(err.contains("'/'"), "{err}");
    }

    #[test]
    fn root_that_is_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "").unwrap();
        let err = prepare_root(&file).unwrap_err().to_string();
        assert!(err.contains("--root"), "{err}");
    }
}
