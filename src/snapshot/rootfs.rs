//! Where the rootfs of a bundle or of an existing container is.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use oci_spec::runtime::Spec;

/// The rootfs a bundle's spec names (relative paths are relative to the bundle).
pub fn spec_rootfs(spec: &Spec, bundle: &Path) -> anyhow::Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .context("config.json has no \"root\"")?;
    let path = bundle.join(root.path());
    fs::canonicalize(&path).with_context(|| format!("rootfs {} does not exist", path.display()))
}

/// The spec and rootfs of an existing container (the spec it was built from).
pub fn container_rootfs(c: &libcontainer::container::Container) -> anyhow::Result<(Spec, PathBuf)> {
    let spec = c
        .built_spec()
        .with_context(|| format!("cannot read the spec of container {:?}", c.id()))?;
    let rootfs = spec_rootfs(&spec, c.bundle())?;
    Ok((spec, rootfs))
}
