//! What CDI container edits add to a container, as OCI entries: the plan [`crate::live`]
//! carries out on a running container.
//!
//! The edits go through the same code as in the runtime: the hooks nvbind does itself
//! (`update-ldcache`, `create-symlinks`, `enable-cuda-compat`, also as the NVIDIA toolkit's
//! binaries spell them) become [`RootfsSteps`] ([`nvbind_cdi::steps::take`]), and
//! [`nvbind_cdi::apply::apply`] applies the rest to a copy of the container's config with its
//! own devices, mounts, hooks and device rules removed, so everything in the result is what
//! the edits add (device nodes filled in from the host, cgroup rules, mounts ordered by
//! depth, hooks by stage).

use std::path::PathBuf;

use nvbind_cdi::apply::{apply as apply_edits, HostDevices};
use nvbind_cdi::spec::ContainerEdits;
use nvbind_cdi::steps::{self, RootfsSteps};
use oci_spec::runtime::{
    Hook as OciHook, LinuxDevice, LinuxDeviceCgroup, Mount as OciMount, Spec as OciSpec,
};

use crate::error::LiveError;

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
    /// The links and linker cache, done in-process in the container's root.
    pub steps: RootfsSteps,
    /// Other hooks, run as processes.
    pub hooks: Vec<(Stage, OciHook)>,
    /// Edits a running container cannot take, for the caller to report.
    pub notes: Vec<String>,
}

/// A hook of the binaries whose other work nvbind does itself: (subcommand, arguments).
fn own_subcommand(h: &OciHook) -> Option<(String, Vec<String>)> {
    let args = h.args().clone().unwrap_or_default();
    steps::own_subcommand(&h.path().to_string_lossy(), &args)
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

impl LivePlan {
    /// Resolves `edits` against the host (the shared [`apply_edits`]) for `config`.
    pub fn new(
        edits: &ContainerEdits,
        config: &OciSpec,
        host: &dyn HostDevices,
    ) -> Result<LivePlan, LiveError> {
        let base = stripped(config);
        let mut edits = edits.clone();
        let steps = steps::take(&mut edits)?;
        let edits = &edits;
        let out = apply_edits(edits, &base, host)?;
        let mut plan = LivePlan {
            steps,
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
            && self.steps.is_empty()
            && self.hooks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            &["nvidia-ctk", "hook", "chmod", "--mode", "755"],
        );
        assert_eq!(own_subcommand(&h).unwrap().0, "chmod");
        assert_eq!(own_subcommand(&mk("/bin/true", &["true", "x"])), None);
    }
}
