//! The options the injecting subcommands (prestart, lxc) share: where CDI specs and the
//! driver are, and which ldconfig to run.

use std::path::PathBuf;

use anyhow::Result;

use crate::args::Args;
use crate::resolve::Sources;

/// Environment variable: the host's ldconfig.
pub const ENV_LDCONFIG: &str = "NVBIND_LDCONFIG";

/// Options shared by the injecting subcommands (prestart, lxc).
#[derive(Debug, Clone, Default)]
pub struct InjectOptions {
    pub sources: Sources,
    pub ldconfig: Option<PathBuf>,
}

impl InjectOptions {
    /// `--cdi-spec-dir DIR` (repeatable), `--driver-root DIR`, `--ldconfig PATH`, each
    /// falling back to its environment variable (the first two as the runtime reads them:
    /// NVBIND_CDI_SPEC_DIRS, NVBIND_DRIVER_ROOT).
    pub fn take(args: &mut Args) -> Result<InjectOptions> {
        let spec_dirs: Vec<PathBuf> = args
            .values("--cdi-spec-dir")?
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let driver_root = args.value("--driver-root")?.map(PathBuf::from);
        let ldconfig = args
            .value("--ldconfig")?
            .or_else(|| std::env::var(ENV_LDCONFIG).ok())
            .map(PathBuf::from);
        Ok(InjectOptions {
            sources: Sources {
                spec_dirs,
                driver_root,
            },
            ldconfig,
        })
    }
}
