//! Which CDI devices a container asks for, and injecting them into its OCI spec.
//!
//! Two sources, in this order:
//! - `cdi.k8s.io/*` annotations (what engines and Kubernetes device plugins write): each
//!   value is a comma-separated list of fully qualified names, parsed strictly as the
//!   reference's `ParseAnnotations` does (no trimming; one bad name rejects the request);
//!   keys are taken in sorted order so the result is deterministic;
//! - `NVIDIA_VISIBLE_DEVICES` in `process.env`, for compatibility with NVIDIA's runtime:
//!   `all`, GPU indices (`0,1`), MIG indices (`0:1`), UUIDs (`GPU-...`, `MIG-...`) map to
//!   `nvidia.com/gpu=<entry>`; a fully qualified CDI name is taken as is; `none`, `void`, the
//!   empty string and an unset variable request nothing.
//!
//! The result is deduplicated, first occurrence first.

use std::collections::{BTreeSet, HashSet};

use oci_spec::runtime::Spec as OciSpec;

use crate::apply::{apply, ApplyError, HostDevices};
use crate::name::{self, NameError, QualifiedName};
use crate::registry::{Registry, ResolveError};

/// Prefix of the annotation keys that carry CDI device requests.
pub const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";
/// Set on a spec whose devices were injected (value: the comma-separated names), so a
/// repeated `create` or a hook run does not inject twice.
pub const INJECTED_ANNOTATION: &str = "org.nvbind.cdi.injected";
/// The NVIDIA runtime's device selection variable.
pub const NVIDIA_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";
/// The NVIDIA runtime's driver capability variable.
pub const NVIDIA_DRIVER_CAPABILITIES: &str = "NVIDIA_DRIVER_CAPABILITIES";
/// Vendor and class that `NVIDIA_VISIBLE_DEVICES` entries are qualified with.
pub const NVIDIA_GPU_KIND: (&str, &str) = ("nvidia.com", "gpu");

/// A malformed device request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("annotation {key}: invalid CDI device name {entry:?}")]
    Annotation {
        key: String,
        entry: String,
        #[source]
        source: NameError,
    },
    #[error("{NVIDIA_VISIBLE_DEVICES}: invalid device {entry:?}")]
    VisibleDevice {
        entry: String,
        #[source]
        source: NameError,
    },
}

/// Why injection failed; the spec given to [`inject`] is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// Parses an `NVIDIA_VISIBLE_DEVICES` value into device names (or fully qualified names),
/// in order: `["all"]`, `["0", "1"]`, `["GPU-..."]`; empty for `none`, `void` or `""`.
/// Entries are trimmed and empty entries skipped.
pub fn parse_nvidia_visible_devices(value: &str) -> Result<Vec<String>, RequestError> {
    let value = value.trim();
    if matches!(value, "" | "none" | "void") {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry.contains('=') || entry.contains('/') {
            QualifiedName::parse(entry).map_err(|source| RequestError::VisibleDevice {
                entry: entry.to_string(),
                source,
            })?;
        } else {
            name::validate_device_name(entry).map_err(|source| RequestError::VisibleDevice {
                entry: entry.to_string(),
                source,
            })?;
        }
        out.push(entry.to_string());
    }
    Ok(out)
}

/// The last value of `key` in an environment list, as a map built from it would hold.
pub fn env_value<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

fn process_env(spec: &OciSpec) -> &[String] {
    spec.process()
        .as_ref()
        .and_then(|p| p.env().as_deref())
        .unwrap_or(&[])
}

/// Every device the spec requests, deduplicated, annotations first.
pub fn device_requests(spec: &OciSpec) -> Result<Vec<QualifiedName>, RequestError> {
    Requests::from_spec(spec).map(|r| r.names)
}

/// What a container asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requests {
    /// Device names, deduplicated, annotations first.
    pub names: Vec<QualifiedName>,
    /// The names that came from `NVIDIA_VISIBLE_DEVICES` (and not also from an annotation):
    /// these follow NVIDIA's runtime, `NVIDIA_DRIVER_CAPABILITIES` selecting the driver files.
    pub from_env: Vec<QualifiedName>,
    /// `NVIDIA_DRIVER_CAPABILITIES` (or its default).
    pub capabilities: DriverCapabilities,
    /// The process environment the requests were read from.
    pub env: Vec<String>,
    /// CAP_SYS_ADMIN in the container's bounding set (the toolkit's "privileged").
    pub privileged: bool,
}

/// Whether the container's bounding set holds CAP_SYS_ADMIN (the toolkit's "privileged").
pub fn privileged(spec: &OciSpec) -> bool {
    spec.process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .is_some_and(|b| {
            b.iter()
                .any(|c| c.to_string().trim_start_matches("CAP_") == "SYS_ADMIN")
        })
}

impl Requests {
    /// Reads the requests of `spec`.
    pub fn from_spec(spec: &OciSpec) -> Result<Requests, RequestError> {
        let env = process_env(spec).to_vec();
        let (names, from_env) = collect_names(spec)?;
        Ok(Requests {
            names,
            from_env,
            capabilities: DriverCapabilities::parse(env_value(&env, NVIDIA_DRIVER_CAPABILITIES)),
            env,
            privileged: privileged(spec),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The last value of `key` in the container's environment.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        env_value(&self.env, key)
    }
}

type Names = (Vec<QualifiedName>, Vec<QualifiedName>);

fn collect_names(spec: &OciSpec) -> Result<Names, RequestError> {
    let mut out = Vec::new();
    let mut from_env = Vec::new();
    let mut seen = HashSet::new();
    let mut push = |q: QualifiedName, env: bool| {
        if seen.insert(q.to_string()) {
            if env {
                from_env.push(q.clone());
            }
            out.push(q);
        }
    };

    if let Some(annotations) = spec.annotations() {
        let mut keys: Vec<&String> = annotations
            .keys()
            .filter(|k| k.starts_with(ANNOTATION_PREFIX))
            .collect();
        keys.sort();
        for key in keys {
            for entry in annotations[key].split(',') {
                let q = QualifiedName::parse(entry).map_err(|source| RequestError::Annotation {
                    key: key.clone(),
                    entry: entry.to_string(),
                    source,
                })?;
                push(q, false);
            }
        }
    }

    if let Some(value) = env_value(process_env(spec), NVIDIA_VISIBLE_DEVICES) {
        for entry in parse_nvidia_visible_devices(value)? {
            let q = match QualifiedName::parse(&entry) {
                Ok(q) => q,
                Err(_) => {
                    let (vendor, class) = NVIDIA_GPU_KIND;
                    QualifiedName::new(vendor, class, &entry).map_err(|source| {
                        RequestError::VisibleDevice {
                            entry: entry.clone(),
                            source,
                        }
                    })?
                }
            };
            push(q, true);
        }
    }
    Ok((out, from_env))
}

/// NVIDIA driver capabilities, as `NVIDIA_DRIVER_CAPABILITIES` selects them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverCapabilities(pub BTreeSet<String>);

impl DriverCapabilities {
    /// Every capability NVIDIA's toolkit knows.
    pub const ALL: [&'static str; 7] = [
        "compat32", "compute", "display", "graphics", "ngx", "utility", "video",
    ];
    /// What an unset or empty variable means: `utility,compute`.
    pub const DEFAULT: [&'static str; 2] = ["compute", "utility"];

    /// Parses the variable's value; `None` (unset) and `""` give the default set, `all` every
    /// known capability. Unknown names are kept, so a newer driver's capability passes through.
    pub fn parse(value: Option<&str>) -> DriverCapabilities {
        let value = value.map(str::trim).unwrap_or("");
        let names: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let set: BTreeSet<String> = if names.is_empty() {
            Self::DEFAULT.iter().map(|c| c.to_string()).collect()
        } else if names.contains(&"all") {
            Self::ALL.iter().map(|c| c.to_string()).collect()
        } else {
            names.into_iter().map(str::to_string).collect()
        };
        DriverCapabilities(set)
    }

    /// Reads `NVIDIA_DRIVER_CAPABILITIES` from the spec's process environment.
    pub fn from_spec(spec: &OciSpec) -> DriverCapabilities {
        DriverCapabilities::parse(env_value(process_env(spec), NVIDIA_DRIVER_CAPABILITIES))
    }

    pub fn contains(&self, cap: &str) -> bool {
        self.0.contains(cap)
    }
}

/// Collects the spec's device requests, resolves all of them, applies the edits to a copy and
/// marks it with [`INJECTED_ANNOTATION`]. `None` when nothing is requested or the spec is
/// already marked.
pub fn inject(
    spec: &OciSpec,
    registry: &Registry,
    host: &dyn HostDevices,
) -> Result<Option<OciSpec>, InjectError> {
    if spec
        .annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(INJECTED_ANNOTATION))
    {
        return Ok(None);
    }
    let requests = device_requests(spec)?;
    if requests.is_empty() {
        return Ok(None);
    }
    let edits = registry.resolve(&requests)?;
    let mut out = apply(&edits, spec, host)?;
    let value = requests
        .iter()
        .map(|q| q.to_string())
        .collect::<Vec<_>>()
        .join(",");
    out.annotations_mut()
        .get_or_insert_with(Default::default)
        .insert(INJECTED_ANNOTATION.to_string(), value);
    Ok(Some(out))
}

#[cfg(test)]
mod tests;
