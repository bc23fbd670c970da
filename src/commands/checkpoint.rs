//! `checkpoint`: runc's flags; the dump itself is `crate::criu::dump`. With `--snapshot NAME`
//! (an nvbind extension) the rootfs is snapshotted while CRIU still holds the processes
//! frozen, so memory and files are from the same instant.

use std::path::PathBuf;

use anyhow::{Context, Result};
use libcontainer::container::ContainerStatus;

use crate::criu::dump::{dump, DumpOpts};
use crate::criu::{Criu, CriuFlags};
use crate::lifecycle::guard::{ensure, Action};
use crate::lifecycle::halfmade::Intent;
use crate::snapshot;
use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
// Engines repeat flags (podman 4.3 passes --leave-running twice); runc accepts that.
#[command(args_override_self = true)]
pub struct CheckpointArgs {
    /// Directory for the CRIU image files
    #[arg(long, value_name = "DIR", default_value = "checkpoint")]
    pub image_path: PathBuf,
    /// Directory for CRIU's log and work files (default: the image directory)
    #[arg(long, value_name = "DIR")]
    pub work_path: Option<PathBuf>,
    /// Keep the container running after the checkpoint
    #[arg(long)]
    pub leave_running: bool,
    #[command(flatten)]
    pub criu: CriuFlags,
    /// Also snapshot the rootfs under NAME, while the processes are frozen (nvbind extension;
    /// `restore --snapshot NAME` rolls back to it)
    #[arg(long, value_name = "NAME")]
    pub snapshot: Option<String>,
    /// Container ID
    pub id: String,
}

pub fn run(args: &CheckpointArgs, ctx: &Ctx, criu: Option<&std::path::Path>) -> Result<()> {
    if let Some(name) = &args.snapshot {
        snapshot::validate_name(name)?;
    }
    let criu = Criu::find_cached(criu, Some(&ctx.root))?;
    tracing::debug!(
        "checkpoint with criu {}",
        crate::criu::version_string(criu.version)
    );
    let (lock, mut container) = ctx.load_locked(&args.id)?;
    ensure(&container, Action::Checkpoint)?;
    let (spec, rootfs) = snapshot::container_rootfs(&container)?;
    let store = match &args.snapshot {
        Some(name) => {
            let store = snapshot::Store::for_rootfs(&rootfs)?;
            store.check_new_name(name)?;
            Some((store, name.clone()))
        }
        None => None,
    };
    let opts = DumpOpts {
        image_path: args.image_path.clone(),
        work_path: args.work_path.clone(),
        leave_running: args.leave_running,
        flags: args.criu,
    };
    let id = args.id.clone();
    let image = args.image_path.clone();
    dump(&criu, &container, &spec, &rootfs, &opts, || {
        if let Some((store, name)) = &store {
            store.create(name, &id, Some(&image))?;
        }
        Ok(())
    })
    .with_context(|| format!("cannot checkpoint container {:?}", args.id))?;
    if !args.leave_running {
        // CRIU killed the processes after the dump; the container is gone, as with runc.
        container.set_status(ContainerStatus::Stopped);
        let record = Intent::hold(ctx, &args.id);
        container
            .save()
            .and_then(|_| container.delete(true))
            .with_context(|| {
                format!(
                    "container {:?} was checkpointed but its state could not be removed",
                    args.id
                )
            })?;
        // An ID's lock is never taken under a container's.
        drop(lock);
        Intent::forget_deleted(ctx, &args.id)?;
        drop(record);
    }
    Ok(())
}
