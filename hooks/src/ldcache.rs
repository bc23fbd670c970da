//! Refreshing a container's linker cache: the host's `ldconfig -r ROOTFS`.
//!
//! `-r` makes ldconfig chroot into the rootfs before it reads `/etc/ld.so.conf` or writes
//! `/etc/ld.so.cache`, so it reads and writes the container's files, never the host's, and
//! the links it follows resolve inside the rootfs. The folders given are also written to
//! `/etc/ld.so.conf.d/00-nvbind-cdi.conf` in the rootfs (through [`Root`], which refuses
//! paths leading out of it), so a later `ldconfig` inside the container keeps them.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::rootfs::{Root, RootError};

/// The conf.d entry this hook writes.
pub const CONF_ENTRY: &str = "/etc/ld.so.conf.d/00-nvbind-cdi.conf";
const LD_SO_CONF: &str = "/etc/ld.so.conf";
const DEFAULT_CONF: &str = "include /etc/ld.so.conf.d/*.conf\n";

#[derive(Debug, thiserror::Error)]
pub enum LdError {
    #[error("no ldconfig found on the host (looked for {0})")]
    NoLdconfig(String),
    #[error("update-ldcache: folder {0:?} is not an absolute path without `..`")]
    BadFolder(String),
    #[error(transparent)]
    Root(#[from] RootError),
    #[error("cannot run {ldconfig}")]
    Spawn {
        ldconfig: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{ldconfig} -r {rootfs} failed ({status}): {stderr}")]
    Failed {
        ldconfig: PathBuf,
        rootfs: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// The host's ldconfig: `explicit` when given, else the first of /sbin/ldconfig,
/// /usr/sbin/ldconfig. Debian's is statically linked, so it runs in any mount namespace
/// that still shows the host's files.
pub fn find_ldconfig(explicit: Option<&Path>) -> Result<PathBuf, LdError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(LdError::NoLdconfig(p.display().to_string()))
        };
    }
    const CANDIDATES: [&str; 2] = ["/sbin/ldconfig", "/usr/sbin/ldconfig"];
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| LdError::NoLdconfig(CANDIDATES.join(", ")))
}

/// Checks the folders (absolute, no `..`) and removes duplicates, keeping the order.
pub fn clean_folders(folders: &[PathBuf]) -> Result<Vec<PathBuf>, LdError> {
    let mut out: Vec<PathBuf> = Vec::new();
    for f in folders {
        let ok = f.is_absolute()
            && f.components().all(|c| !matches!(c, Component::ParentDir))
            && !f.to_string_lossy().contains('\n');
        if !ok {
            return Err(LdError::BadFolder(f.display().to_string()));
        }
        let f: PathBuf = f.components().collect();
        if !out.contains(&f) {
            out.push(f);
        }
    }
    Ok(out)
}

/// Writes the conf.d entry (when there are folders), makes sure `/etc/ld.so.conf` exists,
/// and runs `ldconfig -r ROOTFS FOLDER...`. Must run in the mount namespace where `root`'s
/// path shows the container's rootfs with its mounts.
pub fn update(root: &Root, folders: &[PathBuf], ldconfig: &Path) -> Result<(), LdError> {
    let folders = clean_folders(folders)?;
    if !folders.is_empty() {
        let mut text = String::from("# Written by nvbind-hook update-ldcache\n");
        for f in &folders {
            text.push_str(&f.to_string_lossy());
            text.push('\n');
        }
        root.write_file(Path::new(CONF_ENTRY), text.as_bytes())?;
    }
    if root.read_file(Path::new(LD_SO_CONF))?.is_none() {
        root.write_file(Path::new(LD_SO_CONF), DEFAULT_CONF.as_bytes())?;
    }
    let out = Command::new(ldconfig)
        .arg("-r")
        .arg(root.path())
        .args(&folders)
        .env_clear()
        .output()
        .map_err(|source| LdError::Spawn {
            ldconfig: ldconfig.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(LdError::Failed {
            ldconfig: ldconfig.to_path_buf(),
            rootfs: root.path().to_path_buf(),
            status: out.status,
            stderr: stderr.trim().lines().last().unwrap_or("").to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_checked_and_deduplicated() {
        let f = |s: &str| PathBuf::from(s);
        assert_eq!(
            clean_folders(&[f("/usr/lib/"), f("/usr/lib"), f("/opt/./x")]).unwrap(),
            [f("/usr/lib"), f("/opt/x")]
        );
        for bad in ["usr/lib", "/usr/../etc", "/a\nb"] {
            assert!(matches!(
                clean_folders(&[f(bad)]),
                Err(LdError::BadFolder(_))
            ));
        }
    }

    #[test]
    fn explicit_ldconfig_must_exist() {
        assert!(matches!(
            find_ldconfig(Some(Path::new("/nonexistent/ldconfig"))),
            Err(LdError::NoLdconfig(_))
        ));
    }
}
