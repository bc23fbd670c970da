//! Serde models of a CDI spec file, up to cdiVersion 1.1.0.
//!
//! Field names follow the CNCF reference (`specs-go/config.go`) exactly; unknown fields are
//! rejected at every level. Empty lists and unset options are skipped when serializing, so a
//! generated spec reads like the ones `nvidia-ctk cdi generate` writes.
//!
//! Loading ([`Spec::from_path`]) only parses; semantic checks (names, versions, paths) live in
//! [`crate::validate`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The newest CDI specification version this crate understands.
pub const CURRENT_VERSION: &str = "1.1.0";

/// A CDI spec file: one vendor/class (`kind`) and the devices it offers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    /// The declared specification version (`cdiVersion`).
    pub cdi_version: String,
    /// `vendor.tld/class`.
    pub kind: String,
    /// Spec-level annotations (CDI metadata only; they never reach the container).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The devices this spec defines.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Edits applied once whenever any device of this spec is injected.
    #[serde(default, skip_serializing_if = "ContainerEdits::is_empty")]
    pub container_edits: ContainerEdits,
}

/// One device a container runtime can add to a container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Device {
    /// The device name, unique within its kind (`0`, `all`, `GPU-<uuid>`).
    pub name: String,
    /// Device-level annotations (CDI metadata only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Edits that expose this device.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// Edits a container runtime makes to the OCI spec to expose a device.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerEdits {
    /// `KEY=VALUE` entries appended to process.env.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Device nodes created in the container and allowed in the device cgroup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNode>,
    /// Hooks added to the OCI spec, per stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<Hook>,
    /// Mounts added to the OCI spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Intel RDT class of service (cdiVersion >= 0.7.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_rdt: Option<IntelRdt>,
    /// Supplementary GIDs for the container process (cdiVersion >= 0.7.0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
    /// Host network interfaces moved into the container (cdiVersion >= 1.1.0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net_devices: Vec<NetDevice>,
}

impl ContainerEdits {
    /// True when these edits change nothing.
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.device_nodes.is_empty()
            && self.hooks.is_empty()
            && self.mounts.is_empty()
            && self.intel_rdt.is_none()
            && self.additional_gids.is_empty()
            && self.net_devices.is_empty()
    }
}

/// A device node to create in the container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceNode {
    /// Path of the node inside the container.
    pub path: String,
    /// Path of the node on the host, when it differs from `path` (cdiVersion >= 0.5.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `b`, `c`, `u` or `p`; taken from the host node when unset.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub node_type: Option<String>,
    /// Major number; taken from the host node when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    /// Minor number; taken from the host node when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    /// Permission bits of the node (as `os.FileMode` in the reference). In YAML a leading-zero
    /// value such as `0666` is octal, as the reference's YAML 1.1 parser reads it.
    #[serde(
        default,
        deserialize_with = "file_mode::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_mode: Option<u32>,
    /// Device cgroup access, a combination of `r`, `w` and `m`; `rwm` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    /// Owner of the node in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group of the node in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

impl DeviceNode {
    /// The node's path on the host: `hostPath` when set, else `path`.
    pub fn host_path(&self) -> &str {
        match self.host_path.as_deref() {
            Some(p) if !p.is_empty() => p,
            _ => &self.path,
        }
    }
}

mod file_mode {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u32),
        Text(String),
    }

    /// YAML 1.1 octal (`0666`): serde_yaml follows YAML 1.2 and hands such a scalar over as
    /// a string, while the Go reference (sigs.k8s.io/yaml) reads it as an octal number.
    fn yaml11_octal(s: &str) -> Option<u32> {
        let digits = s.strip_prefix('0')?;
        if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return None;
        }
        u32::from_str_radix(digits, 8).ok()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Number(n)) => Ok(Some(n)),
            Some(Raw::Text(s)) => yaml11_octal(&s).map(Some).ok_or_else(|| {
                D::Error::custom(format!(
                    "invalid fileMode {s:?}, expected a number such as 438 or 0666"
                ))
            }),
        }
    }
}

/// A mount to add to the container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    /// Source on the host.
    pub host_path: String,
    /// Destination in the container.
    pub container_path: String,
    /// Mount options (`ro`, `nosuid`, `bind`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Filesystem type (cdiVersion >= 0.4.0).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub mount_type: Option<String>,
}

/// An OCI hook to add to the container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hook {
    /// The OCI hook stage: prestart, createRuntime, createContainer, startContainer,
    /// poststart or poststop.
    pub hook_name: String,
    /// Absolute path of the executable.
    pub path: String,
    /// Arguments, `argv[0]` included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// `KEY=VALUE` environment of the hook.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Timeout in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

/// Intel RDT parameters. `schemata` and `enableMonitoring` need cdiVersion 1.1.0; the legacy
/// `enableCMT`/`enableMBM` are only valid before 1.1.0.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntelRdt {
    #[serde(rename = "closID", default, skip_serializing_if = "Option::is_none")]
    pub clos_id: Option<String>,
    #[serde(
        rename = "l3CacheSchema",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub l3_cache_schema: Option<String>,
    #[serde(
        rename = "memBwSchema",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mem_bw_schema: Option<String>,
    #[serde(rename = "schemata", default, skip_serializing_if = "Option::is_none")]
    pub schemata: Option<Vec<String>>,
    #[serde(
        rename = "enableMonitoring",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_monitoring: Option<bool>,
    #[serde(rename = "enableCMT", default, skip_serializing_if = "Option::is_none")]
    pub enable_cmt: Option<bool>,
    #[serde(rename = "enableMBM", default, skip_serializing_if = "Option::is_none")]
    pub enable_mbm: Option<bool>,
}

/// A host network interface moved into the container (cdiVersion >= 1.1.0).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetDevice {
    /// Interface name on the host.
    pub host_interface_name: String,
    /// Interface name in the container.
    pub name: String,
}

/// The on-disk encoding of a spec file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// The format a spec file's extension names (`.yaml`, `.yml`, `.json`), if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") | Some("yml") => Some(Format::Yaml),
            Some("json") => Some(Format::Json),
            _ => None,
        }
    }
}

/// Errors reading or decoding a spec file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("CDI spec {path}: cannot read file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CDI spec {path}: not a spec file (extension must be .yaml, .yml or .json)")]
    UnknownExtension { path: PathBuf },
    #[error("CDI spec {path}: invalid YAML")]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("CDI spec {path}: invalid JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("CDI spec {path}: cannot encode")]
    EncodeYaml {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("CDI spec {path}: cannot encode")]
    EncodeJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn format_of(path: &Path) -> Result<Format, SpecError> {
    Format::from_path(path).ok_or_else(|| SpecError::UnknownExtension {
        path: path.to_path_buf(),
    })
}

impl Spec {
    /// Reads and decodes a spec file, choosing YAML or JSON by its extension.
    /// This only parses; call [`crate::validate::validate_spec`] for semantic checks.
    pub fn from_path(path: &Path) -> Result<Spec, SpecError> {
        // The extension is judged before the file is read.
        let format = format_of(path)?;
        let data = std::fs::read(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Spec::from_slice(&data, format, path)
    }

    /// Decodes the bytes of the spec file `path` in the format its extension names.
    pub fn from_bytes(data: &[u8], path: &Path) -> Result<Spec, SpecError> {
        Spec::from_slice(data, format_of(path)?, path)
    }

    /// Decodes spec bytes; `path` is only used to name the source in errors.
    pub fn from_slice(data: &[u8], format: Format, path: &Path) -> Result<Spec, SpecError> {
        match format {
            Format::Yaml => serde_yaml::from_slice(data).map_err(|source| SpecError::Yaml {
                path: path.to_path_buf(),
                source,
            }),
            Format::Json => crate::json::from_bytes(data).map_err(|source| SpecError::Json {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Encodes the spec; `path` is only used to name the target in errors.
    pub fn to_string(&self, format: Format, path: &Path) -> Result<String, SpecError> {
        match format {
            Format::Yaml => serde_yaml::to_string(self).map_err(|source| SpecError::EncodeYaml {
                path: path.to_path_buf(),
                source,
            }),
            Format::Json => {
                serde_json::to_string_pretty(self).map_err(|source| SpecError::EncodeJson {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NVIDIA_YAML: &str = r#"
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  deviceNodes:
  - path: /dev/nvidiactl
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args: [nvidia-ctk, hook, update-ldcache, --folder, /usr/lib/x86_64-linux-gnu]
  mounts:
  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05
    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05
    options: [ro, nosuid, nodev, bind]
"#;

    fn p() -> &'static Path {
        Path::new("test.yaml")
    }

    #[test]
    fn parses_nvidia_style_yaml() {
        let spec = Spec::from_slice(NVIDIA_YAML.as_bytes(), Format::Yaml, p()).unwrap();
        assert_eq!(spec.cdi_version, "0.5.0");
        assert_eq!(spec.kind, "nvidia.com/gpu");
        assert_eq!(spec.devices.len(), 2);
        assert_eq!(spec.devices[0].name, "0");
        assert_eq!(spec.container_edits.hooks[0].hook_name, "createContainer");
        assert_eq!(
            spec.container_edits.mounts[0].options,
            ["ro", "nosuid", "nodev", "bind"]
        );
    }

    #[test]
    fn field_names_match_specs_go() {
        let json = r#"{
          "cdiVersion": "1.1.0", "kind": "vendor.com/dev",
          "annotations": {"a": "b"},
          "devices": [{"name": "d", "annotations": {"x": "y"}, "containerEdits": {
            "env": ["A=B"],
            "deviceNodes": [{"path": "/dev/x", "hostPath": "/dev/y", "type": "c", "major": 1,
              "minor": 2, "fileMode": 438, "permissions": "rw", "uid": 3, "gid": 4}],
            "mounts": [{"hostPath": "/a", "containerPath": "/b", "options": ["ro"], "type": "bind"}],
            "hooks": [{"hookName": "poststop", "path": "/bin/true", "args": ["true"],
              "env": ["X=1"], "timeout": 5}],
            "intelRdt": {"closID": "c", "l3CacheSchema": "L3:0=f", "memBwSchema": "MB:0=50",
              "schemata": ["L2:0=1"], "enableMonitoring": true},
            "additionalGids": [44],
            "netDevices": [{"hostInterfaceName": "eth1", "name": "net0"}]
          }}]
        }"#;
        let spec = Spec::from_slice(json.as_bytes(), Format::Json, Path::new("x.json")).unwrap();
        let edits = &spec.devices[0].container_edits;
        let node = &edits.device_nodes[0];
        assert_eq!(node.host_path.as_deref(), Some("/dev/y"));
        assert_eq!(node.node_type.as_deref(), Some("c"));
        assert_eq!((node.major, node.minor), (Some(1), Some(2)));
        assert_eq!(node.file_mode, Some(0o666));
        assert_eq!((node.uid, node.gid), (Some(3), Some(4)));
        assert_eq!(edits.mounts[0].mount_type.as_deref(), Some("bind"));
        assert_eq!(edits.hooks[0].timeout, Some(5));
        let rdt = edits.intel_rdt.as_ref().unwrap();
        assert_eq!(rdt.clos_id.as_deref(), Some("c"));
        assert_eq!(rdt.enable_monitoring, Some(true));
        assert_eq!(edits.additional_gids, [44]);
        assert_eq!(edits.net_devices[0].host_interface_name, "eth1");

        // Round trip through JSON gives the same value and the same spellings.
        let text = spec.to_string(Format::Json, Path::new("x.json")).unwrap();
        for key in [
            "cdiVersion",
            "hostPath",
            "fileMode",
            "additionalGids",
            "closID",
            "hostInterfaceName",
            "hookName",
            "containerPath",
        ] {
            assert!(
                text.contains(&format!("\"{key}\"")),
                "{key} missing in {text}"
            );
        }
        let back = Spec::from_slice(text.as_bytes(), Format::Json, Path::new("x.json")).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn empty_fields_are_not_serialized() {
        let spec = Spec {
            cdi_version: "0.3.0".into(),
            kind: "vendor.com/dev".into(),
            devices: vec![Device {
                name: "d".into(),
                container_edits: ContainerEdits {
                    device_nodes: vec![DeviceNode {
                        path: "/dev/x".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ..Default::default()
            }],
            ..Default::default()
        };
        let yaml = spec.to_string(Format::Yaml, p()).unwrap();
        assert_eq!(
            yaml,
            "cdiVersion: 0.3.0\nkind: vendor.com/dev\ndevices:\n- name: d\n  containerEdits:\n    deviceNodes:\n    - path: /dev/x\n"
        );
    }

    #[test]
    fn unknown_fields_are_rejected_at_every_level() {
        let cases = [
            "cdiVersion: 0.3.0\nkind: a.com/b\nbogus: 1\ndevices: []\n",
            "cdiVersion: 0.3.0\nkind: a.com/b\ndevices:\n- name: d\n  bogus: 1\n",
            "cdiVersion: 0.3.0\nkind: a.com/b\ndevices:\n- name: d\n  containerEdits:\n    bogus: 1\n",
            "cdiVersion: 0.3.0\nkind: a.com/b\ncontainerEdits:\n  deviceNodes:\n  - path: /x\n    bogus: 1\n",
            "cdiVersion: 0.3.0\nkind: a.com/b\ncontainerEdits:\n  mounts:\n  - hostPath: /x\n    containerPath: /y\n    bogus: 1\n",
            "cdiVersion: 0.3.0\nkind: a.com/b\ncontainerEdits:\n  hooks:\n  - hookName: poststop\n    path: /x\n    bogus: 1\n",
            "cdiVersion: 0.3.0\nkind: a.com/b\ncontainerEdits:\n  intelRdt:\n    bogus: 1\n",
            "cdiVersion: 0.3.0\nkind: a.com/b\ncontainerEdits:\n  additionalGIDs: [1]\n",
        ];
        for case in cases {
            let err = Spec::from_slice(case.as_bytes(), Format::Yaml, p()).unwrap_err();
            let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
            assert!(chain.contains("unknown field"), "{case}: {chain}");
            assert!(chain.contains("test.yaml"), "{chain}");
        }
    }

    #[test]
    fn malformed_input_is_an_error_naming_the_file() {
        let err = Spec::from_slice(b"cdiVersion: [", Format::Yaml, p()).unwrap_err();
        assert!(matches!(err, SpecError::Yaml { .. }));
        assert!(err.to_string().contains("test.yaml"));
        let err =
            Spec::from_slice(b"{\"cdiVersion\": ", Format::Json, Path::new("a.json")).unwrap_err();
        assert!(matches!(err, SpecError::Json { .. }));
        assert!(err.to_string().contains("a.json"));
        // Missing required fields.
        let err = Spec::from_slice(b"kind: a.com/b\n", Format::Yaml, p()).unwrap_err();
        assert!(format!("{:?}", err).contains("cdiVersion"), "{err:?}");
        // Wrong type.
        let err = Spec::from_slice(
            b"cdiVersion: 0.3.0\nkind: a.com/b\ncontainerEdits:\n  additionalGids: [-1]\n",
            Format::Yaml,
            p(),
        )
        .unwrap_err();
        assert!(matches!(err, SpecError::Yaml { .. }));
    }

    #[test]
    fn from_path_picks_format_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("a.yml");
        std::fs::write(&yaml, NVIDIA_YAML).unwrap();
        assert_eq!(Spec::from_path(&yaml).unwrap().kind, "nvidia.com/gpu");

        let json = dir.path().join("b.json");
        std::fs::write(
            &json,
            r#"{"cdiVersion":"0.3.0","kind":"a.com/b","devices":[]}"#,
        )
        .unwrap();
        assert_eq!(Spec::from_path(&json).unwrap().kind, "a.com/b");

        // YAML content in a .json file is a JSON error.
        let bad = dir.path().join("c.json");
        std::fs::write(&bad, NVIDIA_YAML).unwrap();
        assert!(matches!(Spec::from_path(&bad), Err(SpecError::Json { .. })));

        let txt = dir.path().join("d.txt");
        std::fs::write(&txt, NVIDIA_YAML).unwrap();
        assert!(matches!(
            Spec::from_path(&txt),
            Err(SpecError::UnknownExtension { .. })
        ));

        let missing = dir.path().join("missing.yaml");
        let err = Spec::from_path(&missing).unwrap_err();
        assert!(matches!(err, SpecError::Read { .. }));
        assert!(err.to_string().contains("missing.yaml"));
    }

    #[test]
    fn file_mode_accepts_yaml11_octal() {
        let parse = |mode: &str| {
            let yaml = format!("cdiVersion: 0.3.0\nkind: a.com/b\ncontainerEdits:\n  deviceNodes:\n  - path: /dev/x\n    fileMode: {mode}\n");
            Spec::from_slice(yaml.as_bytes(), Format::Yaml, p())
                .map(|s| s.container_edits.device_nodes[0].file_mode)
        };
        assert_eq!(parse("0666").unwrap(), Some(0o666));
        assert_eq!(parse("0o640").unwrap(), Some(0o640));
        assert_eq!(parse("438").unwrap(), Some(438));
        assert_eq!(parse("0").unwrap(), Some(0));
        for bad in ["0668", "rw", "\"\"", "-1"] {
            let err = parse(bad).unwrap_err();
            assert!(matches!(err, SpecError::Yaml { .. }), "{bad}: {err:?}");
        }
        let json = br#"{"cdiVersion":"0.3.0","kind":"a.com/b","devices":[],"containerEdits":{"deviceNodes":[{"path":"/x","fileMode":420}]}}"#;
        let spec = Spec::from_slice(json, Format::Json, Path::new("x.json")).unwrap();
        assert_eq!(spec.container_edits.device_nodes[0].file_mode, Some(0o644));
    }

    #[test]
    fn host_path_falls_back_to_path() {
        let mut node = DeviceNode {
            path: "/dev/a".into(),
            ..Default::default()
        };
        assert_eq!(node.host_path(), "/dev/a");
        node.host_path = Some(String::new());
        assert_eq!(node.host_path(), "/dev/a");
        node.host_path = Some("/dev/b".into());
        assert_eq!(node.host_path(), "/dev/b");
    }
}
