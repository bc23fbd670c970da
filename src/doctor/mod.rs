//! `nvbind doctor`: is this host ready for nvbind, and what to do where it is not.
//!
//! Every check reads the host through [`Host`] (files under a root, plus a few probes that need
//! syscalls or other programs), so the tests run each check on fake trees, passing and failing,
//! without root, a GPU or any engine. A check gives a status (ok / warn / fail), one line saying
//! what it found, and for warn and fail one line saying what to do.

mod check;
mod engines;
mod gpu;
mod host;
mod system;
#[cfg(test)]
mod tests;

pub use check::{Check, Status};
pub use host::{Host, SystemHost};

/// Every check, in the order a reader goes through a host: kernel, GPUs, specs, engines.
pub fn run(host: &dyn Host) -> Vec<Check> {
    let mut checks = vec![
        system::cgroups(host),
        system::device_filter(host),
        system::seccomp(host),
        system::user_namespaces(host),
        system::criu(host),
        system::exe_protection(host),
    ];
    let inventory = host.discover();
    checks.push(gpu::driver(&inventory, host));
    checks.extend(gpu::cdi_specs(host, &inventory));
    checks.extend(engines::engines(host));
    checks.push(engines::docker_gpus_hook(host));
    checks
}

/// The worst status among the checks.
pub fn worst(checks: &[Check]) -> Status {
    checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok)
}

/// The report for people: one line per check, the remedy under it.
pub fn text(checks: &[Check]) -> String {
    let mut out = String::new();
    let width = checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for c in checks {
        out.push_str(&format!(
            "[{:>4}] {:width$}  {}\n",
            c.status.label(),
            c.id,
            c.summary
        ));
        if let Some(r) = &c.remedy {
            out.push_str(&format!("       {:width$}  -> {r}\n", ""));
        }
    }
    let count = |s| checks.iter().filter(|c| c.status == s).count();
    out.push_str(&format!(
        "{} ok, {} warnings, {} failures\n",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail)
    ));
    out
}

/// The report for tools.
pub fn json(checks: &[Check]) -> serde_json::Value {
    serde_json::json!({
        "status": worst(checks),
        "checks": checks,
    })
}
