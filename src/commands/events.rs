use anyhow::{Context, Result};

use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Seconds between stats samples
    #[arg(long, default_value_t = 5)]
    pub interval: u32,
    /// Print one stats sample and exit
    #[arg(long)]
    pub stats: bool,
    /// Container ID
    pub id: String,
}

pub fn run(args: &EventsArgs, ctx: &Ctx) -> Result<()> {
    if args.interval == 0 {
        anyhow::bail!("--interval must be at least 1 second");
    }
    let mut c = ctx.load(&args.id)?;
    crate::rootless::require_cgroup(&c)?;
    c.events(args.interval, args.stats)
        .with_context(|| format!("cannot read events of container {:?}", args.id))
}
