//! CDI specification versions: which ones exist, and the minimum one a spec's contents need.
//!
//! Mirrors the CNCF reference (`specs-go/version.go`): every released version is known, the
//! earliest a spec can ever require is 0.3.0, and each newer version lists the features that
//! need it:
//!
//! | version | required by |
//! |---------|-------------|
//! | 0.4.0   | a mount with `type` |
//! | 0.5.0   | a device name starting with a digit; a device node with `hostPath` |
//! | 0.6.0   | spec or device `annotations`; a `.` in the class of the kind |
//! | 0.7.0   | `intelRdt`; `additionalGids` |
//! | 0.8.0, 1.0.0 | nothing (API-only bumps) |
//! | 1.1.0   | `intelRdt.schemata` or `intelRdt.enableMonitoring`; `netDevices` |
//!
//! The legacy `intelRdt.enableCMT` / `enableMBM` are invalid from 1.1.0 on.

use std::fmt;

use crate::spec::{ContainerEdits, Spec};

/// A released CDI specification version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_4_0,
    V0_5_0,
    V0_6_0,
    V0_7_0,
    V0_8_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    /// Every released version, oldest first.
    pub const ALL: [Version; 10] = [
        Version::V0_1_0,
        Version::V0_2_0,
        Version::V0_3_0,
        Version::V0_4_0,
        Version::V0_5_0,
        Version::V0_6_0,
        Version::V0_7_0,
        Version::V0_8_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];
    /// The earliest version a spec can require.
    pub const EARLIEST: Version = Version::V0_3_0;
    /// The newest version this crate knows.
    pub const CURRENT: Version = Version::V1_1_0;

    /// `"1.1.0"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1_0 => "0.1.0",
            Version::V0_2_0 => "0.2.0",
            Version::V0_3_0 => "0.3.0",
            Version::V0_4_0 => "0.4.0",
            Version::V0_5_0 => "0.5.0",
            Version::V0_6_0 => "0.6.0",
            Version::V0_7_0 => "0.7.0",
            Version::V0_8_0 => "0.8.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Parses a declared `cdiVersion`; a leading `v` is accepted, as the reference does.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.strip_prefix('v').unwrap_or(s);
        Version::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A spec whose declared version does not fit its contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("cdiVersion: invalid version {declared:?}")]
    Unknown { declared: String },
    #[error("cdiVersion: the spec version must be at least v{required} (declared {declared})")]
    TooLow {
        declared: Version,
        required: Version,
    },
    #[error("{field} requires CDI spec version at least {required} (declared {declared})")]
    FieldTooNew {
        field: String,
        declared: Version,
        required: Version,
    },
    #[error("{field} is not valid for CDI spec version {declared}")]
    FieldRemoved { field: String, declared: Version },
}

fn all_edits(spec: &Spec) -> impl Iterator<Item = &ContainerEdits> {
    std::iter::once(&spec.container_edits).chain(spec.devices.iter().map(|d| &d.container_edits))
}

fn requires_v110(spec: &Spec) -> bool {
    all_edits(spec).any(|e| {
        !e.net_devices.is_empty()
            || e.intel_rdt
                .as_ref()
                .is_some_and(|r| r.schemata.is_some() || r.enable_monitoring.unwrap_or(false))
    })
}

fn requires_v070(spec: &Spec) -> bool {
    all_edits(spec).any(|e| e.intel_rdt.is_some() || !e.additional_gids.is_empty())
}

fn requires_v060(spec: &Spec) -> bool {
    if !spec.annotations.is_empty() || spec.devices.iter().any(|d| !d.annotations.is_empty()) {
        return true;
    }
    match spec.kind.split_once('/') {
        Some((_, class)) => class.contains('.'),
        None => false,
    }
}

fn requires_v050(spec: &Spec) -> bool {
    if spec.devices.iter().any(|d| {
        d.name
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_digit())
    }) {
        return true;
    }
    all_edits(spec).any(|e| {
        e.device_nodes
            .iter()
            .any(|n| n.host_path.as_deref().is_some_and(|p| !p.is_empty()))
    })
}

fn requires_v040(spec: &Spec) -> bool {
    all_edits(spec).any(|e| {
        e.mounts
            .iter()
            .any(|m| m.mount_type.as_deref().is_some_and(|t| !t.is_empty()))
    })
}

type Requirement = (Version, fn(&Spec) -> bool);

/// The lowest cdiVersion that can express this spec's contents.
pub fn minimum_required_version(spec: &Spec) -> Version {
    let checks: [Requirement; 5] = [
        (Version::V1_1_0, requires_v110),
        (Version::V0_7_0, requires_v070),
        (Version::V0_6_0, requires_v060),
        (Version::V0_5_0, requires_v050),
        (Version::V0_4_0, requires_v040),
    ];
    checks
        .into_iter()
        .find(|(_, required)| required(spec))
        .map(|(v, _)| v)
        .unwrap_or(Version::EARLIEST)
}

/// Checks the declared cdiVersion: it must be a released version, at least the minimum the
/// contents require, and the contents must not use fields that version removed.
pub fn validate_version(spec: &Spec) -> Result<Version, VersionError> {
    let declared = Version::parse(&spec.cdi_version).ok_or_else(|| VersionError::Unknown {
        declared: spec.cdi_version.clone(),
    })?;

    let scopes = std::iter::once(("containerEdits".to_string(), &spec.container_edits)).chain(
        spec.devices
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("devices[{i}].containerEdits"), &d.container_edits)),
    );
    for (scope, edits) in scopes {
        if let Some(rdt) = &edits.intel_rdt {
            let fields = [
                ("enableCMT", rdt.enable_cmt.is_some(), true),
                ("enableMBM", rdt.enable_mbm.is_some(), true),
                ("schemata", rdt.schemata.is_some(), false),
                ("enableMonitoring", rdt.enable_monitoring.is_some(), false),
            ];
            for (name, present, legacy) in fields {
                if !present {
                    continue;
                }
                let field = format!("{scope}.intelRdt.{name}");
                if legacy && declared >= Version::V1_1_0 {
                    return Err(VersionError::FieldRemoved { field, declared });
                }
                if !legacy && declared < Version::V1_1_0 {
                    return Err(VersionError::FieldTooNew {
                        field,
                        declared,
                        required: Version::V1_1_0,
                    });
                }
            }
        }
        if !edits.net_devices.is_empty() && declared < Version::V1_1_0 {
            return Err(VersionError::FieldTooNew {
                field: format!("{scope}.netDevices"),
                declared,
                required: Version::V1_1_0,
            });
        }
    }

    let required = minimum_required_version(spec);
    if required > declared {
        return Err(VersionError::TooLow { declared, required });
    }
    Ok(declared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Device, DeviceNode, IntelRdt, Mount, NetDevice};

    fn spec(version: &str) -> Spec {
        Spec {
            cdi_version: version.into(),
            kind: "vendor.com/dev".into(),
            devices: vec![Device {
                name: "d".into(),
                container_edits: ContainerEdits {
                    env: vec!["A=B".into()],
                    ..Default::default()
                },
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn parses_known_versions_only() {
        assert_eq!(Version::parse("1.1.0"), Some(Version::V1_1_0));
        assert_eq!(Version::parse("v0.5.0"), Some(Version::V0_5_0));
        assert_eq!(Version::parse("0.3"), None);
        assert_eq!(Version::parse("1.2.0"), None);
        assert_eq!(Version::parse(""), None);
        for v in Version::ALL {
            assert_eq!(Version::parse(v.as_str()), Some(v));
        }
    }

    #[test]
    fn minimum_versions_follow_the_reference_table() {
        let s = spec("1.1.0");
        assert_eq!(minimum_required_version(&s), Version::V0_3_0);

        let mut s = spec("1.1.0");
        s.container_edits.mounts.push(Mount {
            host_path: "/a".into(),
            container_path: "/a".into(),
            mount_type: Some("bind".into()),
            ..Default::default()
        });
        assert_eq!(minimum_required_version(&s), Version::V0_4_0);

        let mut s = spec("1.1.0");
        s.devices[0].name = "0".into();
        assert_eq!(minimum_required_version(&s), Version::V0_5_0);

        let mut s = spec("1.1.0");
        s.devices[0].container_edits.device_nodes.push(DeviceNode {
            path: "/dev/a".into(),
            host_path: Some("/dev/b".into()),
            ..Default::default()
        });
        assert_eq!(minimum_required_version(&s), Version::V0_5_0);

        let mut s = spec("1.1.0");
        s.annotations.insert("a".into(), "b".into());
        assert_eq!(minimum_required_version(&s), Version::V0_6_0);

        let mut s = spec("1.1.0");
        s.devices[0].annotations.insert("a".into(), "b".into());
        assert_eq!(minimum_required_version(&s), Version::V0_6_0);

        let mut s = spec("1.1.0");
        s.kind = "vendor.com/mig.gpu".into();
        assert_eq!(minimum_required_version(&s), Version::V0_6_0);

        let mut s = spec("1.1.0");
        s.devices[0].container_edits.additional_gids = vec![44];
        assert_eq!(minimum_required_version(&s), Version::V0_7_0);

        let mut s = spec("1.1.0");
        s.container_edits.intel_rdt = Some(IntelRdt {
            clos_id: Some("c".into()),
            ..Default::default()
        });
        assert_eq!(minimum_required_version(&s), Version::V0_7_0);

        let mut s = spec("1.1.0");
        s.container_edits.intel_rdt = Some(IntelRdt {
            schemata: Some(vec![]),
            ..Default::default()
        });
        assert_eq!(minimum_required_version(&s), Version::V1_1_0);

        let mut s = spec("1.1.0");
        s.devices[0].container_edits.net_devices.push(NetDevice {
            host_interface_name: "eth0".into(),
            name: "net0".into(),
        });
        assert_eq!(minimum_required_version(&s), Version::V1_1_0);
    }

    #[test]
    fn rejects_unknown_and_too_low_versions() {
        let err = validate_version(&spec("0.9.0")).unwrap_err();
        assert_eq!(
            err,
            VersionError::Unknown {
                declared: "0.9.0".into()
            }
        );
        assert!(err.to_string().contains("cdiVersion"));

        let mut s = spec("0.5.0");
        s.annotations.insert("a".into(), "b".into());
        let err = validate_version(&s).unwrap_err();
        assert_eq!(
            err,
            VersionError::TooLow {
                declared: Version::V0_5_0,
                required: Version::V0_6_0
            }
        );
        assert!(err.to_string().contains("at least v0.6.0"), "{err}");

        s.cdi_version = "0.6.0".into();
        assert_eq!(validate_version(&s), Ok(Version::V0_6_0));
        // As in the reference, every spec needs at least the earliest supported version, so
        // the known-but-ancient 0.1.0 and 0.2.0 are rejected.
        for old in ["0.1.0", "0.2.0"] {
            assert!(matches!(
                validate_version(&spec(old)),
                Err(VersionError::TooLow {
                    required: Version::V0_3_0,
                    ..
                })
            ));
        }
        assert_eq!(validate_version(&spec("0.3.0")), Ok(Version::V0_3_0));
    }

    #[test]
    fn versioned_intel_rdt_and_net_devices_fields() {
        let mut s = spec("1.1.0");
        s.container_edits.intel_rdt = Some(IntelRdt {
            enable_cmt: Some(false),
            ..Default::default()
        });
        let err = validate_version(&s).unwrap_err();
        assert!(
            err.to_string()
                .contains("containerEdits.intelRdt.enableCMT"),
            "{err}"
        );

        s.cdi_version = "1.0.0".into();
        assert_eq!(validate_version(&s), Ok(Version::V1_0_0));

        let mut s = spec("1.0.0");
        s.devices[0].container_edits.intel_rdt = Some(IntelRdt {
            enable_monitoring: Some(false),
            ..Default::default()
        });
        let err = validate_version(&s).unwrap_err();
        assert!(
            err.to_string()
                .contains("devices[0].containerEdits.intelRdt.enableMonitoring"),
            "{err}"
        );

        let mut s = spec("0.8.0");
        s.container_edits.net_devices.push(NetDevice {
            host_interface_name: "eth0".into(),
            name: "n".into(),
        });
        let err = validate_version(&s).unwrap_err();
        assert!(
            err.to_string().contains("containerEdits.netDevices"),
            "{err}"
        );
    }
}
