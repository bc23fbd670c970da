use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use oci_spec::runtime::Spec;
use user_ns::UserNamespaceConfig;

use super::builder::ContainerBuilder;
use super::builder_impl::ContainerBuilderImpl;
use super::mount_validation::validate_idmapped_mounts;
use super::{Container, ContainerStatus};
use crate::config::YoukiConfig;
use crate::error::{ErrInvalidSpec, LibcontainerError, MissingSpecError};
use crate::notify_socket::NOTIFY_FILE;
use crate::process::args::ContainerType;
use crate::syscall::syscall::create_syscall;
use crate::validator::Validator;
use crate::{apparmor, tty, user_ns, utils};

// Builder that can be used to configure the properties of a new container
pub struct InitContainerBuilder {
    base: ContainerBuilder,
    bundle: PathBuf,
    /// nvbind: the spec to build from, instead of the bundle's config.json.
    spec: Option<Spec>,
    /// nvbind: `bundle` is canonical (`with_canonical_bundle`).
    bundle_is_canonical: bool,
    use_systemd: bool,
    detached: bool,
    no_pivot: bool,
    as_sibling: bool,
}

impl InitContainerBuilder {
    /// Generates the base configuration for a new container from which
    /// configuration methods can be chained
    pub(super) fn new(builder: ContainerBuilder, bundle: PathBuf) -> Self {
        Self {
            base: builder,
            bundle,
            spec: None,
            bundle_is_canonical: false,
            use_systemd: true,
            detached: true,
            no_pivot: false,
            as_sibling: false,
        }
    }

    /// Sets if systemd should be used for managing cgroups
    pub fn with_systemd(mut self, should_use: bool) -> Self {
        self.use_systemd = should_use;
        self
    }

    /// Sets if the init process should be run as a child or a sibling of
    /// the calling process
    pub fn as_sibling(mut self, as_sibling: bool) -> Self {
        self.as_sibling = as_sibling;
        self
    }

    pub fn with_detach(mut self, detached: bool) -> Self {
        self.detached = detached;
        self
    }

    pub fn with_no_pivot(mut self, no_pivot: bool) -> Self {
        self.no_pivot = no_pivot;
        self
    }

    /// nvbind: the bundle path given to `as_init` is canonical already (the caller resolved
    /// it: an absolute path without symlinks, `.` or `..`), so a create does not resolve it
    /// again (a readlink per component).
    pub fn with_canonical_bundle(mut self) -> Self {
        self.bundle_is_canonical = true;
        self
    }

    /// Builds the container from `spec` instead of the bundle's config.json, which is then
    /// never read (nor written): a runtime that edits the spec (device injection) leaves the
    /// engine's bundle as it was. Relative paths in `spec` (root.path, bind-mount sources)
    /// are still relative to the bundle. The spec the container was built from is saved in
    /// its state directory ([`Container::built_spec`]), where exec and checkpoint read it.
    pub fn with_spec(mut self, spec: Spec) -> Self {
        self.spec = Some(spec);
        self
    }

    /// Overrides the OCI bundle path for the container
    ///                                                                                                                                                                             
    /// Replaces the bundle set by [`ContainerBuilder::as_init`].  
    pub fn with_bundle<P: Into<PathBuf>>(mut self, bundle: P) -> Self {
        self.bundle = bundle.into();
        self
    }

    /// Creates a new container
    pub fn build(mut self) -> Result<Container, LibcontainerError> {
        let (spec, rootfs) = self.load_spec()?;
        // validate terminal field against console socket presence before any side effects
        // (mirrors runc's checkTerminal called at the top of runner.run())
        self.base.check_terminal(&spec, self.detached)?;

        let container_dir = self.create_container_dir()?;

        let mut container = self.create_container_state(&container_dir)?;
        container
            .set_systemd(self.use_systemd)
            .set_annotations(spec.annotations().clone());

        let notify_path = container_dir.join(NOTIFY_FILE);
        // nvbind: `rootfs` is the spec's root.path as load_spec canonicalized it (it was
        // canonicalized a second time here: a readlink per path component).

        // if socket file path is given in commandline options,
        // get file descriptors of console socket
        let csocketfd = if let Some(console_socket) = &self.base.console_socket {
            Some(tty::setup_console_socket(
                &container_dir,
                console_socket,
                "console-socket",
            )?)
        } else {
            None
        };

        let user_ns_config = UserNamespaceConfig::new(&spec)?;

        let config = YoukiConfig::from_spec(&spec, container.id())?;
        config.save(&container_dir).map_err(|err| {
            tracing::error!(?container_dir, "failed to save config: {}", err);
            err
        })?;
        // nvbind: the spec as built (root.path absolute), for exec and checkpoint.
        container.save_spec(&spec).map_err(|err| {
            tracing::error!(?container_dir, "failed to save the spec: {}", err);
            err
        })?;

        let mut builder_impl = ContainerBuilderImpl {
            container_type: ContainerType::InitContainer,
            syscall: self.base.syscall,
            container_id: self.base.container_id,
            pid_file: self.base.pid_file,
            console_socket: csocketfd,
            use_systemd: self.use_systemd,
            spec: Rc::new(spec),
            rootfs,
            user_ns_config,
            notify_path,
            container: Some(container.clone()),
            tenant_of: None,
            preserve_fds: self.base.preserve_fds,
            runtime_fds: self.base.runtime_fds,
            detached: self.detached,
            executor: self.base.executor,
            rootfs_hook: self.base.rootfs_hook,
            seccomp_compiler: self.base.seccomp_compiler,
            no_pivot: self.no_pivot,
            stdin: self.base.stdin,
            stdout: self.base.stdout,
            stderr: self.base.stderr,
            as_sibling: self.as_sibling,
            sub_cgroup_paths: Default::default(),
            process_label: None,
        };

        builder_impl.create()?;

        container.refresh_state()?;

        Ok(container)
    }

    fn create_container_dir(&self) -> Result<PathBuf, LibcontainerError> {
        let container_dir = self.base.root_path.join(&self.base.container_id);
        tracing::debug!("container directory will be {:?}", container_dir);

        if container_dir.exists() {
            tracing::error!(id = self.base.container_id, dir = ?container_dir, "container already exists");
            return Err(LibcontainerError::Exist);
        }

        std::fs::create_dir_all(&container_dir).map_err(|err| {
            tracing::error!(
                ?container_dir,
                "failed to create container directory: {}",
                err
            );
            LibcontainerError::OtherIO(err)
        })?;

        Ok(container_dir)
    }

    /// The spec, with root.path canonical, and that path.
    ///
    /// nvbind: the bundle is canonicalized once, here, and kept in `self.bundle` for what
    /// follows (the rootfs, relative bind sources, the container's state); it was resolved
    /// again by each of them (`Spec::canonicalize_rootfs`, `Container::new`), and the rootfs
    /// twice: about 17 readlink per create. The results are the same paths: realpath of
    /// `bundle/rootfs` resolves `bundle` the same way a realpath of `bundle` does.
    fn load_spec(&mut self) -> Result<(Spec, PathBuf), LibcontainerError> {
        let mut spec = match self.spec.take() {
            Some(spec) => spec,
            None => Spec::load(self.bundle.join("config.json"))?,
        };
        Self::validate_spec(&spec)?;

        // nvbind: not again for a bundle the caller has canonicalized (with_canonical_bundle).
        if !self.bundle_is_canonical {
            self.bundle = fs::canonicalize(&self.bundle).map_err(|err| {
                LibcontainerError::InvalidInput(format!(
                    "invalid bundle {:?}: {err:?}",
                    self.bundle
                ))
            })?;
        }
        let mut root = spec.root().clone().ok_or(MissingSpecError::Root)?;
        // nvbind: below the canonical bundle, only root.path's own names are looked at
        // (canonical_below: one lstat for "rootfs" instead of a readlink per component).
        let rootfs = utils::canonical_below(&self.bundle, root.path()).map_err(|err| {
            tracing::error!(bundle = ?self.bundle, "failed to canonicalize rootfs: {}", err);
            LibcontainerError::OtherIO(err)
        })?;
        // As Spec::canonicalize_rootfs did: an absent `readonly` becomes false.
        let readonly = root.readonly().unwrap_or(false);
        root.set_path(rootfs.clone()).set_readonly(Some(readonly));
        spec.set_root(Some(root));

        Self::absolutize_bind_sources(&mut spec, &self.bundle)?;

        Ok((spec, rootfs))
    }

    /// nvbind: a relative bind-mount source is relative to the bundle (runtime-spec config.md,
    /// runc's createLibcontainerMount). libcontainer canonicalized it against the runtime's
    /// working directory instead, so `create` failed (ENOENT) unless run from the bundle.
    fn absolutize_bind_sources(spec: &mut Spec, bundle: &Path) -> Result<(), LibcontainerError> {
        let Some(mounts) = spec.mounts() else {
            return Ok(());
        };
        if !mounts.iter().any(|m| {
            crate::rootfs::utils::is_bind(m) && m.source().as_ref().is_some_and(|s| s.is_relative())
        }) {
            return Ok(());
        }
        // nvbind: `bundle` is canonical (load_spec).
        let mut mounts = mounts.clone();
        for m in mounts.iter_mut() {
            if !crate::rootfs::utils::is_bind(m) {
                continue;
            }
            if let Some(source) = m.source().as_ref().filter(|s| s.is_relative()) {
                let absolute = bundle.join(source);
                m.set_source(Some(absolute));
            }
        }
        spec.set_mounts(Some(mounts));
        Ok(())
    }

    fn validate_spec(spec: &Spec) -> Result<(), LibcontainerError> {
        let version = spec.version();
        if !version.starts_with("1.") {
            tracing::error!(
                "runtime spec has incompatible version '{}'. Only 1.X.Y is supported",
                spec.version()
            );
            Err(ErrInvalidSpec::UnsupportedVersion)?;
        }

        Validator::validate_spec(spec)?;

        if let Some(process) = spec.process() {
            if let Some(profile) = process.apparmor_profile() {
                let apparmor_is_enabled = apparmor::is_enabled().map_err(|err| {
                    tracing::error!(?err, "failed to check if apparmor is enabled");
                    LibcontainerError::OtherIO(err)
                })?;
                if !apparmor_is_enabled {
                    tracing::error!(
                        ?profile,
                        "apparmor profile exists in the spec, but apparmor is not activated on this system"
                    );
                    Err(ErrInvalidSpec::AppArmorNotEnabled)?;
                }
            }
        }

        let syscall = create_syscall();

        if let Some(mounts) = spec.mounts() {
            utils::validate_mount_options(mounts)?;
            validate_idmapped_mounts(mounts, spec.linux().as_ref(), &*syscall)?;
        }

        utils::validate_spec_for_new_user_ns(spec, &*syscall)?;
        utils::validate_spec_for_net_devices(spec, &*syscall)
            .map_err(LibcontainerError::NetDevicesError)?;

        Ok(())
    }

    fn create_container_state(&self, container_dir: &Path) -> Result<Container, LibcontainerError> {
        // nvbind: the bundle is canonical since load_spec; the directory is resolved as before
        // (the builder's default root path is not canonicalized), or, below a canonical root
        // (with_canonical_root_path), with one lstat of the directory just made.
        let resolved = if self.base.root_is_canonical {
            container_dir
                .strip_prefix(&self.base.root_path)
                .map_err(std::io::Error::other)
                .and_then(|id| utils::canonical_below(&self.base.root_path, id))
        } else {
            fs::canonicalize(container_dir)
        };
        let container_dir = resolved.map_err(|err| {
            LibcontainerError::InvalidInput(format!(
                "invalid container root {container_dir:?}: {err:?}"
            ))
        })?;
        let container = Container::new_canonical(
            &self.base.container_id,
            ContainerStatus::Creating,
            None,
            self.bundle.clone(),
            container_dir,
        );
        container.save()?;
        Ok(container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::builder::ContainerBuilder;
    use crate::syscall::syscall::SyscallType;

    #[test]
    fn test_with_bundle() {
        let builder = ContainerBuilder::new("test-id".to_owned(), SyscallType::default())
            .as_init("/original/bundle")
            .with_bundle("/new/bundle");

        assert_eq!(builder.bundle, PathBuf::from("/new/bundle"));
    }

    /// nvbind: load_spec resolves the bundle once and gives the rootfs (relative or absolute,
    /// through symlinks) exactly as Spec::canonicalize_rootfs did, and the bundle it keeps is
    /// canonical too.
    #[test]
    fn test_load_spec_canonicalizes_like_oci_spec() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let real = tmp.path().join("real");
        std::fs::create_dir_all(real.join("rootfs"))?;
        std::fs::create_dir_all(tmp.path().join("elsewhere/fs"))?;
        std::os::unix::fs::symlink(&real, tmp.path().join("link"))?;
        std::os::unix::fs::symlink("../elsewhere/fs", real.join("linked-rootfs"))?;
        let bundle = tmp.path().join("link");
        for rootfs in [
            PathBuf::from("rootfs"),
            PathBuf::from("./rootfs/../linked-rootfs"),
            tmp.path().join("link/rootfs"),
        ] {
            let mut spec = Spec::default();
            spec.set_root(Some(
                oci_spec::runtime::RootBuilder::default()
                    .path(&rootfs)
                    .build()?,
            ));
            let mut want = spec.clone();
            want.canonicalize_rootfs(&bundle)?;

            let mut builder = ContainerBuilder::new("id".to_owned(), SyscallType::default())
                .as_init(&bundle)
                .with_spec(spec);
            let (got, got_rootfs) = builder.load_spec()?;
            assert_eq!(got.root(), want.root(), "rootfs {rootfs:?}");
            assert_eq!(&got_rootfs, want.root().as_ref().unwrap().path());
            assert_eq!(builder.bundle, std::fs::canonicalize(&bundle)?);
        }
        Ok(())
    }
}
