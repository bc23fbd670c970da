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

/// The spec and rootfs of an existing container (from the bundle it was created from).
pub fn container_rootfs(c: &libcontainer::container::Container) -> anyhow::Result<(Spec, PathBuf)> {
    let config = c.bundle().join("config.json");
    let bytes = fs::read(&config).with_context(|| format!("cannot read {}", config.display()))?;
    let spec = crate::bundle::parse_spec(&bytes)
        .with_context(|| format!("{} is not a valid OCI spec", config.display()))?;
    let rootfs = spec_rootfs(&spec, c.bundle())?;
    Ok((spec, rootfs))
}
