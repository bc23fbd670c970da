//! The OCI hook subcommands: `prestart` (also `create-runtime`, and the
//! `nvidia-container-runtime-hook prestart` that dockerd runs for `--gpus`),
//! `update-ldcache` and `create-symlinks`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use nvbind_cdi::apply::RealHost;
use nvbind_cdi::requests::INJECTED_ANNOTATION;

use crate::args::Args;
use crate::container::Container;
use crate::live::{self, RulesOutcome, Target};
use crate::options::InjectOptions;
use crate::plan::LivePlan;
use crate::resolve;
use crate::warning::warn;
use nvbind_cdi::ldso::{self, LdRequest};
use nvbind_cdi::rootfs::Root;
use nvbind_cdi::steps::{self, Link};

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
    let target = Target {
        rootfs: container.rootfs.clone(),
        pid: Some(pid),
        state_json: container.raw_state.clone(),
    };
    let r = live::apply(&plan, &target).with_context(|| {
        format!(
            "injecting {} into container {}",
            resolution.names_line(),
            container.state.id()
        )
    })?;
    report(&r);
    Ok(())
}

/// `update-ldcache --folder DIR...`: refresh the container's linker cache, written by
/// nvbind itself (no ldconfig is run). Runs where the runtime runs a createContainer hook:
/// in the container's mount namespace, before pivot_root, so the rootfs path from the
/// bundle shows the container's mounts. `--ldconfig-path` (nvidia-ctk's) is accepted and
/// unused. The host driver's version, for CUDA forward compatibility, is that of the
/// libcuda mounted in the folders.
pub fn update_ldcache(mut args: Args) -> Result<()> {
    let folders: Vec<PathBuf> = args
        .values("--folder")?
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let _ = args.value("--ldconfig-path")?;
    let _ = args.value("--ldconfig")?;
    args.finish()?;
    let container = Container::read(std::io::stdin().lock())?;
    let root = Root::open(&container.rootfs)?;
    let host_driver_version = mounted_driver_version(&root, &folders);
    ldso::update(
        &root,
        &LdRequest {
            folders,
            host_driver_version,
        },
    )?;
    Ok(())
}

/// `X.Y.Z` of a `libcuda.so.X.Y.Z` (X at least 100) in one of `folders`.
fn mounted_driver_version(root: &Root, folders: &[PathBuf]) -> Option<String> {
    folders.iter().find_map(|f| {
        root.read_dir(f).ok()?.into_iter().find_map(|(n, _)| {
            let v = n.to_str()?.strip_prefix("libcuda.so.")?.to_string();
            let major: u32 = v.split('.').next()?.parse().ok()?;
            (v.contains('.') && major >= 100).then_some(v)
        })
    })
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
    let outcomes = steps::create_links(&root, &links)?;
    for w in steps::kept_warnings(&links, &outcomes) {
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
