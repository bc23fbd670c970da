//! The state root (--root): where it is and what it holds, the containers (loaded through
//! it) and the create records; container IDs (id.rs), the locks on the root (lock.rs) and
//! whose each state directory is (owner.rs: a root may be shared with other runtimes).

pub mod id;
pub mod lock;
pub mod owner;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcgroups::common::{create_cgroup_manager, AnyCgroupManager, CgroupConfig};
use libcontainer::container::state::State;
use libcontainer::container::Container;
use nix::unistd::{access, AccessFlags};

use self::id::validate_id;
use self::lock::{lock_container, DirLock, FileLock};
use crate::options::{GlobalOpts, Rootless};

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
            Rootless::Auto => crate::rootless::auto(),
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

    /// Loads an existing container of nvbind's, refreshing its status from the kernel.
    pub fn load(&self, id: &str) -> Result<Container> {
        validate_id(id)?;
        if let Some(foreign) = owner::foreign(&self.root, id) {
            return Err(foreign.into());
        }
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
        let lock = lock_container(&self.root, id, owner::foreign)?;
        let container = load_state_retrying(&self.container_dir(id))
            .with_context(|| format!("cannot load the state of container {id:?}"))?;
        Ok((lock, container))
    }

    /// Serialises the creates of `id` and what waits for one (see `lock::lock_id`).
    pub fn lock_id(&self, id: &str) -> Result<FileLock> {
        lock::lock_id(&self.root, id)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_that_is_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "").unwrap();
        let err = prepare_root(&file).unwrap_err().to_string();
        assert!(err.contains("--root"), "{err}");
    }
}
