//! The kernel and the programs around nvbind: cgroups, device filtering, seccomp, user
//! namespaces, CRIU, the protection of the binary itself.

use crate::seal::Sealed;

use super::check::Check;
use super::host::Host;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup2 at /sys/fs/cgroup.
    Unified,
    /// cgroup v1 controllers, plus cgroup2 at /sys/fs/cgroup/unified.
    Hybrid,
    /// cgroup v1 only.
    Legacy,
}

/// The cgroup layout, from the mount table.
pub fn cgroup_mode(host: &dyn Host) -> Option<CgroupMode> {
    let mounts = host.read("/proc/self/mounts")?;
    let mut v1 = false;
    let mut unified_below = false;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(dir), Some(fstype)) = (f.get(1), f.get(2)) else {
            continue;
        };
        match (*dir, *fstype) {
            ("/sys/fs/cgroup", "cgroup2") => return Some(CgroupMode::Unified),
            ("/sys/fs/cgroup/unified", "cgroup2") => unified_below = true,
            (d, "cgroup") if d.starts_with("/sys/fs/cgroup/") => v1 = true,
            _ => {}
        }
    }
    match (v1, unified_below) {
        (true, true) => Some(CgroupMode::Hybrid),
        (true, false) => Some(CgroupMode::Legacy),
        _ => None,
    }
}

fn systemd_booted(host: &dyn Host) -> bool {
    host.exists("/run/systemd/system")
}

pub fn cgroups(host: &dyn Host) -> Check {
    let id = "cgroups";
    let driver = if systemd_booted(host) {
        "systemd is init: engines pass --systemd-cgroup (Docker's and Podman's default)"
    } else {
        "no systemd: cgroupfs driver"
    };
    match cgroup_mode(host) {
        Some(CgroupMode::Unified) => Check::ok(id, format!("cgroup v2 (unified); {driver}")),
        Some(CgroupMode::Hybrid) => Check::warn(
            id,
            format!("cgroup v1 + v2 hybrid; {driver}; nvbind and runc work, crun refuses hybrid"),
            "boot with systemd.unified_cgroup_hierarchy=1 for pure cgroup v2 (what current distributions use)",
        ),
        Some(CgroupMode::Legacy) => Check::warn(
            id,
            format!("cgroup v1 only; {driver}; v1 is deprecated by systemd and the kernel"),
            "boot with systemd.unified_cgroup_hierarchy=1 for cgroup v2",
        ),
        None => Check::fail(
            id,
            "no cgroup filesystem mounted at /sys/fs/cgroup",
            "mount cgroup2 at /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup) or boot with systemd",
        ),
    }
}

pub fn device_filter(host: &dyn Host) -> Check {
    let id = "device-filter";
    match cgroup_mode(host) {
        Some(CgroupMode::Unified) => match host.bpf_device_programs() {
            Ok(()) => Check::ok(id, "cgroup v2 device filtering: eBPF device programs load"),
            Err(e) => Check::fail(
                id,
                format!("cgroup v2 without eBPF device programs ({e}): nvbind refuses to create containers it cannot filter"),
                "use a kernel with CONFIG_CGROUP_BPF=y and run nvbind as root (CAP_BPF and CAP_SYS_ADMIN)",
            ),
        },
        Some(_) if host.exists("/sys/fs/cgroup/devices/devices.allow") => {
            Check::ok(id, "cgroup v1 devices controller mounted")
        }
        Some(_) => Check::fail(
            id,
            "the cgroup v1 devices controller is not mounted at /sys/fs/cgroup/devices",
            "mount it (mount -t cgroup -o devices devices /sys/fs/cgroup/devices) or boot with cgroup v2",
        ),
        None => Check::fail(
            id,
            "no cgroup filesystem, so no device filtering",
            "mount cgroup2 at /sys/fs/cgroup",
        ),
    }
}

pub fn seccomp(host: &dyn Host) -> Check {
    let id = "seccomp";
    let has_field = host
        .read("/proc/self/status")
        .is_some_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")));
    if !has_field {
        return Check::fail(
            id,
            "the kernel has no seccomp (no Seccomp: line in /proc/self/status)",
            "use a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y",
        );
    }
    let actions = host
        .read("/proc/sys/kernel/seccomp/actions_avail")
        .unwrap_or_default();
    let missing: Vec<&str> = ["kill_process", "errno", "allow"]
        .into_iter()
        .filter(|a| !actions.split_whitespace().any(|x| x == *a))
        .collect();
    if missing.is_empty() {
        Check::ok(
            id,
            format!("seccomp filters available (actions: {})", actions.trim()),
        )
    } else {
        Check::fail(
            id,
            format!(
                "seccomp lacks the filter actions {} (actions_avail: {:?})",
                missing.join(", "),
                actions.trim()
            ),
            "use a kernel built with CONFIG_SECCOMP_FILTER=y (4.14 or newer)",
        )
    }
}

fn read_number(host: &dyn Host, abs: &str) -> Option<i64> {
    host.read(abs)?.trim().parse().ok()
}

pub fn user_namespaces(host: &dyn Host) -> Check {
    let id = "rootless";
    let max = read_number(host, "/proc/sys/user/max_user_namespaces");
    if max == Some(0) || max.is_none() {
        return Check::warn(
            id,
            "user namespaces are off (user.max_user_namespaces is 0 or absent): rootless containers cannot run",
            "sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d to keep it)",
        );
    }
    if read_number(host, "/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return Check::warn(
            id,
            "unprivileged user namespaces are off (kernel.unprivileged_userns_clone=0): rootless containers cannot run",
            "sysctl -w kernel.unprivileged_userns_clone=1",
        );
    }
    if read_number(
        host,
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
    ) == Some(1)
    {
        return Check::warn(
            id,
            "AppArmor restricts unprivileged user namespaces: rootless nvbind needs a profile that allows userns",
            "add an AppArmor profile for /usr/bin/nvbind with `userns,` (or sysctl kernel.apparmor_restrict_unprivileged_userns=0)",
        );
    }
    if host.which("newuidmap").is_none() {
        return Check::warn(
            id,
            "user namespaces available; newuidmap/newgidmap missing: rootless containers get one ID only",
            "apt-get install uidmap",
        );
    }
    Check::ok(
        id,
        format!(
            "user namespaces available (max {}), newuidmap present",
            max.unwrap_or(0)
        ),
    )
}

/// `major.minor` of a version string like `Version: 3.17.1` or `6.18.0-1-amd64`.
pub fn major_minor(text: &str) -> Option<(u32, u32)> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let mut parts = text[start..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The oldest CRIU whose RPC has everything `nvbind checkpoint` uses.
const CRIU_MIN: (u32, u32) = (3, 15);

pub fn criu(host: &dyn Host) -> Check {
    let id = "criu";
    let criu = host
        .env("NVBIND_CRIU")
        .filter(|p| !p.is_empty())
        .or_else(|| host.which("criu"));
    let Some(criu) = criu else {
        return Check::warn(
            id,
            "criu not found: checkpoint and restore are unavailable (everything else works)",
            "apt-get install criu (Debian 13), or scripts/setup-criu from the nvbind source",
        );
    };
    let out = host.criu_version(&criu).unwrap_or_default();
    let Some(version) = out
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(str::trim)
        .filter(|v| major_minor(v).is_some())
    else {
        return Check::warn(
            id,
            format!("{criu} --version says no version: it does not run"),
            "reinstall criu (its libraries may be missing: run it by hand to see why)",
        );
    };
    let v = major_minor(version).unwrap_or_default();
    if v < CRIU_MIN {
        return Check::warn(
            id,
            format!(
                "criu {version} ({criu}) is older than {}.{}",
                CRIU_MIN.0, CRIU_MIN.1
            ),
            "install a newer criu (Debian 13's 4.1) for nvbind checkpoint/restore",
        );
    }
    // Linux 6.13 split the vDSO data into a [vvar_vclock] mapping that CRIU learnt in 4.1.
    let kernel = host.read("/proc/sys/kernel/osrelease").unwrap_or_default();
    if major_minor(&kernel).is_some_and(|k| k >= (6, 13)) && v < (4, 1) {
        return Check::warn(
            id,
            format!(
                "criu {version} cannot dump processes on kernel {} (the [vvar_vclock] mapping needs criu 4.1)",
                kernel.trim()
            ),
            "install criu 4.1 or newer (Debian 13), or scripts/setup-criu",
        );
    }
    // CRIU locks the container's network with iptables-restore during every dump (its default
    // --network-lock); without it each checkpoint fails.
    if host.which("iptables-restore").is_none() {
        return Check::warn(
            id,
            format!("criu {version} ({criu}) works, but iptables-restore is not installed: every checkpoint fails when criu locks the network"),
            "apt-get install iptables",
        );
    }
    Check::ok(id, format!("criu {version} ({criu})"))
}

pub fn exe_protection(host: &dyn Host) -> Check {
    let id = "exe-protection";
    if host.env(crate::seal::DISABLE_VAR).as_deref() == Some("1") {
        return Check::warn(
            id,
            format!(
                "{}=1 is set here: nvbind started from this environment can be overwritten by its containers (CVE-2019-5736)",
                crate::seal::DISABLE_VAR
            ),
            format!("unset {}", crate::seal::DISABLE_VAR),
        );
    }
    match host.exe_protection() {
        Ok(Sealed::ReadOnlyMount) => Check::ok(
            id,
            "the nvbind binary is on a read-only mount: nothing to copy, no re-exec",
        ),
        Ok(Sealed::Overlay | Sealed::Adopted) => Check::ok(
            id,
            "/proc/self/exe protected by a detached read-only overlayfs (no copy; as root the running process adopts it in place, rootless it re-executes once per container; nothing with the binary on a read-only mount)",
        ),
        Ok(Sealed::Memfd) => Check::ok(
            id,
            "/proc/self/exe protected by a sealed memfd copy (overlayfs unavailable: about 10 ms more per container)",
        ),
        Ok(Sealed::Tmpfile) => Check::warn(
            id,
            "/proc/self/exe protected by an unlinked O_TMPFILE copy only (no overlayfs, no sealed memfd)",
            "use a kernel with overlayfs and memfd_create (5.1 or newer) for the faster protections",
        ),
        Ok(Sealed::Disabled) => Check::warn(
            id,
            "protection disabled",
            format!("unset {}", crate::seal::DISABLE_VAR),
        ),
        Err(e) => Check::fail(
            id,
            format!("no protection possible: {e}"),
            "run nvbind as root on a kernel with overlayfs or memfd_create",
        ),
    }
}
