//! Creating a container, shared by `create` and `run`.
//!
//! Everything that can be checked is checked before libcontainer touches the host, so bad input
//! fails with a precise message and nothing to undo. The engine's bundle is never written:
//! libcontainer gets the spec (device edits, snapshot rootfs) in memory. What a failed create
//! made (state dir, cgroup, processes, snapshot clone, intent record) is removed by one undo
//! path.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;

use crate::bundle::Bundle;
use crate::executor::NvbindExecutor;
use crate::lifecycle::halfmade::Intent;
use crate::options::CreateOpts;
use crate::state_root::id::validate_id;
use crate::state_root::owner::{foreign, identify, Runtime};
use crate::state_root::Ctx;

/// Builds the container (its init process waits for `start`). The caller already validated
/// the ID; a failure here leaves no state dir, cgroup or process behind.
pub fn create_container(ctx: &Ctx, opts: &CreateOpts, detach: bool) -> Result<Container> {
    validate_id(&opts.id)?;
    create_container_from(ctx, opts, detach, Bundle::load(&opts.bundle)?)
}

/// `create_container` with the bundle already loaded from `opts.bundle` (`run` reads it first
/// to see whether the process wants a terminal: one read and parse of config.json, not two).
pub fn create_container_from(
    ctx: &Ctx,
    opts: &CreateOpts,
    detach: bool,
    mut bundle: Bundle,
) -> Result<Container> {
    validate_id(&opts.id)?;
    crate::rootless::check_spec(&bundle.spec, &opts.id, ctx.systemd_cgroup)?;
    if let Some(sock) = &opts.console_socket {
        if !sock.exists() {
            bail!("--console-socket {} does not exist", sock.display());
        }
    }

    check_unified_resources(&bundle.spec)?;
    if !ctx.systemd_cgroup {
        resolve_cgroups_path(&mut bundle.spec, &opts.id, &own_cgroup()?);
    } else {
        default_systemd_unit(&mut bundle.spec, &opts.id);
    }

    // Two creates of one ID race on libcontainer's exists-then-mkdir; serialising the build
    // on the ID makes exactly one of them win and the other fail cleanly. Creates of other
    // IDs go on meanwhile (the lock is the ID's byte of the root's lock file).
    let id_lock = ctx.lock_id(&opts.id)?;
    let dir = ctx.container_dir(&opts.id);
    if let Some(theirs) = foreign(&ctx.root, &opts.id) {
        bail!(
            "cannot create container {:?}: {theirs}; choose another ID",
            opts.id
        );
    }
    if dir.exists() {
        bail!(
            "container {:?} already exists under {}; delete it or choose another ID",
            opts.id,
            ctx.root.display()
        );
    }
    // Recorded before anything is made, so that what a create killed half-way leaves (a
    // cgroup only it knew of, an init waiting for `start`) is found by `delete --force`, and
    // kept while the container lives: it is what makes the directory nvbind's.
    let intent = Intent::new(ctx, &opts.id, &bundle.dir, &bundle.spec);
    // Until the init is in it, so that a create of another ID naming the same cgroup sees it.
    let _cgroup_lock = intent.lock_cgroup(ctx)?;
    intent.check_cgroup_unused()?;
    intent.check_cgroup_not_frozen()?;
    intent.record(ctx)?;

    match build(ctx, opts, detach, bundle, &id_lock) {
        Ok(container) => Ok(container),
        Err(e) => {
            undo(ctx, &opts.id, &dir);
            Err(e)
        }
    }
}

/// runc's cgroupfs driver puts a container without linux.cgroupsPath in a cgroup named after
/// its ID, and reads a relative cgroupsPath, under the cgroup of the runtime that creates it
/// (libcontainer's default was ":youki:ID" at the hierarchy's root, and a relative path was
/// taken from the root too). The absolute path goes into the in-memory spec, so the create
/// record, libcontainer's config and every later command name the same cgroup.
fn resolve_cgroups_path(spec: &mut oci_spec::runtime::Spec, id: &str, own: &Path) {
    let Some(linux) = spec.linux_mut() else {
        return;
    };
    let rel = match linux.cgroups_path() {
        Some(p) if p.is_absolute() => return,
        Some(p) => p.clone(),
        None => std::path::PathBuf::from(id),
    };
    let own = own.strip_prefix("/").unwrap_or(own);
    linux.set_cgroups_path(Some(Path::new("/").join(own).join(rel)));
}

/// runc's systemd driver names the scope of a container without linux.cgroupsPath
/// `runc-ID.scope` (":runc:ID"); libcontainer's default would be `youki-ID.scope`, a name
/// nobody running nvbind would look for in `systemctl list-units`.
fn default_systemd_unit(spec: &mut oci_spec::runtime::Spec, id: &str) {
    if let Some(linux) = spec.linux_mut() {
        if linux.cgroups_path().is_none() {
            linux.set_cgroups_path(Some(format!(":nvbind:{id}").into()));
        }
    }
}

/// The cgroup a relative cgroupsPath is read under. With v1 controllers (hybrid too) it is
/// this process's own, as the devices controller (the one libcgroups counts a cgroup's
/// processes in) lists it. On pure cgroup v2 it is the parent of our own, as runc's fs2 takes
/// it: our cgroup holds processes (a service, a login scope), and a child made under it cannot
/// take any: enabling the threaded controllers there turns it into a thread root, and moving
/// the container's init into the child fails with EOPNOTSUPP (seen in the Debian VMs, from
/// nvbind-hosts.service).
fn own_cgroup() -> Result<std::path::PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup").context("cannot read /proc/self/cgroup")?;
    let unified = matches!(
        libcgroups::common::get_cgroup_setup(),
        Ok(libcgroups::common::CgroupSetup::Unified)
    );
    Ok(own_cgroup_in(&text, unified).unwrap_or_else(|| "/".into()))
}

fn own_cgroup_in(text: &str, unified: bool) -> Option<std::path::PathBuf> {
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        if !unified && ctrls.split(',').any(|c| c == "devices") {
            return Some(path.into());
        }
        if ctrls.is_empty() {
            v2 = Some(Path::new(path));
        }
    }
    let v2 = v2?;
    Some(if unified {
        v2.parent().unwrap_or(v2).to_path_buf()
    } else {
        v2.to_path_buf()
    })
}

/// linux.resources.unified is cgroup v2's key-value form; on a host whose controllers are on
/// cgroup v1 (hybrid too) libcgroups' v1 manager ignores it, so the limit would silently not
/// be applied. runc refuses it with "invalid configuration" as well.
fn check_unified_resources(spec: &oci_spec::runtime::Spec) -> Result<()> {
    let unified = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.unified().as_ref())
        .filter(|u| !u.is_empty());
    let Some(unified) = unified else {
        return Ok(());
    };
    use libcgroups::common::{get_cgroup_setup, CgroupSetup};
    match get_cgroup_setup() {
        Ok(CgroupSetup::Unified) => Ok(()),
        Ok(setup) => {
            let mut keys: Vec<&str> = unified.keys().map(String::as_str).collect();
            keys.sort_unstable();
            bail!(
                "invalid configuration: linux.resources.unified ({}) needs cgroup v2, and this \
                 host's controllers are on cgroup v1 ({setup}); remove it or give the limits in \
                 linux.resources' v1 fields",
                keys.join(", ")
            )
        }
        Err(e) => Err(e).context("cannot tell the host's cgroup setup"),
    }
}

/// Everything after the intent is recorded. The engine's bundle is only read: the spec with
/// the CDI edits and a snapshot's rootfs goes to libcontainer in memory.
fn build(
    ctx: &Ctx,
    opts: &CreateOpts,
    detach: bool,
    bundle: Bundle,
    id_lock: &crate::state_root::lock::FileLock,
) -> Result<Container> {
    let (mut spec, rootfs_hook) = match crate::inject::inject(&bundle.spec, &ctx.cdi_spec_dirs)? {
        Some(i) => (
            i.spec,
            (!i.steps.is_empty()).then(|| crate::inject::rootfs_hook(i.steps)),
        ),
        None => (bundle.spec, None),
    };
    // A bundle that starts from a snapshot (org.nvbind.snapshot.from or --snapshot) gets the
    // container's clone as its root.path, after injection.
    crate::snapshot::prepare_rootfs_for_bundle(
        ctx,
        &opts.id,
        &bundle.dir,
        &mut spec,
        opts.snapshot.as_deref(),
    )?;

    let mut base = ContainerBuilder::new(opts.id.clone(), SyscallType::default())
        .with_seccomp_compiler(crate::seccomp_cache::compiler(&ctx.root));
    if let Some(hook) = rootfs_hook {
        base = base.with_rootfs_hook(hook);
    }
    // ctx.root (prepare_root) and bundle.dir (Bundle::load) are canonical: libcontainer need
    // not resolve them again.
    base.with_executor(NvbindExecutor::new(!opts.no_new_keyring, &opts.id))
        .with_canonical_root_path(ctx.root.clone())
        .with_pid_file(opts.pid_file.as_ref())
        .map(|b| {
            b.with_console_socket(opts.console_socket.as_ref())
                .with_preserved_fds(opts.preserve_fds)
                // The created init keeps what it inherits until start; the lock is ours alone.
                .with_runtime_fds(vec![id_lock.descriptor()])
                .as_init(&bundle.dir)
                .with_canonical_bundle()
                .with_spec(spec)
                .with_systemd(ctx.systemd_cgroup)
                .with_detach(detach)
                .with_no_pivot(opts.no_pivot)
        })
        .and_then(|b| b.build())
        .with_context(|| format!("cannot create container {:?}", opts.id))
}

/// The one undo path of a failed create: what libcontainer made (state dir, cgroup,
/// processes), a snapshot clone, and the intent record. Each step is a no-op when there is
/// nothing of its kind, so it serves a failure at any point.
fn undo(ctx: &Ctx, id: &str, dir: &Path) {
    cleanup_failed_create(dir);
    if let Err(err) = crate::snapshot::release(ctx, id) {
        tracing::warn!("cannot remove the rootfs clone of the failed create: {err:#}");
    }
    Intent::forget(ctx, id);
}

/// libcontainer removes what it made for most failures, but not for errors raised before its
/// own cleanup is armed (bad console socket, rootfs resolution). We hold the ID's lock and the
/// directory did not exist before, so whatever is there now is ours to remove, unless another
/// runtime sharing the root (which does not take our lock) made it meanwhile for the same ID.
fn cleanup_failed_create(dir: &Path) {
    if !dir.exists() {
        return;
    }
    if let runtime @ (Runtime::Runc | Runtime::Crun) = identify(dir) {
        tracing::warn!(
            "not removing {}: {runtime:?} made it while the create of that ID failed",
            dir.display()
        );
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

    #[test]
    fn the_default_and_relative_cgroup_paths_are_under_the_callers_cgroup() {
        let v1 = "12:pids:/a\n5:devices:/user.slice/s\n1:name=systemd:/x\n0::/u\n";
        assert_eq!(
            own_cgroup_in(v1, false).unwrap(),
            Path::new("/user.slice/s")
        );
        // Pure v2: the parent of ours (runc's fs2), never a cgroup that holds processes.
        let v2 = "0::/system.slice/nvbind-hosts.service\n";
        assert_eq!(own_cgroup_in(v2, true).unwrap(), Path::new("/system.slice"));
        assert_eq!(own_cgroup_in("0::/\n", true).unwrap(), Path::new("/"));
        // Hybrid without a devices line: the unified one, as it is.
        assert_eq!(
            own_cgroup_in("0::/init.scope\n", false).unwrap(),
            Path::new("/init.scope")
        );
        let path = |spec: &oci_spec::runtime::Spec| {
            spec.linux()
                .as_ref()
                .unwrap()
                .cgroups_path()
                .clone()
                .unwrap()
        };
        let mut spec = oci_spec::runtime::Spec::default();
        spec.linux_mut().as_mut().unwrap().set_cgroups_path(None);
        resolve_cgroups_path(&mut spec, "ct", Path::new("/"));
        assert_eq!(path(&spec), Path::new("/ct"));
        spec.linux_mut()
            .as_mut()
            .unwrap()
            .set_cgroups_path(Some("pod/ct".into()));
        resolve_cgroups_path(&mut spec, "ct", Path::new("/user.slice/s"));
        assert_eq!(path(&spec), Path::new("/user.slice/s/pod/ct"));
        // An absolute path is the spec's own.
        resolve_cgroups_path(&mut spec, "ct", Path::new("/elsewhere"));
        assert_eq!(path(&spec), Path::new("/user.slice/s/pod/ct"));
        // The systemd driver's default is a scope of nvbind's name; a given path stays.
        default_systemd_unit(&mut spec, "ct");
        assert_eq!(path(&spec), Path::new("/user.slice/s/pod/ct"));
        spec.linux_mut().as_mut().unwrap().set_cgroups_path(None);
        default_systemd_unit(&mut spec, "ct");
        assert_eq!(path(&spec), Path::new(":nvbind:ct"));
    }
}
