use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxNamespaceType, Spec};

use crate::atomic::write_atomic;
use crate::cli::GlobalOpts;

#[derive(clap::Args, Debug)]
pub struct SpecArgs {
    /// Bundle directory to write config.json into
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write a spec for a rootless container (user namespace mapping the current user to 0)
    #[arg(long)]
    pub rootless: bool,
}

pub fn default_spec(rootless: bool) -> Spec {
    let mut spec = if rootless {
        Spec::rootless(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    } else {
        Spec::default()
    };
    // A cgroup namespace needs cgroup v2 to be useful; on v1/hybrid hosts runc leaves it out.
    let unified = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if let Some(ns) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.namespaces_mut().as_mut())
    {
        if !unified {
            ns.retain(|n| n.typ() != LinuxNamespaceType::Cgroup);
        }
    }
    // Deny every device, then libcontainer allows the standard set (null, zero, tty, ...):
    // runc's default spec does the same. oci-spec's default has no rule, which would leave the
    // device cgroup wide open. A rootless spec gets no resources, as runc's: the user has no
    // device cgroup to apply it to, nor can it create device nodes in its user namespace.
    if let Some(linux) = spec.linux_mut().as_mut().filter(|_| !rootless) {
        let deny_all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm".to_string())
            .build()
            .expect("a constant device rule is valid");
        let mut resources = linux.resources().clone().unwrap_or_default();
        resources.set_devices(Some(vec![deny_all]));
        linux.set_resources(Some(resources));
    }
    spec.set_hostname(Some("nvbind".into()));
    // No inheritable capabilities, as runc's spec since CVE-2022-29162: with them a program
    // carrying inheritable file capabilities gains those in its permitted set on execve.
    if let Some(process) = spec.process_mut() {
        if let Some(mut caps) = process.capabilities().clone() {
            caps.set_inheritable(None);
            process.set_capabilities(Some(caps));
        }
    }
    spec
}

pub fn run(args: &SpecArgs, global: &GlobalOpts) -> Result<()> {
    let path = args.bundle.join("config.json");
    if path.exists() {
        bail!("{} already exists; remove it first", path.display());
    }
    if !args.bundle.is_dir() {
        bail!("bundle directory {} does not exist", args.bundle.display());
    }
    let rootless = args.rootless || global.rootless == crate::cli::Rootless::True;
    let json = serde_json::to_vec_pretty(&default_spec(rootless))?;
    write_atomic(&path, &json, 0o644).with_context(|| format!("cannot write {}", path.display()))
}
