use anyhow::Result;

use crate::lifecycle::create::create_container;
use crate::options::CreateOpts;
use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub opts: CreateOpts,
}

pub fn run(args: &CreateArgs, ctx: &Ctx) -> Result<()> {
    create_container(ctx, &args.opts, true).map(|_| ())
}
