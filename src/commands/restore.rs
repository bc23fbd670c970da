//! `restore`: runc's flags; recreates a checkpointed container under ID from `--bundle` and
//! `--image-path` (the work is in `crate::criu::restore`). In the foreground it waits for the
//! restored init and removes the container afterwards, like `run`.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::container::{Container, ContainerStatus};
use nix::sys::signalfd::SigSet;
use nvbind::state_doc::status_name;

use crate::bundle::{parse_spec, Bundle};
use crate::criu::restore::{restore, RestoreOpts};
use crate::criu::{Criu, CriuFlags, DESCRIPTORS_JSON};
use crate::lifecycle::delete::remove_exited;
use crate::lifecycle::foreground::forward_signals_until_exit;
use crate::lifecycle::halfmade::Intent;
use crate::snapshot;
use crate::state_root::id::validate_id;
use crate::state_root::owner::foreign;
use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
// Engines repeat flags (podman 4.3 passes --leave-running twice); runc accepts that.
#[command(args_override_self = true)]
pub struct RestoreArgs {
    /// Path to the bundle directory the container was created from
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Directory holding the CRIU image files
    #[arg(long, value_name = "DIR", default_value = "checkpoint")]
    pub image_path: PathBuf,
    /// Directory for CRIU's log and work files (default: the image directory)
    #[arg(long, value_name = "DIR")]
    pub work_path: Option<PathBuf>,
    /// Return once the container is restored instead of waiting for it
    #[arg(short, long)]
    pub detach: bool,
    /// Write the restored init's PID to this file
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when the container has a terminal
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility (CRIU restores the mount namespace itself)
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility
    #[arg(long)]
    pub no_subreaper: bool,
    #[command(flatten)]
    pub criu: CriuFlags,
    /// Roll the rootfs back to this snapshot before restoring the processes (nvbind extension)
    #[arg(long, value_name = "NAME")]
    pub snapshot: Option<String>,
    /// Container ID
    pub id: String,
}

pub fn run(args: &RestoreArgs, ctx: &Ctx, criu: Option<&Path>) -> Result<u8> {
    validate_id(&args.id)?;
    if let Some(name) = &args.snapshot {
        snapshot::validate_name(name)?;
    }
    let criu = Criu::find_cached(criu, Some(&ctx.root))?;
    let bundle = Bundle::load(&args.bundle)?;
    if !args.image_path.join(DESCRIPTORS_JSON).exists() {
        bail!(
            "{} holds no checkpoint (no {DESCRIPTORS_JSON}); pass the --image-path that \
             checkpoint wrote",
            args.image_path.display()
        );
    }
    if let Some(sock) = &args.console_socket {
        if !sock.exists() {
            bail!("--console-socket {} does not exist", sock.display());
        }
    }
    let all = SigSet::all();
    if !args.detach {
        all.thread_block().context("cannot block signals")?;
    }

    // The same lock as create's, so a create and a restore of one ID cannot both win.
    let id_lock = ctx.lock_id(&args.id)?;
    let dir = ctx.container_dir(&args.id);
    if let Some(theirs) = foreign(&ctx.root, &args.id) {
        bail!(
            "cannot restore into container {:?}: {theirs}; choose another ID",
            args.id
        );
    }
    if dir.exists() {
        let what = match ctx.load(&args.id) {
            Ok(c) => status_name(c.status()),
            Err(_) => "present",
        };
        bail!(
            "cannot restore into container {:?}: it already exists ({what}); delete it or \
             choose another ID",
            args.id
        );
    }
    let config = fs::read(bundle.dir.join("config.json"))?;
    let mut spec = parse_spec(&config)?;
    // A bundle that starts from a snapshot gets the clone it had (kept by checkpoint).
    let had_clone = snapshot::has_clone(ctx, &args.id);
    snapshot::prepare_rootfs_for_bundle(ctx, &args.id, &bundle.dir, &mut spec, None)?;
    let bundle_dir = bundle.dir.clone();
    let rootfs = snapshot::spec_rootfs(&spec, &bundle_dir)?;
    if let Some(name) = &args.snapshot {
        snapshot::Store::for_rootfs(&rootfs)?
            .rollback(name, false)
            .with_context(|| format!("cannot roll the rootfs back to snapshot {name:?}"))?;
    }

    // nvbind's claim on the ID, before its directory exists (see lifecycle::halfmade).
    Intent::for_restore(ctx, &args.id, &bundle_dir).record(ctx)?;
    if let Err(e) = fs::DirBuilder::new().mode(0o700).create(&dir) {
        Intent::forget(ctx, &args.id);
        return Err(e).with_context(|| format!("cannot create {}", dir.display()));
    }
    let opts = RestoreOpts {
        image_path: args.image_path.clone(),
        work_path: args.work_path.clone(),
        flags: args.criu,
        console_socket: args.console_socket.clone(),
        systemd_cgroup: ctx.systemd_cgroup,
    };
    let recorded = restore(&criu, &args.id, &dir, &spec, &bundle_dir, &rootfs, &opts)
        .map_err(anyhow::Error::from)
        .and_then(|pid| record(ctx, &args.id, &dir, &bundle_dir, &spec, pid).map(|c| (pid, c)));
    let (pid, mut container) = match recorded {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            Intent::forget(ctx, &args.id);
            if !had_clone {
                // A clone made for this attempt goes with it; a kept one stays.
                let _ = snapshot::release(ctx, &args.id);
            }
            return Err(e.context(format!("cannot restore container {:?}", args.id)));
        }
    };
    drop(id_lock);
    if let Some(f) = &args.pid_file {
        nvbind_atomic::write_atomic(f, pid.to_string().as_bytes(), 0o644)
            .with_context(|| format!("cannot write --pid-file {}", f.display()))?;
    }
    if args.detach {
        return Ok(0);
    }
    let code = forward_signals_until_exit(nix::unistd::Pid::from_raw(pid), &all, &|| {});
    remove_exited(ctx, &mut container)?;
    code
}

/// Writes the state libcontainer reads back (`state`, `kill`, `delete` work as for any
/// container).
fn record(
    ctx: &Ctx,
    id: &str,
    dir: &Path,
    bundle: &Path,
    spec: &oci_spec::runtime::Spec,
    pid: i32,
) -> Result<Container> {
    let mut c = Container::new(id, ContainerStatus::Creating, Some(pid), bundle, dir)?;
    // Created first: that stamps the creation time.
    c.set_status(ContainerStatus::Created);
    c.set_status(ContainerStatus::Running)
        .set_systemd(ctx.systemd_cgroup)
        .set_annotations(spec.annotations().clone())
        .set_creator(nix::unistd::geteuid().as_raw());
    c.save()?;
    // The spec it runs with (a snapshot clone's root.path): what exec and checkpoint read.
    c.save_spec(spec)?;
    Ok(c)
}
