//! Device injection at create time: the requests in the bundle (cdi.k8s.io/* annotations,
//! NVIDIA_VISIBLE_DEVICES) go through nvbind-cdi's resolver (the one nvbind-hook uses: spec
//! files checked against the live host, specs generated in memory for GPU kinds with none on
//! disk), all of them first, and the edits are applied to a copy of the spec. Only when
//! everything resolved is config.json replaced, atomically; the original bytes are kept so a
//! failed create can put them back.
//! The injected spec carries `org.nvbind.cdi.injected`, so a repeated create (or nvbind-hook
//! running after us) does not inject twice.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, Result};
use libcontainer::container::builder::RootfsHook;
use nvbind_atomic::{write_atomic, write_atomic_nosync};
use nvbind_cdi::apply::RealHost;
use nvbind_cdi::registry::{Registry, Trust};
use nvbind_cdi::resolver::{spec_dirs_from_env, Resolver, ResolverConfig};
use nvbind_cdi::rootfs::Root;
use nvbind_cdi::steps::{self, RootfsSteps};
use oci_spec::runtime::Spec;

pub fn spec_dirs(flag: &[PathBuf]) -> Vec<PathBuf> {
    spec_dirs_from_env(flag)
}

pub fn registry(dirs: Vec<PathBuf>) -> Registry {
    Registry::with_trust(dirs, Trust::for_current_user())
}

/// The resolver create uses: the one nvbind-hook uses, with the same environment.
pub fn resolver(flag_dirs: &[PathBuf]) -> Result<Resolver> {
    Ok(Resolver::new(ResolverConfig::from_env(
        flag_dirs,
        Trust::for_current_user(),
    )?))
}

/// The bundle's config.json as it was before injection, to put back if the create fails.
pub struct Rollback {
    path: PathBuf,
    original: Vec<u8>,
}

impl Rollback {
    pub fn restore(self) {
        if let Err(e) = write_atomic(&self.path, &self.original, 0o644) {
            tracing::warn!("cannot restore {}: {e}", self.path.display());
        }
    }
}

/// What injection made of a bundle.
pub struct Injected {
    /// The spec with the edits applied (the hooks nvbind does itself taken out).
    pub spec: Spec,
    pub rollback: Rollback,
    /// The links and linker cache to make in the rootfs, in-process ([`rootfs_hook`]).
    pub steps: RootfsSteps,
}

/// The in-process createContainer work: run by libcontainer in the container's init process
/// on the prepared rootfs (the hooks the spec named are never executed).
pub fn rootfs_hook(steps: RootfsSteps) -> RootfsHook {
    Rc::new(move |rootfs: &Path| {
        let root = Root::open(rootfs)?;
        let report = steps.apply(&root)?;
        for w in &report.warnings {
            tracing::warn!("{w}");
        }
        Ok(())
    })
}

/// Applies the requested devices to `config_path` and returns the spec as written, with the
/// way back. None when nothing was requested (the registry is not even read: containers
/// without GPUs pay nothing).
pub fn inject(
    spec: &Spec,
    config_path: &Path,
    original: &[u8],
    dirs: &[PathBuf],
) -> Result<Option<Injected>> {
    let Some(mut resolution) = resolver(dirs)?
        .resolve(spec)
        .context("cannot inject the requested devices")?
    else {
        return Ok(None);
    };
    for w in &resolution.warnings {
        tracing::warn!("{w}");
    }
    let steps =
        steps::take(&mut resolution.edits).context("cannot inject the requested devices")?;
    let injected = resolution
        .apply(spec, &RealHost)
        .context("cannot inject the requested devices")?;
    let json = serde_json::to_vec_pretty(&injected).context("cannot serialize the spec")?;
    write_atomic_nosync(config_path, &json, 0o644)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let rollback = Rollback {
        path: config_path.to_path_buf(),
        original: original.to_vec(),
    };
    Ok(Some(Injected {
        spec: injected,
        rollback,
        steps,
    }))
}
