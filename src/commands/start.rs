use anyhow::{Context, Result};

use crate::lifecycle::guard::{ensure, Action};
use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// Container ID
    pub id: String,
}

pub fn run(args: &StartArgs, ctx: &Ctx) -> Result<()> {
    let (_lock, mut container) = ctx.load_locked(&args.id)?;
    ensure(&container, Action::Start)?;
    container
        .start()
        .with_context(|| format!("cannot start container {:?}", args.id))
}
