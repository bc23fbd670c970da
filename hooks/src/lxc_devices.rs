//! `lxc-devices`: an `lxc.hook.start-host` hook that adds the device cgroup rules the
//! container's GPUs need, computed from the device nodes on the host at each start.
//!
//! Why a hook and not `lxc.cgroup2.devices.allow` lines: nvidia-uvm's (and nvidia-caps')
//! character major is assigned when the module loads, so it can differ after a reboot or a
//! driver reload, and a major written into the config then denies the device. A wildcard
//! (`c *:* rwm`) would survive that too, but would also let the container use every character
//! device it can get a node for (/dev/mem, disks' sg nodes, ...): a privileged container can
//! mknod them. The hook allows exactly the requested devices' nodes, with their numbers now.
//!
//! LXC runs start-host hooks in the host's namespaces as host root, after it has set up the
//! container's cgroup and device rules and before the container's init runs, with `LXC_PID`
//! (the init) and `LXC_CONFIG_FILE` in the environment. cgroup v1: the rules go to the init's
//! `devices.allow`; cgroup v2: LXC's eBPF device program is extended (read back, the new allow
//! rules put in front, swapped in atomically), as for an OCI container.

use anyhow::{bail, Context, Result};

use crate::args::Args;
use crate::cgroup::{self, rule_line, DeviceCgroup};
use crate::devbpf;
use crate::lxc_config::{hook_args, plan_for, request_env, LxcConfig};

pub fn run(args: Args) -> Result<()> {
    let (opts, devices) = hook_args(args, "start-host", |t| {
        format!("lxc-devices: configure it as lxc.hook.start-host (it was run as a {t} hook)")
    })?;
    let pid: i32 = match std::env::var("LXC_PID").ok().and_then(|p| p.parse().ok()) {
        Some(p) if p > 0 => p,
        _ => bail!(
            "lxc-devices: LXC_PID is not set; run it as an lxc.hook.start-host hook (LXC 2.1 or newer)"
        ),
    };
    let config = match std::env::var_os("LXC_CONFIG_FILE").filter(|v| !v.is_empty()) {
        Some(p) => LxcConfig::read(std::path::Path::new(&p))?,
        None => LxcConfig::default(),
    };
    let Some((names, plan)) = plan_for(request_env(&devices, &config), &opts)? else {
        return Ok(());
    };
    let what = || {
        format!(
            "allowing {} ({}) in the device cgroup of LXC container {}",
            names.join(","),
            plan.rules
                .iter()
                .map(rule_line)
                .collect::<Vec<_>>()
                .join(", "),
            std::env::var("LXC_NAME").unwrap_or_default()
        )
    };
    match cgroup::locate(pid).with_context(what)? {
        DeviceCgroup::V1(dir) => cgroup::allow_v1(&dir, &plan.rules).with_context(what)?,
        DeviceCgroup::V2(dir) => {
            // false: no device program on the cgroup, so nothing is filtered there.
            devbpf::allow(&dir, &plan.rules).with_context(what)?;
        }
        DeviceCgroup::Unconfined => {}
    }
    Ok(())
}
