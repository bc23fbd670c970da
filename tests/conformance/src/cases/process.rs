//! config.md "process": args, env, cwd, user, umask, rlimits, capabilities, noNewPrivileges,
//! oomScoreAdj, apparmor/selinux.

use std::path::Path;

use serde_json::json;

use super::{expect_refusal, ok_str, refusal_case, run_probe};
use crate::bundle::DEFAULT_CAPS;
use crate::harness::{cap_field, cap_mask, chk, errno_of, Ctx, Exit, Results, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "process.defaults",
            cases: DEFAULTS,
            run: defaults,
        },
        Scenario {
            name: "process.settings",
            cases: SETTINGS,
            run: settings,
        },
        Scenario {
            name: "process.key_case",
            cases: &["keys_in_another_case_read"],
            run: key_case,
        },
        Scenario {
            name: "process.user",
            cases: USER,
            run: user,
        },
        Scenario {
            name: "process.rlimits",
            cases: RLIMITS,
            run: rlimits,
        },
        Scenario {
            name: "process.rlimits_invalid",
            cases: &[
                "unknown_type_refused",
                "soft_above_hard_refused",
                "raise_hard_above_limit_refused",
            ],
            run: rlimits_invalid,
        },
        Scenario {
            name: "process.capabilities",
            cases: CAPS,
            run: caps,
        },
        Scenario {
            name: "process.capabilities_empty",
            cases: &["all_sets_empty", "mknod_denied"],
            run: caps_empty,
        },
        Scenario {
            name: "process.exit",
            cases: &["exit_status_propagated", "missing_executable_refused"],
            run: exit,
        },
        Scenario {
            name: "process.args",
            cases: &["resolved_via_path"],
            run: args_path,
        },
        Scenario {
            name: "process.lsm",
            cases: &["apparmor_profile", "selinux_label"],
            run: lsm,
        },
    ]
}

const DEFAULTS: &[&str] = &[
    "args",
    "env_present",
    "env_no_extras",
    "cwd_root",
    "uid_gid_root",
    "no_additional_groups",
    "umask_inherited",
    "caps_effective",
    "caps_permitted",
    "caps_bounding",
    "caps_inheritable_empty",
    "caps_ambient_empty",
    "no_new_privs_off",
    "not_a_tty",
];

fn defaults(ctx: &Ctx, r: &mut Results) {
    let Some(run) = run_probe(ctx, r, DEFAULTS, &["getcwd:"], |b| {
        b.config["process"]["env"] = json!(["PATH=/bin", "FOO=bar", "EMPTY="]);
    }) else {
        return;
    };
    let rep = &run.report;
    r.eq(
        "args",
        rep["argv"].clone(),
        json!(["/probe", "report", "getcwd:"]),
    );
    let env: Vec<String> = rep["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let want = ["PATH=/bin", "FOO=bar", "EMPTY="];
    r.check(
        "env_present",
        want.iter().all(|w| env.iter().any(|e| e == w)),
        || format!("env {env:?} lacks one of {want:?}"),
    );
    let extras: Vec<&String> = env
        .iter()
        .filter(|e| !want.contains(&e.as_str()) && !e.starts_with("HOME="))
        .collect();
    r.check("env_no_extras", extras.is_empty(), || {
        format!("unexpected variables {extras:?}")
    });
    r.eq("cwd_root", rep["cwd"].as_str(), Some("/"));
    r.eq(
        "uid_gid_root",
        (rep["uid"].as_u64(), rep["gid"].as_u64()),
        (Some(0), Some(0)),
    );
    let groups = rep["groups"].as_array().cloned().unwrap_or_default();
    r.check(
        "no_additional_groups",
        groups.iter().all(|g| g == 0),
        || format!("groups {groups:?}"),
    );
    // SAFETY: umask read-and-restore in the driver, no threads depend on it.
    let mine = unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    };
    r.eq(
        "umask_inherited",
        rep["umask"].as_str().map(String::from),
        Some(format!("{mine:04o}")),
    );
    let want = cap_mask(DEFAULT_CAPS);
    for (case, set) in [
        ("caps_effective", "effective"),
        ("caps_permitted", "permitted"),
        ("caps_bounding", "bounding"),
    ] {
        r.eq(case, cap_field(rep, set), Some(want));
    }
    r.eq(
        "caps_inheritable_empty",
        cap_field(rep, "inheritable"),
        Some(0),
    );
    r.eq("caps_ambient_empty", cap_field(rep, "ambient"), Some(0));
    r.eq("no_new_privs_off", rep["no_new_privs"].as_str(), Some("0"));
    r.eq("not_a_tty", rep["tty"].as_bool(), Some(false));
}

const SETTINGS: &[&str] = &[
    "cwd_custom",
    "env_with_spaces",
    "umask_set",
    "no_new_privs_on",
    "oom_score_adj",
];

fn settings(ctx: &Ctx, r: &mut Results) {
    let Some(run) = run_probe(ctx, r, SETTINGS, &[], |b| {
        let p = &mut b.config["process"];
        p["cwd"] = json!("/home/user");
        p["env"] = json!(["PATH=/bin", "GREETING=hello big world", "X=a=b"]);
        p["user"]["umask"] = json!(0o077);
        p["noNewPrivileges"] = json!(true);
        p["oomScoreAdj"] = json!(423);
    }) else {
        return;
    };
    let rep = &run.report;
    r.eq("cwd_custom", rep["cwd"].as_str(), Some("/home/user"));
    let env = rep["env"].as_array().cloned().unwrap_or_default();
    r.check(
        "env_with_spaces",
        env.contains(&json!("GREETING=hello big world")) && env.contains(&json!("X=a=b")),
        || format!("env {env:?}"),
    );
    r.eq("umask_set", rep["umask"].as_str(), Some("0077"));
    r.eq("no_new_privs_on", rep["no_new_privs"].as_str(), Some("1"));
    r.eq("oom_score_adj", rep["oom_score_adj"].as_str(), Some("423"));
}

/// runc decodes config.json with Go's encoding/json, which matches a key to a field ignoring
/// case when none is spelled exactly; specs written for runc rely on it (runc's cgroups.bats
/// writes hugetlb limits with `pagesize`).
fn key_case(ctx: &Ctx, r: &mut Results) {
    let Some(run) = run_probe(ctx, r, &["keys_in_another_case_read"], &[], |b| {
        let p = b.config["process"].as_object_mut().unwrap();
        p.remove("oomScoreAdj");
        p.insert("OOMScoreAdj".into(), json!(419));
        let user = p["user"].as_object_mut().unwrap();
        user.remove("umask");
        user.insert("Umask".into(), json!(0o027));
    }) else {
        return;
    };
    let rep = &run.report;
    r.eq(
        "keys_in_another_case_read",
        (rep["oom_score_adj"].as_str(), rep["umask"].as_str()),
        (Some("419"), Some("0027")),
    );
}

const USER: &[&str] = &[
    "uid",
    "gid",
    "euid_egid",
    "additional_gids",
    "uid_without_passwd_entry",
];

fn user(ctx: &Ctx, r: &mut Results) {
    if let Some(run) = run_probe(ctx, r, &USER[..4], &[], |b| {
        b.config["process"]["user"] = json!({
            "uid": 1000, "gid": 1000, "additionalGids": [2000, 3000]
        });
    }) {
        let rep = &run.report;
        r.eq("uid", rep["uid"].as_u64(), Some(1000));
        r.eq("gid", rep["gid"].as_u64(), Some(1000));
        r.eq(
            "euid_egid",
            (rep["euid"].as_u64(), rep["egid"].as_u64()),
            (Some(1000), Some(1000)),
        );
        let mut g: Vec<u64> = rep["groups"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
            .unwrap_or_default();
        g.sort();
        g.dedup();
        g.retain(|x| *x != 1000);
        r.eq("additional_gids", g, vec![2000, 3000]);
    }
    if let Some(run) = run_probe(ctx, r, &USER[4..], &[], |b| {
        b.config["process"]["user"] = json!({ "uid": 4242, "gid": 4343 });
    }) {
        r.eq(
            "uid_without_passwd_entry",
            (run.report["uid"].as_u64(), run.report["gid"].as_u64()),
            (Some(4242), Some(4343)),
        );
    }
}

const RLIMITS: &[&str] = &[
    "nofile",
    "nproc",
    "core_zero",
    "memlock",
    "stack",
    "unlisted_inherited",
];

fn rlimits(ctx: &Ctx, r: &mut Results) {
    let Some(run) = run_probe(ctx, r, RLIMITS, &[], |b| {
        b.config["process"]["rlimits"] = json!([
            { "type": "RLIMIT_NOFILE", "soft": 512, "hard": 1000 },
            { "type": "RLIMIT_NPROC", "soft": 1111, "hard": 2222 },
            { "type": "RLIMIT_CORE", "soft": 0, "hard": 0 },
            { "type": "RLIMIT_MEMLOCK", "soft": 65536, "hard": 131072 },
            { "type": "RLIMIT_STACK", "soft": 4194304, "hard": 8388608 },
        ]);
    }) else {
        return;
    };
    let rl = &run.report["rlimits"];
    r.eq("nofile", rl["RLIMIT_NOFILE"].clone(), json!([512, 1000]));
    r.eq("nproc", rl["RLIMIT_NPROC"].clone(), json!([1111, 2222]));
    r.eq("core_zero", rl["RLIMIT_CORE"].clone(), json!([0, 0]));
    r.eq(
        "memlock",
        rl["RLIMIT_MEMLOCK"].clone(),
        json!([65536, 131072]),
    );
    r.eq(
        "stack",
        rl["RLIMIT_STACK"].clone(),
        json!([4194304, 8388608]),
    );
    let mut mine = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into our struct.
    unsafe { libc::getrlimit(libc::RLIMIT_MSGQUEUE, &mut mine) };
    r.eq(
        "unlisted_inherited",
        rl["RLIMIT_MSGQUEUE"].clone(),
        json!([mine.rlim_cur, mine.rlim_max]),
    );
}

fn rlimits_invalid(ctx: &Ctx, r: &mut Results) {
    let res = expect_refusal(ctx, |b| {
        b.config["process"]["rlimits"] = json!([{ "type": "RLIMIT_BOGUS", "soft": 1, "hard": 1 }]);
    });
    refusal_case(r, "unknown_type_refused", res);
    let res = expect_refusal(ctx, |b| {
        b.config["process"]["rlimits"] =
            json!([{ "type": "RLIMIT_NOFILE", "soft": 2000, "hard": 1000 }]);
    });
    refusal_case(r, "soft_above_hard_refused", res);
    let mut mine = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into our struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut mine) };
    let has_sys_resource = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("CapEff:"))
                .and_then(|l| u64::from_str_radix(l[7..].trim(), 16).ok())
        })
        .is_some_and(|m| m & (1 << 24) != 0);
    if has_sys_resource || mine.rlim_max == libc::RLIM_INFINITY {
        r.skip(
            "raise_hard_above_limit_refused",
            "the driver holds CAP_SYS_RESOURCE, so any hard limit can be raised",
        );
        return;
    }
    let hard = mine.rlim_max.saturating_mul(2);
    let res = expect_refusal(ctx, |b| {
        b.config["process"]["rlimits"] =
            json!([{ "type": "RLIMIT_NOFILE", "soft": hard, "hard": hard }]);
    });
    refusal_case(r, "raise_hard_above_limit_refused", res);
}

const CAPS: &[&str] = &[
    "effective",
    "permitted",
    "bounding",
    "inheritable",
    "ambient",
    "chown_denied_without_cap_chown",
    "kill_cap_kept",
];

/// Run as uid 1000: for root, execve() recomputes the permitted and effective sets from the
/// bounding set, so only a non-root process shows the configured sets one to one (with
/// ambient = inheritable = permitted = effective, which execve keeps).
fn caps(ctx: &Ctx, r: &mut Results) {
    let kept = ["CAP_KILL", "CAP_NET_RAW"];
    let bounding = ["CAP_KILL", "CAP_NET_RAW", "CAP_SYS_CHROOT", "CAP_SETUID"];
    let Some(run) = run_probe(ctx, r, CAPS, &["write:/tmp/f", "chown:/tmp/f"], |b| {
        b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
        b.config["process"]["capabilities"] = json!({
            "effective": kept, "permitted": kept, "inheritable": kept, "ambient": kept,
            "bounding": bounding,
        });
    }) else {
        return;
    };
    let rep = &run.report;
    for (case, set) in [
        ("effective", "effective"),
        ("permitted", "permitted"),
        ("inheritable", "inheritable"),
        ("ambient", "ambient"),
    ] {
        r.eq(case, cap_field(rep, set), Some(cap_mask(&kept)));
    }
    r.eq(
        "bounding",
        cap_field(rep, "bounding"),
        Some(cap_mask(&bounding)),
    );
    r.eq(
        "chown_denied_without_cap_chown",
        errno_of(chk(rep, "chown:/tmp/f")),
        Some(libc::EPERM as i64),
    );
    r.check(
        "kill_cap_kept",
        cap_field(rep, "effective").is_some_and(|m| m & (1 << 5) != 0),
        || "CAP_KILL missing from CapEff".into(),
    );
}

fn caps_empty(ctx: &Ctx, r: &mut Results) {
    let cases = &["all_sets_empty", "mknod_denied"];
    let Some(run) = run_probe(ctx, r, cases, &["mknod:/tmp/n"], |b| {
        b.config["process"]["capabilities"] = json!({
            "effective": [], "permitted": [], "inheritable": [], "ambient": [], "bounding": []
        });
    }) else {
        return;
    };
    let rep = &run.report;
    let sets: Vec<Option<u64>> = [
        "effective",
        "permitted",
        "inheritable",
        "ambient",
        "bounding",
    ]
    .iter()
    .map(|s| cap_field(rep, s))
    .collect();
    r.eq("all_sets_empty", sets, vec![Some(0); 5]);
    r.eq(
        "mknod_denied",
        errno_of(chk(rep, "mknod:/tmp/n")),
        Some(libc::EPERM as i64),
    );
}

fn exit(ctx: &Ctx, r: &mut Results) {
    match ctx.bundle() {
        Err(e) => r.fail("exit_status_propagated", e),
        Ok(mut b) => {
            b.config["process"]["args"] = json!(["/probe", "exit", "7"]);
            match crate::harness::probe_run_raw(ctx, &b) {
                Ok(e) => r.eq("exit_status_propagated", e, Some(Exit::Code(7))),
                Err(e) => r.fail("exit_status_propagated", e),
            }
        }
    }
    let res = expect_refusal(ctx, |b| {
        b.config["process"]["args"] = json!(["/no/such/binary"]);
    });
    refusal_case(r, "missing_executable_refused", res);
}

fn lsm(ctx: &Ctx, r: &mut Results) {
    if !Path::new("/sys/kernel/security/apparmor").exists() {
        r.skip("apparmor_profile", "AppArmor is not enabled on this kernel");
    } else if let Some(run) = run_probe(
        ctx,
        r,
        &["apparmor_profile"],
        &["read:/proc/self/attr/current"],
        |b| b.config["process"]["apparmorProfile"] = json!("unconfined"),
    ) {
        let cur = ok_str(chk(&run.report, "read:/proc/self/attr/current")).unwrap_or("");
        r.check("apparmor_profile", cur.starts_with("unconfined"), || {
            format!("attr/current {cur:?}")
        });
    }
    if !Path::new("/sys/fs/selinux/enforce").exists() {
        r.skip("selinux_label", "SELinux is not enabled on this kernel");
    } else {
        r.skip(
            "selinux_label",
            "SELinux labels are not checked by this suite",
        );
    }
}

/// args[0] without a slash is looked up in the process's PATH (execvp semantics).
fn args_path(ctx: &Ctx, r: &mut Results) {
    let Some(run) = run_probe(ctx, r, &["resolved_via_path"], &[], |b| {
        b.config["process"]["args"] = json!(["probe", "report"]);
        b.config["process"]["env"] = json!(["PATH=/usr/bin:/"]);
    }) else {
        return;
    };
    r.eq(
        "resolved_via_path",
        run.report["argv"].clone(),
        json!(["probe", "report"]),
    );
}
