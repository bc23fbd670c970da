//! The hook resolves requests through nvbind-cdi's resolver, the one the runtime's `create`
//! uses (same spec directories and environment, same generation of a spec in memory when
//! none is on disk, same checks of spec files against the live host), so a bundle gets the
//! same edits whichever of the two injects it.

use std::path::PathBuf;

use nvbind_cdi::discover::HostRoots;
use nvbind_cdi::registry::Trust;
use nvbind_cdi::resolver::{ConfigError, Resolver, ResolverConfig};

/// Where specs and the host are read from, as the injecting subcommands take them.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--cdi-spec-dir` values; empty: `NVBIND_CDI_SPEC_DIRS`, else the CDI defaults.
    pub spec_dirs: Vec<PathBuf>,
    /// `--driver-root`; None: `NVBIND_DRIVER_ROOT`, else `/`.
    pub driver_root: Option<PathBuf>,
}

/// True when this process is in a user namespace other than the initial one (its uid map is
/// not the identity over the whole range).
fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| {
            let f: Vec<&str> = m.split_whitespace().collect();
            f != ["0", "0", "4294967295"]
        })
        .unwrap_or(false)
}

/// Which spec files to load. As real root: only root-owned, not group/other-writable ones.
/// Inside a user namespace (an unprivileged LXC container's mount hook), host root's files
/// show up owned by the overflow uid, so ownership says nothing; the hook then holds only the
/// container root's privileges, and a spec cannot make it reach further than that root can.
fn trust() -> Trust {
    if in_user_namespace() {
        Trust::Any
    } else {
        Trust::for_current_user()
    }
}

/// The resolver for these sources.
pub fn resolver(src: &Sources) -> Result<Resolver, ConfigError> {
    let mut config = ResolverConfig::from_env(&src.spec_dirs, trust())?;
    if let Some(root) = &src.driver_root {
        config.roots = HostRoots::under(root);
    }
    Ok(Resolver::new(config))
}
