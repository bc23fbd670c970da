//! Deleting a container: a complete one through libcontainer, a half-made one (what a killed
//! create or delete left) from its create record; then what belongs to it outside its state
//! directory: a killed checkpoint's staging directory, its create record, its rootfs clone.

use anyhow::{bail, Context, Result};
use libcontainer::container::Container;

use crate::lifecycle::guard::{ensure, Action};
use crate::lifecycle::halfmade::{inspect, Entry, Intent};
use crate::state_root::lock::DirLock;
use crate::state_root::Ctx;

/// `delete [--force] ID`. Another runtime's container is refused, --force or not.
pub fn delete(ctx: &Ctx, id: &str, force: bool) -> Result<()> {
    match inspect(ctx, id)? {
        Entry::Foreign(theirs) => Err(theirs.into()),
        // runc: deleting a container that is already gone is not an error with --force.
        Entry::Missing if force => {
            if Intent::left_by_a_create(ctx, id) {
                // A create killed while writing its record leaves a temporary file. One still
                // running had written its record: once it is done (we hold the ID's lock) that
                // record is its container's, and stays.
                let _id_lock = ctx.lock_id(id)?;
                Intent::forget_leftovers(ctx, id);
            }
            crate::snapshot::release(ctx, id)
        }
        Entry::Missing => bail!(
            "container {id:?} does not exist under {}",
            ctx.root.display()
        ),
        Entry::HalfMade(half) if !force && !half.in_progress() => {
            bail!("{}", half.warning())
        }
        Entry::HalfMade(_) => {
            // A create that is still running holds the ID's lock until it is done; once we
            // hold it, whatever is there was left by a process that is gone.
            let id_lock = ctx.lock_id(id)?;
            match inspect(ctx, id)? {
                // Without --force, what the create we waited for left is judged as usual.
                Entry::Missing if !force => bail!(
                    "container {id:?} does not exist under {}",
                    ctx.root.display()
                ),
                Entry::HalfMade(half) if !force => bail!("{}", half.warning()),
                Entry::Missing => {}
                Entry::HalfMade(half) => half
                    .remove(ctx)
                    .with_context(|| format!("cannot delete container {id:?}"))?,
                Entry::Complete(_) => {
                    drop(id_lock);
                    return delete_complete(ctx, id, force);
                }
                Entry::Foreign(theirs) => return Err(theirs.into()),
            }
            drop(id_lock);
            crate::snapshot::release(ctx, id)
        }
        Entry::Complete(_) => delete_complete(ctx, id, force),
    }
}

fn delete_complete(ctx: &Ctx, id: &str, force: bool) -> Result<()> {
    let (lock, mut container) = ctx.load_locked(id)?;
    ensure(&container, Action::Delete { force })?;
    let staging = crate::criu::dump::recorded_staging(&container.root);
    let record = Intent::hold(ctx, id);
    container
        .delete(force)
        .with_context(|| format!("cannot delete container {id:?}"))?;
    drop(lock);
    // What a killed checkpoint or a create killed after its container was complete left.
    if let Some(staging) = staging {
        crate::criu::dump::remove_staging(&staging);
    }
    // The record goes last: until the directory is gone, it is what makes the ID nvbind's.
    Intent::forget_deleted(ctx, id)?;
    drop(record);
    // The rootfs clone of a container started from a snapshot.
    crate::snapshot::release(ctx, id)
}

/// Removes a container that ran in the foreground (`run`, `restore`) once its init exited:
/// its state, its record, then its rootfs clone.
pub fn remove_exited(ctx: &Ctx, container: &mut Container) -> Result<()> {
    let id = container.id().to_string();
    // The `kill` that ended the init may still be saving the state under the container's lock:
    // its temporary file landing in the directory being removed failed the removal with
    // ENOTEMPTY (tests/lifecycle.rs run_reports_death_by_signal_as_128_plus_signal, about 1
    // run in 15 under load). Fails only when the directory is gone already.
    let lock = DirLock::exclusive(&container.root).ok();
    let record = Intent::hold(ctx, &id);
    container
        .delete(true)
        .with_context(|| format!("cannot delete container {id:?}"))?;
    // An ID's lock is never taken under a container's.
    drop(lock);
    Intent::forget_deleted(ctx, &id)?;
    drop(record);
    crate::snapshot::release(ctx, &id)
}
