//! `nvbind man --output-dir DIR` (hidden; the package build runs it): one man page for nvbind
//! and one for every verb and subcommand (`nvbind-create.8`, `nvbind-cdi-generate.8`, ...),
//! generated from the clap definitions the parser uses.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing)
    #[arg(long, value_name = "DIR")]
    pub output_dir: PathBuf,
    /// Date printed in the pages' footer (default: $SOURCE_DATE_EPOCH as YYYY-MM-DD, so two
    /// builds of one commit give the same bytes; else today)
    #[arg(long)]
    pub date: Option<String>,
}

/// The section runc's pages use: commands for the system administrator.
pub const SECTION: &str = "8";

/// `cli` is the whole command line (`Cli::command()`), handed down by main.
pub fn run(args: &ManArgs, mut cli: clap::Command) -> Result<()> {
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("cannot create {}", args.output_dir.display()))?;
    // An empty date shifts the footer fields in clap_mangen's .TH line, so there is always one.
    let date = args
        .date
        .clone()
        .or_else(source_date)
        .unwrap_or_else(|| chrono::Utc::now().format("%Y-%m-%d").to_string());
    // `-v` prints three lines (src/cli.rs); the page's VERSION section takes the number only.
    cli = cli.version(env!("CARGO_PKG_VERSION"));
    cli.build();
    let written = write_pages(&cli, &args.output_dir, &date)?;
    println!("{written} pages in {}", args.output_dir.display());
    Ok(())
}

/// $SOURCE_DATE_EPOCH (reproducible-builds.org) as a calendar date.
fn source_date() -> Option<String> {
    let secs: i64 = std::env::var("SOURCE_DATE_EPOCH").ok()?.parse().ok()?;
    chrono::DateTime::from_timestamp(secs, 0).map(|d| d.format("%Y-%m-%d").to_string())
}

/// Writes the page of `cmd` and, recursively, of its visible subcommands; returns the count.
/// A subcommand's page is named after its path (`nvbind-cdi-generate`), as git's and podman's
/// are, and its synopsis shows that path.
pub fn write_pages(cmd: &clap::Command, dir: &Path, date: &str) -> Result<usize> {
    let mut n = 0;
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let page = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section(SECTION)
        .date(date)
        .source(format!("nvbind {}", env!("CARGO_PKG_VERSION")))
        .manual("nvbind manual");
    let mut text = Vec::new();
    page.render(&mut text)
        .with_context(|| format!("cannot render the page of {name}"))?;
    let path = dir.join(format!("{name}.{SECTION}"));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    n += 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        n += write_pages(sub, dir, date)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_version_section_is_the_number() {
        let dir = std::env::temp_dir().join(format!("nvbind-man-test-{}", std::process::id()));
        let args = super::ManArgs {
            output_dir: dir.clone(),
            date: Some("2026-01-01".into()),
        };
        super::run(&args, crate::cli::Cli::command()).unwrap();
        let page = std::fs::read_to_string(dir.join("nvbind.8")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let version = page.split(".SH VERSION\n").nth(1).unwrap();
        assert_eq!(
            version.lines().next(),
            Some(concat!("v", env!("CARGO_PKG_VERSION"))),
            "{page}"
        );
    }
}
