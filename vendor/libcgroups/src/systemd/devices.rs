//! nvbind: a container's device rules as the unit properties `DevicePolicy` and `DeviceAllow`
//! (runc's `devices.systemdProperties`).
//!
//! systemd compiles these into its own eBPF device program on the unit's cgroup and attaches
//! it again whenever it re-applies the unit's settings: at `systemctl daemon-reload`, and at
//! every SetUnitProperties (`update`). The runtime's program (the same rules, attached after
//! the properties are set) sits beside it, and an access must pass both. So the unit's
//! properties must say what the container may open, GPUs injected through the spec
//! included: a unit whose DeviceAllow lacks a device denies it after the next reload (the
//! "Failed to initialize NVML: Unknown Error" of nvidia-container-toolkit, whose hook grants
//! devices behind the unit's back).

use std::collections::BTreeSet;

use oci_spec::runtime::LinuxDeviceCgroup;

use super::dbus_native::serialize::{Structure, Variant};
use crate::devices::{DeviceRuleError, Emulator, Kind};

/// systemd accepts `char-MAJOR` / `block-MAJOR` from v240; before, only the group names of
/// /proc/devices.
const MAJOR_NUMBER_SUPPORTED_VERSION: u32 = 240;

/// The properties, in the order they must be sent: an empty `DeviceAllow` first (an empty
/// list resets it; a non-empty one adds to what the unit has), then the policy, then the
/// entries.
pub fn properties(
    rules: Option<&[LinuxDeviceCgroup]>,
    systemd_version: u32,
) -> Result<Vec<(&'static str, Variant)>, DeviceRuleError> {
    let emulator = Emulator::for_container(rules)?;
    let reset = ("DeviceAllow", Variant::ArrayStructString(vec![]));
    if emulator.default_allow() {
        // Allow-all with exceptions denied cannot be said in DeviceAllow. runc sets "strict"
        // with no entries here, which systemd turns into a deny-all program at the next
        // daemon-reload; "auto" without entries makes systemd attach no program, and the
        // runtime's own filter enforces the denied exceptions alone.
        if emulator.exceptions().next().is_some() {
            tracing::debug!(
                "systemd cannot express denied devices: DevicePolicy=auto, the eBPF filter denies them"
            );
        }
        return Ok(vec![reset, ("DevicePolicy", Variant::String("auto".into()))]);
    }

    let mut entries = Vec::new();
    let mut seen = BTreeSet::new();
    for (device, access) in emulator.exceptions() {
        let (prefix, dir) = match device.kind {
            Kind::Block => ("block-", "block"),
            Kind::Char => ("char-", "char"),
        };
        let path = match (device.major, device.minor) {
            (None, None) => format!("{prefix}*"),
            (None, Some(_)) => {
                // systemd has no "any major, this minor"; the eBPF filter still allows it.
                tracing::warn!("systemd cannot express the device rule {device}: left out of DeviceAllow");
                continue;
            }
            (Some(major), None) if systemd_version >= MAJOR_NUMBER_SUPPORTED_VERSION => {
                format!("{prefix}{major}")
            }
            (Some(major), None) => match proc_devices_group(device.kind, major) {
                Some(group) => format!("{prefix}{group}"),
                None => {
                    tracing::warn!("no group for {device} in /proc/devices: left out of DeviceAllow");
                    continue;
                }
            },
            (Some(major), Some(minor)) => format!("/dev/{dir}/{major}:{minor}"),
        };
        if seen.insert(path.clone()) {
            entries.push(Structure::new(path, access.to_string()));
        }
    }
    Ok(vec![
        reset,
        ("DevicePolicy", Variant::String("strict".into())),
        ("DeviceAllow", Variant::ArrayStructString(entries)),
    ])
}

/// `DeviceAllow` entries that add these allow rules to a unit (nvbind-hook: the devices it
/// granted a container whose unit systemd manages). Deny rules and "a" rules have no entry.
pub fn allow_entries(rules: &[LinuxDeviceCgroup], systemd_version: u32) -> Vec<Structure<String>> {
    use oci_spec::runtime::LinuxDeviceType;
    let mut entries = Vec::new();
    for rule in rules.iter().filter(|r| r.allow()) {
        let (prefix, dir, kind) = match rule.typ().unwrap_or_default() {
            LinuxDeviceType::B => ("block-", "block", Kind::Block),
            LinuxDeviceType::C | LinuxDeviceType::U => ("char-", "char", Kind::Char),
            _ => continue,
        };
        let access = rule.access().clone().unwrap_or_else(|| "rwm".into());
        let path = match (rule.major(), rule.minor()) {
            (Some(major), Some(minor)) if major >= 0 && minor >= 0 => {
                format!("/dev/{dir}/{major}:{minor}")
            }
            (Some(major), None) if major >= 0 => {
                if systemd_version >= MAJOR_NUMBER_SUPPORTED_VERSION {
                    format!("{prefix}{major}")
                } else {
                    match proc_devices_group(kind, major as u32) {
                        Some(group) => format!("{prefix}{group}"),
                        None => continue,
                    }
                }
            }
            (None, None) => format!("{prefix}*"),
            _ => continue,
        };
        entries.push(Structure::new(path, access));
    }
    entries
}

/// The group name /proc/devices gives a major number ("195 nvidia-frontend" -> "nvidia-frontend").
fn proc_devices_group(kind: Kind, major: u32) -> Option<String> {
    let text = std::fs::read_to_string("/proc/devices").ok()?;
    group_in(&text, kind, major)
}

fn group_in(text: &str, kind: Kind, major: u32) -> Option<String> {
    let mut current = None;
    for line in text.lines().map(str::trim) {
        match line {
            "Character devices:" => current = Some(Kind::Char),
            "Block devices:" => current = Some(Kind::Block),
            _ if current == Some(kind) => {
                if let Some((n, name)) = line.split_once(' ') {
                    if n.parse::<u32>().ok() == Some(major) {
                        return Some(name.trim().to_string());
                    }
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};

    use super::*;

    fn rule(allow: bool, typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).typ(typ).access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    fn allow_list(props: &[(&str, Variant)]) -> Vec<(String, String)> {
        match &props.last().unwrap().1 {
            Variant::ArrayStructString(v) => v
                .iter()
                .map(|s| {
                    let mut buf = Vec::new();
                    use super::super::dbus_native::serialize::DbusSerialize;
                    s.serialize(&mut buf);
                    let mut ctr = 0;
                    let (k, v) = <(String, String)>::deserialize(&buf, &mut ctr).unwrap();
                    (k, v)
                })
                .collect(),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_gpu_in_the_spec_is_in_device_allow() {
        let rules = [
            rule(false, LinuxDeviceType::A, None, None, "rwm"),
            rule(true, LinuxDeviceType::C, Some(195), Some(0), "rw"),
            rule(true, LinuxDeviceType::C, Some(195), Some(255), "rw"),
        ];
        let props = properties(Some(&rules), 252).unwrap();
        assert_eq!(props[0].0, "DeviceAllow");
        assert_eq!(props[0].1, Variant::ArrayStructString(vec![]));
        assert_eq!(props[1], ("DevicePolicy", Variant::String("strict".into())));
        let list = allow_list(&props);
        assert!(list.contains(&("/dev/char/195:0".into(), "rw".into())), "{list:?}");
        assert!(list.contains(&("/dev/char/195:255".into(), "rw".into())), "{list:?}");
        // runc's defaults come along: /dev/null, pts (136:*), mknod of anything.
        assert!(list.contains(&("/dev/char/1:3".into(), "rwm".into())), "{list:?}");
        assert!(list.contains(&("char-136".into(), "rwm".into())), "{list:?}");
        assert!(list.contains(&("char-*".into(), "m".into())), "{list:?}");
    }

    #[test]
    fn old_systemd_gets_the_group_name_of_a_major() {
        let rules = [rule(true, LinuxDeviceType::C, Some(195), None, "rw")];
        let list = allow_list(&properties(Some(&rules), 239).unwrap());
        // 136 (pts) is named "pts" on every Linux; 195 is not registered without the driver.
        let pts = list.iter().find(|(p, _)| p.starts_with("char-pts")).cloned();
        if std::fs::read_to_string("/proc/devices").is_ok_and(|t| t.contains("136 pts")) {
            assert_eq!(pts, Some(("char-pts".into(), "rwm".into())), "{list:?}");
        }
        assert!(!list.iter().any(|(p, _)| p == "char-195"), "{list:?}");
        assert_eq!(
            group_in("Character devices:\n  1 mem\n195 nvidia-frontend\n\nBlock devices:\n  8 sd\n", Kind::Char, 195),
            Some("nvidia-frontend".into())
        );
        assert_eq!(group_in("Character devices:\n  1 mem\nBlock devices:\n  8 sd\n", Kind::Char, 8), None);
    }

    #[test]
    fn allow_all_is_policy_auto_without_entries() {
        let rules = [
            rule(true, LinuxDeviceType::A, None, None, "rwm"),
            rule(false, LinuxDeviceType::C, Some(1), Some(3), "w"),
        ];
        let props = properties(Some(&rules), 252).unwrap();
        assert_eq!(
            props,
            vec![
                ("DeviceAllow", Variant::ArrayStructString(vec![])),
                ("DevicePolicy", Variant::String("auto".into())),
            ]
        );
    }

    #[test]
    fn a_bad_rule_is_refused() {
        let rules = [rule(true, LinuxDeviceType::C, Some(1), Some(3), "x")];
        assert!(properties(Some(&rules), 252).is_err());
    }
}
