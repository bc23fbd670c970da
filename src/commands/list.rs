use std::fs;

use anyhow::{Context, Result};
use libcontainer::container::state::State;

use crate::commands::state::StateDoc;
use crate::runtime::{load_state_retrying, Ctx};

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

fn table(docs: &[StateDoc]) -> String {
    let rows: Vec<[String; 6]> = docs
        .iter()
        .map(|d| {
            [
                d.id.clone(),
                d.pid.to_string(),
                crate::commands::state::status_name(d.status).to_string(),
                d.bundle.display().to_string(),
                d.created.clone(),
                d.owner.clone(),
            ]
        })
        .collect();
    let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}
