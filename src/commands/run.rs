use anyhow::Result;

use crate::lifecycle::foreground;
use crate::options::CreateOpts;
use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub opts: CreateOpts,
    /// Return once the container is started instead of waiting for it
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the stopped container (do not delete it) after it exits
    #[arg(long)]
    pub keep: bool,
}

pub fn run(args: &RunArgs, ctx: &Ctx) -> Result<u8> {
    foreground::run(ctx, &args.opts, args.detach, args.keep)
}
