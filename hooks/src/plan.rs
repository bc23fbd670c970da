//! What CDI container edits add to a container, as OCI entries: the plan [`crate::live`]
//! carries out on a running container.
//!
//! The edits go through the same code as in the runtime: [`nvbind_cdi::apply::apply`]
//! applies them to a copy of the container's config with its own devices, mounts, hooks and
//! device rules removed, so everything in the result is what the edits add (device nodes
//! filled in from the host, cgroup rules, mounts ordered by depth, hooks by stage). Hooks of
//! our own (`update-ldcache`, `create-symlinks`, also as nvidia-ctk spells them) become steps
//! of the plan instead of processes.

use std::path::{Path, PathBuf};

use nvbind_cdi::apply::{apply as apply_edits, HostDevices};
use nvbind_cdi::spec::ContainerEdits;
use oci_spec::runtime::{
    Hook as OciHook, LinuxDevice, LinuxDeviceCgroup, Mount as OciMount, Spec as OciSpec,
};

use crate::error::LiveError;
use crate::symlinks::Link;

/// An OCI hook stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

/// What the edits add to a container, as OCI entries.
#[derive(Debug, Clone, Default)]
pub struct LivePlan {
    pub devices: Vec<LinuxDevice>,
    /// (container path, host path) of each device node, for bind-mounting the host node
    /// where `mknod` is not permitted (a container in a user namespace).
    pub device_sources: Vec<(PathBuf, PathBuf)>,
    pub rules: Vec<LinuxDeviceCgroup>,
    pub mounts: Vec<OciMount>,
    /// From `create-symlinks` hooks (ours or nvidia-ctk's), done in-process.
    pub links: Vec<Link>,
    /// From `update-ldcache` hooks and the directories of mounted libraries.
    pub ld_folders: Vec<PathBuf>,
    /// Whether the linker cache must be refreshed.
    pub refresh_ldcache: bool,
    /// Other hooks, run as processes.
    pub hooks: Vec<(Stage, OciHook)>,
    /// Edits a running container cannot take, for the caller to report.
    pub notes: Vec<String>,
}

/// Binaries whose `update-ldcache`/`create-symlinks` hooks are done in-process.
const OWN_HOOKS: [&str; 4] = [
    "nvbind-hook",
    "nvidia-container-runtime-hook",
    "nvidia-ctk",
    "nvidia-cdi-hook",
];

/// A hook of ours: (subcommand, its arguments).
fn own_subcommand(h: &OciHook) -> Option<(String, Vec<String>)> {
    let name = h.path().file_name()?.to_str()?;
    if !OWN_HOOKS.contains(&name) {
        return None;
    }
    let args = h.args().clone().unwrap_or_default();
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

/// The container's config without devices, mounts, hooks and device rules: what remains
/// (process user, namespaces) is what [`apply_edits`] consults.
fn stripped(config: &OciSpec) -> OciSpec {
    let mut base = config.clone();
    base.set_mounts(None);
    base.set_hooks(None);
    if let Some(linux) = base.linux_mut() {
        linux.set_devices(None);
        if let Some(res) = linux.resources_mut() {
            res.set_devices(None);
        }
    }
    base
}

fn is_library(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(".so"))
}

impl LivePlan {
    /// Resolves `edits` against the host (the shared [`apply_edits`]) for `config`.
    pub fn new(
        edits: &ContainerEdits,
        config: &OciSpec,
        host: &dyn HostDevices,
    ) -> Result<LivePlan, LiveError> {
        let base = stripped(config);
        let out = apply_edits(edits, &base, host)?;
        let mut plan = LivePlan {
            device_sources: edits
                .device_nodes
                .iter()
                .map(|n| (PathBuf::from(&n.path), PathBuf::from(n.host_path())))
                .collect(),
            ..Default::default()
        };
        if let Some(linux) = out.linux() {
            plan.devices = linux.devices().clone().unwrap_or_default();
            plan.rules = linux
                .resources()
                .as_ref()
                .and_then(|r| r.devices().clone())
                .unwrap_or_default();
            let before = base.linux().as_ref();
            if linux.intel_rdt() != &before.and_then(|l| l.intel_rdt().clone()) {
                plan.notes
                    .push("intelRdt edits are not applied to a running container".into());
            }
            if linux.net_devices() != &before.and_then(|l| l.net_devices().clone()) {
                plan.notes
                    .push("netDevices edits are not applied to a running container".into());
            }
        }
        plan.mounts = out.mounts().clone().unwrap_or_default();
        for m in &plan.mounts {
            if m.source().as_deref().is_some_and(is_library) {
                if let Some(dir) = m.destination().parent() {
                    plan.ld_folders.push(dir.to_path_buf());
                }
            }
        }
        plan.refresh_ldcache = !plan.ld_folders.is_empty();
        if !edits.additional_gids.is_empty() {
            plan.notes
                .push("additionalGids edits are not applied to a running container".into());
        }
        if let Some(hooks) = out.hooks() {
            #[allow(deprecated)]
            let stages = [
                (Stage::Prestart, hooks.prestart()),
                (Stage::CreateRuntime, hooks.create_runtime()),
                (Stage::CreateContainer, hooks.create_container()),
                (Stage::StartContainer, hooks.start_container()),
                (Stage::Poststart, hooks.poststart()),
                (Stage::Poststop, hooks.poststop()),
            ];
            for (stage, list) in stages {
                for h in list.iter().flatten() {
                    plan.add_hook(stage, h)?;
                }
            }
        }
        Ok(plan)
    }

    fn add_hook(&mut self, stage: Stage, h: &OciHook) -> Result<(), LiveError> {
        match own_subcommand(h) {
            Some((sub, args)) if sub == "update-ldcache" => {
                self.refresh_ldcache = true;
                self.ld_folders.extend(
                    flag_values(&args, "--folder")
                        .into_iter()
                        .map(PathBuf::from),
                );
            }
            Some((sub, args)) if sub == "create-symlinks" => {
                for l in flag_values(&args, "--link") {
                    self.links.push(Link::parse(&l)?);
                }
            }
            Some((sub, _)) => self.notes.push(format!(
                "hook {} {sub}: not needed when injecting into a running container; skipped",
                h.path().display()
            )),
            None => match stage {
                Stage::Prestart | Stage::CreateRuntime | Stage::CreateContainer => {
                    self.hooks.push((stage, h.clone()))
                }
                _ => self.notes.push(format!(
                    "hook {} ({stage:?}): a hook cannot add hooks of this stage; skipped",
                    h.path().display()
                )),
            },
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
            && self.mounts.is_empty()
            && self.links.is_empty()
            && !self.refresh_ldcache
            && self.hooks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        let a: Vec<String> = ["--folder", "/a", "--folder=/b", "--x", "--folder"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(flag_values(&a, "--folder"), ["/a", "/b"]);
    }

    #[test]
    fn own_hooks_are_recognised() {
        let mk = |path: &str, args: &[&str]| {
            let mut h = OciHook::default();
            h.set_path(path.into());
            h.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
            h
        };
        let h = mk(
            "/usr/bin/nvidia-ctk",
            &["nvidia-ctk", "hook", "update-ldcache", "--folder", "/x"],
        );
        assert_eq!(
            own_subcommand(&h),
            Some((
                "update-ldcache".into(),
                vec!["--folder".into(), "/x".into()]
            ))
        );
        let h = mk("/usr/bin/nvbind-hook", &["nvbind-hook", "create-symlinks"]);
        assert_eq!(own_subcommand(&h).unwrap().0, "create-symlinks");
        assert_eq!(own_subcommand(&mk("/bin/true", &["true", "x"])), None);
    }
}
