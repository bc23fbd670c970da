//! The options the injecting subcommands (prestart, lxc) share: where CDI specs and the
//! driver are.

use std::path::PathBuf;

use anyhow::Result;

use crate::args::Args;
use crate::resolve::Sources;

/// Options shared by the injecting subcommands (prestart, lxc).
#[derive(Debug, Clone, Default)]
pub struct InjectOptions {
    pub sources: Sources,
}

impl InjectOptions {
    /// `--cdi-spec-dir DIR` (repeatable) and `--driver-root DIR`, each falling back to its
    /// environment variable as the runtime reads them (NVBIND_CDI_SPEC_DIRS,
    /// NVBIND_DRIVER_ROOT); `--ldconfig PATH` is accepted and unused (no ldconfig runs).
    pub fn take(args: &mut Args) -> Result<InjectOptions> {
        let spec_dirs: Vec<PathBuf> = args
            .values("--cdi-spec-dir")?
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let driver_root = args.value("--driver-root")?.map(PathBuf::from);
        let _ = args.value("--ldconfig")?;
        Ok(InjectOptions {
            sources: Sources {
                spec_dirs,
                driver_root,
            },
        })
    }
}
