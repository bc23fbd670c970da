//! `nvbind setup ENGINE`: register nvbind as a runtime in an engine's own config file.
//!
//! Each engine module turns the current text of the file (or nothing, for a fresh file) into the
//! new text, or says that nothing needs to change. This module does the file work around that:
//! read, validate, show a diff for `--dry-run`, back up the old file, replace it atomically.
//! The file is never touched when it cannot be parsed or when nothing would change.

pub mod containerd;
mod diff;
pub mod docker;
pub mod lxc;
pub mod podman;
mod toml;

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What to register: the runtime's name in the engine, its absolute path, and whether it becomes
/// the engine's default runtime.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub path: PathBuf,
    pub default: bool,
}

/// An engine whose config file nvbind knows how to merge.
pub trait Engine {
    /// The engine's name as the user types it.
    fn name(&self) -> &'static str;
    /// Where the engine reads its config from by default.
    fn default_config(&self) -> &'static Path;
    /// The new text of the config, or `None` when it already registers nvbind as asked.
    fn merge(
        &self,
        existing: Option<&str>,
        reg: &Registration,
    ) -> Result<Option<String>, MergeError>;
    /// What the user must run for the engine to pick the change up.
    fn restart_hint(&self) -> &'static str;
    /// Things worth telling the user about the merged config (e.g. a disabled plugin).
    fn notes(&self, _merged: &str) -> Vec<String> {
        Vec::new()
    }
}

/// Why a config text could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("line {line}, column {column}: invalid {format}: {message}")]
    Parse {
        format: &'static str,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("`{key}` is {found}, expected {expected}")]
    Shape {
        key: String,
        found: &'static str,
        expected: &'static str,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} was left untouched", path.display())]
    Merge {
        path: PathBuf,
        #[source]
        source: MergeError,
    },
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot back up {} to {}; nothing was changed", path.display(), backup.display())]
    Backup {
        path: PathBuf,
        backup: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}; nothing was changed", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What `apply` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The file already registers nvbind as asked; it was not touched.
    AlreadyConfigured,
    /// Dry run: the text that would have been written.
    WouldWrite { old: Option<String>, new: String },
    /// The file was written; `backup` holds the previous content, if there was a file.
    Written { backup: Option<PathBuf> },
}

/// Merges the registration into the config at `path`; writes nothing when `dry_run`.
pub fn apply(
    engine: &dyn Engine,
    path: &Path,
    reg: &Registration,
    dry_run: bool,
) -> Result<Outcome, SetupError> {
    // A symlinked config (e.g. into a config-management checkout) is updated where it points,
    // not replaced by a regular file.
    let resolved;
    let path = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            resolved = fs::canonicalize(path).map_err(|source| SetupError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            resolved.as_path()
        }
        _ => path,
    };
    let (old, mode) = match fs::read(path) {
        Ok(bytes) => {
            let mode = fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o644);
            let text = String::from_utf8(bytes).map_err(|e| SetupError::Read {
                path: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })?;
            (Some(text), mode)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (None, 0o644),
        Err(source) => {
            return Err(SetupError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let new = match engine.merge(old.as_deref(), reg) {
        Ok(Some(new)) => new,
        Ok(None) => return Ok(Outcome::AlreadyConfigured),
        Err(source) => {
            return Err(SetupError::Merge {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if dry_run {
        return Ok(Outcome::WouldWrite { old, new });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|source| SetupError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let backup = match &old {
        Some(text) => {
            let backup = backup_path(path);
            nvbind_atomic::write_atomic(&backup, text.as_bytes(), mode).map_err(|source| {
                SetupError::Backup {
                    path: path.to_path_buf(),
                    backup: backup.clone(),
                    source,
                }
            })?;
            Some(backup)
        }
        None => None,
    };
    if let Err(source) = nvbind_atomic::write_atomic(path, new.as_bytes(), mode) {
        // The original is intact, so the copy we just made is only clutter.
        if let Some(b) = &backup {
            let _ = fs::remove_file(b);
        }
        return Err(SetupError::Write {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(Outcome::Written { backup })
}

/// `NAME.bak-YYYYmmddTHHMMSS` next to the file, with a counter if that name is taken, so an
/// earlier backup is never overwritten.
fn backup_path(path: &Path) -> PathBuf {
    let stamp = chrono::Local::now().format("%Y%m%dT%H%M%S");
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut candidate = path.with_file_name(format!("{name}.bak-{stamp}"));
    let mut n = 1;
    while candidate.exists() {
        candidate = path.with_file_name(format!("{name}.bak-{stamp}-{n}"));
        n += 1;
    }
    candidate
}

/// A unified-style diff of two texts, for `--dry-run`.
pub fn render_diff(path: &Path, old: Option<&str>, new: &str) -> String {
    diff::unified(path, old.unwrap_or(""), new)
}

/// 1-based line and column of a byte offset in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn reg(default: bool) -> Registration {
        Registration {
            name: "nvbind".into(),
            path: "/usr/bin/nvbind".into(),
            default,
        }
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    /// The whole file cycle, shared by every engine's tests.
    pub(crate) fn file_cycle(engine: &dyn Engine, unrelated: &str, must_keep: &[&str]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config");
        // Fresh file, directory created on the way.
        let out = apply(engine, &path, &reg(false), false).unwrap();
        assert_eq!(out, Outcome::Written { backup: None });
        assert!(fs::read_to_string(&path)
            .unwrap()
            .contains("/usr/bin/nvbind"));
        // Second run: already configured, file untouched.
        let before = fs::read_to_string(&path).unwrap();
        assert_eq!(
            apply(engine, &path, &reg(false), false).unwrap(),
            Outcome::AlreadyConfigured
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), before);

        // Merge into a file with unrelated content: kept, and a backup made.
        fs::write(&path, unrelated).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let dry = apply(engine, &path, &reg(false), true).unwrap();
        assert!(matches!(dry, Outcome::WouldWrite { .. }));
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            unrelated,
            "dry run wrote"
        );
        let Outcome::Written { backup: Some(b) } =
            apply(engine, &path, &reg(false), false).unwrap()
        else {
            panic!("expected a write with a backup")
        };
        assert_eq!(fs::read_to_string(&b).unwrap(), unrelated);
        let merged = fs::read_to_string(&path).unwrap();
        for k in must_keep {
            assert!(merged.contains(k), "lost {k:?} in:\n{merged}");
        }
        assert!(merged.contains("/usr/bin/nvbind"));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            apply(engine, &path, &reg(false), false).unwrap(),
            Outcome::AlreadyConfigured
        );
        // A second backup never overwrites the first.
        let Outcome::Written { backup: Some(b2) } =
            apply(engine, &path, &reg(true), false).unwrap()
        else {
            panic!("--default should change the file")
        };
        assert_ne!(b, b2);
        assert_eq!(fs::read_to_string(&b2).unwrap(), merged);
    }

    #[test]
    fn a_symlinked_config_is_updated_through_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        let link = dir.path().join("daemon.json");
        fs::write(&real, "{}\n").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        apply(&docker::Docker, &link, &reg(false), false).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(fs::read_to_string(&real)
            .unwrap()
            .contains("/usr/bin/nvbind"));
    }

    pub(crate) fn invalid_file(engine: &dyn Engine, bad: &str, line: usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, bad).unwrap();
        let err = apply(engine, &path, &reg(false), false).unwrap_err();
        let msg = format!("{:#}", anyhow::Error::from(err));
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("line {line},")), "{msg}");
        assert!(msg.contains("left untouched"), "{msg}");
        assert_eq!(fs::read_to_string(&path).unwrap(), bad);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "stray files");
    }

    pub(crate) fn unwritable_dir(engine: &dyn Engine, existing: &str) {
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        fs::create_dir(&ro).unwrap();
        let path = ro.join("config");
        fs::write(&path, existing).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        // Root ignores permission bits; sysfs refuses new files to everyone.
        let path = if nix::unistd::access(&ro, nix::unistd::AccessFlags::W_OK).is_ok() {
            PathBuf::from("/sys/nvbind-setup-test-config")
        } else {
            path
        };
        let err = apply(engine, &path, &reg(false), false).unwrap_err();
        assert!(
            matches!(err, SetupError::Write { .. } | SetupError::Backup { .. }),
            "{err:?}"
        );
        assert!(format!("{err}").contains(&path.display().to_string()));
        if path.starts_with(&ro) {
            assert_eq!(fs::read_to_string(&path).unwrap(), existing);
            assert_eq!(fs::read_dir(&ro).unwrap().count(), 1);
        } else {
            assert!(!path.exists());
        }
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    }
}
