//! config-linux.md "cgroupsPath" and "resources": limits read back from the host's cgroup
//! files (v1 or v2, whichever this machine has), the container's own view, enforcement,
//! and removal on delete.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{ok_str, run_probe};
use crate::bundle::probe_args;
use crate::harness::{
    cgroup_v2_unified, chk, errno_of, host_cgroup_dir, Container, Ctx, Results, Scenario,
};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "cgroups.limits",
            cases: LIMITS,
            run: limits,
        },
        Scenario {
            name: "cgroups.inside",
            cases: &["own_limit_visible", "cgroupfs_readonly"],
            run: inside,
        },
        Scenario {
            name: "cgroups.pids",
            cases: &["pids_limit_enforced"],
            run: pids_enforced,
        },
        Scenario {
            name: "cgroups.default_path",
            cases: &[
                "default_path_not_root",
                "default_path_is_id_under_callers_cgroup",
                "default_path_removed_on_delete",
            ],
            run: default_path,
        },
        Scenario {
            name: "cgroups.unlimited",
            cases: &["memory_minus_one_is_unlimited", "pids_minus_one_is_max"],
            run: unlimited,
        },
        Scenario {
            name: "cgroups.hugetlb",
            cases: HUGETLB,
            run: hugetlb,
        },
    ]
}

const LIMITS: &[&str] = &[
    "cgroups_path_used",
    "memory_limit",
    "memory_reservation",
    "cpu_shares",
    "cpu_quota",
    "cpu_period",
    "cpuset_cpus",
    "cpuset_mems",
    "pids_limit",
    "blkio_weight",
    "all_controllers_joined",
    "removed_on_delete",
];

fn read(dir: &Path, file: &str) -> Option<String> {
    fs::read_to_string(dir.join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn cgroups_path(ctx: &Ctx, id: &str) -> String {
    format!("/{}/{id}", ctx.prefix)
}

fn limits(ctx: &Ctx, r: &mut Results) {
    let mut b = match ctx.bundle() {
        Ok(b) => b,
        Err(e) => return r.fail_rest(LIMITS, &e),
    };
    let path = cgroups_path(ctx, &b.id);
    b.config["linux"]["cgroupsPath"] = json!(path);
    b.config["linux"]["resources"]["memory"] =
        json!({ "limit": 67108864, "reservation": 33554432 });
    b.config["linux"]["resources"]["cpu"] =
        json!({ "shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0" });
    b.config["linux"]["resources"]["pids"] = json!({ "limit": 64 });
    b.config["linux"]["resources"]["blockIO"] = json!({ "weight": 500 });
    let c = match Container::create(ctx, &b) {
        Ok(c) => c,
        Err(o) => return r.fail_rest(LIMITS, &format!("create failed: {}", o.brief())),
    };
    let Some(pid) = c.pid else {
        return r.fail_rest(LIMITS, "no pid after create");
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    if cgroup_v2_unified() {
        let Some(d) = host_cgroup_dir(pid, "") else {
            return r.fail_rest(LIMITS, "container pid has no cgroup v2 path");
        };
        dirs.push(d.clone());
        r.check(
            "cgroups_path_used",
            d.ends_with(path.trim_start_matches('/')),
            || format!("cgroup {}", d.display()),
        );
        r.eq(
            "memory_limit",
            read(&d, "memory.max"),
            Some("67108864".into()),
        );
        r.eq(
            "memory_reservation",
            read(&d, "memory.low"),
            Some("33554432".into()),
        );
        let w = read(&d, "cpu.weight");
        r.check(
            "cpu_shares",
            w.is_some() && w.as_deref() != Some("100"),
            || format!("cpu.weight {w:?} (shares 512 must change it from the default)"),
        );
        let max = read(&d, "cpu.max");
        r.eq("cpu_quota", max.clone(), Some("50000 100000".into()));
        r.eq("cpu_period", max, Some("50000 100000".into()));
        r.eq("cpuset_cpus", read(&d, "cpuset.cpus"), Some("0".into()));
        r.eq("cpuset_mems", read(&d, "cpuset.mems"), Some("0".into()));
        r.eq("pids_limit", read(&d, "pids.max"), Some("64".into()));
        match read(&d, "io.bfq.weight").or_else(|| read(&d, "io.weight")) {
            None => r.skip("blkio_weight", "no io weight file on this kernel"),
            Some(v) => r.check("blkio_weight", v.contains("500") || v.contains("50"), || v),
        }
        r.pass("all_controllers_joined");
    } else {
        let ctl = |c: &str| host_cgroup_dir(pid, c);
        let mut missing = Vec::new();
        for c in [
            "memory", "cpu", "cpuset", "pids", "devices", "freezer", "blkio",
        ] {
            match ctl(c) {
                Some(d) if d.ends_with(path.trim_start_matches('/')) => dirs.push(d),
                other => missing.push(format!("{c}: {other:?}")),
            }
        }
        r.check("all_controllers_joined", missing.is_empty(), || {
            format!("not in {path}: {missing:?}")
        });
        let mem = ctl("memory").unwrap_or_default();
        r.check(
            "cgroups_path_used",
            mem.ends_with(path.trim_start_matches('/')),
            || format!("memory cgroup {}", mem.display()),
        );
        r.eq(
            "memory_limit",
            read(&mem, "memory.limit_in_bytes"),
            Some("67108864".into()),
        );
        r.eq(
            "memory_reservation",
            read(&mem, "memory.soft_limit_in_bytes"),
            Some("33554432".into()),
        );
        let cpu = ctl("cpu").unwrap_or_default();
        r.eq("cpu_shares", read(&cpu, "cpu.shares"), Some("512".into()));
        r.eq(
            "cpu_quota",
            read(&cpu, "cpu.cfs_quota_us"),
            Some("50000".into()),
        );
        r.eq(
            "cpu_period",
            read(&cpu, "cpu.cfs_period_us"),
            Some("100000".into()),
        );
        let cs = ctl("cpuset").unwrap_or_default();
        r.eq("cpuset_cpus", read(&cs, "cpuset.cpus"), Some("0".into()));
        r.eq("cpuset_mems", read(&cs, "cpuset.mems"), Some("0".into()));
        let p = ctl("pids").unwrap_or_default();
        r.eq("pids_limit", read(&p, "pids.max"), Some("64".into()));
        let bl = ctl("blkio").unwrap_or_default();
        match read(&bl, "blkio.weight").or_else(|| read(&bl, "blkio.bfq.weight")) {
            None => r.skip(
                "blkio_weight",
                "the kernel has no blkio weight file (no CFQ/BFQ)",
            ),
            Some(v) => r.eq("blkio_weight", Some(v), Some("500".into())),
        }
    }
    let d = c.delete();
    if !d.ok() {
        return r.fail("removed_on_delete", format!("delete failed: {}", d.brief()));
    }
    let left: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
    r.check("removed_on_delete", left.is_empty(), || {
        format!("still present after delete: {left:?}")
    });
}

fn inside(ctx: &Ctx, r: &mut Results) {
    let cases = &["own_limit_visible", "cgroupfs_readonly"];
    let file = if cgroup_v2_unified() {
        "/sys/fs/cgroup/memory.max"
    } else {
        "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    };
    let rd = format!("read:{file}");
    let wr = format!("put:{file}=1073741824");
    let Some(run) = run_probe(ctx, r, cases, &[&rd, &wr], |b| {
        let p = cgroups_path(ctx, &b.id);
        b.config["linux"]["cgroupsPath"] = json!(p);
        b.config["linux"]["resources"]["memory"] = json!({ "limit": 50331648 });
    }) else {
        return;
    };
    let rep = &run.report;
    r.eq(
        "own_limit_visible",
        ok_str(chk(rep, &rd)).map(|s| s.trim().to_string()),
        Some("50331648".into()),
    );
    let e = errno_of(chk(rep, &wr));
    r.check(
        "cgroupfs_readonly",
        e == Some(libc::EROFS as i64),
        || match e {
            None => format!("the container raised its own limit: writing {file} succeeded"),
            Some(e) => format!("writing {file} failed with errno {e}, want EROFS"),
        },
    );
}

fn pids_enforced(ctx: &Ctx, r: &mut Results) {
    // pids.max 4: the probe itself plus 3 children; the 4th fork must fail with EAGAIN.
    let Some(run) = run_probe(ctx, r, &["pids_limit_enforced"], &["forkn:8"], |b| {
        let p = cgroups_path(ctx, &b.id);
        b.config["linux"]["cgroupsPath"] = json!(p);
        b.config["linux"]["resources"]["pids"] = json!({ "limit": 4 });
    }) else {
        return;
    };
    let v = chk(&run.report, "forkn:8");
    r.check(
        "pids_limit_enforced",
        v["ok"] == 3 && v["errno"] == libc::EAGAIN,
        || format!("forks that succeeded and the last errno: {v}"),
    );
}

fn default_path(ctx: &Ctx, r: &mut Results) {
    let case = "default_path_not_root";
    let both = &[
        case,
        "default_path_is_id_under_callers_cgroup",
        "default_path_removed_on_delete",
    ];
    let mut b = match ctx.bundle() {
        Ok(b) => b,
        Err(e) => return r.fail_rest(both, &e),
    };
    probe_args(&mut b.config, "report", &[]);
    let c = match Container::create(ctx, &b) {
        Ok(c) => c,
        Err(o) => return r.fail_rest(both, &format!("create failed: {}", o.brief())),
    };
    let ctl = if cgroup_v2_unified() { "" } else { "memory" };
    let d = c.pid.and_then(|p| host_cgroup_dir(p, ctl));
    let base = if cgroup_v2_unified() {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/memory")
    };
    let mine = host_cgroup_dir(std::process::id() as i32, ctl);
    r.check(
        case,
        d.as_ref()
            .is_some_and(|d| *d != base && Some(d) != mine.as_ref()),
        || format!("container cgroup {d:?}, the runtime's own {mine:?}"),
    );
    // runc's cgroupfs driver: a cgroup named after the ID, under the cgroup of the process
    // that ran the runtime (runc's delete.bats finds it by that name). runc takes the
    // caller's cgroup per v1 controller; nvbind takes the devices controller's for all (one
    // absolute path, so that a later command run from another cgroup finds the same one), so
    // the case looks at that controller. On pure cgroup v2 runc (fs2) takes the parent of the
    // caller's cgroup: the caller's own holds processes, so a child of it could hold none.
    let dev = if cgroup_v2_unified() { "" } else { "devices" };
    let mut ours = host_cgroup_dir(std::process::id() as i32, dev);
    if cgroup_v2_unified() {
        ours = ours.map(|o| match o.parent() {
            Some(p) if o != Path::new("/sys/fs/cgroup") => p.to_path_buf(),
            _ => o,
        });
    }
    let theirs = c.pid.and_then(|p| host_cgroup_dir(p, dev));
    r.check(
        "default_path_is_id_under_callers_cgroup",
        theirs.as_ref().is_some_and(|d| {
            d.file_name().is_some_and(|n| *n == *c.id) && d.parent() == ours.as_deref()
        }),
        || {
            format!(
                "container cgroup {theirs:?}, the runtime's own {ours:?}, id {}",
                c.id
            )
        },
    );
    let del = c.delete();
    let left = d.as_ref().is_some_and(|d| *d != base && d.exists());
    r.check("default_path_removed_on_delete", del.ok() && !left, || {
        format!("delete {}; {d:?} still there: {left}", del.brief())
    });
}

/// "Values for memory specify the limit in bytes, or -1 for unlimited memory."
fn unlimited(ctx: &Ctx, r: &mut Results) {
    let cases = &["memory_minus_one_is_unlimited", "pids_minus_one_is_max"];
    let mut b = match ctx.bundle() {
        Ok(b) => b,
        Err(e) => return r.fail_rest(cases, &e),
    };
    b.config["linux"]["cgroupsPath"] = json!(cgroups_path(ctx, &b.id));
    b.config["linux"]["resources"]["memory"] = json!({ "limit": -1 });
    b.config["linux"]["resources"]["pids"] = json!({ "limit": -1 });
    let c = match Container::create(ctx, &b) {
        Ok(c) => c,
        Err(o) => return r.fail_rest(cases, &format!("create failed: {}", o.brief())),
    };
    let Some(pid) = c.pid else {
        return r.fail_rest(cases, "no pid");
    };
    let (mem, pids) = if cgroup_v2_unified() {
        let d = host_cgroup_dir(pid, "").unwrap_or_default();
        (read(&d, "memory.max"), read(&d, "pids.max"))
    } else {
        let m = host_cgroup_dir(pid, "memory").unwrap_or_default();
        let p = host_cgroup_dir(pid, "pids").unwrap_or_default();
        (read(&m, "memory.limit_in_bytes"), read(&p, "pids.max"))
    };
    // v1 shows "unlimited" as the page-aligned maximum, v2 as "max"
    r.check(
        "memory_minus_one_is_unlimited",
        mem.as_deref() == Some("max")
            || mem
                .as_deref()
                .and_then(|m| m.parse::<u64>().ok())
                .is_some_and(|m| m >= 1 << 62),
        || format!("memory limit {mem:?}"),
    );
    r.eq("pids_minus_one_is_max", pids.as_deref(), Some("max"));
}

const HUGETLB: &[&str] = &["hugetlb_limit", "hugetlb_page_size_key_in_another_case"];

fn hugetlb(ctx: &Ctx, r: &mut Results) {
    if !Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists() {
        return r.skip_rest(HUGETLB, "no 2MB huge pages on this kernel");
    }
    let v1 = Path::new("/sys/fs/cgroup/hugetlb").exists();
    let v2_controllers = if cgroup_v2_unified() {
        "/sys/fs/cgroup/cgroup.controllers"
    } else {
        "/sys/fs/cgroup/unified/cgroup.controllers"
    };
    let v2 = fs::read_to_string(v2_controllers).is_ok_and(|s| s.contains("hugetlb"));
    if !v1 && !v2 {
        return r.skip_rest(HUGETLB, "no hugetlb controller on this machine");
    }
    // The second as runc's cgroups.bats writes it: Go's encoding/json, which runc decodes
    // config.json with, matches `pagesize` to the field `pageSize`.
    for (case, key, limit) in [
        (HUGETLB[0], "pageSize", 4194304),
        (HUGETLB[1], "pagesize", 6291456),
    ] {
        let mut b = match ctx.bundle() {
            Ok(b) => b,
            Err(e) => {
                r.fail(case, e);
                continue;
            }
        };
        b.config["linux"]["cgroupsPath"] = json!(cgroups_path(ctx, &b.id));
        b.config["linux"]["resources"]["hugepageLimits"] = json!([{ key: "2MB", "limit": limit }]);
        let c = match Container::create(ctx, &b) {
            Ok(c) => c,
            Err(o) => {
                r.fail(case, format!("create failed: {}", o.brief()));
                continue;
            }
        };
        let Some(pid) = c.pid else {
            r.fail(case, "no pid");
            continue;
        };
        let (dir, file) = if v1 {
            (
                host_cgroup_dir(pid, "hugetlb"),
                "hugetlb.2MB.limit_in_bytes",
            )
        } else {
            (host_cgroup_dir(pid, ""), "hugetlb.2MB.max")
        };
        let got = dir.as_deref().and_then(|d| read(d, file));
        let want = limit.to_string();
        r.check(case, got.as_deref() == Some(want.as_str()), || {
            format!(
                "{file} in {dir:?}: {got:?} (controller in {})",
                if v1 { "v1" } else { "v2" }
            )
        });
    }
}

/// Remove the parent cgroups the suite asked for (`/<prefix>`), in every hierarchy.
pub fn remove_parent_cgroups(prefix: &str) -> Vec<String> {
    let mut left = Vec::new();
    let mut roots: Vec<PathBuf> = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
        roots.extend(rd.flatten().map(|e| e.path()));
    }
    for root in roots {
        let d = root.join(prefix);
        if d.is_dir() {
            // children first: anything still there is a leak of the runtime's delete
            if let Ok(rd) = fs::read_dir(&d) {
                for e in rd.flatten().filter(|e| e.path().is_dir()) {
                    left.push(e.path().display().to_string());
                    let _ = fs::remove_dir(e.path());
                }
            }
            let _ = fs::remove_dir(&d);
        }
    }
    left
}
