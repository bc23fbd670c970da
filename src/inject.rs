//! Device injection at create time: the requests in the bundle (cdi.k8s.io/* annotations,
//! NVIDIA_VISIBLE_DEVICES) go through nvbind-cdi's resolver (the one nvbind-hook uses: spec
//! files checked against the live host, specs generated in memory for GPU kinds with none on
//! disk), all of them first, and the edits are applied to a copy of the spec, which
//! libcontainer takes in memory: the engine's bundle is never written. The injected spec
//! carries `org.nvbind.cdi.injected` (the container's state shows it to hooks), so
//! nvbind-hook running in the container's hooks does not inject twice.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, Result};
use libcontainer::container::builder::RootfsHook;
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

/// What injection made of a bundle's spec.
pub struct Injected {
    /// The spec with the edits applied (the hooks nvbind does itself taken out), for
    /// libcontainer in memory.
    pub spec: Spec,
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

/// Applies the requested devices to a copy of `spec`. None when nothing was requested (the
/// registry is not even read: containers without GPUs pay nothing). Nothing is written.
pub fn inject(spec: &Spec, dirs: &[PathBuf]) -> Result<Option<Injected>> {
    let Some(mut resolution) = resolver(dirs)?
        .resolve(spec)
        .context("cannot inject the requested devices")?
    else {
        return Ok(None);
    };
    for w in &resolution.warnings {
        tracing::warn!("{w}");
    }
    let gids = std::mem::take(&mut resolution.edits.additional_gids);
    resolution.edits.additional_gids = crate::rootless::container_gids(spec, &gids);
    let steps =
        steps::take(&mut resolution.edits).context("cannot inject the requested devices")?;
    let nodes = resolution.edits.device_nodes.clone();
    let mut injected = resolution
        .apply(spec, &RealHost)
        .context("cannot inject the requested devices")?;
    crate::rootless::bind_device_nodes(&mut injected, &nodes)?;
    crate::bundle::check_injected(&injected)?;
    Ok(Some(Injected {
        spec: injected,
        steps,
    }))
}
