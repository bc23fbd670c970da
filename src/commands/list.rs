use std::fs;

use anyhow::{Context, Result};
use libcontainer::container::state::State;

use crate::runtime::{load_state_retrying, Ctx};
use nvbind::state::{table, StateDoc};

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Output format
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Print only the container IDs
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(args: &ListArgs, ctx: &Ctx) -> Result<()> {
    let mut docs = Vec::new();
    let entries =
        fs::read_dir(&ctx.root).with_context(|| format!("cannot read {}", ctx.root.display()))?;
    for entry in entries {
        let dir = entry?.path();
        if !State::file_path(&dir).exists() {
            continue;
        }
        // A container deleted while we list is simply not listed.
        match load_state_retrying(&dir) {
            Ok(c) => docs.push(StateDoc::of(&c)),
            Err(e) if dir.exists() => {
                tracing::warn!("skipping {}: {e:#}", dir.display());
            }
            Err(_) => {}
        }
    }
    docs.sort_by(|a, b| a.id.cmp(&b.id));
    if args.quiet {
        for d in &docs {
            println!("{}", d.id);
        }
    } else if args.format == "json" {
        println!("{}", serde_json::to_string(&docs)?);
    } else {
        print!("{}", table(&docs));
    }
    Ok(())
}
