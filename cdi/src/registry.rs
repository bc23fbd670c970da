//! The registry of CDI spec files: which devices exist and where they are defined.
//!
//! Semantics follow the CNCF reference cache (`pkg/cdi/cache.go`, `spec-dirs.go`):
//! - spec directories are scanned in order; a directory's index is the priority of its specs,
//!   so later directories win (default: `/etc/cdi`, then `/var/run/cdi`);
//! - in each directory, files ending in `.json` or `.yaml` are read in name order;
//!   subdirectories are skipped and a missing directory is not an error;
//! - a file that cannot be read, parsed or validated is recorded as an error against that
//!   file and the others still load;
//! - a device defined in two files of the same priority is a conflict: the error is recorded
//!   against both files and the device is dropped (even if a higher-priority directory also
//!   defines it, exactly as the reference does);
//! - [`Registry::refresh`] rebuilds everything from scratch.
//!
//! One addition: with [`Trust::RootOwned`] (the default when running as root), a spec file or
//! spec directory that is not owned by root or is writable by group or others, or sits below
//! such a directory, is refused, and so is a spec naming a hook that is missing or not
//! root's alone (see `registry/trust.rs`), because its contents become mounts, device nodes
//! and hooks run as root.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::name::{self, QualifiedName};
use crate::spec::{ContainerEdits, Device, Spec, SpecError};
use crate::validate::{self, ValidationError};

mod trust;
pub use trust::{HookProblem, Trust, Untrusted};

/// The reference's default spec directories, lowest priority first.
pub const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// A per-file (or per-directory) problem found while scanning.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Load(#[from] SpecError),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("CDI spec {path}: conflicting device {device} (also defined in {other})")]
    Conflict {
        path: PathBuf,
        device: String,
        other: PathBuf,
    },
    /// The reason is part of the message (`cdi list` and the unresolvable-device error show
    /// this line alone).
    #[error(
        "CDI spec {path}: refused: {reason}; spec files and their directories must be owned by \
         root and not writable by group or others"
    )]
    Untrusted { path: PathBuf, reason: Untrusted },
    #[error("CDI spec {path}: hook {hook} {problem}; CDI hooks run as root on the host: {}", .problem.remedy())]
    Hook {
        path: PathBuf,
        hook: String,
        problem: HookProblem,
    },
    #[error("CDI spec directory {dir}: cannot read")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CDI spec directory {dir}: not a directory")]
    NotADirectory { dir: PathBuf },
}

/// Requested devices the registry does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Displayed on one line: the devices, the known kinds, the directories searched and
    /// any spec files that were rejected, each with why.
    #[error("{}", unresolvable_line(.names, .kinds, .dirs, .rejected))]
    Unresolvable {
        names: Vec<String>,
        kinds: Vec<String>,
        dirs: Vec<PathBuf>,
        /// A rejected file (or directory) and the first error recorded against it.
        rejected: Vec<(PathBuf, String)>,
    },
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn unresolvable_line(
    names: &[String],
    kinds: &[String],
    dirs: &[PathBuf],
    rejected: &[(PathBuf, String)],
) -> String {
    let plural = if names.len() == 1 { "" } else { "s" };
    let kinds = if kinds.is_empty() {
        "none".to_string()
    } else {
        join(kinds)
    };
    let dirs: Vec<_> = dirs.iter().map(|d| d.display()).collect();
    let mut line = format!(
        "unresolvable CDI device{plural} {} (known kinds: {kinds}; spec dirs searched: {}",
        join(names),
        join(&dirs)
    );
    if !rejected.is_empty() {
        let files: Vec<_> = rejected
            .iter()
            .map(|(path, why)| {
                // Errors about a file start with "CDI spec PATH: "; say the path once.
                let prefix = format!("CDI spec {}: ", path.display());
                let prefix_dir = format!("CDI spec directory {}: ", path.display());
                let why = why
                    .strip_prefix(&prefix)
                    .or_else(|| why.strip_prefix(&prefix_dir))
                    .unwrap_or(why);
                format!("{} ({why})", path.display())
            })
            .collect();
        line.push_str(&format!("; rejected spec files: {}", join(&files)));
    }
    line.push(')');
    line
}

/// The error and its sources on one line, as main prints an error chain.
fn with_sources(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    line
}

/// A spec file that loaded and validated, or a spec generated in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedSpec {
    /// The file, or for a generated spec a description of where it came from.
    pub path: PathBuf,
    /// Index of its directory in [`Registry::dirs`]; higher wins. Generated specs rank
    /// above every directory.
    pub priority: usize,
    pub spec: Spec,
    /// Made in memory ([`Registry::add_generated`]) rather than read from a file.
    pub generated: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    name: QualifiedName,
    spec: usize,
    device: usize,
}

/// The CDI devices defined in a set of spec directories.
#[derive(Debug)]
pub struct Registry {
    dirs: Vec<PathBuf>,
    trust: Trust,
    /// The files' specs in scan order, then the specs added in memory (`generated`), which
    /// [`Registry::refresh`] keeps.
    specs: Vec<LoadedSpec>,
    devices: BTreeMap<String, Entry>,
    /// Problems found reading the directories (the first `scan_errors` of `errors`), then
    /// the conflicts found while indexing.
    errors: Vec<(PathBuf, RegistryError)>,
    scan_errors: usize,
}

impl Registry {
    /// Loads the given directories (lowest priority first), trusting files as
    /// [`Trust::for_current_user`] says. An empty list means [`DEFAULT_SPEC_DIRS`].
    pub fn new(dirs: Vec<PathBuf>) -> Registry {
        Registry::with_trust(dirs, Trust::for_current_user())
    }

    /// Loads [`DEFAULT_SPEC_DIRS`].
    pub fn with_default_dirs() -> Registry {
        Registry::new(Vec::new())
    }

    /// Loads the given directories with an explicit trust policy.
    pub fn with_trust(dirs: Vec<PathBuf>, trust: Trust) -> Registry {
        let dirs = if dirs.is_empty() {
            DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect()
        } else {
            dirs
        };
        let mut registry = Registry {
            dirs,
            trust,
            specs: Vec::new(),
            devices: BTreeMap::new(),
            errors: Vec::new(),
            scan_errors: 0,
        };
        registry.refresh();
        registry
    }

    /// The spec directories, lowest priority first.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Problems found by the last refresh, per file (or directory), in scan order.
    pub fn errors(&self) -> &[(PathBuf, RegistryError)] {
        &self.errors
    }

    /// Every spec file that loaded, in scan order.
    pub fn specs(&self) -> &[LoadedSpec] {
        &self.specs
    }

    /// All resolvable device names, sorted by their string form.
    pub fn devices(&self) -> Vec<QualifiedName> {
        self.devices.values().map(|e| e.name.clone()).collect()
    }

    /// The kinds (`vendor/class`) of all loaded specs, sorted and deduplicated.
    pub fn kinds(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.specs.iter().map(|s| s.spec.kind.as_str()).collect();
        set.into_iter().map(str::to_string).collect()
    }

    /// The spec and device definition a name resolves to.
    pub fn device(&self, name: &QualifiedName) -> Option<(&LoadedSpec, &Device)> {
        let entry = self.devices.get(&name.to_string())?;
        let spec = &self.specs[entry.spec];
        Some((spec, &spec.spec.devices[entry.device]))
    }

    /// Rescans every directory and rebuilds the whole device map (generated specs stay).
    pub fn refresh(&mut self) {
        let mut specs = Vec::new();
        let mut errors = Vec::new();
        let mut lookups = trust::Lookups::default();
        for (priority, dir) in self.dirs.iter().enumerate() {
            scan_dir(
                dir,
                priority,
                self.trust,
                &mut lookups,
                &mut specs,
                &mut errors,
            );
        }
        // The generated specs move across, not copied: an 8-GPU spec is about 250k
        // instructions to clone and free (callgrind).
        specs.extend(
            std::mem::take(&mut self.specs)
                .into_iter()
                .filter(|s| s.generated),
        );
        self.specs = specs;
        self.scan_errors = errors.len();
        self.errors = errors;
        self.index();
    }

    /// Adds a spec made in memory (by discovery, at create time) above every directory, so
    /// its devices win over same-named devices from files. With `replace_kind`, the files'
    /// specs of the same kind are dropped: none of their devices resolves any more.
    pub fn add_generated(
        &mut self,
        spec: Spec,
        origin: PathBuf,
        replace_kind: bool,
    ) -> Result<(), ValidationError> {
        validate::validate_spec(&spec, &origin)?;
        if replace_kind {
            let kind = spec.kind.clone();
            self.specs.retain(|s| s.generated || s.spec.kind != kind);
        }
        let loaded = LoadedSpec {
            path: origin,
            priority: self.dirs.len(),
            spec,
            generated: true,
        };
        self.specs.push(loaded);
        self.index();
        Ok(())
    }

    /// Rebuilds the device map from `specs`, recording conflicts.
    fn index(&mut self) {
        let specs = &self.specs;
        let mut errors = Vec::new();
        let mut devices: BTreeMap<String, Entry> = BTreeMap::new();
        let mut conflicts = HashSet::new();
        for (si, loaded) in specs.iter().enumerate() {
            // Validation guarantees the kind and device names are valid.
            let Ok((vendor, class)) = name::parse_kind(&loaded.spec.kind) else {
                continue;
            };
            for (di, dev) in loaded.spec.devices.iter().enumerate() {
                let Ok(qualified) = QualifiedName::new(vendor, class, &dev.name) else {
                    continue;
                };
                let key = qualified.to_string();
                if let Some(old) = devices.get(&key) {
                    let old_spec: &LoadedSpec = &specs[old.spec];
                    if loaded.priority == old_spec.priority {
                        for (path, other) in [
                            (&loaded.path, &old_spec.path),
                            (&old_spec.path, &loaded.path),
                        ] {
                            errors.push((
                                path.clone(),
                                RegistryError::Conflict {
                                    path: path.clone(),
                                    device: key.clone(),
                                    other: other.clone(),
                                },
                            ));
                        }
                        conflicts.insert(key.clone());
                    }
                    if loaded.priority <= old_spec.priority {
                        continue;
                    }
                }
                devices.insert(
                    key,
                    Entry {
                        name: qualified,
                        spec: si,
                        device: di,
                    },
                );
            }
        }
        for c in &conflicts {
            devices.remove(c);
        }
        self.devices = devices;
        self.errors.truncate(self.scan_errors);
        self.errors.extend(errors);
    }

    /// Resolves every name first, then merges their edits: each spec's own `containerEdits`
    /// once (before its first device), then each device's edits, in request order. Repeated
    /// names are applied once. Fails, naming all unknown devices, before merging anything.
    pub fn resolve(&self, names: &[QualifiedName]) -> Result<ContainerEdits, ResolveError> {
        let mut edits = ContainerEdits::default();
        for (spec, device) in self.parts(names)? {
            let spec = &self.specs[spec].spec;
            match device {
                None => edits.append(&spec.container_edits),
                Some(d) => edits.append(&spec.devices[d].container_edits),
            }
        }
        Ok(edits)
    }

    /// [`Registry::resolve`] for a registry that is not needed afterwards: the edits are
    /// moved out instead of copied (and the copies freed with the registry): about 100k
    /// instructions of the 8-GPU spec's resolve (callgrind, bench/analysis.md session 9).
    pub fn into_edits(mut self, names: &[QualifiedName]) -> Result<ContainerEdits, ResolveError> {
        let mut edits = ContainerEdits::default();
        for (spec, device) in self.parts(names)? {
            let spec = &mut self.specs[spec].spec;
            edits.append_owned(std::mem::take(match device {
                None => &mut spec.container_edits,
                Some(d) => &mut spec.devices[d].container_edits,
            }));
        }
        Ok(edits)
    }

    /// The edits `names` resolve to, in the order they apply: (spec, None) for a spec's own
    /// edits, before its first device; (spec, Some(device)) for each device, once.
    fn parts(&self, names: &[QualifiedName]) -> Result<Vec<(usize, Option<usize>)>, ResolveError> {
        let mut found = Vec::with_capacity(names.len());
        let mut missing = Vec::new();
        let mut seen = HashSet::new();
        for name in names {
            let key = name.to_string();
            if !seen.insert(key.clone()) {
                continue;
            }
            match self.devices.get(&key) {
                Some(entry) => found.push(entry),
                None => missing.push(key),
            }
        }
        if !missing.is_empty() {
            let mut rejected: Vec<(PathBuf, String)> = Vec::new();
            for (path, err) in &self.errors {
                if !rejected.iter().any(|(p, _)| p == path) {
                    rejected.push((path.clone(), with_sources(err)));
                }
            }
            return Err(ResolveError::Unresolvable {
                names: missing,
                kinds: self.kinds(),
                dirs: self.dirs.clone(),
                rejected,
            });
        }
        let mut parts = Vec::with_capacity(found.len() + 1);
        let mut specs_done = HashSet::new();
        for entry in found {
            if specs_done.insert(entry.spec) {
                parts.push((entry.spec, None));
            }
            parts.push((entry.spec, Some(entry.device)));
        }
        Ok(parts)
    }
}

/// Under [`Trust::RootOwned`], refuses a spec naming a hook that root should not run: one
/// that is missing or that anyone but root could replace. (Validation already refused
/// relative hook paths.)
fn check_hooks(
    path: &Path,
    spec: &Spec,
    trust: Trust,
    lookups: &mut trust::Lookups,
) -> Result<(), RegistryError> {
    if trust == Trust::Any {
        return Ok(());
    }
    let all_edits = std::iter::once(&spec.container_edits)
        .chain(spec.devices.iter().map(|d| &d.container_edits));
    let mut seen = HashSet::new();
    for hook in all_edits.flat_map(|e| e.hooks.iter()) {
        if !seen.insert(hook.path.as_str()) {
            continue;
        }
        if let Some(problem) = trust::hook_problem(Path::new(&hook.path), lookups) {
            return Err(RegistryError::Hook {
                path: path.to_path_buf(),
                hook: hook.path.clone(),
                problem,
            });
        }
    }
    Ok(())
}

fn is_spec_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("json")
    )
}

fn scan_dir(
    dir: &Path,
    priority: usize,
    trust: Trust,
    lookups: &mut trust::Lookups,
    specs: &mut Vec<LoadedSpec>,
    errors: &mut Vec<(PathBuf, RegistryError)>,
) {
    let mut record = |path: &Path, err: RegistryError| errors.push((path.to_path_buf(), err));
    let read_dir_error = |source| RegistryError::ReadDir {
        dir: dir.into(),
        source,
    };
    // Under [`Trust::RootOwned`] the directory and the directories above it must be root's
    // alone; the resolution that judges them also says what the directory is (its last
    // lookup is the `stat` of the path), so nothing is looked up twice.
    let resolved = match trust {
        Trust::Any => std::fs::metadata(dir).map(|meta| (meta, None)),
        Trust::RootOwned => trust::Resolved::new(dir, lookups).map(|r| {
            let problem = r.problem();
            (r.meta, problem)
        }),
    };
    let problem = match resolved {
        Ok((meta, _)) if !meta.is_dir() => {
            return record(dir, RegistryError::NotADirectory { dir: dir.into() })
        }
        Ok((_, problem)) => problem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(source) => return record(dir, read_dir_error(source)),
    };
    if let Some(reason) = problem {
        return record(
            dir,
            RegistryError::Untrusted {
                path: dir.to_path_buf(),
                reason,
            },
        );
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(source) => return record(dir, read_dir_error(source)),
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) => {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let path = e.path();
                if is_spec_file(&path) {
                    paths.push(path);
                }
            }
            Err(source) => record(dir, read_dir_error(source)),
        }
    }
    paths.sort();

    for path in paths {
        // Trust is judged on what would be read: a symlink's target, and the directories
        // holding the link and the target.
        let read_error = |source| {
            RegistryError::Load(SpecError::Read {
                path: path.clone(),
                source,
            })
        };
        let loaded = match trust {
            Trust::Any => Spec::from_path(&path),
            Trust::RootOwned => match trust::read_trusted(&path, lookups) {
                Ok(Ok(data)) => Spec::from_bytes(&data, &path),
                Ok(Err(reason)) => {
                    record(
                        &path,
                        RegistryError::Untrusted {
                            path: path.clone(),
                            reason,
                        },
                    );
                    continue;
                }
                Err(e) => {
                    record(&path, read_error(e));
                    continue;
                }
            },
        };
        let spec = match loaded {
            Ok(s) => s,
            Err(e) => {
                record(&path, e.into());
                continue;
            }
        };
        if let Err(e) = validate::validate_spec(&spec, &path) {
            record(&path, e.into());
            continue;
        }
        if let Err(e) = check_hooks(&path, &spec, trust, lookups) {
            record(&path, e);
            continue;
        }
        specs.push(LoadedSpec {
            path,
            priority,
            spec,
            generated: false,
        });
    }
}

#[cfg(test)]
mod tests;
