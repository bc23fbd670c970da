use anyhow::{bail, Result};
pub use nvbind::state_doc::{status_name, StateDoc};

use crate::lifecycle::halfmade::{inspect, Entry};
use crate::state_root::Ctx;
use crate::warning::warn;

#[derive(clap::Args, Debug)]
pub struct StateArgs {
    /// Container ID
    pub id: String,
}

pub fn run(args: &StateArgs, ctx: &Ctx) -> Result<()> {
    let doc = match inspect(ctx, &args.id)? {
        Entry::Missing => bail!(
            "container {:?} does not exist under {}",
            args.id,
            ctx.root.display()
        ),
        Entry::Complete(container) => StateDoc::of(&container),
        // What a killed create or delete left: reported as far as it is known (an engine
        // that asks goes on to delete it), not an error.
        Entry::HalfMade(half) => {
            if !half.in_progress() {
                warn(half.warning());
            }
            half.doc()
        }
    };
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
