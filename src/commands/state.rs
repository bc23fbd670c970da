use anyhow::Result;
pub use nvbind::state::{status_name, StateDoc};

use crate::runtime::Ctx;

#[derive(clap::Args, Debug)]
pub struct StateArgs {
    /// Container ID
    pub id: String,
}

pub fn run(args: &StateArgs, ctx: &Ctx) -> Result<()> {
    let container = ctx.load(&args.id)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&StateDoc::of(&container))?
    );
    Ok(())
}
