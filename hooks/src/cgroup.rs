//! Device cgroup rules for a container that is already running.
//!
//! cgroup v1: one `TYPE MAJOR:MINOR ACCESS` line per rule, written to `devices.allow` in the
//! container's `devices` cgroup (found through `/proc/PID/cgroup` and the hook's own
//! mountinfo). cgroup v2 has no `devices.allow`: the runtime attaches an eBPF program to the
//! container's cgroup, which [`crate::devbpf`] extends; this module finds the cgroup2
//! directory for it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot add device rule {rule:?} to {path}")]
    Write {
        path: PathBuf,
        rule: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where a process's device rules live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCgroup {
    /// The v1 `devices` cgroup directory (holding `devices.allow`).
    V1(PathBuf),
    /// Only the unified hierarchy: the cgroup2 directory, whose device rules are an eBPF
    /// program ([`crate::devbpf`]).
    V2(PathBuf),
    /// The process is in no devices cgroup at all (no rules are enforced).
    Unconfined,
}

/// One `devices.allow` line for an OCI device cgroup rule.
pub fn rule_line(rule: &LinuxDeviceCgroup) -> String {
    let t = match rule.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::B => "b",
        LinuxDeviceType::C | LinuxDeviceType::U => "c",
        LinuxDeviceType::P => "p",
        LinuxDeviceType::A => "a",
    };
    let num = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_else(|| "*".into());
    let access = rule.access().clone().unwrap_or_else(|| "rwm".into());
    format!("{t} {}:{} {access}", num(rule.major()), num(rule.minor()))
}

/// Parses `/proc/PID/cgroup` text and the reader's `/proc/self/mountinfo` text.
pub fn locate_in(cgroup: &str, mountinfo: &str) -> DeviceCgroup {
    let mut v2 = None;
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "devices") {
            if let Some(dir) = v1_mount(mountinfo, path) {
                return DeviceCgroup::V1(dir);
            }
        } else if controllers.is_empty() {
            v2 = Some(path.to_string());
        }
    }
    match v2 {
        Some(path) if unified_is_v2_only(mountinfo) => {
            match mount_of(mountinfo, "cgroup2", &path) {
                Some(dir) => DeviceCgroup::V2(dir),
                None => DeviceCgroup::Unconfined,
            }
        }
        _ => DeviceCgroup::Unconfined,
    }
}

/// The LXC config key for device rules on this host: `lxc.cgroup.devices.allow` when a v1
/// `devices` hierarchy is mounted, else `lxc.cgroup2.devices.allow`.
pub fn lxc_allow_key() -> &'static str {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if unified_is_v2_only(&mountinfo) {
        "lxc.cgroup2.devices.allow"
    } else {
        "lxc.cgroup.devices.allow"
    }
}

/// True when the unified hierarchy is the cgroup root (no v1 `devices` hierarchy mounted).
fn unified_is_v2_only(mountinfo: &str) -> bool {
    !mountinfo.lines().any(|l| {
        let (fstype, opts) = fs_fields(l);
        fstype == "cgroup" && opts.split(',').any(|o| o == "devices")
    })
}

/// (fstype, super options) of a mountinfo line.
fn fs_fields(line: &str) -> (&str, &str) {
    let Some((_, after)) = line.split_once(" - ") else {
        return ("", "");
    };
    let mut f = after.split(' ');
    let fstype = f.next().unwrap_or("");
    let _source = f.next();
    (fstype, f.next().unwrap_or(""))
}

/// The directory of cgroup `path` in the v1 `devices` hierarchy, from mountinfo.
fn v1_mount(mountinfo: &str, path: &str) -> Option<PathBuf> {
    mount_of(mountinfo, "cgroup", path)
}

/// The directory of cgroup `path` under the first mount of `fstype` (for `cgroup`, the one
/// carrying the `devices` controller), from mountinfo.
fn mount_of(mountinfo: &str, fstype: &str, path: &str) -> Option<PathBuf> {
    for line in mountinfo.lines() {
        let (fs, opts) = fs_fields(line);
        if fs != fstype || (fs == "cgroup" && !opts.split(',').any(|o| o == "devices")) {
            continue;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        let (root, mount_point) = (fields.get(3)?, fields.get(4)?);
        let rel = if *root == "/" {
            path
        } else {
            path.strip_prefix(root)?
        };
        let rel = rel.trim_start_matches('/');
        return Some(Path::new(&unescape(mount_point)).join(rel));
    }
    None
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let n = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(n as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The device cgroup of process `pid`, as seen from the hook's cgroup namespace.
pub fn locate(pid: i32) -> Result<DeviceCgroup, CgroupError> {
    let read = |path: PathBuf| {
        fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })
    };
    let cgroup = read(PathBuf::from(format!("/proc/{pid}/cgroup")))?;
    let mountinfo = read(PathBuf::from("/proc/self/mountinfo"))?;
    Ok(locate_in(&cgroup, &mountinfo))
}

/// Writes each rule to `dir/devices.allow` (one write per rule, as the kernel wants).
pub fn allow_v1(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    let path = dir.join("devices.allow");
    for rule in rules.iter().filter(|r| r.allow()) {
        let line = rule_line(rule);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|source| CgroupError::Write {
                path: path.clone(),
                rule: line.clone(),
                source,
            })?;
        f.write_all(line.as_bytes())
            .map_err(|source| CgroupError::Write {
                path: path.clone(),
                rule: line,
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_devices_dir() {
        let cg = "9:name=systemd:/x\n5:devices:/default/c1\n0::/default/c1\n";
        assert_eq!(
            locate_in(cg, HYBRID),
            DeviceCgroup::V1("/sys/fs/cgroup/devices/default/c1".into())
        );
        // Bind-mounted sub-hierarchy (root field not `/`).
        let mi = "36 31 0:33 /default /mnt/dev\\040cg rw - cgroup cgroup rw,devices\n";
        assert_eq!(locate_in(cg, mi), DeviceCgroup::V1("/mnt/dev cg/c1".into()));
    }

    #[test]
    fn v2_only_and_unconfined() {
        let mi = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            locate_in("0::/c1\n", mi),
            DeviceCgroup::V2("/sys/fs/cgroup/c1".into())
        );
        // Hybrid host, but the process is in no devices hierarchy.
        assert_eq!(locate_in("0::/c1\n", HYBRID), DeviceCgroup::Unconfined);
    }

    #[test]
    fn rule_lines() {
        let r = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(195)
            .minor(3)
            .access("rw")
            .build()
            .unwrap();
        assert_eq!(rule_line(&r), "c 195:3 rw");
        let r = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(195)
            .build()
            .unwrap();
        assert_eq!(rule_line(&r), "c 195:* rwm");
    }

    #[test]
    fn writes_one_rule_per_write() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("devices.allow"), "").unwrap();
        let r = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(195)
            .minor(0)
            .build()
            .unwrap();
        allow_v1(dir.path(), &[r]).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("devices.allow")).unwrap(),
            "c 195:0 rwm"
        );
    }
}
