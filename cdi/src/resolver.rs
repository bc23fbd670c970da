//! The one resolver: what an OCI spec asks for -> one [`ContainerEdits`], for the runtime's
//! `create` and for nvbind-hook alike (they call [`Resolver::resolve`] with a config built
//! by [`ResolverConfig::from_env`], so the same bundle gives the same edits).
//!
//! 1. Requests: `cdi.k8s.io/*` annotations and `NVIDIA_VISIBLE_DEVICES` (see
//!    [`crate::requests`]).
//! 2. The spec directories are read into a [`Registry`]. A requested GPU kind
//!    (`nvidia.com/gpu`, `amd.com/gpu`, `intel.com/gpu`) that no spec file defines is
//!    discovered on the live host and its spec generated in memory, at create time, the way
//!    `nvbind cdi generate` would write it ("just in time").
//! 3. Every spec file a request uses is checked against the live host first
//!    ([`crate::livecheck`]): a stale one fails the request with one line naming the file,
//!    the entry and what changed, or, with [`StalePolicy::Regenerate`], is replaced by a spec
//!    generated in memory and a warning.
//! 4. All names are resolved at once (one unknown name fails the whole request).
//! 5. When every name came from `NVIDIA_VISIBLE_DEVICES`, `NVIDIA_DRIVER_CAPABILITIES`
//!    selects the driver files ([`crate::capabilities`]); CDI names get what their specs say,
//!    exactly as the CDI reference applies them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec as OciSpec;

use crate::apply::{HostNodes, Remembered};
use crate::capabilities;
use crate::discover::amd::AmdDiscoverer;
use crate::discover::intel::IntelDiscoverer;
use crate::discover::nvidia::{NvidiaDiscoverer, NvmlSource};
use crate::discover::wsl::{self, WslDiscoverer};
use crate::discover::{Discover, DiscoverError, HostRoots, Vendor};
use crate::gated::{self, GatedError};
use crate::generate::{self, GenerateError, GenerateOptions};
use crate::livecheck::{self, StaleSpec};
use crate::name::QualifiedName;
use crate::registry::{Registry, ResolveError, Trust, DEFAULT_SPEC_DIRS};
use crate::requests::{RequestError, Requests, INJECTED_ANNOTATION};
use crate::spec::ContainerEdits;
use crate::validate::ValidationError;

/// Colon-separated CDI spec directories, lowest priority first; replaces the defaults
/// (/etc/cdi, /var/run/cdi). Engines cannot pass flags to a runtime's `create` or to a hook,
/// so the environment is how a host points both elsewhere.
pub const SPEC_DIRS_ENV: &str = "NVBIND_CDI_SPEC_DIRS";
/// Root of the host tree that discovery and the live checks read (driver files, /dev,
/// /proc, /sys); default `/`.
pub const DRIVER_ROOT_ENV: &str = "NVBIND_DRIVER_ROOT";
/// What to do with a spec file that no longer matches the host (defined beside the check,
/// whose message names it).
pub use crate::livecheck::STALE_ENV;
/// `1`: discovery at create time may load NVML (it reads /proc and /dev otherwise: NVML's
/// start-up can take far longer than a create, and /proc says all a spec needs except MIG
/// device UUIDs).
pub const JIT_NVML_ENV: &str = "NVBIND_JIT_NVML";

/// What a stale spec file does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StalePolicy {
    /// The request fails, naming the file, the entry and what changed.
    #[default]
    Fail,
    /// The kind's spec is generated in memory from the live host instead; a warning names
    /// the stale file.
    Regenerate,
}

impl StalePolicy {
    pub fn parse(value: &str) -> Result<StalePolicy, ConfigError> {
        match value {
            "" | "fail" => Ok(StalePolicy::Fail),
            "regenerate" => Ok(StalePolicy::Regenerate),
            other => Err(ConfigError::Stale(other.to_string())),
        }
    }
}

/// A bad setting in the environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{STALE_ENV}={0:?}: expected \"fail\" or \"regenerate\"")]
    Stale(String),
}

/// Where the resolver reads specs and the host from.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// Spec directories, lowest priority first (empty: the CDI defaults).
    pub spec_dirs: Vec<PathBuf>,
    pub trust: Trust,
    /// The host discovery and the live checks read.
    pub roots: HostRoots,
    pub stale: StalePolicy,
    /// Whether discovery at create time may load NVML.
    pub nvml: bool,
    /// The hook path written into generated specs (their hooks are carried out in-process
    /// by the runtime and by nvbind-hook; other runtimes run the binary).
    pub hook_path: PathBuf,
}

impl ResolverConfig {
    /// Defaults: the given spec dirs, `/` as the host, stale specs fail, no NVML.
    pub fn new(spec_dirs: Vec<PathBuf>, trust: Trust) -> ResolverConfig {
        ResolverConfig {
            spec_dirs,
            trust,
            roots: HostRoots::default(),
            stale: StalePolicy::Fail,
            nvml: false,
            hook_path: generate::default_hook_path(),
        }
    }

    /// The config both binaries use: `flag_dirs` when given, else [`SPEC_DIRS_ENV`], else
    /// the defaults; [`DRIVER_ROOT_ENV`], [`STALE_ENV`] and [`JIT_NVML_ENV`] from the
    /// environment.
    pub fn from_env(flag_dirs: &[PathBuf], trust: Trust) -> Result<ResolverConfig, ConfigError> {
        let mut c = ResolverConfig::new(spec_dirs_from_env(flag_dirs), trust);
        if let Some(root) = std::env::var_os(DRIVER_ROOT_ENV).filter(|v| !v.is_empty()) {
            c.roots = HostRoots::under(PathBuf::from(root));
        }
        if let Ok(v) = std::env::var(STALE_ENV) {
            c.stale = StalePolicy::parse(&v)?;
        }
        c.nvml = std::env::var(JIT_NVML_ENV).is_ok_and(|v| v == "1");
        Ok(c)
    }
}

/// `flag` when not empty, else the dirs in [`SPEC_DIRS_ENV`], else [`DEFAULT_SPEC_DIRS`].
pub fn spec_dirs_from_env(flag: &[PathBuf]) -> Vec<PathBuf> {
    if !flag.is_empty() {
        return flag.to_vec();
    }
    match std::env::var_os(SPEC_DIRS_ENV) {
        Some(v) if !v.is_empty() => std::env::split_paths(&v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        _ => DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect(),
    }
}

/// Why a request could not be resolved. Each variant is one line.
#[derive(Debug, thiserror::Error)]
pub enum ResolveFailure {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Unresolvable(#[from] ResolveError),
    #[error("{registry}; no spec for {kind} could be generated either ({why})")]
    NotDiscovered {
        registry: Box<ResolveError>,
        kind: &'static str,
        why: String,
    },
    #[error(transparent)]
    Stale(Box<StaleSpec>),
    #[error(transparent)]
    Gated(#[from] GatedError),
    #[error("cannot generate the {kind} spec from the host")]
    Generate {
        kind: &'static str,
        #[source]
        source: GenerateError,
    },
    #[error("the {kind} spec generated from the host is invalid")]
    Generated {
        kind: &'static str,
        #[source]
        source: ValidationError,
    },
}

impl From<StaleSpec> for ResolveFailure {
    fn from(s: StaleSpec) -> ResolveFailure {
        ResolveFailure::Stale(Box::new(s))
    }
}

/// What a request resolved to.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// The device names requested, deduplicated, annotations first.
    pub names: Vec<QualifiedName>,
    /// The parsed request (capabilities and where each name came from).
    pub requests: Requests,
    pub edits: ContainerEdits,
    /// Kinds whose spec was generated in memory for this request.
    pub generated: Vec<String>,
    /// Whether `NVIDIA_DRIVER_CAPABILITIES` selected the driver files (every name came from
    /// `NVIDIA_VISIBLE_DEVICES`; CDI names give what their specs say).
    pub capabilities_applied: bool,
    /// Things the caller should log (stale specs regenerated, discovery notes).
    pub warnings: Vec<String>,
    /// The host device nodes the live check `lstat`ed, by host path: [`Resolution::apply`]
    /// takes a node's missing type and numbers from here instead of a second `lstat`.
    pub host_nodes: HostNodes,
}

impl Resolution {
    /// Applies the edits to a copy of `spec` and marks it with [`INJECTED_ANNOTATION`] (the
    /// names, comma-separated), so that nvbind-hook running later leaves it alone.
    pub fn apply(
        &self,
        spec: &OciSpec,
        host: &dyn crate::apply::HostDevices,
    ) -> Result<OciSpec, crate::apply::ApplyError> {
        let host = Remembered {
            nodes: &self.host_nodes,
            host,
        };
        let mut out = crate::apply::apply(&self.edits, spec, &host)?;
        out.annotations_mut()
            .get_or_insert_with(Default::default)
            .insert(INJECTED_ANNOTATION.to_string(), self.names_line());
        Ok(out)
    }

    /// The requested names, comma-separated.
    pub fn names_line(&self) -> String {
        self.names
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// What `nvbind cdi resolve` and `nvbind-hook resolve` print: the devices, the kinds
    /// generated in memory and the edits, as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let capabilities: Option<Vec<&String>> = self
            .capabilities_applied
            .then(|| self.requests.capabilities.0.iter().collect());
        serde_json::json!({
            "devices": self.names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "generated": self.generated,
            "capabilities": capabilities,
            "containerEdits": self.edits,
        })
    }
}

/// The GPU vendor whose discovery can make a spec of `kind`.
fn vendor_of(kind: &str) -> Option<Vendor> {
    Vendor::ALL.into_iter().find(|v| v.kind() == kind)
}

/// Where a spec generated in memory came from, as error messages name it.
pub fn generated_origin(kind: &str, roots: &HostRoots) -> PathBuf {
    PathBuf::from(format!(
        "<{kind} spec generated at create time from the host under {}>",
        roots.driver_root.display()
    ))
}

/// The resolver. Cheap to make; it reads the spec directories only when asked to resolve
/// a request.
#[derive(Debug, Clone)]
pub struct Resolver {
    config: ResolverConfig,
}

impl Resolver {
    pub fn new(config: ResolverConfig) -> Resolver {
        Resolver { config }
    }

    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// Resolves what `spec` asks for. `None` when it asks for nothing or is already marked
    /// with [`INJECTED_ANNOTATION`] (nvbind injected it while creating the container).
    pub fn resolve(&self, spec: &OciSpec) -> Result<Option<Resolution>, ResolveFailure> {
        if spec
            .annotations()
            .as_ref()
            .is_some_and(|a| a.contains_key(INJECTED_ANNOTATION))
        {
            return Ok(None);
        }
        let requests = Requests::from_spec(spec)?;
        if requests.is_empty() {
            return Ok(None);
        }
        self.resolve_requests(requests).map(Some)
    }

    /// Resolves parsed requests.
    pub fn resolve_requests(&self, requests: Requests) -> Result<Resolution, ResolveFailure> {
        let names = requests.names.clone();
        // NVIDIA's runtime semantics when every name came from NVIDIA_VISIBLE_DEVICES: the
        // capabilities select the driver files. A CDI name asks for what its spec says.
        let capabilities_applied =
            !requests.from_env.is_empty() && requests.from_env.len() == names.len();
        let compat32 = capabilities_applied && requests.capabilities.contains("compat32");
        let mut registry = Registry::with_trust(self.config.spec_dirs.clone(), self.config.trust);
        let mut warnings = Vec::new();
        let mut generated = Vec::new();
        let mut not_discovered: Vec<(&'static str, String)> = Vec::new();

        // Kinds asked for that no spec file defines: generate them from the host.
        let known = registry.kinds();
        let mut missing_kinds: Vec<&'static str> = Vec::new();
        for n in &names {
            if let Some(v) = vendor_of(&n.kind()) {
                if !known.iter().any(|k| k == v.kind()) && !missing_kinds.contains(&v.kind()) {
                    missing_kinds.push(v.kind());
                }
            }
        }
        for kind in missing_kinds {
            match self.generate(kind, compat32) {
                Ok(spec) => {
                    registry
                        .add_generated(spec, generated_origin(kind, &self.config.roots), false)
                        .map_err(|source| ResolveFailure::Generated { kind, source })?;
                    generated.push(kind.to_string());
                }
                Err(Generation::Absent(why)) => not_discovered.push((kind, why)),
                Err(Generation::Failed(e)) => return Err(*e),
            }
        }

        // Spec files the request uses must still describe this host.
        let mut host_nodes = HashMap::new();
        while let Some(stale) =
            livecheck::first_stale_noting(&registry, &names, &self.config.roots, &mut host_nodes)
        {
            let kind = vendor_of(&stale.kind).map(|v| v.kind());
            match (self.config.stale, kind) {
                (StalePolicy::Regenerate, Some(kind)) => {
                    let spec = match self.generate(kind, compat32) {
                        Ok(spec) => spec,
                        Err(Generation::Absent(why)) => {
                            warnings.push(format!("cannot regenerate {kind}: {why}"));
                            return Err(stale.into());
                        }
                        Err(Generation::Failed(e)) => return Err(*e),
                    };
                    warnings.push(format!("{stale}; regenerated in memory from the host"));
                    registry
                        .add_generated(spec, generated_origin(kind, &self.config.roots), true)
                        .map_err(|source| ResolveFailure::Generated { kind, source })?;
                    generated.push(kind.to_string());
                }
                _ => return Err(stale.into()),
            }
        }

        let mut edits = match registry.into_edits(&names) {
            Ok(e) => e,
            Err(e) => {
                let ResolveError::Unresolvable { names: missing, .. } = &e;
                // Say why a kind that could have been generated was not.
                if let Some((kind, why)) = not_discovered
                    .iter()
                    .find(|(k, _)| missing.iter().any(|m| m.starts_with(&format!("{k}="))))
                {
                    return Err(ResolveFailure::NotDiscovered {
                        registry: Box::new(e),
                        kind,
                        why: why.clone(),
                    });
                }
                return Err(e.into());
            }
        };
        if capabilities_applied {
            let removed = capabilities::select(&mut edits, &requests.capabilities);
            tracing::debug!(?removed, "left out by NVIDIA_DRIVER_CAPABILITIES");
        }
        // IMEX channels, MIG config/monitor and the feature gates, with GPUs requested the
        // NVIDIA runtime's way.
        if !requests.from_env.is_empty() {
            edits.append(&gated::edits(&requests, &self.config.roots)?);
        }
        Ok(Resolution {
            names,
            requests,
            edits,
            generated,
            capabilities_applied,
            warnings,
            host_nodes,
        })
    }

    /// The spec of `kind` generated from the live host.
    fn generate(
        &self,
        kind: &'static str,
        compat32: bool,
    ) -> Result<crate::spec::Spec, Generation> {
        let vendor = vendor_of(kind).expect("only GPU kinds are generated");
        let inventory = discover(vendor, &self.config.roots, self.config.nvml)
            .map_err(|e| Generation::Absent(e.to_string()))?;
        let opts = GenerateOptions {
            hook_path: self.config.hook_path.clone(),
            compat32,
            ..Default::default()
        };
        let mut notes = inventory.warnings.clone();
        let spec = generate::spec_for(&inventory, &opts, &mut notes).map_err(|e| match e {
            GenerateError::NoDevices { .. } => Generation::Absent(e.to_string()),
            source => Generation::Failed(Box::new(ResolveFailure::Generate { kind, source })),
        })?;
        // What discovery could not find is in the spec's absence of it; `nvbind cdi generate`
        // prints these notes for whoever wants them.
        tracing::debug!(kind, notes = ?notes, "spec generated in memory");
        Ok(spec)
    }
}

enum Generation {
    /// The vendor's driver or GPUs are not there.
    Absent(String),
    Failed(Box<ResolveFailure>),
}

/// One vendor's inventory of the live host.
pub fn discover(
    vendor: Vendor,
    roots: &HostRoots,
    nvml: bool,
) -> Result<crate::discover::VendorInventory, DiscoverError> {
    match vendor {
        Vendor::Nvidia if wsl::detected(roots) => WslDiscoverer.discover(roots),
        Vendor::Nvidia => NvidiaDiscoverer {
            nvml: if nvml {
                NvmlSource::Load
            } else {
                NvmlSource::Disabled
            },
        }
        .discover(roots),
        Vendor::Amd => AmdDiscoverer.discover(roots),
        Vendor::Intel => IntelDiscoverer.discover(roots),
    }
}

/// True when `path` is one of the descriptions [`generated_origin`] makes.
pub fn is_generated_origin(path: &Path) -> bool {
    path.to_str()
        .is_some_and(|p| p.starts_with('<') && p.contains("generated at create time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_policy_values() {
        assert_eq!(StalePolicy::parse("").unwrap(), StalePolicy::Fail);
        assert_eq!(StalePolicy::parse("fail").unwrap(), StalePolicy::Fail);
        assert_eq!(
            StalePolicy::parse("regenerate").unwrap(),
            StalePolicy::Regenerate
        );
        let e = StalePolicy::parse("yes").unwrap_err();
        assert_eq!(
            e.to_string(),
            "NVBIND_CDI_STALE_SPECS=\"yes\": expected \"fail\" or \"regenerate\""
        );
    }

    #[test]
    fn generated_origins_are_recognised() {
        let o = generated_origin("nvidia.com/gpu", &HostRoots::default());
        assert!(is_generated_origin(&o), "{}", o.display());
        assert!(!is_generated_origin(Path::new("/etc/cdi/nvidia.yaml")));
    }
}
