//! The OCI hook subcommands: `prestart` (also `create-runtime`, and the
//! `nvidia-container-runtime-hook prestart` that dockerd runs for `--gpus`),
//! `update-ldcache` and `create-symlinks`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use nvbind_cdi::apply::RealHost;
use nvbind_cdi::requests::INJECTED_ANNOTATION;

use crate::args::Args;
use crate::container::Container;
use crate::ldcache;
use crate::live::{self, RulesOutcome, Target};
use crate::options::{InjectOptions, ENV_LDCONFIG};
use crate::plan::LivePlan;
use crate::resolve;
use crate::rootfs::Root;
use crate::symlinks::{self, Link};
use crate::warning::warn;

/// Prints what the live injection could not do.
pub fn report(r: &live::Report) {
    for w in &r.warnings {
        warn(w);
    }
    if let RulesOutcome::NotWritten { why, lines } = &r.rules {
        warn(&format!(
            "device cgroup rules not added ({why}); the container needs: {}",
            lines.join("; ")
        ));
    }
}

/// `prestart` / `create-runtime`: inject the container's requested devices into it.
pub fn prestart(mut args: Args) -> Result<()> {
    let opts = InjectOptions::take(&mut args)?;
    args.finish()?;
    let container = Container::read(std::io::stdin().lock())?;
    let annotated = |a: Option<&std::collections::HashMap<String, String>>| {
        a.is_some_and(|a| a.contains_key(INJECTED_ANNOTATION))
    };
    if annotated(container.config.annotations().as_ref())
        || annotated(container.state.annotations().as_ref())
    {
        // The nvbind runtime already applied these requests while creating the container.
        return Ok(());
    }
    let Some(resolution) = resolve::resolver(&opts.sources)?.resolve(&container.config)? else {
        return Ok(());
    };
    for w in &resolution.warnings {
        warn(w);
    }
    let Some(pid) = container.pid() else {
        bail!("the container state on stdin has no pid; run nvbind-hook as a prestart or createRuntime hook");
    };
    let plan = LivePlan::new(&resolution.edits, &container.config, &RealHost)?;
    if plan.is_empty() {
        return Ok(());
    }
    let ldconfig = ldcache::find_ldconfig(opts.ldconfig.as_deref())?;
    let target = Target {
        rootfs: container.rootfs.clone(),
        pid: Some(pid),
        state_json: container.raw_state.clone(),
    };
    let r = live::apply(&plan, &target, &ldconfig).with_context(|| {
        format!(
            "injecting {} into container {}",
            resolution.names_line(),
            container.state.id()
        )
    })?;
    report(&r);
    Ok(())
}

/// `update-ldcache --folder DIR...`: refresh the container's linker cache. Runs where the
/// runtime runs a createContainer hook: in the container's mount namespace, before
/// pivot_root, so the rootfs path from the bundle shows the container's mounts.
pub fn update_ldcache(mut args: Args) -> Result<()> {
    let folders: Vec<PathBuf> = args
        .values("--folder")?
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let explicit = args
        .value("--ldconfig-path")?
        .or(args.value("--ldconfig")?)
        .or_else(|| std::env::var(ENV_LDCONFIG).ok())
        .map(PathBuf::from);
    args.finish()?;
    let container = Container::read(std::io::stdin().lock())?;
    let ldconfig = ldcache::find_ldconfig(explicit.as_deref())?;
    let root = Root::open(&container.rootfs)?;
    ldcache::update(&root, &folders, &ldconfig)?;
    Ok(())
}

/// `create-symlinks --link TARGET::LINK...`: make links inside the rootfs.
pub fn create_symlinks(mut args: Args) -> Result<()> {
    let links = args
        .values("--link")?
        .iter()
        .map(|l| Link::parse(l))
        .collect::<Result<Vec<_>, _>>()?;
    args.finish()?;
    let container = Container::read(std::io::stdin().lock())?;
    let root = Root::open(&container.rootfs)?;
    let outcomes = symlinks::create(&root, &links)?;
    for w in symlinks::kept_warnings(&links, &outcomes) {
        warn(&w);
    }
    Ok(())
}

/// `resolve [--bundle DIR]`: print what the bundle's requests resolve to, as JSON (what
/// `nvbind cdi resolve` prints for the same bundle and environment).
pub fn resolve_bundle(mut args: Args) -> Result<()> {
    let opts = InjectOptions::take(&mut args)?;
    let bundle = PathBuf::from(args.value("--bundle")?.unwrap_or_else(|| ".".into()));
    args.finish()?;
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let spec: oci_spec::runtime::Spec = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a valid OCI config", path.display()))?;
    let Some(r) = resolve::resolver(&opts.sources)?.resolve(&spec)? else {
        println!("{{}}");
        return Ok(());
    };
    for w in &r.warnings {
        warn(w);
    }
    println!("{}", serde_json::to_string_pretty(&r.to_json())?);
    Ok(())
}
