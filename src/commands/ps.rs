use std::process::Command;

use anyhow::{bail, Context, Result};
use libcgroups::common::CgroupManager;

use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
pub struct PsArgs {
    /// Output format: table (ps -ef filtered to the container) or json (a list of PIDs)
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Container ID
    pub id: String,
    /// Options passed to ps(1) for the table format (default: -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_options: Vec<String>,
}

pub fn run(args: &PsArgs, ctx: &Ctx) -> Result<()> {
    let container = ctx.load(&args.id)?;
    let pids: Vec<i32> = ctx
        .cgroup_manager(&container)?
        .get_all_pids()
        .with_context(|| format!("cannot list the processes of {:?}", args.id))?
        .iter()
        .map(|p| p.as_raw())
        .collect();
    if args.format == "json" {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(());
    }
    let opts = if args.ps_options.is_empty() {
        vec!["-ef".to_string()]
    } else {
        args.ps_options.clone()
    };
    let out = Command::new("ps")
        .args(&opts)
        .output()
        .context("cannot run ps")?;
    if !out.status.success() {
        bail!(
            "ps {} failed: {}",
            opts.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .context("ps output has no PID column; include it in the ps options")?;
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(())
}
