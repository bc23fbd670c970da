//! nvbind-hook: GPU injection for engines that keep runc, crun or LXC.
//!
//! One binary, subcommands:
//! - `prestart` / `create-runtime`: OCI hook; injects the container's requested CDI devices
//!   into the running container (also what `nvidia-container-runtime-hook prestart` does
//!   when dockerd runs this binary under that name for `docker run --gpus`);
//! - `update-ldcache --folder DIR...` and `create-symlinks --link TARGET::LINK...`: the
//!   createContainer hooks generated CDI specs reference;
//! - `resolve`: print what a bundle's requests resolve to (as `nvbind cdi resolve` does);
//! - `lxc`: an `lxc.hook.mount` hook; `lxc-devices` an `lxc.hook.start-host` hook adding the
//!   device rules at each start; `lxc-config` prints the container config lines.
//!
//! An unknown subcommand is a warning and exit 0, so an older binary does not break a newer
//! spec. Any other failure is one line on stderr and exit 1. This is the one place that
//! prints errors.

// The hook starts itself (crate nvbind-rt: std's start less its main-thread stack probe, which
// reads /proc/self/maps; an engine runs the hook for every container); the condition is
// nvbind_rt::entry!'s.
#![cfg_attr(all(not(test), target_os = "linux", target_env = "gnu"), no_main)]

mod args;
mod cgroup;
mod commands;
mod container;
mod devbpf;
mod error;
mod live;
mod lxc;
mod lxc_config;
mod lxc_devices;
mod mountapi;
mod nsenter;
mod options;
mod plan;
mod resolve;
mod warning;

use std::path::Path;

use crate::args::Args;
use crate::warning::warn;

/// The name dockerd looks for in PATH to enable `--gpus`.
pub const DOCKER_HOOK_NAME: &str = "nvidia-container-runtime-hook";

const USAGE: &str = "usage: nvbind-hook SUBCOMMAND [OPTIONS]
  prestart | create-runtime   OCI hook: inject the requested GPUs (state JSON on stdin)
      [--cdi-spec-dir DIR]... [--driver-root DIR]
  update-ldcache --folder DIR...          OCI createContainer hook: the container's
                                          ld.so.cache, written by nvbind (no ldconfig)
  create-symlinks --link TARGET::LINK...  OCI createContainer hook: links in the rootfs
  resolve [--bundle DIR] [--cdi-spec-dir DIR]... [--driver-root DIR]
                                          print what the bundle's requests resolve to (JSON)
  lxc [--device NAME]...                  lxc.hook.mount hook
  lxc-config --device NAME...             print the LXC config lines for these devices
  lxc-devices [--device NAME]...          lxc.hook.start-host hook: device rules at each start
environment: NVBIND_CDI_SPEC_DIRS (colon-separated), NVBIND_DRIVER_ROOT, NVBIND_CDI_STALE_SPECS";

/// What to run: the subcommand and its arguments.
fn dispatch(argv: &[String]) -> Option<(String, Vec<String>)> {
    let argv0 = argv.first().map(|a| {
        Path::new(a)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let mut rest: Vec<String> = argv.get(1..).unwrap_or(&[]).to_vec();
    if argv0.as_deref() == Some(DOCKER_HOOK_NAME) {
        // NVIDIA's hook takes Go-style flags before the stage (`-debug`, `-config FILE`);
        // ours has none, so they are skipped.
        let mut stage = None;
        let mut it = rest.iter();
        while let Some(a) = it.next() {
            if a == "-config" || a == "--config" {
                it.next();
            } else if !a.starts_with('-') {
                stage = Some(a.clone());
                break;
            }
        }
        return stage.map(|s| (s, Vec::new()));
    }
    if rest.is_empty() {
        return None;
    }
    let sub = rest.remove(0);
    Some((sub, rest))
}

fn run(sub: &str, rest: Vec<String>) -> anyhow::Result<()> {
    let args = Args::new(sub, rest);
    match sub {
        "prestart" | "create-runtime" | "createRuntime" => commands::prestart(args),
        "update-ldcache" => commands::update_ldcache(args),
        "create-symlinks" => commands::create_symlinks(args),
        "resolve" => commands::resolve_bundle(args),
        "lxc" => lxc::run(args),
        "lxc-config" => lxc::config(args),
        "lxc-devices" => lxc_devices::run(args),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        "--version" | "version" => {
            println!("nvbind-hook {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        // NVIDIA's hook is also registered for these stages; nothing to do for them.
        "poststart" | "poststop" => Ok(()),
        other => {
            warn(&format!(
                "unknown subcommand {other:?} ignored (this nvbind-hook is older than the spec that calls it?)"
            ));
            Ok(())
        }
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string().replace('\n', " ");
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

nvbind_rt::entry!(hook_main);

/// The exit status: 0, 1 on a failure, 2 for a command line that names no subcommand.
fn hook_main() -> u8 {
    let argv: Vec<String> = std::env::args().collect();
    let Some((sub, rest)) = dispatch(&argv) else {
        eprintln!("{USAGE}");
        return 2;
    };
    match run(&sub, rest) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("nvbind-hook {sub}: {}", one_line(&e));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn docker_name_acts_as_prestart() {
        assert_eq!(
            dispatch(&v(&["/usr/bin/nvidia-container-runtime-hook", "prestart"])),
            Some(("prestart".into(), vec![]))
        );
        assert_eq!(
            dispatch(&v(&[
                "nvidia-container-runtime-hook",
                "-debug",
                "-config",
                "/etc/x.toml",
                "prestart"
            ])),
            Some(("prestart".into(), vec![]))
        );
        assert_eq!(
            dispatch(&v(&["nvbind-hook", "update-ldcache", "--folder", "/x"])),
            Some(("update-ldcache".into(), v(&["--folder", "/x"])))
        );
        assert_eq!(dispatch(&v(&["nvbind-hook"])), None);
    }

    #[test]
    fn unknown_subcommand_is_not_an_error() {
        assert!(run("from-the-future", v(&["--x"])).is_ok());
    }
}
