//! Device injection at create time: the requests in the bundle (cdi.k8s.io/* annotations,
//! NVIDIA_VISIBLE_DEVICES) are resolved against the CDI registry, all of them first, and the
//! edits are applied to a copy of the spec. Only when everything resolved is config.json
//! replaced, atomically; the original bytes are kept so a failed create can put them back.
//! The injected spec carries `org.nvbind.cdi.injected`, so a repeated create (or nvbind-hook
//! running after us) does not inject twice.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nvbind_cdi::apply::RealHost;
use nvbind_cdi::registry::{Registry, Trust, DEFAULT_SPEC_DIRS};
use oci_spec::runtime::Spec;

use crate::atomic::{write_atomic, write_atomic_nosync};

/// Colon-separated list of CDI spec directories, lowest priority first; replaces the
/// defaults (/etc/cdi, /var/run/cdi). Engines cannot pass flags to a runtime's create, so an
/// environment variable (or the global --cdi-spec-dirs) is how a host points nvbind elsewhere.
pub const SPEC_DIRS_ENV: &str = "NVBIND_CDI_SPEC_DIRS";

pub fn spec_dirs(flag: &[PathBuf]) -> Vec<PathBuf> {
    if !flag.is_empty() {
        return flag.to_vec();
    }
    match std::env::var_os(SPEC_DIRS_ENV) {
        Some(v) if !v.is_empty() => std::env::split_paths(&v).collect(),
        _ => DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect(),
    }
}

pub fn registry(dirs: Vec<PathBuf>) -> Registry {
    let mut r = Registry::with_trust(dirs, Trust::for_current_user());
    r.refresh();
    r
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

/// Applies the requested devices to `config_path` and returns the spec as written, with the
/// way back. None when nothing was requested (the registry is not even read: containers
/// without GPUs pay nothing).
pub fn inject(
    spec: &Spec,
    config_path: &Path,
    original: &[u8],
    dirs: &[PathBuf],
) -> Result<Option<(Spec, Rollback)>> {
    if nvbind_cdi::requests::device_requests(spec)
        .context("invalid device request")?
        .is_empty()
    {
        return Ok(None);
    }
    let registry = registry(spec_dirs(dirs));
    let Some(injected) = nvbind_cdi::requests::inject(spec, &registry, &RealHost)
        .context("cannot inject the requested devices")?
    else {
        return Ok(None);
    };
    let json = serde_json::to_vec_pretty(&injected).context("cannot serialize the spec")?;
    write_atomic_nosync(config_path, &json, 0o644)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let rollback = Rollback {
        path: config_path.to_path_buf(),
        original: original.to_vec(),
    };
    Ok(Some((injected, rollback)))
}
