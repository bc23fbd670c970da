use std::collections::BTreeSet;
use std::fs;

use anyhow::{Context, Result};

use crate::lifecycle::halfmade::{inspect, Entry, Intent, INTERNAL_DIRS};
use crate::state_root::id::validate_id;
use crate::state_root::Ctx;
use crate::warning::warn;
use nvbind::state_doc::{table, StateDoc};

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
    let entries =
        fs::read_dir(&ctx.root).with_context(|| format!("cannot read {}", ctx.root.display()))?;
    let mut ids: BTreeSet<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !INTERNAL_DIRS.contains(&name.as_str()))
        .collect();
    // Creates that have not made their directory yet (or were killed before).
    ids.extend(Intent::ids(ctx));
    let mut docs = Vec::new();
    for id in &ids {
        // One container that cannot be read must not hide all the others.
        match validate_id(id).and_then(|_| inspect(ctx, id)) {
            // Deleted while we list.
            Ok(Entry::Missing) => {}
            Ok(Entry::Complete(c)) => docs.push(StateDoc::of(&c)),
            Ok(Entry::HalfMade(half)) => {
                if !half.in_progress() {
                    warn(half.warning());
                }
                docs.push(half.doc());
            }
            Err(e) => warn(format!("skipping {}: {e:#}", ctx.root.join(id).display())),
        }
    }
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
