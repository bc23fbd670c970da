//! features.md: the `features` verb's output, checked against the features schema.

use serde_json::Value;

use super::features;
use crate::harness::{Ctx, Results, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "features.schema",
        cases: CASES,
        run: schema,
    }]
}

const CASES: &[&str] = &[
    "json_object",
    "oci_versions",
    "hooks",
    "mount_options",
    "namespaces",
    "capabilities",
    "cgroup",
    "seccomp",
    "lsm_and_rdt",
    "annotations",
];

const HOOKS: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];
const NAMESPACES: &[&str] = &[
    "cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time",
];

fn semver(s: &str) -> Option<(u64, u64, u64)> {
    let core = s.split(['-', '+']).next()?;
    let p: Vec<u64> = core
        .split('.')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    (p.len() == 3).then(|| (p[0], p[1], p[2]))
}

fn strings(v: &Value) -> Option<Vec<&str>> {
    v.as_array()?.iter().map(Value::as_str).collect()
}

/// Absent, or an array of strings all satisfying `ok`.
fn str_list(v: &Value, ok: impl Fn(&str) -> bool) -> Result<(), String> {
    if v.is_null() {
        return Ok(());
    }
    let Some(items) = strings(v) else {
        return Err(format!("not an array of strings: {v}"));
    };
    match items.iter().find(|s| !ok(s)) {
        Some(bad) => Err(format!("unexpected entry {bad:?}")),
        None => Ok(()),
    }
}

fn bools(v: &Value, keys: &[&str]) -> Result<(), String> {
    if v.is_null() {
        return Ok(());
    }
    if !v.is_object() {
        return Err(format!("not an object: {v}"));
    }
    match keys
        .iter()
        .find(|k| !v[**k].is_null() && !v[**k].is_boolean())
    {
        Some(k) => Err(format!("{k} is not a boolean: {}", v[*k])),
        None => Ok(()),
    }
}

fn set(r: &mut Results, case: &str, res: Result<(), String>) {
    match res {
        Ok(()) => r.pass(case),
        Err(e) => r.fail(case, e),
    }
}

fn upper_prefixed(prefix: &'static str) -> impl Fn(&str) -> bool {
    move |s: &str| {
        s.starts_with(prefix)
            && s.len() > prefix.len()
            && s.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    }
}

fn schema(ctx: &Ctx, r: &mut Results) {
    let Some(f) = features(ctx) else {
        return r.fail_rest(CASES, "`features` failed or did not print JSON");
    };
    r.check("json_object", f.is_object(), || format!("{f}"));
    let min = f["ociVersionMin"].as_str().and_then(semver);
    let max = f["ociVersionMax"].as_str().and_then(semver);
    r.check(
        "oci_versions",
        matches!((min, max), (Some(a), Some(b)) if a <= b && a.0 == 1),
        || format!("min {} max {}", f["ociVersionMin"], f["ociVersionMax"]),
    );
    set(r, "hooks", str_list(&f["hooks"], |h| HOOKS.contains(&h)));
    set(
        r,
        "mount_options",
        str_list(&f["mountOptions"], |o| {
            !o.is_empty() && !o.contains(',') && !o.contains(char::is_whitespace)
        }),
    );
    let l = &f["linux"];
    set(
        r,
        "namespaces",
        str_list(&l["namespaces"], |n| NAMESPACES.contains(&n)),
    );
    set(
        r,
        "capabilities",
        str_list(&l["capabilities"], upper_prefixed("CAP_")),
    );
    set(
        r,
        "cgroup",
        bools(
            &l["cgroup"],
            &["v1", "v2", "systemd", "systemdUser", "rdma"],
        ),
    );
    let sc = &l["seccomp"];
    let sc_res = bools(sc, &["enabled"])
        .and_then(|_| str_list(&sc["actions"], upper_prefixed("SCMP_ACT_")))
        .and_then(|_| str_list(&sc["operators"], upper_prefixed("SCMP_CMP_")))
        .and_then(|_| str_list(&sc["archs"], upper_prefixed("SCMP_ARCH_")))
        .and_then(|_| str_list(&sc["knownFlags"], upper_prefixed("SECCOMP_FILTER_FLAG_")))
        .and_then(|_| {
            str_list(
                &sc["supportedFlags"],
                upper_prefixed("SECCOMP_FILTER_FLAG_"),
            )
        });
    set(r, "seccomp", sc_res);
    let lsm = bools(&l["apparmor"], &["enabled"])
        .and_then(|_| bools(&l["selinux"], &["enabled"]))
        .and_then(|_| bools(&l["intelRdt"], &["enabled"]));
    set(r, "lsm_and_rdt", lsm);
    let ann = &f["annotations"];
    r.check(
        "annotations",
        ann.is_null()
            || ann
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string)),
        || format!("annotations {ann}"),
    );
}
