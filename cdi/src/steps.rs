//! The createContainer hooks that nvbind carries out itself, in-process, on the container's
//! rootfs: `update-ldcache`, `create-symlinks` and `enable-cuda-compat` of nvbind-hook and of
//! the NVIDIA toolkit's hook binaries (nvidia-ctk, nvidia-cdi-hook,
//! nvidia-container-runtime-hook), as generated CDI specs reference them.
//!
//! [`take`] removes those hooks from the edits and returns what they asked for as
//! [`RootfsSteps`]; the runtime runs them in the container's init process on the prepared
//! rootfs, nvbind-hook in the container's root from the host. Either way no program is
//! executed with input the container controls (the image's ld.so.conf and libraries, its
//! environment): the linker cache is written by [`crate::ldso`] and the links are made
//! through [`Root`] (openat2 `RESOLVE_IN_ROOT`). Other hooks stay in the edits and run as the
//! spec says, with exactly the environment the spec gives them.

use std::path::{Path, PathBuf};

use crate::ldso::{self, LdReport, LdRequest, LdsoError};
use crate::rootfs::{Root, RootError};
use crate::spec::{ContainerEdits, Hook};

/// Hook binaries whose linker-cache and link subcommands nvbind does itself.
pub const OWN_HOOKS: [&str; 4] = [
    "nvbind-hook",
    "nvidia-container-runtime-hook",
    "nvidia-ctk",
    "nvidia-cdi-hook",
];

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("create-symlinks: invalid --link {0:?}: expected TARGET::LINK with an absolute LINK")]
    LinkSyntax(String),
    #[error("create-symlinks: link {link} -> {target}")]
    Link {
        link: PathBuf,
        target: PathBuf,
        #[source]
        source: RootError,
    },
    #[error(transparent)]
    Ldso(#[from] LdsoError),
}

/// One requested link: `link` (a container path) pointing at `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub target: PathBuf,
    pub link: PathBuf,
}

impl Link {
    /// Parses `TARGET::LINK`.
    pub fn parse(arg: &str) -> Result<Link, StepError> {
        let (target, link) = arg
            .split_once("::")
            .ok_or_else(|| StepError::LinkSyntax(arg.to_string()))?;
        if target.is_empty() || !link.starts_with('/') {
            return Err(StepError::LinkSyntax(arg.to_string()));
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
    /// Something else was at the link's path; it was left alone.
    Kept,
}

/// Creates `links` in `root`, in order; stops at the first refusal. An existing entry is
/// left as it is.
pub fn create_links(root: &Root, links: &[Link]) -> Result<Vec<Outcome>, StepError> {
    links
        .iter()
        .map(|l| {
            let wrap = |source| StepError::Link {
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
                l.target.display()
            )
        })
        .collect()
}

/// The work of the hooks nvbind does itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootfsSteps {
    pub links: Vec<Link>,
    /// Library folders for the linker cache (from `update-ldcache --folder` and the
    /// directories of mounted libraries).
    pub ld_folders: Vec<PathBuf>,
    /// Whether the linker cache is to be refreshed.
    pub refresh_ldcache: bool,
    /// The host driver's version, for CUDA forward compatibility.
    pub host_driver_version: Option<String>,
}

/// What [`RootfsSteps::apply`] did.
#[derive(Debug, Clone, Default)]
pub struct StepsReport {
    pub ldcache: Option<LdReport>,
    pub warnings: Vec<String>,
}

/// A hook of ours: (subcommand, its arguments).
pub fn own_subcommand(path: &str, args: &[String]) -> Option<(String, Vec<String>)> {
    let name = Path::new(path).file_name()?.to_str()?;
    if !OWN_HOOKS.contains(&name) {
        return None;
    }
    let mut rest: &[String] = args.get(1..).unwrap_or(&[]);
    if rest.first().map(String::as_str) == Some("hook") {
        rest = &rest[1..];
    }
    let (sub, tail) = rest.split_first()?;
    Some((sub.clone(), tail.to_vec()))
}

/// Values of `--flag V` / `--flag=V` in `args`.
pub fn flag_values(args: &[String], flag: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    let eq = format!("{flag}=");
    while let Some(a) = it.next() {
        if a == flag {
            if let Some(v) = it.next() {
                out.push(v.clone());
            }
        } else if let Some(v) = a.strip_prefix(&eq) {
            out.push(v.to_string());
        }
    }
    out
}

fn is_library(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(".so"))
}

/// The driver version a mounted `libcuda.so.X.Y[.Z]` carries (`550.54.14`), when it looks
/// like one (a major of at least 100: WSL's `libcuda.so.1.1` is not a driver version).
fn driver_version_of(edits: &ContainerEdits) -> Option<String> {
    edits.mounts.iter().find_map(|m| {
        let name = Path::new(&m.container_path).file_name()?.to_str()?;
        let v = name.strip_prefix("libcuda.so.")?;
        let major: u32 = v.split('.').next()?.parse().ok()?;
        (v.contains('.') && major >= 100).then(|| v.to_string())
    })
}

/// Removes the hooks nvbind carries out itself from `edits` and returns their work. A
/// mounted library also asks for the linker cache of its directory (a spec without hooks
/// still gets a working cache).
pub fn take(edits: &mut ContainerEdits) -> Result<RootfsSteps, StepError> {
    let mut steps = RootfsSteps::default();
    let mut kept: Vec<Hook> = Vec::with_capacity(edits.hooks.len());
    for h in edits.hooks.drain(..) {
        let Some((sub, args)) = own_subcommand(&h.path, &h.args) else {
            kept.push(h);
            continue;
        };
        match sub.as_str() {
            "update-ldcache" => {
                steps.refresh_ldcache = true;
                steps.ld_folders.extend(
                    flag_values(&args, "--folder")
                        .into_iter()
                        .map(PathBuf::from),
                );
            }
            "create-symlinks" => {
                for l in flag_values(&args, "--link") {
                    steps.links.push(Link::parse(&l)?);
                }
            }
            "enable-cuda-compat" => {
                if let Some(v) = flag_values(&args, "--host-driver-version").pop() {
                    steps.host_driver_version = Some(v);
                }
                steps.refresh_ldcache = true;
            }
            _ => kept.push(h),
        }
    }
    edits.hooks = kept;
    for m in &edits.mounts {
        let p = Path::new(&m.container_path);
        if is_library(p) {
            if let Some(dir) = p.parent() {
                steps.refresh_ldcache = true;
                if !steps.ld_folders.iter().any(|f| f == dir) {
                    steps.ld_folders.push(dir.to_path_buf());
                }
            }
        }
    }
    if steps.host_driver_version.is_none() {
        steps.host_driver_version = driver_version_of(edits);
    }
    Ok(steps)
}

impl RootfsSteps {
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && !self.refresh_ldcache
    }

    /// Makes the links, then the linker cache, in `root`.
    pub fn apply(&self, root: &Root) -> Result<StepsReport, StepError> {
        let outcomes = create_links(root, &self.links)?;
        let mut report = StepsReport {
            warnings: kept_warnings(&self.links, &outcomes),
            ldcache: None,
        };
        if self.refresh_ldcache {
            report.ldcache = Some(ldso::update(
                root,
                &LdRequest {
                    folders: self.ld_folders.clone(),
                    host_driver_version: self.host_driver_version.clone(),
                },
            )?);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Mount;

    fn hook(path: &str, args: &[&str]) -> Hook {
        Hook {
            hook_name: "createContainer".into(),
            path: path.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn own_hooks_are_taken_and_others_kept() {
        let mut e = ContainerEdits {
            hooks: vec![
                hook(
                    "/usr/bin/nvidia-ctk",
                    &["nvidia-ctk", "hook", "update-ldcache", "--folder", "/x"],
                ),
                hook(
                    "/usr/bin/nvbind-hook",
                    &[
                        "nvbind-hook",
                        "create-symlinks",
                        "--link",
                        "a.so.1::/x/a.so",
                    ],
                ),
                hook(
                    "/usr/bin/nvidia-cdi-hook",
                    &[
                        "nvidia-cdi-hook",
                        "enable-cuda-compat",
                        "--host-driver-version=550.54.14",
                    ],
                ),
                hook(
                    "/usr/bin/nvidia-cdi-hook",
                    &["nvidia-cdi-hook", "disable-device-node-modification"],
                ),
                hook("/opt/vendor/hook", &["hook", "update-ldcache"]),
            ],
            mounts: vec![Mount {
                host_path: "/h/libcuda.so.560.1.2".into(),
                container_path: "/usr/lib64/libcuda.so.560.1.2".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let steps = take(&mut e).unwrap();
        assert_eq!(steps.ld_folders, [PathBuf::from("/x"), "/usr/lib64".into()]);
        assert_eq!(
            steps.links,
            [Link {
                target: "a.so.1".into(),
                link: "/x/a.so".into()
            }]
        );
        assert_eq!(steps.host_driver_version.as_deref(), Some("550.54.14"));
        let left: Vec<&str> = e.hooks.iter().map(|h| h.path.as_str()).collect();
        assert_eq!(left, ["/usr/bin/nvidia-cdi-hook", "/opt/vendor/hook"]);
    }

    #[test]
    fn the_driver_version_comes_from_the_mounted_libcuda() {
        let mut e = ContainerEdits {
            mounts: vec![
                Mount {
                    container_path: "/usr/lib/wsl/drivers/x/libcuda.so.1.1".into(),
                    ..Default::default()
                },
                Mount {
                    container_path: "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.14".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            take(&mut e).unwrap().host_driver_version.as_deref(),
            Some("550.54.14")
        );
    }

    #[test]
    fn link_syntax() {
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
}
