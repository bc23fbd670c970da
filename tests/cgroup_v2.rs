//! cgroup v2 behaviour that runc's integration tests found nvbind lacking in the pure v2 VMs
//! (issue 15), each case against nvbind and against runc, the reference. On a hybrid host
//! (the development and CI machines) the runtimes run in a pure v2 view of it
//! ([`common::v2view`]), whose cgroup2 carries hugetlb; the VMs (tests/hosts suite `cgroups`)
//! check the rest with every controller.

mod common;

use std::fs;

use common::v2view::{cgroup_of, list_dirs, Case, Rt};
use common::*;

/// runc's cgroups.bats "runc exec (cgroup v2 + init process in non-root cgroup) succeeds":
/// the container moved its init into a sub-cgroup and enabled a domain controller for it, so
/// its own cgroup takes no process any more (EBUSY, the no internal processes rule). An exec
/// joins the cgroup the init is in instead, as runc does; then `delete --force` removes the
/// container's cgroup with the sub-cgroup in it.
#[test]
fn exec_joins_the_inits_cgroup_when_the_containers_is_no_longer_a_leaf() {
    let case = Case::new(false);
    for rt in [Rt::Runc, Rt::Nvbind] {
        let name = format!("leaf-{rt:?}").to_lowercase();
        let b = case.env.bundle(&name, &["sleep", "600"]);
        case.ok(rt, &["run", "-d", "-b", b.to_str().unwrap(), &name]);
        let pid = case.pid(rt, &name);
        let cg = cgroup_of(pid);
        let available = fs::read_to_string(cg.join("cgroup.controllers")).unwrap();
        let Some(domain) = ["memory", "io", "hugetlb"]
            .into_iter()
            .find(|c| available.split_whitespace().any(|a| a == *c))
        else {
            eprintln!("skipped: the container's cgroup has no domain controller ({available:?})");
            return;
        };
        let sub = cg.join("foo");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("cgroup.procs"), pid.to_string()).unwrap();
        fs::write(cg.join("cgroup.subtree_control"), format!("+{domain}")).unwrap();
        let enabled = fs::read_to_string(cg.join("cgroup.subtree_control")).unwrap();
        assert!(
            enabled.contains(domain),
            "{rt:?}: +{domain} not enabled: {enabled:?}"
        );

        let out = case.ok(rt, &["exec", &name, "cat", "/proc/self/cgroup"]);
        let line = out
            .lines()
            .find(|l| l.starts_with("0::"))
            .unwrap_or_default();
        assert!(
            line.ends_with("/foo"),
            "{rt:?}: exec's cgroup is {out:?}, want the init's (…/foo)"
        );

        case.ok(rt, &["delete", "--force", &name]);
        assert!(
            !cg.exists(),
            "{rt:?}: {} left by delete --force",
            cg.display()
        );
    }
    assert!(case.env.ids().is_empty() && list_dirs(&case.runc_root).is_empty());
    assert!(leaked_cgroups(&case.env.cgroup_prefix).is_empty());
}
