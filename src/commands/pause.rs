use anyhow::{Context, Result};

use crate::lifecycle::guard::{ensure, Action};
use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
pub struct PauseArgs {
    /// Container ID
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct ResumeArgs {
    /// Container ID
    pub id: String,
}

pub fn run_pause(args: &PauseArgs, ctx: &Ctx) -> Result<()> {
    let (_lock, mut c) = ctx.load_locked(&args.id)?;
    ensure(&c, Action::Pause)?;
    crate::rootless::require_cgroup(&c)?;
    c.pause()
        .with_context(|| format!("cannot pause container {:?}", args.id))
}

pub fn run_resume(args: &ResumeArgs, ctx: &Ctx) -> Result<()> {
    let (_lock, mut c) = ctx.load_locked(&args.id)?;
    ensure(&c, Action::Resume)?;
    crate::rootless::require_cgroup(&c)?;
    c.resume()
        .with_context(|| format!("cannot resume container {:?}", args.id))
}
