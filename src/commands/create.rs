use anyhow::Result;

use crate::create::{create_container, CreateOpts};
use crate::runtime::Ctx;

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub opts: CreateOpts,
}

pub fn run(args: &CreateArgs, ctx: &Ctx) -> Result<()> {
    create_container(ctx, &args.opts, true).map(|_| ())
}
