use anyhow::{bail, Context, Result};
use libcontainer::container::ContainerStatus;

use crate::lifecycle::halfmade::{inspect, Entry, Intent};
use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Kill the container first if it is still running
    #[arg(short, long)]
    pub force: bool,
    /// Container ID
    pub id: String,
}

pub fn run(args: &DeleteArgs, ctx: &Ctx) -> Result<()> {
    let id = &args.id;
    match inspect(ctx, id)? {
        // runc: deleting a container that is already gone is not an error with --force.
        Entry::Missing if args.force => {
            if Intent::left_by_a_create(ctx, id) {
                // A create killed while writing its record leaves a temporary file.
                let _root_lock = ctx.lock_root()?;
                Intent::forget_all(ctx, id);
            }
            crate::snapshot::release(ctx, id)
        }
        Entry::Missing => bail!(
            "container {id:?} does not exist under {}",
            ctx.root.display()
        ),
        Entry::HalfMade(half) if !args.force && !half.in_progress() => {
            bail!("{}", half.warning())
        }
        Entry::HalfMade(_) => {
            // A create that is still running holds the root lock until it is done; once we
            // hold it, whatever is there was left by a process that is gone.
            let root_lock = ctx.lock_root()?;
            match inspect(ctx, id)? {
                // Without --force, what the create we waited for left is judged as usual.
                Entry::Missing if !args.force => bail!(
                    "container {id:?} does not exist under {}",
                    ctx.root.display()
                ),
                Entry::HalfMade(half) if !args.force => bail!("{}", half.warning()),
                Entry::Missing => {}
                Entry::HalfMade(half) => half
                    .remove(ctx)
                    .with_context(|| format!("cannot delete container {id:?}"))?,
                Entry::Complete(_) => {
                    drop(root_lock);
                    return delete_complete(args, ctx);
                }
            }
            drop(root_lock);
            crate::snapshot::release(ctx, id)
        }
        Entry::Complete(_) => delete_complete(args, ctx),
    }
}

fn delete_complete(args: &DeleteArgs, ctx: &Ctx) -> Result<()> {
    let (lock, mut container) = ctx.load_locked(&args.id)?;
    if !args.force
        && matches!(
            container.status(),
            ContainerStatus::Running | ContainerStatus::Paused
        )
    {
        bail!(
            "cannot delete container {:?}: it is {}; stop it first or use --force",
            args.id,
            crate::commands::state::status_name(container.status())
        );
    }
    let staging = crate::criu::dump::recorded_staging(&container.root);
    container
        .delete(args.force)
        .with_context(|| format!("cannot delete container {:?}", args.id))?;
    drop(lock);
    // What a killed checkpoint or a create killed after its container was complete left.
    if let Some(staging) = staging {
        crate::criu::dump::remove_staging(&staging);
    }
    if Intent::exists(ctx, &args.id) {
        let _root_lock = ctx.lock_root()?;
        Intent::forget(ctx, &args.id);
    }
    // The rootfs clone of a container started from a snapshot.
    crate::snapshot::release(ctx, &args.id)
}
