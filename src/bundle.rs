//! A bundle's config.json, loaded and checked before anything touches the host.
//!
//! Everything here is pure (reads the bundle, mutates nothing), so `create`, `run`, `restore`
//! and the fuzz targets share it; the error says which field is wrong and what to do.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxSeccompAction, Spec};

/// Why a bundle or its config.json was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle directory {} cannot be opened; pass --bundle DIR", .path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}; a bundle needs a config.json", .path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a valid OCI spec", .path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: SpecError,
    },
    #[error(transparent)]
    Check(#[from] CheckError),
}

/// config.json is not an OCI spec at all. serde's messages name the field and the line
/// ("missing field `ociVersion` at line 1 column 2"); they are kept whole.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("the top level is not a JSON object")]
    NotObject,
    #[error(transparent)]
    Fields(serde_json::Error),
}

/// config.json parses but asks for something the runtime-spec forbids or the bundle lacks.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("ociVersion {0:?} is not supported; nvbind runs runtime-spec 1.x bundles")]
    Version(String),
    #[error("config.json has no \"root\"; set root.path to the rootfs directory")]
    NoRoot,
    #[error("root.path {} is not a directory", .0.display())]
    RootNotDir(PathBuf),
    #[error("root.path {} does not exist; create the rootfs or fix root.path", .path.display())]
    RootMissing {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("config.json has no \"process\"; give process.args and process.cwd")]
    NoProcess,
    #[error("process.args is empty; give the command to run in the container")]
    NoArgs,
    #[error("process.cwd {0:?} must be an absolute path")]
    RelativeCwd(PathBuf),
    #[error(
        "linux.devices[{index}].path {path:?} is not an absolute path to a file; give the \
         device's full path inside the container, e.g. /dev/nvidia0"
    )]
    DevicePath { index: usize, path: PathBuf },
    #[error(
        "linux.cgroupsPath {0:?} names the root cgroup or holds '..'; give a cgroup of the \
         container's own, e.g. /nvbind/<ID>"
    )]
    CgroupsPath(PathBuf),
    #[error("linux.namespaces lists type {0} more than once; keep one entry per type")]
    DuplicateNamespace(String),
    #[error(transparent)]
    DeviceRule(#[from] libcgroups::devices::DeviceRuleError),
    #[error(
        "the requested devices cannot be granted beside the bundle's own device rules: {0}; \
         drop the bundle's deny rule for them or do not request them"
    )]
    InjectedDeviceRule(#[source] libcgroups::devices::DeviceRuleError),
    #[error(
        "linux.seccomp.defaultErrnoRet is set but defaultAction {0} returns no errno; \
         remove it or use SCMP_ACT_ERRNO / SCMP_ACT_TRACE"
    )]
    DefaultErrnoRet(LinuxSeccompAction),
    #[error(
        "linux.seccomp.syscalls[{index}].errnoRet is set but its action {action} returns no \
         errno; remove it or use SCMP_ACT_ERRNO / SCMP_ACT_TRACE"
    )]
    RuleErrnoRet {
        index: usize,
        action: LinuxSeccompAction,
    },
    #[error(
        "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be used as default action; \
         give SCMP_ACT_NOTIFY to the syscalls the agent handles"
    )]
    NotifyDefault,
    #[error(
        "linux.seccomp.syscalls[{0}]: SCMP_ACT_NOTIFY cannot be used for the write syscall \
         (the init needs it to hand the listener to the agent); remove write from the rule"
    )]
    NotifyWrite(usize),
    #[error(
        "linux.resources.hugepageLimits[{0}] has no pageSize; give the page size, e.g. \"2MB\""
    )]
    NoPageSize(usize),
}

/// A bundle that passed every check we can make without touching the host.
pub struct Bundle {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    /// config.json as read, byte for byte (what a failed create puts back).
    pub original: Vec<u8>,
    pub spec: Spec,
}

impl Bundle {
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        let dir = fs::canonicalize(dir).map_err(|source| BundleError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let config_path = dir.join("config.json");
        let bytes = fs::read(&config_path).map_err(|source| BundleError::ReadConfig {
            path: config_path.clone(),
            source,
        })?;
        let spec = parse_spec(&bytes).map_err(|source| BundleError::Invalid {
            path: config_path.clone(),
            source,
        })?;
        check_spec(&spec, &dir)?;
        Ok(Self {
            dir,
            config_path,
            original: bytes,
            spec,
        })
    }
}

pub fn parse_spec(bytes: &[u8]) -> Result<Spec, SpecError> {
    let value: serde_json::Value =
        nvbind_cdi::json::from_bytes(bytes).map_err(SpecError::NotJson)?;
    if !value.is_object() {
        return Err(SpecError::NotObject);
    }
    // keys matched as runc's Go decoder matches them (specs written for runc rely on it)
    crate::gojson::from_value(value).map_err(SpecError::Fields)
}

/// The checks that need the bundle directory (root.path) as well as the spec.
pub fn check_spec(spec: &Spec, bundle: &Path) -> Result<(), CheckError> {
    if !spec.version().starts_with("1.") {
        return Err(CheckError::Version(spec.version().clone()));
    }
    let root = spec.root().as_ref().ok_or(CheckError::NoRoot)?;
    let rootfs = bundle.join(root.path());
    match fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(CheckError::RootNotDir(rootfs)),
        Err(source) => {
            return Err(CheckError::RootMissing {
                path: rootfs,
                source,
            })
        }
    }
    // runtime-spec makes process optional at create but REQUIRED at start, and runc refuses
    // a config without one at create; so do we, before CDI injection adds a process that has
    // env but no args and the container "starts" nothing (found by fuzz/bundle_config).
    let p = spec.process().as_ref().ok_or(CheckError::NoProcess)?;
    if p.args().as_ref().is_none_or(|a| a.is_empty()) && p.command_line().is_none() {
        return Err(CheckError::NoArgs);
    }
    if !p.cwd().is_absolute() {
        return Err(CheckError::RelativeCwd(p.cwd().clone()));
    }
    check_namespaces(spec)?;
    check_device_paths(spec)?;
    check_cgroups_path(spec)?;
    check_hugepage_limits(spec)?;
    check_device_rules(spec)?;
    check_seccomp(spec)
}

/// A hugetlb limit without a page size would reach the cgroup as a file name without its
/// size ("malformed page size : cannot parse integer from empty string").
fn check_hugepage_limits(spec: &Spec) -> Result<(), CheckError> {
    let limits = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.hugepage_limits().as_deref())
        .unwrap_or_default();
    match limits.iter().position(|h| h.page_size().is_empty()) {
        Some(i) => Err(CheckError::NoPageSize(i)),
        None => Ok(()),
    }
}

/// The device rules, replayed as the cgroup will be (libcgroups, runc's semantics): a rule
/// neither cgroup v1 nor the v2 filter can express is refused before anything is made, not
/// when the half-built container's cgroup gets its rules.
fn check_device_rules(spec: &Spec) -> Result<(), CheckError> {
    let rules = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().as_deref());
    libcgroups::devices::Emulator::for_container(rules)?;
    Ok(())
}

/// The device rules once CDI injection has appended its own (an allow for each node it
/// added): the bundle's rules passed alone, but an allow after the bundle's wildcard deny
/// (e.g. `c 195:*`) cannot be expressed by a device cgroup, and create would otherwise fail
/// only when libcontainer writes the half-built container's cgroup (found by
/// fuzz/bundle_config).
pub fn check_injected(spec: &Spec) -> Result<(), CheckError> {
    check_device_rules(spec).map_err(|e| match e {
        CheckError::DeviceRule(rule) => CheckError::InjectedDeviceRule(rule),
        other => other,
    })
}

/// The cgroup is the container's: `delete --force` of a half-made container kills what is
/// in it, and libcgroups counts a cgroup's processes recursively, so "/" (or a path that
/// climbs out with "..") would make that every process on the host. runc ends up refusing
/// these too, as a non-empty cgroup.
fn check_cgroups_path(spec: &Spec) -> Result<(), CheckError> {
    match spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
    {
        Some(path) if !names_a_child_cgroup(path) => Err(CheckError::CgroupsPath(path.clone())),
        _ => Ok(()),
    }
}

/// Whether `path` names a cgroup below the root one, with no `..`.
pub fn names_a_child_cgroup(path: &Path) -> bool {
    use std::path::Component;
    path.components().any(|c| matches!(c, Component::Normal(_)))
        && !path.components().any(|c| matches!(c, Component::ParentDir))
}

/// runtime-spec: a device's path is the "full path to device inside container". An empty one
/// (a misspelled key leaves it so) joined to the rootfs names the rootfs itself, and `..`
/// could name a file outside /dev; found by fuzz/bundle_config.
fn check_device_paths(spec: &Spec) -> Result<(), CheckError> {
    let devices = spec.linux().as_ref().and_then(|l| l.devices().as_ref());
    for (index, device) in devices.into_iter().flatten().enumerate() {
        let path = device.path();
        if !nvbind_cdi::apply::names_a_file_in_the_container(path) {
            return Err(CheckError::DevicePath {
                index,
                path: path.clone(),
            });
        }
    }
    Ok(())
}

/// runtime-spec config-linux.md: errnoRet / defaultErrnoRet apply to actions that return an
/// errno (SCMP_ACT_ERRNO, SCMP_ACT_TRACE); "when the action doesn't support an errno, the
/// runtime MUST print an error and fail". libcontainer would silently ignore them.
fn check_seccomp(spec: &Spec) -> Result<(), CheckError> {
    use LinuxSeccompAction as Action;
    let takes_errno = |a: Action| matches!(a, Action::ScmpActErrno | Action::ScmpActTrace);
    let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(());
    };
    if seccomp.default_errno_ret().is_some() && !takes_errno(seccomp.default_action()) {
        return Err(CheckError::DefaultErrnoRet(seccomp.default_action()));
    }
    // runc refuses these before it starts anything; libcontainer only noticed in the init,
    // after the container was half made, and reported a failed listener.
    if seccomp.default_action() == Action::ScmpActNotify {
        return Err(CheckError::NotifyDefault);
    }
    for (index, rule) in seccomp.syscalls().iter().flatten().enumerate() {
        if rule.action() == Action::ScmpActNotify && rule.names().iter().any(|n| n == "write") {
            return Err(CheckError::NotifyWrite(index));
        }
        if rule.errno_ret().is_some() && !takes_errno(rule.action()) {
            return Err(CheckError::RuleErrnoRet {
                index,
                action: rule.action(),
            });
        }
    }
    Ok(())
}

/// runtime-spec config-linux.md: "If a namespace type is specified more than once, the runtime
/// MUST generate an error".
fn check_namespaces(spec: &Spec) -> Result<(), CheckError> {
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    let mut seen = std::collections::HashSet::new();
    for ns in namespaces.into_iter().flatten() {
        if !seen.insert(ns.typ()) {
            // the name as config.json spells it ("mount", not Display's "mnt")
            let name = serde_json::to_string(&ns.typ()).unwrap_or_else(|_| ns.typ().to_string());
            return Err(CheckError::DuplicateNamespace(name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: &str, make_rootfs: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.json"), config).unwrap();
        if make_rootfs {
            fs::create_dir(dir.path().join("rootfs")).unwrap();
        }
        dir
    }

    const MINIMAL: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
        "process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}}"#;

    #[test]
    fn minimal_bundle_loads() {
        let b = bundle_with(MINIMAL, true);
        Bundle::load(b.path()).unwrap();
    }

    /// The message as main prints it: the error and its sources, joined by ": ".
    fn chain(e: BundleError) -> String {
        format!("{:#}", anyhow::Error::from(e))
    }

    fn load_err(config: &str, rootfs: bool) -> String {
        let b = bundle_with(config, rootfs);
        chain(Bundle::load(b.path()).err().expect("bundle accepted"))
    }

    #[test]
    fn missing_bundle_is_named() {
        let e = chain(Bundle::load(Path::new("/nonexistent/b")).err().unwrap());
        assert!(e.contains("/nonexistent/b"), "{e}");
    }

    #[test]
    fn missing_config_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = chain(Bundle::load(dir.path()).err().unwrap());
        assert!(e.contains("config.json"), "{e}");
    }

    #[test]
    fn bad_json_and_bad_fields_are_reported() {
        assert!(load_err("{not json", true).contains("not JSON"));
        let e = load_err(r#"{"root":{"path":"rootfs"}}"#, true);
        assert!(e.contains("ociVersion"), "{e}");
        let e = load_err(&MINIMAL.replace(r#""uid":0"#, r#""uid":"x""#), true);
        assert!(e.contains("invalid type"), "{e}");
        assert!(load_err("[1]", true).contains("not a JSON object"));
    }

    #[test]
    fn missing_rootfs_is_named() {
        let e = load_err(MINIMAL, false);
        assert!(e.contains("root.path") && e.contains("rootfs"), "{e}");
    }

    #[test]
    fn unsupported_version_and_relative_cwd_are_refused() {
        assert!(load_err(&MINIMAL.replace("1.0.2", "2.0.0"), true).contains("ociVersion"));
        assert!(
            load_err(&MINIMAL.replace(r#""cwd":"/""#, r#""cwd":"tmp""#), true)
                .contains("process.cwd")
        );
        assert!(load_err(&MINIMAL.replace(r#"["sh"]"#, "[]"), true).contains("process.args"));
    }

    /// fuzz/bundle_config: with no "process" (here a misspelled key, which serde ignores),
    /// the checks passed, and a CDI annotation then gave the container a process with env
    /// but no args: create succeeded and start ran nothing.
    #[test]
    fn missing_process_is_refused() {
        let config = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
            "proces#":{"cwd":"/","args":["sh"]},
            "annotations":{"cdi.k8s.io/x":"nvidia.com/gpu=0"}}"#;
        let e = load_err(config, true);
        assert!(e.contains("no \"process\""), "{e}");
    }

    #[test]
    fn errno_ret_only_with_errno_actions() {
        let with_seccomp = |seccomp: &str| {
            MINIMAL.replace(
                r#""root":"#,
                &format!(r#""linux":{{"seccomp":{seccomp}}},"root":"#),
            )
        };
        let ok = with_seccomp(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"syscalls":[
                {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":95}]}"#,
        );
        Bundle::load(bundle_with(&ok, true).path()).unwrap();
        let e = load_err(
            &with_seccomp(r#"{"defaultAction":"SCMP_ACT_ALLOW","defaultErrnoRet":1}"#),
            true,
        );
        assert!(e.contains("linux.seccomp.defaultErrnoRet"), "{e}");
        let e = load_err(
            &with_seccomp(
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir"],"action":"SCMP_ACT_KILL","errnoRet":1}]}"#,
            ),
            true,
        );
        assert!(e.contains("linux.seccomp.syscalls[0].errnoRet"), "{e}");
    }

    /// fuzz/bundle_config: a device whose "path" key was misspelled passed the checks with an
    /// empty path, which libcontainer would have joined to the rootfs.
    #[test]
    fn device_path_must_name_a_file_inside_the_container() {
        let with_device = |path: &str| {
            MINIMAL.replace(
                r#""root":"#,
                &format!(
                    r#""linux":{{"devices":[{{"path":"/dev/null","type":"c","major":1,"minor":3}},
                    {{{path}"type":"c","major":195,"minor":0}}]}},"root":"#
                ),
            )
        };
        Bundle::load(bundle_with(&with_device(r#""path":"/dev/nvidia0","#), true).path()).unwrap();
        for bad in [
            "",
            r#""path":"","#,
            r#""path":"dev/nvidia0","#,
            r#""path":"/","#,
            r#""path":"/dev/../etc/shadow","#,
        ] {
            let e = load_err(&with_device(bad), true);
            assert!(e.contains("linux.devices[1].path"), "{bad}: {e}");
        }
    }

    #[test]
    fn cgroups_path_must_be_below_the_root_cgroup() {
        let with_cgroup = |path: &str| {
            MINIMAL.replace(
                r#""root":"#,
                &format!(r#""linux":{{"cgroupsPath":"{path}"}},"root":"#),
            )
        };
        for good in ["/nvbind/c1", "nvbind/c1", "system.slice:nvbind:c1"] {
            Bundle::load(bundle_with(&with_cgroup(good), true).path()).unwrap();
        }
        for bad in ["/", "", ".", "/..", "/nvbind/../..", "a/../b"] {
            let e = load_err(&with_cgroup(bad), true);
            assert!(e.contains("linux.cgroupsPath"), "{bad}: {e}");
        }
    }

    #[test]
    fn device_rules_a_cgroup_cannot_express_are_refused() {
        let with_rules = |rules: &str| {
            load_err(
                &format!(
                    r#"{{"ociVersion":"1.0.2","process":{{"args":["true"],"cwd":"/","user":{{"uid":0,"gid":0}}}},"root":{{"path":"rootfs"}},"linux":{{"resources":{{"devices":{rules}}}}}}}"#
                ),
                true,
            )
        };
        let e = with_rules(
            r#"[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","access":"rwm"},{"allow":false,"type":"c","major":1,"minor":3,"access":"w"}]"#,
        );
        assert!(
            e.contains("linux.resources.devices[2] (deny c 1:3 w)"),
            "{e}"
        );
        let e = with_rules(r#"[{"allow":true,"type":"c","major":1}]"#);
        assert!(
            e.contains("linux.resources.devices[0]: the access is empty"),
            "{e}"
        );
        let e = with_rules(r#"[{"allow":true,"type":"p","access":"rw"}]"#);
        assert!(e.contains("invalid cgroup device type \"p\""), "{e}");
    }

    #[test]
    fn duplicate_namespace_type_is_refused() {
        let with_ns = |list: &str| {
            MINIMAL.replace(
                r#""root":"#,
                &format!(r#""linux":{{"namespaces":[{list}]}},"root":"#),
            )
        };
        let b = bundle_with(&with_ns(r#"{"type":"pid"},{"type":"ipc"}"#), true);
        Bundle::load(b.path()).unwrap();
        let e = load_err(
            &with_ns(r#"{"type":"pid"},{"type":"ipc"},{"type":"ipc","path":"/proc/1/ns/ipc"}"#),
            true,
        );
        assert!(e.contains("linux.namespaces") && e.contains("ipc"), "{e}");
    }
}
