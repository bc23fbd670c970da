use anyhow::Result;

use crate::lifecycle::delete::delete;
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
    delete(ctx, &args.id, args.force)
}
