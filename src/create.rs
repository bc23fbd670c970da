//! Creating a container, shared by `create` and `run`.
//!
//! Everything that can be checked is checked before libcontainer touches the host, so bad input
//! fails with a precise message and nothing to undo. What libcontainer does create (state dir,
//! cgroup, processes) is torn down again if the build fails.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use oci_spec::runtime::Spec;

use crate::executor::NvbindExecutor;
use crate::runtime::{lock_root, validate_id, Ctx};

/// The flags `create` and `run` share, with runc's names.
#[derive(clap::Args, Debug, Clone)]
pub struct CreateOpts {
    /// Path to the bundle directory (holds config.json and usually the rootfs)
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container's init PID to this file
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master (SCM_RIGHTS) when process.terminal is true
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Do not use pivot_root to jail the process inside the rootfs (for ramdisk roots)
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a new session keyring for the container
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass N extra file descriptors (3 .. 3+N-1) into the container
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub preserve_fds: i32,
    /// Start from this rootfs snapshot (a name of a snapshot of the bundle's rootfs, or a
    /// path): the container gets a copy-on-write clone, the base is never modified
    #[arg(long, value_name = "NAME|PATH")]
    pub snapshot: Option<String>,
    /// Container ID (letters, digits, '_', '+', '-', '.')
    pub id: String,
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
    pub fn load(dir: &Path) -> Result<Self> {
        let dir = fs::canonicalize(dir).with_context(|| {
            format!(
                "bundle directory {} cannot be opened; pass --bundle DIR",
                dir.display()
            )
        })?;
        let config_path = dir.join("config.json");
        let bytes = fs::read(&config_path).with_context(|| {
            format!(
                "cannot read {}; a bundle needs a config.json",
                config_path.display()
            )
        })?;
        let spec = parse_spec(&bytes)
            .with_context(|| format!("{} is not a valid OCI spec", config_path.display()))?;
        check_spec(&spec, &dir)?;
        Ok(Self {
            dir,
            config_path,
            original: bytes,
            spec,
        })
    }
}

/// serde's messages name the field and the line ("missing field `ociVersion` at line 1
/// column 2"); they are kept whole.
pub fn parse_spec(bytes: &[u8]) -> Result<Spec> {
    let value: serde_json::Value = serde_json::from_slice(bytes).context("not JSON")?;
    if !value.is_object() {
        bail!("the top level is not a JSON object");
    }
    Ok(serde_json::from_value(value)?)
}

fn check_spec(spec: &Spec, bundle: &Path) -> Result<()> {
    if !spec.version().starts_with("1.") {
        bail!(
            "ociVersion {:?} is not supported; nvbind runs runtime-spec 1.x bundles",
            spec.version()
        );
    }
    let root = spec
        .root()
        .as_ref()
        .context("config.json has no \"root\"; set root.path to the rootfs directory")?;
    let rootfs = bundle.join(root.path());
    match fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("root.path {} is not a directory", rootfs.display()),
        Err(e) => bail!(
            "root.path {} does not exist ({e}); create the rootfs or fix root.path",
            rootfs.display()
        ),
    }
    let process = spec.process().as_ref();
    if let Some(p) = process {
        if p.args().as_ref().is_none_or(|a| a.is_empty()) && p.command_line().is_none() {
            bail!("process.args is empty; give the command to run in the container");
        }
        if !p.cwd().is_absolute() {
            bail!("process.cwd {:?} must be an absolute path", p.cwd());
        }
    }
    check_namespaces(spec)?;
    check_seccomp_errno(spec)?;
    Ok(())
}

/// runtime-spec config-linux.md: errnoRet / defaultErrnoRet apply to actions that return an
/// errno (SCMP_ACT_ERRNO, SCMP_ACT_TRACE); "when the action doesn't support an errno, the
/// runtime MUST print an error and fail". libcontainer would silently ignore them.
fn check_seccomp_errno(spec: &Spec) -> Result<()> {
    use oci_spec::runtime::LinuxSeccompAction as Action;
    let takes_errno = |a: Action| matches!(a, Action::ScmpActErrno | Action::ScmpActTrace);
    let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(());
    };
    if seccomp.default_errno_ret().is_some() && !takes_errno(seccomp.default_action()) {
        bail!(
            "linux.seccomp.defaultErrnoRet is set but defaultAction {} returns no errno; \
             remove it or use SCMP_ACT_ERRNO / SCMP_ACT_TRACE",
            seccomp.default_action()
        );
    }
    for (i, rule) in seccomp.syscalls().iter().flatten().enumerate() {
        if rule.errno_ret().is_some() && !takes_errno(rule.action()) {
            bail!(
                "linux.seccomp.syscalls[{i}].errnoRet is set but its action {} returns no \
                 errno; remove it or use SCMP_ACT_ERRNO / SCMP_ACT_TRACE",
                rule.action()
            );
        }
    }
    Ok(())
}

/// runtime-spec config-linux.md: "If a namespace type is specified more than once, the runtime
/// MUST generate an error".
fn check_namespaces(spec: &Spec) -> Result<()> {
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    let mut seen = std::collections::HashSet::new();
    for ns in namespaces.into_iter().flatten() {
        if !seen.insert(ns.typ()) {
            // the name as config.json spells it ("mount", not Display's "mnt")
            let name = serde_json::to_string(&ns.typ()).unwrap_or_else(|_| ns.typ().to_string());
            bail!("linux.namespaces lists type {name} more than once; keep one entry per type");
        }
    }
    Ok(())
}

/// Builds the container (its init process waits for `start`). The caller already validated
/// the ID; a failure here leaves no state dir, cgroup or process behind.
pub fn create_container(ctx: &Ctx, opts: &CreateOpts, detach: bool) -> Result<Container> {
    validate_id(&opts.id)?;
    let bundle = Bundle::load(&opts.bundle)?;
    if let Some(sock) = &opts.console_socket {
        if !sock.exists() {
            bail!("--console-socket {} does not exist", sock.display());
        }
    }

    // Two creates of one ID race on libcontainer's exists-then-mkdir; serialising the build
    // on the root makes exactly one of them win and the other fail cleanly.
    let _root_lock = lock_root(ctx)?;
    let dir = ctx.container_dir(&opts.id);
    if dir.exists() {
        bail!(
            "container {:?} already exists under {}; delete it or choose another ID",
            opts.id,
            ctx.root.display()
        );
    }

    let (mut spec, rollback) = match crate::inject::inject(
        &bundle.spec,
        &bundle.config_path,
        &bundle.original,
        &ctx.cdi_spec_dirs,
    )? {
        Some((injected, rollback)) => (injected, Some(rollback)),
        None => (bundle.spec, None),
    };

    // A bundle that starts from a snapshot (org.nvbind.snapshot.from or --snapshot) is built
    // from a derived bundle whose root.path is the container's clone; it is derived from the
    // spec after injection, so it carries the CDI edits.
    let from_snapshot = crate::snapshot::prepare_rootfs_for_bundle(
        ctx,
        &opts.id,
        &bundle.dir,
        &mut spec,
        opts.snapshot.as_deref(),
    );
    let bundle_dir = match from_snapshot {
        Ok(derived) => derived.unwrap_or_else(|| bundle.dir.clone()),
        Err(e) => {
            if let Some(r) = rollback {
                r.restore();
            }
            return Err(e);
        }
    };

    let built = ContainerBuilder::new(opts.id.clone(), SyscallType::default())
        .with_executor(NvbindExecutor::new(!opts.no_new_keyring, &opts.id))
        .with_root_path(ctx.root.clone())
        .and_then(|b| b.with_pid_file(opts.pid_file.as_ref()))
        .map(|b| {
            b.with_console_socket(opts.console_socket.as_ref())
                .with_preserved_fds(opts.preserve_fds)
                .as_init(&bundle_dir)
                .with_systemd(ctx.systemd_cgroup)
                .with_detach(detach)
                .with_no_pivot(opts.no_pivot)
        })
        .and_then(|b| b.build());

    match built {
        Ok(container) => Ok(container),
        Err(e) => {
            cleanup_failed_create(&dir);
            if let Err(err) = crate::snapshot::release(ctx, &opts.id) {
                tracing::warn!("cannot remove the rootfs clone of the failed create: {err:#}");
            }
            if let Some(r) = rollback {
                r.restore();
            }
            Err(e).with_context(|| format!("cannot create container {:?}", opts.id))
        }
    }
}

/// libcontainer removes what it made for most failures, but not for errors raised before its
/// own cleanup is armed (bad console socket, rootfs resolution). We hold the root lock and the
/// directory did not exist before, so whatever is there now is ours to remove.
fn cleanup_failed_create(dir: &Path) {
    if !dir.exists() {
        return;
    }
    if let Ok(mut c) = Container::load(dir.to_path_buf()) {
        if let Err(e) = c.delete(true) {
            tracing::warn!("cleanup of failed create: {e}");
        }
    }
    if dir.exists() {
        if let Err(e) = fs::remove_dir_all(dir) {
            tracing::warn!("cannot remove {}: {e}", dir.display());
        }
    }
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

    fn load_err(config: &str, rootfs: bool) -> String {
        let b = bundle_with(config, rootfs);
        format!(
            "{:#}",
            Bundle::load(b.path()).err().expect("bundle accepted")
        )
    }

    #[test]
    fn missing_bundle_is_named() {
        let e = format!(
            "{:#}",
            Bundle::load(Path::new("/nonexistent/b")).err().unwrap()
        );
        assert!(e.contains("/nonexistent/b"), "{e}");
    }

    #[test]
    fn missing_config_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = format!("{:#}", Bundle::load(dir.path()).err().unwrap());
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
