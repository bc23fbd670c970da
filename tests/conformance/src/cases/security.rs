//! config-linux.md "maskedPaths", "readonlyPaths" and "seccomp".

use std::path::Path;

use serde_json::{json, Value};

use super::{expect_refusal, ok_str, refusal_case, run_probe};
use crate::bundle::probe_args;
use crate::harness::{
    chk, errno_of, has_opt, mount_at, probe_run_raw, Ctx, Exit, Results, Scenario,
};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "paths.defaults",
            cases: PATHS,
            run: paths_defaults,
        },
        Scenario {
            name: "paths.custom",
            cases: CUSTOM,
            run: paths_custom,
        },
        Scenario {
            name: "seccomp.errno",
            cases: &["filter_mode", "errno_ret", "unfiltered_syscalls_work"],
            run: seccomp_errno,
        },
        Scenario {
            name: "seccomp.actions",
            cases: ACTIONS,
            run: seccomp_actions,
        },
        Scenario {
            name: "seccomp.args",
            cases: &[
                "arg_match_filtered",
                "arg_mismatch_allowed",
                "masked_eq_value_is_the_mask",
                "masked_eq_value_two_defaults_to_zero",
            ],
            run: seccomp_args,
        },
        Scenario {
            name: "seccomp.misc",
            cases: &[
                "applied_for_non_root_without_nnp",
                "invalid_action_refused",
                "errno_ret_on_kill_refused",
                "default_errno_ret_on_allow_refused",
            ],
            run: seccomp_misc,
        },
    ]
}

const MASKED_FILES: &[(&str, &str)] = &[
    ("masked_kcore", "/proc/kcore"),
    ("masked_keys", "/proc/keys"),
    ("masked_timer_list", "/proc/timer_list"),
    ("masked_sched_debug", "/proc/sched_debug"),
    ("masked_latency_stats", "/proc/latency_stats"),
];
const MASKED_DIRS: &[(&str, &str)] = &[
    ("masked_sys_firmware", "/sys/firmware"),
    ("masked_proc_acpi", "/proc/acpi"),
    ("masked_proc_scsi", "/proc/scsi"),
];
const RO: &[(&str, &str)] = &[
    ("readonly_proc_sys", "/proc/sys"),
    ("readonly_proc_sysrq_trigger", "/proc/sysrq-trigger"),
    ("readonly_proc_irq", "/proc/irq"),
    ("readonly_proc_bus", "/proc/bus"),
    ("readonly_proc_fs", "/proc/fs"),
];

const PATHS: &[&str] = &[
    "masked_kcore",
    "masked_keys",
    "masked_timer_list",
    "masked_sched_debug",
    "masked_latency_stats",
    "masked_sys_firmware",
    "masked_proc_acpi",
    "masked_proc_scsi",
    "readonly_proc_sys",
    "readonly_proc_sysrq_trigger",
    "readonly_proc_irq",
    "readonly_proc_bus",
    "readonly_proc_fs",
    "readonly_sysctl_write_erofs",
];

fn paths_defaults(ctx: &Ctx, r: &mut Results) {
    let mut checks: Vec<String> = MASKED_FILES
        .iter()
        .map(|(_, p)| format!("read:{p}"))
        .collect();
    checks.extend(MASKED_DIRS.iter().map(|(_, p)| format!("ls:{p}")));
    checks.push("put:/proc/sys/kernel/hostname=x".into());
    let refs: Vec<&str> = checks.iter().map(String::as_str).collect();
    let Some(run) = run_probe(ctx, r, PATHS, &refs, |_| {}) else {
        return;
    };
    let rep = &run.report;
    for (case, p) in MASKED_FILES {
        if !Path::new(p).exists() {
            r.skip(case, format!("{p} does not exist on this kernel"));
            continue;
        }
        let v = chk(rep, &format!("read:{p}"));
        r.check(case, ok_str(v) == Some(""), || {
            format!("reading {p} gave {}", abbreviate(v))
        });
    }
    for (case, p) in MASKED_DIRS {
        if !Path::new(p).exists() {
            r.skip(case, format!("{p} does not exist on this kernel"));
            continue;
        }
        let v = chk(rep, &format!("ls:{p}"));
        r.check(
            case,
            v["ok"].as_array().is_some_and(|a| a.is_empty()),
            || format!("listing {p} gave {}", abbreviate(v)),
        );
    }
    for (case, p) in RO {
        if !Path::new(p).exists() {
            r.skip(case, format!("{p} does not exist on this kernel"));
            continue;
        }
        r.check(
            case,
            mount_at(rep, p).is_some_and(|m| has_opt(m, "ro")),
            || format!("{p}: {:?}", mount_at(rep, p)),
        );
    }
    r.eq(
        "readonly_sysctl_write_erofs",
        errno_of(chk(rep, "put:/proc/sys/kernel/hostname=x")),
        Some(libc::EROFS as i64),
    );
}

fn abbreviate(v: &Value) -> String {
    v.to_string().chars().take(120).collect()
}

const CUSTOM: &[&str] = &[
    "masked_file",
    "masked_dir",
    "missing_masked_path_ignored",
    "readonly_dir",
    "readonly_dir_still_readable",
];

fn paths_custom(ctx: &Ctx, r: &mut Results) {
    let checks = &[
        "read:/etc/secret.txt",
        "ls:/secretdir",
        "write:/var/x",
        "read:/var/keep.txt",
    ];
    let Some(run) = run_probe(ctx, r, CUSTOM, checks, |b| {
        let root = b.rootfs();
        let _ = std::fs::write(root.join("etc/secret.txt"), "secret");
        let _ = std::fs::create_dir_all(root.join("secretdir"));
        let _ = std::fs::write(root.join("secretdir/inner"), "inner");
        let _ = std::fs::write(root.join("var/keep.txt"), "keep");
        b.config["linux"]["maskedPaths"] =
            json!(["/etc/secret.txt", "/secretdir", "/no/such/path"]);
        b.config["linux"]["readonlyPaths"] = json!(["/var"]);
    }) else {
        return;
    };
    let rep = &run.report;
    r.eq(
        "masked_file",
        ok_str(chk(rep, "read:/etc/secret.txt")),
        Some(""),
    );
    let ls = chk(rep, "ls:/secretdir");
    r.check(
        "masked_dir",
        ls["ok"].as_array().is_some_and(|a| a.is_empty()),
        || format!("{ls}"),
    );
    r.pass("missing_masked_path_ignored");
    r.eq(
        "readonly_dir",
        errno_of(chk(rep, "write:/var/x")),
        Some(libc::EROFS as i64),
    );
    r.eq(
        "readonly_dir_still_readable",
        ok_str(chk(rep, "read:/var/keep.txt")),
        Some("keep"),
    );
}

/// A seccomp section allowing everything except `rules`.
fn seccomp(rules: Value) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": rules
    })
}

fn seccomp_errno(ctx: &Ctx, r: &mut Results) {
    let cases = &["filter_mode", "errno_ret", "unfiltered_syscalls_work"];
    let Some(run) = run_probe(ctx, r, cases, &["mkdir:/tmp/d", "chdir:/tmp"], |b| {
        b.config["process"]["noNewPrivileges"] = json!(true);
        b.config["linux"]["seccomp"] = seccomp(json!([
            { "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95 }
        ]));
    }) else {
        return;
    };
    let rep = &run.report;
    r.eq("filter_mode", rep["seccomp"].as_str(), Some("2"));
    r.eq("errno_ret", errno_of(chk(rep, "mkdir:/tmp/d")), Some(95));
    r.check(
        "unfiltered_syscalls_work",
        chk(rep, "chdir:/tmp")["ok"].is_number(),
        || format!("{}", chk(rep, "chdir:/tmp")),
    );
}

const ACTIONS: &[&str] = &[
    "errno_defaults_to_eperm",
    "kill_thread",
    "kill_process",
    "trap",
    "log_allows",
];

fn seccomp_actions(ctx: &Ctx, r: &mut Results) {
    let rule = |action: &str| seccomp(json!([{ "names": ["mkdir", "mkdirat"], "action": action }]));
    if let Some(run) = run_probe(
        ctx,
        r,
        &["errno_defaults_to_eperm"],
        &["mkdir:/tmp/d"],
        |b| {
            b.config["process"]["noNewPrivileges"] = json!(true);
            b.config["linux"]["seccomp"] = rule("SCMP_ACT_ERRNO");
        },
    ) {
        r.eq(
            "errno_defaults_to_eperm",
            errno_of(chk(&run.report, "mkdir:/tmp/d")),
            Some(libc::EPERM as i64),
        );
    }
    for (case, action) in [
        ("kill_thread", "SCMP_ACT_KILL"),
        ("kill_process", "SCMP_ACT_KILL_PROCESS"),
        ("trap", "SCMP_ACT_TRAP"),
    ] {
        let mut b = match ctx.bundle() {
            Ok(b) => b,
            Err(e) => {
                r.fail(case, e);
                continue;
            }
        };
        probe_args(&mut b.config, "report", &["mkdir:/tmp/d"]);
        b.config["process"]["noNewPrivileges"] = json!(true);
        b.config["linux"]["seccomp"] = rule(action);
        match probe_run_raw(ctx, &b) {
            Ok(Some(Exit::Signal(s))) if s == libc::SIGSYS => r.pass(case),
            Ok(Some(Exit::Unknown)) => r.skip(
                case,
                "the container's init was not reparented to the driver; exit status unknown",
            ),
            Ok(e) => r.fail(case, format!("process ended with {e:?}, want SIGSYS")),
            Err(e) => r.fail(case, e),
        }
    }
    if let Some(run) = run_probe(ctx, r, &["log_allows"], &["mkdir:/tmp/d"], |b| {
        b.config["process"]["noNewPrivileges"] = json!(true);
        b.config["linux"]["seccomp"] = rule("SCMP_ACT_LOG");
    }) {
        let v = chk(&run.report, "mkdir:/tmp/d");
        r.check("log_allows", v["ok"].is_number(), || format!("{v}"));
    }
}

fn seccomp_args(ctx: &Ctx, r: &mut Results) {
    for (case, mode, want_errno) in [
        ("arg_match_filtered", 0o755, Some(95)),
        ("arg_mismatch_allowed", 0o700, None),
    ] {
        let Some(run) = run_probe(ctx, r, &[case], &["mkdir:/tmp/d"], |b| {
            b.config["process"]["noNewPrivileges"] = json!(true);
            b.config["linux"]["seccomp"] = seccomp(json!([{
                "names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95,
                "args": [{ "index": 2, "value": mode, "op": "SCMP_CMP_EQ" }]
            }]));
        }) else {
            continue;
        };
        let v = chk(&run.report, "mkdir:/tmp/d");
        r.eq(case, errno_of(v), want_errno);
    }
    // SCMP_CMP_MASKED_EQ: `value` is the mask, `valueTwo` the datum ((arg & value) ==
    // valueTwo, runc's order). The probe's mkdirat passes mode 0o755: 0o755 & 0o070 == 0o050
    // matches, while the operands swapped (0o755 & 0o050 == 0o070) would not; with no
    // valueTwo the datum is 0, so the mask 0o002 matches too (mask 0, datum 0o002 never).
    for (case, arg) in [
        (
            "masked_eq_value_is_the_mask",
            json!({ "index": 2, "value": 0o070, "valueTwo": 0o050, "op": "SCMP_CMP_MASKED_EQ" }),
        ),
        (
            "masked_eq_value_two_defaults_to_zero",
            json!({ "index": 2, "value": 0o002, "op": "SCMP_CMP_MASKED_EQ" }),
        ),
    ] {
        let Some(run) = run_probe(ctx, r, &[case], &["mkdir:/tmp/d"], |b| {
            b.config["process"]["noNewPrivileges"] = json!(true);
            b.config["linux"]["seccomp"] = seccomp(json!([{
                "names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95, "args": [arg]
            }]));
        }) else {
            continue;
        };
        let v = chk(&run.report, "mkdir:/tmp/d");
        r.eq(case, errno_of(v), Some(95));
    }
}

fn seccomp_misc(ctx: &Ctx, r: &mut Results) {
    let case = "applied_for_non_root_without_nnp";
    if let Some(run) = run_probe(ctx, r, &[case], &["mkdir:/tmp/d"], |b| {
        b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
        b.config["process"]["noNewPrivileges"] = json!(false);
        b.config["linux"]["seccomp"] = seccomp(json!([
            { "names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95 }
        ]));
    }) {
        let rep = &run.report;
        let v = chk(rep, "mkdir:/tmp/d");
        r.check(
            case,
            rep["seccomp"] == "2" && errno_of(v) == Some(95),
            || format!("Seccomp {}, mkdir {v}", rep["seccomp"]),
        );
    }
    let res = expect_refusal(ctx, |b| {
        b.config["linux"]["seccomp"] =
            seccomp(json!([{ "names": ["mkdirat"], "action": "SCMP_ACT_BOGUS" }]));
    });
    refusal_case(r, "invalid_action_refused", res);
    // "When the action doesn't support an errno, the runtime MUST print an error and fail."
    let res = expect_refusal(ctx, |b| {
        b.config["linux"]["seccomp"] = seccomp(json!([
            { "names": ["mkdirat"], "action": "SCMP_ACT_KILL", "errnoRet": 1 }
        ]));
    });
    refusal_case(r, "errno_ret_on_kill_refused", res);
    let res = expect_refusal(ctx, |b| {
        let mut s = seccomp(json!([{ "names": ["mkdirat"], "action": "SCMP_ACT_ERRNO" }]));
        s["defaultErrnoRet"] = json!(1);
        b.config["linux"]["seccomp"] = s;
    });
    refusal_case(r, "default_errno_ret_on_allow_refused", res);
}
