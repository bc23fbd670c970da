//! `create-symlinks --link TARGET::LINK`: symlinks made inside the container rootfs.
//!
//! LINK is a container path. Its parent directories are resolved beneath the rootfs and
//! created when missing; a LINK whose path leaves the rootfs (`..` above the root, or an
//! absolute or escaping symlink along the way) is refused. TARGET is only the content of the
//! new link: it is interpreted by the container's own path lookups later, so it needs no
//! check. An existing LINK is left as it is.

use std::path::{Path, PathBuf};

use crate::rootfs::{Root, RootError};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("create-symlinks: invalid --link {0:?}: expected TARGET::LINK with an absolute LINK")]
    Syntax(String),
    #[error("create-symlinks: link {link} -> {target}")]
    Create {
        link: PathBuf,
        target: PathBuf,
        #[source]
        source: RootError,
    },
}

/// One requested link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub target: PathBuf,
    pub link: PathBuf,
}

impl Link {
    /// Parses `TARGET::LINK`.
    pub fn parse(arg: &str) -> Result<Link, LinkError> {
        let (target, link) = arg
            .split_once("::")
            .ok_or_else(|| LinkError::Syntax(arg.to_string()))?;
        if target.is_empty() || !link.starts_with('/') {
            return Err(LinkError::Syntax(arg.to_string()));
        }
        Ok(Link {
            target: target.into(),
            link: link.into(),
        })
    }
}

/// What happened to each link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// A link with this target was already there.
    Present,
    /// Something else was at LINK; it was left alone.
    Kept,
}

/// Creates `links` in `root`, in order; stops at the first refusal.
pub fn create(root: &Root, links: &[Link]) -> Result<Vec<Outcome>, LinkError> {
    links
        .iter()
        .map(|l| {
            let wrap = |source| LinkError::Create {
                link: l.link.clone(),
                target: l.target.clone(),
                source,
            };
            if root.symlink(&l.target, &l.link).map_err(wrap)? {
                return Ok(Outcome::Created);
            }
            Ok(match root.read_link(&l.link).map_err(wrap)? {
                Some(t) if t == l.target => Outcome::Present,
                _ => Outcome::Kept,
            })
        })
        .collect()
}

/// Warnings for links that were kept as found.
pub fn kept_warnings(links: &[Link], outcomes: &[Outcome]) -> Vec<String> {
    links
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| **o == Outcome::Kept)
        .map(|(l, _)| {
            format!(
                "create-symlinks: {} already exists in the container and is not a link to {}; left as is",
                l.link.display(),
                Path::new(&l.target).display()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!(
            Link::parse("libcuda.so.1::/usr/lib/libcuda.so").unwrap(),
            Link {
                target: "libcuda.so.1".into(),
                link: "/usr/lib/libcuda.so".into()
            }
        );
        for bad in ["a", "::/x", "a::", "a::rel/x"] {
            assert!(Link::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outcomes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("r/usr/lib")).unwrap();
        std::fs::write(dir.path().join("r/usr/lib/file"), "").unwrap();
        let root = Root::open(&dir.path().join("r")).unwrap();
        let links = [
            Link::parse("libcuda.so.1::/usr/lib/libcuda.so").unwrap(),
            Link::parse("libcuda.so.1::/usr/lib/libcuda.so").unwrap(),
            Link::parse("x::/usr/lib/file").unwrap(),
        ];
        let out = create(&root, &links).unwrap();
        assert_eq!(out, [Outcome::Created, Outcome::Present, Outcome::Kept]);
        assert_eq!(kept_warnings(&links, &out).len(), 1);
    }
}
