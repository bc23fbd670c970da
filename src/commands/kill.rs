use anyhow::{Context, Result};
use libcontainer::signal::Signal;

use crate::lifecycle::guard::{ensure, Action};
use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
pub struct KillArgs {
    /// Send the signal to every process of the container, not only its init
    #[arg(short, long)]
    pub all: bool,
    /// Container ID
    pub id: String,
    /// Signal name (TERM, SIGTERM) or number
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

pub fn parse_signal(s: &str) -> Result<Signal> {
    Signal::try_from(s).map_err(|_| {
        anyhow::anyhow!("unknown signal {s:?}; use a name such as TERM or KILL, or a number")
    })
}

pub fn run(args: &KillArgs, ctx: &Ctx) -> Result<()> {
    let signal = parse_signal(&args.signal)?;
    let (_lock, mut container) = ctx.load_locked(&args.id)?;
    ensure(&container, Action::Kill { all: args.all })?;
    container
        .kill(signal, args.all)
        .with_context(|| format!("cannot signal container {:?}", args.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_parse_and_garbage_is_refused() {
        let name = |s: &str| format!("{:?}", parse_signal(s).unwrap());
        assert_eq!(name("KILL"), "Signal(SIGKILL)");
        assert_eq!(name("SIGTERM"), "Signal(SIGTERM)");
        assert_eq!(name("term"), "Signal(SIGTERM)");
        assert_eq!(name("10"), "Signal(SIGUSR1)");
        let e = parse_signal("NOPE").unwrap_err().to_string();
        assert!(e.contains("NOPE"), "{e}");
    }
}
