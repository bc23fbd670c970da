//! Semantic validation of a parsed CDI spec, following the CNCF reference (`Spec.validate`,
//! `ContainerEdits.Validate` and friends), plus one stricter rule: hook paths must be absolute
//! (the OCI runtime spec requires it, and a relative one would run whatever the runtime's
//! working directory offers).
//!
//! Every error names the spec file and the offending field, e.g.
//! `CDI spec /etc/cdi/nvidia.yaml: invalid devices[2].containerEdits.hooks[0].path`, with the
//! reason as its source.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::name::{self, NameError};
use crate::spec::{ContainerEdits, DeviceNode, Hook, IntelRdt, Mount, Spec};
use crate::version::{self, Version, VersionError};

/// The OCI hook stages: those a CDI hook may name, and those the runtime runs (`nvbind
/// features` lists them).
pub const HOOK_NAMES: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Device cgroup permission value that requests no access at all.
pub const NO_PERMISSIONS: &str = "none";

/// Total size limit of a set of annotations (keys + values), as Kubernetes enforces.
pub const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("invalid environment variable {0:?}, expected KEY=VALUE")]
    Env(String),
    #[error("must not be empty")]
    Empty,
    #[error("path {0:?} is not absolute")]
    NotAbsolute(String),
    #[error("invalid hook name {0:?}, expected one of {names}", names = HOOK_NAMES.join(", "))]
    HookName(String),
    #[error("invalid device type {0:?}, expected b, c, u or p")]
    NodeType(String),
    #[error("invalid permissions {0:?}, expected a combination of r, w and m, or \"none\"")]
    Permissions(String),
    #[error("invalid ClosID {0:?}")]
    ClosId(String),
    #[error("multiple devices named {0:?}")]
    DuplicateDevice(String),
    #[error("invalid spec, no devices")]
    NoDevices,
    #[error("empty container edits")]
    EmptyEdits,
    #[error("duplicate {field} {value:?}")]
    DuplicateNetDevice { field: &'static str, value: String },
    #[error("invalid annotation key {0:?}, expected a qualified name ([prefix/]name)")]
    AnnotationKey(String),
    #[error("annotations too large: {0} bytes, limit {ANNOTATIONS_MAX_BYTES}")]
    AnnotationsTooLarge(usize),
}

/// A spec that parsed but does not validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CDI spec {path}: invalid {field}")]
pub struct ValidationError {
    /// The spec file.
    pub path: PathBuf,
    /// The field, as a path into the document (`devices[0].containerEdits.env[1]`).
    pub field: String,
    #[source]
    pub problem: Problem,
}

struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, field: impl fmt::Display, problem: impl Into<Problem>) -> ValidationError {
        ValidationError {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            problem: problem.into(),
        }
    }
}

/// Where a field is in the document (`devices[2].containerEdits.hooks[0]`). Only an error
/// formats it: a valid 8-GPU spec has some 80 entries, and naming each up front cost more
/// than all the checks.
#[derive(Clone, Copy)]
enum At<'a> {
    Top(&'a str),
    Field(&'a At<'a>, &'static str),
    Item(&'a At<'a>, usize),
}

impl<'a> At<'a> {
    fn field(&'a self, name: &'static str) -> At<'a> {
        At::Field(self, name)
    }

    fn item(&'a self, i: usize) -> At<'a> {
        At::Item(self, i)
    }
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Top(name) => f.write_str(name),
            At::Field(parent, name) => write!(f, "{parent}.{name}"),
            At::Item(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// Validates a whole spec; `path` names the file in errors. Returns the declared version.
pub fn validate_spec(spec: &Spec, path: &Path) -> Result<Version, ValidationError> {
    let ctx = Ctx { path };
    let declared = version::validate_version(spec).map_err(|e| ctx.err("cdiVersion", e))?;
    name::parse_kind(&spec.kind).map_err(|e| ctx.err("kind", e))?;
    validate_annotations(&ctx, &At::Top("annotations"), &spec.annotations)?;
    validate_edits_at(&ctx, &At::Top("containerEdits"), &spec.container_edits)?;

    let mut seen = std::collections::HashSet::new();
    let devices = At::Top("devices");
    for (i, dev) in spec.devices.iter().enumerate() {
        let field = devices.item(i);
        name::validate_device_name(&dev.name).map_err(|e| ctx.err(field.field("name"), e))?;
        if !seen.insert(dev.name.as_str()) {
            return Err(ctx.err(
                field.field("name"),
                Problem::DuplicateDevice(dev.name.clone()),
            ));
        }
        validate_annotations(&ctx, &field.field("annotations"), &dev.annotations)?;
        let edits = field.field("containerEdits");
        if dev.container_edits.is_empty() {
            return Err(ctx.err(edits, Problem::EmptyEdits));
        }
        validate_edits_at(&ctx, &edits, &dev.container_edits)?;
    }
    if spec.devices.is_empty() {
        return Err(ctx.err("devices", Problem::NoDevices));
    }
    Ok(declared)
}

/// Validates container edits on their own (for edits built in code, e.g. by the generator).
pub fn validate_edits(
    edits: &ContainerEdits,
    path: &Path,
    field: &str,
) -> Result<(), ValidationError> {
    validate_edits_at(&Ctx { path }, &At::Top(field), edits)
}

fn validate_env(ctx: &Ctx, field: &At, env: &[String]) -> Result<(), ValidationError> {
    for (i, e) in env.iter().enumerate() {
        // The reference accepts any entry with a '=' after at least one character.
        if e.find('=').is_none_or(|pos| pos == 0) {
            return Err(ctx.err(field.item(i), Problem::Env(e.clone())));
        }
    }
    Ok(())
}

fn validate_edits_at(ctx: &Ctx, at: &At, edits: &ContainerEdits) -> Result<(), ValidationError> {
    validate_env(ctx, &at.field("env"), &edits.env)?;
    let nodes = at.field("deviceNodes");
    for (i, node) in edits.device_nodes.iter().enumerate() {
        validate_device_node(ctx, &nodes.item(i), node)?;
    }
    let hooks = at.field("hooks");
    for (i, hook) in edits.hooks.iter().enumerate() {
        validate_hook(ctx, &hooks.item(i), hook)?;
    }
    let mounts = at.field("mounts");
    for (i, mount) in edits.mounts.iter().enumerate() {
        validate_mount(ctx, &mounts.item(i), mount)?;
    }
    if let Some(rdt) = &edits.intel_rdt {
        validate_intel_rdt(ctx, &at.field("intelRdt"), rdt)?;
    }
    let mut hosts = std::collections::HashSet::new();
    let mut names = std::collections::HashSet::new();
    let net = at.field("netDevices");
    for (i, dev) in edits.net_devices.iter().enumerate() {
        let field = net.item(i);
        if dev.host_interface_name.is_empty() {
            return Err(ctx.err(field.field("hostInterfaceName"), Problem::Empty));
        }
        if dev.name.is_empty() {
            return Err(ctx.err(field.field("name"), Problem::Empty));
        }
        if !hosts.insert(&dev.host_interface_name) {
            return Err(ctx.err(
                field.field("hostInterfaceName"),
                Problem::DuplicateNetDevice {
                    field: "hostInterfaceName",
                    value: dev.host_interface_name.clone(),
                },
            ));
        }
        if !names.insert(&dev.name) {
            return Err(ctx.err(
                field.field("name"),
                Problem::DuplicateNetDevice {
                    field: "name",
                    value: dev.name.clone(),
                },
            ));
        }
    }
    Ok(())
}

fn validate_device_node(ctx: &Ctx, at: &At, node: &DeviceNode) -> Result<(), ValidationError> {
    if node.path.is_empty() {
        return Err(ctx.err(at.field("path"), Problem::Empty));
    }
    if let Some(t) = &node.node_type {
        if !matches!(t.as_str(), "" | "b" | "c" | "u" | "p") {
            return Err(ctx.err(at.field("type"), Problem::NodeType(t.clone())));
        }
    }
    if let Some(p) = &node.permissions {
        if p != NO_PERMISSIONS && !p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(ctx.err(at.field("permissions"), Problem::Permissions(p.clone())));
        }
    }
    Ok(())
}

fn validate_hook(ctx: &Ctx, at: &At, hook: &Hook) -> Result<(), ValidationError> {
    if !HOOK_NAMES.contains(&hook.hook_name.as_str()) {
        return Err(ctx.err(
            at.field("hookName"),
            Problem::HookName(hook.hook_name.clone()),
        ));
    }
    if hook.path.is_empty() {
        return Err(ctx.err(at.field("path"), Problem::Empty));
    }
    if !hook.path.starts_with('/') {
        return Err(ctx.err(at.field("path"), Problem::NotAbsolute(hook.path.clone())));
    }
    validate_env(ctx, &at.field("env"), &hook.env)
}

fn validate_mount(ctx: &Ctx, at: &At, mount: &Mount) -> Result<(), ValidationError> {
    if mount.host_path.is_empty() {
        return Err(ctx.err(at.field("hostPath"), Problem::Empty));
    }
    if mount.container_path.is_empty() {
        return Err(ctx.err(at.field("containerPath"), Problem::Empty));
    }
    Ok(())
}

fn validate_intel_rdt(ctx: &Ctx, at: &At, rdt: &IntelRdt) -> Result<(), ValidationError> {
    // ClosID must be a valid Linux file name; "/" names the root CLOS.
    if let Some(c) = &rdt.clos_id {
        let bad = c != "/" && (c.len() >= 4096 || c == "." || c == ".." || c.contains(['/', '\n']));
        if bad {
            return Err(ctx.err(at.field("closID"), Problem::ClosId(c.clone())));
        }
    }
    Ok(())
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Kubernetes' qualified-name rule for annotation keys (checked on the lowercased key).
fn is_qualified_annotation_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let name = match key.split('/').collect::<Vec<_>>()[..] {
        [name] => name,
        [prefix, name] if is_dns1123_subdomain(prefix) => name,
        _ => return false,
    };
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn validate_annotations(
    ctx: &Ctx,
    at: &At,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<(), ValidationError> {
    let mut total = 0usize;
    for (k, v) in annotations {
        if !is_qualified_annotation_key(k) {
            return Err(ctx.err(format!("{at}[{k:?}]"), Problem::AnnotationKey(k.clone())));
        }
        total += k.len() + v.len();
    }
    if total > ANNOTATIONS_MAX_BYTES {
        return Err(ctx.err(at, Problem::AnnotationsTooLarge(total)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Format, Spec};

    const BASE: &str = "cdiVersion: 0.6.0\nkind: vendor.com/dev\ndevices:\n- name: d\n  containerEdits:\n    env: [A=B]\n";

    fn check(yaml: &str) -> Result<Version, ValidationError> {
        let path = Path::new("/etc/cdi/test.yaml");
        let spec = Spec::from_slice(yaml.as_bytes(), Format::Yaml, path).expect(yaml);
        validate_spec(&spec, path)
    }

    fn expect_err(yaml: &str, field: &str, problem: &str) {
        let err = check(yaml).expect_err(yaml);
        assert_eq!(err.field, field, "{yaml}");
        assert!(err.to_string().contains("/etc/cdi/test.yaml"), "{err}");
        assert!(err.to_string().contains(field), "{err}");
        let p = err.problem.to_string();
        assert!(p.contains(problem), "{yaml}: {p}");
    }

    #[test]
    fn accepts_a_valid_spec() {
        assert_eq!(check(BASE).unwrap(), Version::V0_6_0);
    }

    #[test]
    fn rejects_bad_top_level_fields() {
        expect_err(
            &BASE.replace("0.6.0", "0.9.9"),
            "cdiVersion",
            "invalid version",
        );
        expect_err(
            &BASE.replace("vendor.com/dev", "vendor.com"),
            "kind",
            "vendor/class",
        );
        expect_err(
            &BASE.replace("vendor.com/dev", "1vendor.com/dev"),
            "kind",
            "vendor",
        );
        expect_err(
            &BASE.replace("vendor.com/dev", "vendor.com/de_"),
            "kind",
            "class",
        );
        expect_err(
            "cdiVersion: 0.6.0\nkind: vendor.com/dev\ndevices: []\n",
            "devices",
            "no devices",
        );
        expect_err(
            &format!("{BASE}annotations:\n  \"bad key!\": x\n"),
            "annotations[\"bad key!\"]",
            "annotation key",
        );
    }

    #[test]
    fn too_low_version_is_rejected() {
        // A hostPath needs 0.5.0.
        let yaml = "cdiVersion: 0.4.0\nkind: vendor.com/dev\ndevices:\n- name: d\n  containerEdits:\n    deviceNodes:\n    - path: /dev/a\n      hostPath: /dev/b\n";
        expect_err(yaml, "cdiVersion", "at least v0.5.0");
    }

    #[test]
    fn rejects_bad_devices() {
        expect_err(
            &BASE.replace("name: d", "name: -d"),
            "devices[0].name",
            "device name",
        );
        let dup = format!("{BASE}- name: d\n  containerEdits:\n    env: [C=D]\n");
        expect_err(&dup, "devices[1].name", "multiple devices");
        expect_err(
            "cdiVersion: 0.6.0\nkind: vendor.com/dev\ndevices:\n- name: d\n",
            "devices[0].containerEdits",
            "empty container edits",
        );
    }

    #[test]
    fn rejects_bad_edits() {
        let with = |edits: &str| {
            format!("cdiVersion: 1.1.0\nkind: vendor.com/dev\ndevices:\n- name: d\n  containerEdits:\n{edits}")
        };
        expect_err(
            &with("    env: [NOEQUALS]\n"),
            "devices[0].containerEdits.env[0]",
            "KEY=VALUE",
        );
        expect_err(
            &with("    env: [A=1, =x]\n"),
            "devices[0].containerEdits.env[1]",
            "KEY=VALUE",
        );
        expect_err(
            &with("    deviceNodes:\n    - path: \"\"\n"),
            "devices[0].containerEdits.deviceNodes[0].path",
            "empty",
        );
        expect_err(
            &with("    deviceNodes:\n    - path: /dev/x\n      type: z\n"),
            "devices[0].containerEdits.deviceNodes[0].type",
            "device type",
        );
        expect_err(
            &with("    deviceNodes:\n    - path: /dev/x\n      permissions: rwx\n"),
            "devices[0].containerEdits.deviceNodes[0].permissions",
            "permissions",
        );
        expect_err(
            &with("    hooks:\n    - hookName: preStart\n      path: /bin/true\n"),
            "devices[0].containerEdits.hooks[0].hookName",
            "hook name",
        );
        expect_err(
            &with("    hooks:\n    - hookName: createContainer\n      path: nvidia-ctk\n"),
            "devices[0].containerEdits.hooks[0].path",
            "not absolute",
        );
        expect_err(
            &with("    hooks:\n    - hookName: createContainer\n      path: \"\"\n"),
            "devices[0].containerEdits.hooks[0].path",
            "empty",
        );
        expect_err(
            &with("    hooks:\n    - hookName: poststop\n      path: /bin/true\n      env: [X]\n"),
            "devices[0].containerEdits.hooks[0].env[0]",
            "KEY=VALUE",
        );
        expect_err(
            &with("    mounts:\n    - hostPath: \"\"\n      containerPath: /x\n"),
            "devices[0].containerEdits.mounts[0].hostPath",
            "empty",
        );
        expect_err(
            &with("    mounts:\n    - hostPath: /x\n      containerPath: \"\"\n"),
            "devices[0].containerEdits.mounts[0].containerPath",
            "empty",
        );
        expect_err(
            &with("    intelRdt:\n      closID: a/b\n"),
            "devices[0].containerEdits.intelRdt.closID",
            "ClosID",
        );
        expect_err(
            &with("    netDevices:\n    - hostInterfaceName: eth0\n      name: a\n    - hostInterfaceName: eth0\n      name: b\n"),
            "devices[0].containerEdits.netDevices[1].hostInterfaceName",
            "duplicate",
        );
        expect_err(
            &with("    netDevices:\n    - hostInterfaceName: eth0\n      name: \"\"\n"),
            "devices[0].containerEdits.netDevices[0].name",
            "empty",
        );
    }

    #[test]
    fn spec_level_edits_are_checked_and_may_be_empty() {
        let yaml = format!("{BASE}containerEdits:\n  env: [BAD]\n");
        expect_err(&yaml, "containerEdits.env[0]", "KEY=VALUE");
        assert!(check(&format!("{BASE}containerEdits: {{}}\n")).is_ok());
    }

    #[test]
    fn accepts_edge_values_the_reference_accepts() {
        let with = |edits: &str| {
            format!("cdiVersion: 1.1.0\nkind: vendor.com/dev\ndevices:\n- name: d\n  containerEdits:\n{edits}")
        };
        check(&with("    env: [\"A=\"]\n")).unwrap();
        check(&with(
            "    deviceNodes:\n    - path: /dev/x\n      permissions: none\n",
        ))
        .unwrap();
        check(&with(
            "    deviceNodes:\n    - path: /dev/x\n      permissions: \"\"\n",
        ))
        .unwrap();
        check(&with("    intelRdt:\n      closID: /\n")).unwrap();
        for name in HOOK_NAMES {
            check(&with(&format!(
                "    hooks:\n    - hookName: {name}\n      path: /bin/true\n"
            )))
            .unwrap();
        }
    }

    #[test]
    fn annotation_keys() {
        for ok in ["a", "cdi.k8s.io/x", "example.com/Name_1", "A.b-c"] {
            assert!(is_qualified_annotation_key(ok), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a/b/c",
            "-a",
            "a-",
            "exa_mple.com/x",
            &"x".repeat(64),
        ] {
            assert!(!is_qualified_annotation_key(bad), "{bad}");
        }
    }
}
