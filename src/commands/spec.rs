use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use nvbind_atomic::write_atomic;

use crate::default_spec::{default_spec, to_json};
use crate::options::{GlobalOpts, Rootless};

#[derive(clap::Args, Debug)]
pub struct SpecArgs {
    /// Bundle directory to write config.json into
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write a spec for a rootless container (user namespace mapping the current user to 0)
    #[arg(long)]
    pub rootless: bool,
    /// Add nvbind's seccomp profile: allow by default, refuse with EPERM the syscalls a
    /// container has no use for and that reach the kernel's riskiest code (bpf, io_uring,
    /// userfaultfd, kexec, module loading, keyrings, new user namespaces). Without it the
    /// spec is what `runc spec` writes
    #[arg(long)]
    pub hardened: bool,
}

pub fn run(args: &SpecArgs, global: &GlobalOpts) -> Result<()> {
    let path = args.bundle.join("config.json");
    if path.exists() {
        bail!("{} already exists; remove it first", path.display());
    }
    if !args.bundle.is_dir() {
        bail!("bundle directory {} does not exist", args.bundle.display());
    }
    let rootless = args.rootless || global.rootless == Rootless::True;
    let json = to_json(&default_spec(rootless, args.hardened))?;
    write_atomic(&path, &json, 0o644).with_context(|| format!("cannot write {}", path.display()))
}
