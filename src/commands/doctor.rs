//! `nvbind doctor`: checks that this host is ready for nvbind; exit status 1 when a check fails.
//!
//! Check that this host is ready for nvbind and say what to do where it is not: cgroup mode and
//! driver, device filtering (eBPF on cgroup v2), seccomp, user namespaces for rootless
//! containers, CRIU for checkpoint, the GPU driver and NVML, the CDI specs (valid, owned by
//! root, matching the devices and files on the host now), each installed engine (nvbind
//! registered, its path, CDI, the default runtime), nvbind-hook for docker --gpus, and the
//! protection of the binary against /proc/self/exe overwrite. Each check is ok, warn or fail
//! with a one-line remedy. Exit status: 0 when nothing fails (warnings allowed), 1 when a check
//! fails.
//!
//! The paragraph above was this struct's clap `long_about`, never shown: the verb's one-line
//! doc comment (src/cli.rs) sets long_about to None after it. With the verbs' arguments deferred
//! (issue 19) the struct's attributes come last and it would show, so it moved here and --help
//! stays as it was; to show it, give the verb this text as its long_about.

use std::io::Write as _;

use anyhow::{Context, Result};
use clap::ValueEnum;

use crate::doctor::{self, Status, SystemHost};

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoctorFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Output format: text for people, json for tools
    #[arg(long, value_enum, default_value_t = DoctorFormat::Text)]
    pub format: DoctorFormat,
}

/// Returns the exit status: 1 when a check failed.
pub fn run(args: &DoctorArgs) -> Result<u8> {
    let checks = doctor::run(&SystemHost::new());
    let text = match args.format {
        DoctorFormat::Text => doctor::text(&checks),
        DoctorFormat::Json => {
            let mut t = serde_json::to_string_pretty(&doctor::json(&checks))?;
            t.push('\n');
            t
        }
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")?;
    Ok(u8::from(doctor::worst(&checks) == Status::Fail))
}
