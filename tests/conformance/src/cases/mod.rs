//! The cases, by area. Each area module exposes `scenarios()`.

use std::sync::OnceLock;

use serde_json::Value;

use crate::bundle::probe_args;
use crate::harness::{probe_run, Bundle, Container, Ctx, ProbeRun, Results, Scenario};
use crate::runtime::CmdOut;

mod cgroups;
mod devices;
mod exec;
mod fdpass;
mod features;
mod hooks;
mod lifecycle;
mod mount_options;
mod mounts;
mod namespaces;
mod process;
mod security;
mod system;

pub use cgroups::remove_parent_cgroups;

pub fn all() -> Vec<Scenario> {
    let mut v = Vec::new();
    v.extend(process::scenarios());
    v.extend(mounts::scenarios());
    v.extend(mount_options::scenarios());
    v.extend(namespaces::scenarios());
    v.extend(devices::scenarios());
    v.extend(security::scenarios());
    v.extend(system::scenarios());
    v.extend(cgroups::scenarios());
    v.extend(hooks::scenarios());
    v.extend(lifecycle::scenarios());
    v.extend(exec::scenarios());
    v.extend(fdpass::scenarios());
    v.extend(features::scenarios());
    v
}

/// Build a bundle, let `edit` change it, run `/probe report CHECKS...` and return the run.
/// On any failure every case in `cases` fails with the reason and None comes back.
pub fn run_probe(
    ctx: &Ctx,
    r: &mut Results,
    cases: &[&str],
    checks: &[&str],
    edit: impl FnOnce(&mut Bundle),
) -> Option<ProbeRun> {
    let mut b = match ctx.bundle() {
        Ok(b) => b,
        Err(e) => {
            r.fail_rest(cases, &format!("bundle: {e}"));
            return None;
        }
    };
    probe_args(&mut b.config, "report", checks);
    edit(&mut b);
    match probe_run(ctx, &b) {
        Ok(mut run) => {
            run.bundle = Some(b);
            Some(run)
        }
        Err(e) => {
            r.fail_rest(cases, &e);
            None
        }
    }
}

/// Expect the runtime to refuse the config: create (or start) must fail.
/// Returns Ok(()) when it refused, Err(why not) when the container ran.
pub fn expect_refusal(ctx: &Ctx, edit: impl FnOnce(&mut Bundle)) -> Result<(), String> {
    let mut b = ctx.bundle().map_err(|e| format!("bundle: {e}"))?;
    probe_args(&mut b.config, "report", &[]);
    edit(&mut b);
    let c = match Container::create(ctx, &b) {
        Err(o) if o.timed_out => return Err("create hung instead of failing".into()),
        Err(_) => return Ok(()),
        Ok(c) => c,
    };
    let s: CmdOut = c.start();
    if !s.ok() {
        return Ok(());
    }
    Err("create and start both succeeded".into())
}

pub fn refusal_case(r: &mut Results, case: &str, res: Result<(), String>) {
    match res {
        Ok(()) => r.pass(case),
        Err(e) => r.fail(case, format!("the runtime accepted an invalid config: {e}")),
    }
}

/// `v["ok"]` as a string, for read checks.
pub fn ok_str(v: &Value) -> Option<&str> {
    v["ok"].as_str()
}

/// The runtime's `features` output, if it has the verb.
pub fn features(ctx: &Ctx) -> Option<Value> {
    static FEATURES: OnceLock<Option<Value>> = OnceLock::new();
    FEATURES
        .get_or_init(|| {
            let o = ctx.rt.call(&ctx.work, "features", &["features"]);
            if !o.ok() {
                return None;
            }
            serde_json::from_str(&o.stdout).ok()
        })
        .clone()
}

/// Does `features` list `item` under the JSON pointer `ptr`? None when features is unknown.
pub fn feature_has(ctx: &Ctx, ptr: &str, item: &str) -> Option<bool> {
    let f = features(ctx)?;
    let arr = f.pointer(ptr)?.as_array()?;
    Some(arr.iter().any(|v| v == item))
}
