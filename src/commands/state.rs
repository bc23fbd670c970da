use anyhow::Result;

use crate::lifecycle::report::state_of;
use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
pub struct StateArgs {
    /// Container ID
    pub id: String,
}

pub fn run(args: &StateArgs, ctx: &Ctx) -> Result<()> {
    let doc = state_of(ctx, &args.id)?;
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
