//! `snapshot create|list|restore|delete`: rootfs snapshots of a container (see
//! `crate::snapshot`).

use anyhow::{Context, Result};
use libcontainer::container::ContainerStatus;

use crate::lifecycle::guard::{ensure, Action};
use crate::snapshot::store::{default_name, Meta};
use crate::snapshot::{self, backend_named, container_rootfs, Kind, Store};
use crate::state_root::Ctx;

// Each subcommand's arguments are built only when it is the one invoked (see Command in
// src/cli.rs).
#[derive(clap::Subcommand, Debug)]
#[command(defer = true)]
pub enum SnapshotCmd {
    /// Snapshot the container's rootfs (a running container is frozen for the instant)
    Create {
        /// Container ID
        id: String,
        /// Snapshot name (default: snap-<UTC time>)
        name: Option<String>,
        /// Keep only the N newest snapshots afterwards
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// Backend; default: chosen by the filesystem the rootfs is on
        #[arg(long, value_enum)]
        backend: Option<Kind>,
    },
    /// List the snapshots of the container's rootfs, oldest first
    List {
        /// Container ID
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Roll the rootfs back to a snapshot (the container must be stopped, or paused with
    /// --force)
    Restore {
        /// Container ID
        id: String,
        name: String,
        /// Roll back a paused container's rootfs in place
        #[arg(long)]
        force: bool,
    },
    /// Delete a snapshot
    Delete {
        /// Container ID
        id: String,
        name: String,
    },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

pub fn run(cmd: &SnapshotCmd, ctx: &Ctx) -> Result<()> {
    match cmd {
        SnapshotCmd::Create {
            id,
            name,
            keep,
            backend,
        } => create(ctx, id, name.as_deref(), *keep, *backend),
        SnapshotCmd::List { id, format } => list(ctx, id, *format),
        SnapshotCmd::Restore { id, name, force } => restore(ctx, id, name, *force),
        SnapshotCmd::Delete { id, name } => {
            snapshot::validate_name(name)?;
            let (_lock, container) = ctx.load_locked(id)?;
            let (_, rootfs) = container_rootfs(&container)?;
            Store::for_rootfs(&rootfs)?
                .delete(name)
                .with_context(|| format!("cannot delete snapshot {name:?}"))
        }
    }
}

fn create(
    ctx: &Ctx,
    id: &str,
    name: Option<&str>,
    keep: Option<usize>,
    backend: Option<Kind>,
) -> Result<()> {
    if let Some(n) = name {
        snapshot::validate_name(n)?;
    }
    let (_lock, mut container) = ctx.load_locked(id)?;
    let (_, rootfs) = container_rootfs(&container)?;
    let store = Store::for_rootfs(&rootfs)?;
    let name = name
        .map(str::to_string)
        .unwrap_or_else(|| default_name(&store));
    store.check_new_name(&name)?;
    let backend = match backend {
        Some(kind) => backend_named(kind, &rootfs)?,
        None => snapshot::backend_for(&rootfs)?,
    };
    // Freeze a running container so the snapshot is of one instant.
    let freeze = container.status() == ContainerStatus::Running;
    if freeze {
        container
            .pause()
            .with_context(|| format!("cannot freeze container {id:?}"))?;
    }
    let made = store.create_with(backend.as_ref(), &name, id, None);
    if freeze {
        container
            .resume()
            .with_context(|| format!("cannot thaw container {id:?}"))?;
    }
    let meta = made.with_context(|| format!("cannot snapshot container {id:?}"))?;
    println!("{}", meta.name);
    if let Some(keep) = keep {
        for gone in store.prune(keep)? {
            eprintln!("deleted old snapshot {gone}");
        }
    }
    Ok(())
}

fn list(ctx: &Ctx, id: &str, format: Format) -> Result<()> {
    let (_, rootfs) = container_rootfs(&ctx.load(id)?)?;
    let all = Store::for_rootfs(&rootfs)?.list()?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
        Format::Table => print!("{}", table(&all)),
    }
    Ok(())
}

fn table(all: &[Meta]) -> String {
    let mut out = format!(
        "{:<24} {:<8} {:<32} CHECKPOINT\n",
        "NAME", "BACKEND", "CREATED"
    );
    for m in all {
        out.push_str(&format!(
            "{:<24} {:<8} {:<32} {}\n",
            m.name,
            m.backend,
            m.created,
            m.checkpoint
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ));
    }
    out
}

fn restore(ctx: &Ctx, id: &str, name: &str, force: bool) -> Result<()> {
    snapshot::validate_name(name)?;
    let (_lock, container) = ctx.load_locked(id)?;
    ensure(&container, Action::Rollback { force })?;
    let in_place = container.status() != ContainerStatus::Stopped;
    let (_, rootfs) = container_rootfs(&container)?;
    Store::for_rootfs(&rootfs)?
        .rollback(name, in_place)
        .with_context(|| format!("cannot roll container {id:?} back to snapshot {name:?}"))?;
    Ok(())
}
