use anyhow::{bail, Context, Result};
use libcontainer::container::ContainerStatus;

use crate::runtime::{validate_id, Ctx};

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Kill the container first if it is still running
    #[arg(short, long)]
    pub force: bool,
    /// Container ID
    pub id: String,
}

pub fn run(args: &DeleteArgs, ctx: &Ctx) -> Result<()> {
    validate_id(&args.id)?;
    if args.force && !ctx.container_dir(&args.id).exists() {
        // runc: deleting a container that is already gone is not an error with --force.
        return crate::snapshot::release(ctx, &args.id);
    }
    let (_lock, mut container) = ctx.load_locked(&args.id)?;
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
    container
        .delete(args.force)
        .with_context(|| format!("cannot delete container {:?}", args.id))?;
    // The rootfs clone of a container started from a snapshot.
    crate::snapshot::release(ctx, &args.id)
}
