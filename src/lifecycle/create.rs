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
    let bundle = Bundle::load(&opts.bundle)?;
    crate::rootless::check_spec(&bundle.spec, &opts.id)?;
    if let Some(sock) = &opts.console_socket {
        if !sock.exists() {
            bail!("--console-socket {} does not exist", sock.display());
        }
    }

    // Two creates of one ID race on libcontainer's exists-then-mkdir; serialising the build
    // on the root makes exactly one of them win and the other fail cleanly.
    let root_lock = ctx.lock_root()?;
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
    intent.check_cgroup_unused()?;
    intent.check_cgroup_not_frozen()?;
    intent.record(ctx)?;

    match build(ctx, opts, detach, bundle, &root_lock) {
        Ok(container) => Ok(container),
        Err(e) => {
            undo(ctx, &opts.id, &dir);
            Err(e)
        }
    }
}

/// Everything after the intent is recorded. The engine's bundle is only read: the spec with
/// the CDI edits and a snapshot's rootfs goes to libcontainer in memory.
fn build(
    ctx: &Ctx,
    opts: &CreateOpts,
    detach: bool,
    bundle: Bundle,
    root_lock: &crate::state_root::lock::FileLock,
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

    let mut base = ContainerBuilder::new(opts.id.clone(), SyscallType::default());
    if let Some(hook) = rootfs_hook {
        base = base.with_rootfs_hook(hook);
    }
    base.with_executor(NvbindExecutor::new(!opts.no_new_keyring, &opts.id))
        .with_root_path(ctx.root.clone())
        .and_then(|b| b.with_pid_file(opts.pid_file.as_ref()))
        .map(|b| {
            b.with_console_socket(opts.console_socket.as_ref())
                .with_preserved_fds(opts.preserve_fds)
                // The created init keeps what it inherits until start; the lock is ours alone.
                .with_runtime_fds(root_lock.descriptor().into_iter().collect())
                .as_init(&bundle.dir)
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
/// own cleanup is armed (bad console socket, rootfs resolution). We hold the root lock and the
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
