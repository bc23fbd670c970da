use anyhow::{bail, Context, Result};

use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// Container ID
    pub id: String,
}

pub fn run(args: &StartArgs, ctx: &Ctx) -> Result<()> {
    let (_lock, mut container) = ctx.load_locked(&args.id)?;
    if !container.can_start() {
        bail!(
            "cannot start container {:?}: it is {}, not created",
            args.id,
            crate::commands::state::status_name(container.status())
        );
    }
    container
        .start()
        .with_context(|| format!("cannot start container {:?}", args.id))
}
