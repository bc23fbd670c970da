//! hostname/domainname, sysctl, personality, scheduler, ioPriority, ociVersion.

use serde_json::json;

use super::{expect_refusal, ok_str, refusal_case, run_probe};
use crate::bundle::remove_namespace;
use crate::harness::{chk, Ctx, Results, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "uts.names",
            cases: &[
                "hostname",
                "domainname",
                "hostname_without_uts_ns_refused",
                "hostname_unset_keeps_host_name",
            ],
            run: uts,
        },
        Scenario {
            name: "sysctl.apply",
            cases: &["net_sysctl", "ipc_sysctl", "uts_sysctl"],
            run: sysctl,
        },
        Scenario {
            name: "sysctl.invalid",
            cases: &["unknown_sysctl_refused", "net_sysctl_in_host_netns_refused"],
            run: sysctl_invalid,
        },
        Scenario {
            name: "personality.domain",
            cases: &["linux32", "invalid_domain_refused"],
            run: personality,
        },
        Scenario {
            name: "scheduler.policy",
            cases: &["sched_batch_policy", "nice"],
            run: scheduler,
        },
        Scenario {
            name: "iopriority.class",
            cases: &["best_effort_priority"],
            run: ioprio,
        },
        Scenario {
            name: "config.version",
            cases: &["oci_version_1_0_0_accepted"],
            run: version,
        },
    ]
}

fn uts(ctx: &Ctx, r: &mut Results) {
    let cases = &["hostname", "domainname"];
    if let Some(run) = run_probe(ctx, r, cases, &[], |b| {
        b.config["hostname"] = json!("conformance-host");
        b.config["domainname"] = json!("example.org");
    }) {
        r.eq(
            "hostname",
            run.report["hostname"].as_str(),
            Some("conformance-host"),
        );
        r.eq(
            "domainname",
            run.report["domainname"].as_str(),
            Some("example.org"),
        );
    }
    let res = expect_refusal(ctx, |b| {
        remove_namespace(&mut b.config, "uts");
        b.config["hostname"] = json!("must-not-be-set");
    });
    refusal_case(r, "hostname_without_uts_ns_refused", res);
    let case = "hostname_unset_keeps_host_name";
    if let Some(run) = run_probe(ctx, r, &[case], &[], |b| {
        b.config.as_object_mut().map(|o| o.remove("hostname"));
    }) {
        // SAFETY: uname into a zeroed struct we own.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        unsafe { libc::uname(&mut u) };
        let host: String = u
            .nodename
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8 as char)
            .collect();
        r.eq(case, run.report["hostname"].as_str(), Some(host.as_str()));
    }
}

fn sysctl(ctx: &Ctx, r: &mut Results) {
    let cases = &["net_sysctl", "ipc_sysctl", "uts_sysctl"];
    let checks = &[
        "read:/proc/sys/net/ipv4/ip_forward",
        "read:/proc/sys/kernel/msgmax",
        "read:/proc/sys/kernel/domainname",
    ];
    let Some(run) = run_probe(ctx, r, cases, checks, |b| {
        b.config["linux"]["sysctl"] = json!({
            "net.ipv4.ip_forward": "1",
            "kernel.msgmax": "12345",
            "kernel.domainname": "sysctl.example",
        });
    }) else {
        return;
    };
    let rep = &run.report;
    let v = |c: &str| ok_str(chk(rep, c)).map(|s| s.trim().to_string());
    r.eq("net_sysctl", v(checks[0]).as_deref(), Some("1"));
    r.eq("ipc_sysctl", v(checks[1]).as_deref(), Some("12345"));
    r.eq(
        "uts_sysctl",
        v(checks[2]).as_deref(),
        Some("sysctl.example"),
    );
}

fn sysctl_invalid(ctx: &Ctx, r: &mut Results) {
    let res = expect_refusal(ctx, |b| {
        b.config["linux"]["sysctl"] = json!({ "kernel.no_such_sysctl_xyz": "1" });
    });
    refusal_case(r, "unknown_sysctl_refused", res);
    let res = expect_refusal(ctx, |b| {
        remove_namespace(&mut b.config, "network");
        b.config["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": "1" });
    });
    refusal_case(r, "net_sysctl_in_host_netns_refused", res);
}

fn personality(ctx: &Ctx, r: &mut Results) {
    if let Some(run) = run_probe(ctx, r, &["linux32"], &[], |b| {
        b.config["linux"]["personality"] = json!({ "domain": "LINUX32" });
    }) {
        let p = run.report["personality"].as_i64().unwrap_or(-1);
        r.check("linux32", p & 0xff == 8, || format!("personality {p:#x}"));
    }
    let res = expect_refusal(ctx, |b| {
        b.config["linux"]["personality"] = json!({ "domain": "NOT_A_DOMAIN" });
    });
    refusal_case(r, "invalid_domain_refused", res);
}

fn scheduler(ctx: &Ctx, r: &mut Results) {
    let cases = &["sched_batch_policy", "nice"];
    let Some(run) = run_probe(ctx, r, cases, &[], |b| {
        b.config["process"]["scheduler"] = json!({ "policy": "SCHED_BATCH", "nice": 5 });
    }) else {
        return;
    };
    r.eq(
        "sched_batch_policy",
        run.report["sched_policy"].as_i64(),
        Some(libc::SCHED_BATCH as i64),
    );
    r.eq("nice", run.report["nice"].as_i64(), Some(5));
}

fn ioprio(ctx: &Ctx, r: &mut Results) {
    let Some(run) = run_probe(ctx, r, &["best_effort_priority"], &[], |b| {
        b.config["process"]["ioPriority"] = json!({ "class": "IOPRIO_CLASS_BE", "priority": 6 });
    }) else {
        return;
    };
    r.eq(
        "best_effort_priority",
        run.report["ioprio"].as_i64(),
        Some((2 << 13) | 6),
    );
}

fn version(ctx: &Ctx, r: &mut Results) {
    if let Some(_run) = run_probe(ctx, r, &["oci_version_1_0_0_accepted"], &[], |b| {
        b.config["ociVersion"] = json!("1.0.0");
    }) {
        r.pass("oci_version_1_0_0_accepted");
    }
}
