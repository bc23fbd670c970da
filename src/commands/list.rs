use anyhow::Result;
use nvbind::state_doc::table;

use crate::lifecycle::report::list;
use crate::state_root::Ctx;

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
    let docs = list(ctx)?;
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
