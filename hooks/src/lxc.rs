//! `lxc`: an `lxc.hook.mount` hook for LXC and Proxmox VE containers, and `lxc-config`, which
//! prints the container config lines a set of devices needs.
//!
//! LXC runs mount hooks inside the container's mount namespace after the rootfs (and, with
//! `lxc.autodev = 1`, its /dev tmpfs) is mounted at `LXC_ROOTFS_MOUNT`, before pivot_root.
//! The devices come from `--device NAME` on the hook line or from the container config's
//! `lxc.environment = NVIDIA_VISIBLE_DEVICES=...` (indices, UUIDs, `all` or fully qualified
//! CDI names), read through `LXC_CONFIG_FILE` and its `lxc.include`s. They are resolved and
//! applied exactly as for an OCI container ([`crate::live`]), minus the device cgroup: LXC
//! owns it, so the `lxc.cgroup2.devices.allow` lines are checked against the config and any
//! missing one is reported (and printed by `lxc-config`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::args::Args;
use crate::cgroup::{lxc_allow_key, rule_line};
use crate::live::{self, Target};
use crate::lxc_config::{hook_args, plan_for, request_env, LxcConfig};
use crate::options::InjectOptions;
use crate::warning::warn;

fn env_path(key: &str) -> Option<PathBuf> {
    std::env::var_os(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `nvbind-hook lxc [--device NAME]... [NAME lxc mount]`.
pub fn run(args: Args) -> Result<()> {
    let (opts, devices) = hook_args(args, "mount", |t| {
        format!("lxc: configure nvbind-hook as lxc.hook.mount (it was run as a {t} hook)")
    })?;
    let Some(rootfs) = env_path("LXC_ROOTFS_MOUNT") else {
        bail!("lxc: LXC_ROOTFS_MOUNT is not set; run nvbind-hook lxc as an lxc.hook.mount hook");
    };
    let config = match env_path("LXC_CONFIG_FILE") {
        Some(p) => LxcConfig::read(&p)?,
        None => LxcConfig::default(),
    };
    let name = std::env::var("LXC_NAME").unwrap_or_default();
    let Some((names, plan)) = plan_for(request_env(&devices, &config), &opts)? else {
        return Ok(());
    };
    let state = serde_json::json!({
        "ociVersion": "1.0.2",
        "id": name,
        "status": "creating",
        "bundle": rootfs.parent().unwrap_or(Path::new("/")),
    });
    let target = Target {
        rootfs,
        pid: None,
        state_json: state.to_string().into_bytes(),
    };
    let r = live::apply(&plan, &target)
        .with_context(|| format!("injecting {} into LXC container {name}", names.join(",")))?;
    for w in &r.warnings {
        warn(w);
    }
    let missing: Vec<String> = plan
        .rules
        .iter()
        .map(rule_line)
        .filter(|l| !config.allows(l) && !config.adds_device_rules())
        .collect();
    if !missing.is_empty() {
        warn(&format!(
            "lxc: the container config does not allow these devices; add: {}",
            missing
                .iter()
                .map(|l| format!("{} = {l}", lxc_allow_key()))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    Ok(())
}

/// `nvbind-hook lxc-config --device NAME...`: prints the lines to add to a container config.
pub fn config(mut args: Args) -> Result<()> {
    let opts = InjectOptions::take(&mut args)?;
    let devices = args.values("--device")?;
    let v1 = args.switch("--cgroup-v1");
    let v2 = args.switch("--cgroup-v2");
    args.finish()?;
    if devices.is_empty() {
        bail!("lxc-config: give the devices with --device (e.g. --device 0 or --device nvidia.com/gpu=all)");
    }
    let env = request_env(&devices, &LxcConfig::default());
    let Some((_, plan)) = plan_for(env.clone(), &opts)? else {
        bail!("lxc-config: {} requests no device", devices.join(","));
    };
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/usr/bin/nvbind-hook".into());
    let key = match (v1, v2) {
        (true, true) => bail!("lxc-config: give at most one of --cgroup-v1 and --cgroup-v2"),
        (true, false) => "lxc.cgroup.devices.allow",
        (false, true) => "lxc.cgroup2.devices.allow",
        (false, false) => lxc_allow_key(),
    };
    println!("lxc.autodev = 1");
    println!("lxc.hook.mount = {exe} lxc");
    for e in env {
        println!("lxc.environment = {e}");
    }
    let mut seen = Vec::new();
    for l in plan.rules.iter().map(rule_line) {
        if !seen.contains(&l) {
            println!("{key} = {l}");
            seen.push(l);
        }
    }
    Ok(())
}
