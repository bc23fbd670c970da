//! config-linux.md "devices", "default devices" and the device cgroup ("resources.devices").

use serde_json::{json, Value};

use super::run_probe;
use crate::harness::{chk, errno_of, Ctx, Results, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "devices.defaults",
            cases: DEFAULTS,
            run: defaults,
        },
        Scenario {
            name: "devices.extra",
            cases: EXTRA,
            run: extra,
        },
        Scenario {
            name: "devices.cgroup",
            cases: &[
                "unlisted_device_denied",
                "read_rule_allows_read",
                "read_rule_denies_write",
                "rules_applied_in_order",
                "unknown_access_letters_ignored",
            ],
            run: cgroup,
        },
    ]
}

const DEFAULT_NODES: &[(&str, &str, u64, u64)] = &[
    ("null", "/dev/null", 1, 3),
    ("zero", "/dev/zero", 1, 5),
    ("full", "/dev/full", 1, 7),
    ("random", "/dev/random", 1, 8),
    ("urandom", "/dev/urandom", 1, 9),
    ("tty", "/dev/tty", 5, 0),
];

const DEFAULTS: &[&str] = &[
    "null",
    "zero",
    "full",
    "random",
    "urandom",
    "tty",
    "ptmx",
    "fd_symlink",
    "stdin_symlink",
    "stdout_symlink",
    "stderr_symlink",
    "default_devices_usable",
    "nodes_world_rw",
];

fn defaults(ctx: &Ctx, r: &mut Results) {
    let mut checks: Vec<String> = DEFAULT_NODES
        .iter()
        .map(|(_, p, _, _)| format!("stat:{p}"))
        .collect();
    for p in [
        "/dev/ptmx",
        "/dev/fd",
        "/dev/stdin",
        "/dev/stdout",
        "/dev/stderr",
    ] {
        checks.push(format!("stat:{p}"));
    }
    checks.extend(
        [
            "openw:/dev/null",
            "openr:/dev/zero",
            "openr:/dev/urandom",
            "openw:/dev/full",
        ]
        .map(String::from),
    );
    let refs: Vec<&str> = checks.iter().map(String::as_str).collect();
    let Some(run) = run_probe(ctx, r, DEFAULTS, &refs, |_| {}) else {
        return;
    };
    let rep = &run.report;
    let mut modes = Vec::new();
    for (case, path, maj, min) in DEFAULT_NODES {
        let s = chk(rep, &format!("stat:{path}"));
        r.check(
            case,
            s["type"] == "c" && s["major"] == *maj && s["minor"] == *min,
            || format!("{path}: {s}"),
        );
        if *case != "tty" {
            modes.push((path, s["mode"].as_u64().unwrap_or(0)));
        }
    }
    let ptmx = chk(rep, "stat:/dev/ptmx");
    r.check(
        "ptmx",
        (ptmx["type"] == "l"
            && ptmx["link"]
                .as_str()
                .is_some_and(|l| l.ends_with("pts/ptmx")))
            || (ptmx["type"] == "c" && ptmx["major"] == 5 && ptmx["minor"] == 2),
        || format!("/dev/ptmx: {ptmx}"),
    );
    for (case, path, target) in [
        ("fd_symlink", "/dev/fd", "/proc/self/fd"),
        ("stdin_symlink", "/dev/stdin", "/proc/self/fd/0"),
        ("stdout_symlink", "/dev/stdout", "/proc/self/fd/1"),
        ("stderr_symlink", "/dev/stderr", "/proc/self/fd/2"),
    ] {
        let s = chk(rep, &format!("stat:{path}"));
        r.check(case, s["type"] == "l" && s["link"] == target, || {
            format!("{path}: {s}")
        });
    }
    let opens: Vec<(&str, &Value)> = [
        "openw:/dev/null",
        "openr:/dev/zero",
        "openr:/dev/urandom",
        "openw:/dev/full",
    ]
    .iter()
    .map(|c| (*c, chk(rep, c)))
    .collect();
    r.check(
        "default_devices_usable",
        opens.iter().all(|(_, v)| v["ok"].is_number()),
        || format!("{opens:?}"),
    );
    r.check(
        "nodes_world_rw",
        modes.iter().all(|(_, m)| m & 0o666 == 0o666),
        || format!("modes {modes:?}"),
    );
}

const EXTRA: &[&str] = &[
    "outside_dev",
    "existing_file_conflict_refused",
    "char_created",
    "file_mode",
    "owner",
    "block_created",
    "fifo_created",
];

fn extra(ctx: &Ctx, r: &mut Results) {
    let checks = &["stat:/dev/cnull", "stat:/dev/cblk", "stat:/dev/cfifo"];
    // "If a file already exists at path that does not match the requested device, the
    // runtime MUST generate an error."
    let res = super::expect_refusal(ctx, |b| {
        let _ = std::fs::write(b.rootfs().join("conflict"), "a regular file");
        b.config["linux"]["devices"] =
            json!([{ "path": "/conflict", "type": "c", "major": 1, "minor": 3 }]);
    });
    super::refusal_case(r, "existing_file_conflict_refused", res);
    // "The path MAY be anywhere in the container filesystem, notably outside of /dev."
    if let Some(run) = run_probe(ctx, r, &["outside_dev"], &["stat:/opt/devs/cnull2"], |b| {
        b.config["linux"]["devices"] = json!([
            { "path": "/opt/devs/cnull2", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666 }
        ]);
    }) {
        let o = chk(&run.report, "stat:/opt/devs/cnull2");
        r.check(
            "outside_dev",
            o["type"] == "c" && o["major"] == 1 && o["minor"] == 3,
            || format!("/opt/devs/cnull2: {o}"),
        );
    }
    let Some(run) = run_probe(ctx, r, &EXTRA[2..], checks, |b| {
        b.config["linux"]["devices"] = json!([
            { "path": "/dev/cnull", "type": "c", "major": 1, "minor": 3,
              "fileMode": 0o620, "uid": 1000, "gid": 1001 },
            { "path": "/dev/cblk", "type": "b", "major": 7, "minor": 0, "fileMode": 0o600 },
            { "path": "/dev/cfifo", "type": "p", "fileMode": 0o644 }
        ]);
    }) else {
        return;
    };
    let rep = &run.report;
    let c = chk(rep, "stat:/dev/cnull");
    r.check(
        "char_created",
        c["type"] == "c" && c["major"] == 1 && c["minor"] == 3,
        || format!("{c}"),
    );
    r.eq("file_mode", c["mode"].as_u64(), Some(0o620));
    r.eq(
        "owner",
        (c["uid"].as_u64(), c["gid"].as_u64()),
        (Some(1000), Some(1001)),
    );
    let bl = chk(rep, "stat:/dev/cblk");
    r.check(
        "block_created",
        bl["type"] == "b" && bl["major"] == 7 && bl["minor"] == 0,
        || format!("{bl}"),
    );
    let f = chk(rep, "stat:/dev/cfifo");
    r.eq("fifo_created", f["type"].as_str(), Some("p"));
}

/// A device cgroup rule for /dev/cfuse (c 10:229).
fn fuse_rule(allow: bool, access: &str) -> serde_json::Value {
    json!({ "allow": allow, "type": "c", "major": 10, "minor": 229, "access": access })
}

/// Appends `rule` to the bundle's linux.resources.devices.
fn push_rule(b: &mut crate::harness::Bundle, rule: serde_json::Value) {
    b.config["linux"]["resources"]["devices"]
        .as_array_mut()
        .expect("device rules")
        .push(rule);
}

fn cgroup(ctx: &Ctx, r: &mut Results) {
    let fuse = json!({ "path": "/dev/cfuse", "type": "c", "major": 10, "minor": 229,
                       "fileMode": 0o666 });
    let eperm = Some(libc::EPERM as i64);
    if let Some(run) = run_probe(
        ctx,
        r,
        &["unlisted_device_denied"],
        &["openr:/dev/cfuse"],
        |b| {
            b.config["linux"]["devices"] = json!([fuse.clone()]);
        },
    ) {
        let v = chk(&run.report, "openr:/dev/cfuse");
        r.eq("unlisted_device_denied", errno_of(v), eperm);
    }
    let cases = &["read_rule_allows_read", "read_rule_denies_write"];
    let checks = &["openr:/dev/cfuse", "openw:/dev/cfuse"];
    if let Some(run) = run_probe(ctx, r, cases, checks, |b| {
        b.config["linux"]["devices"] = json!([fuse.clone()]);
        push_rule(b, fuse_rule(true, "r"));
    }) {
        let rd = chk(&run.report, "openr:/dev/cfuse");
        let enoent = Some(libc::ENOENT as i64);
        r.check(
            "read_rule_allows_read",
            ![eperm, enoent].contains(&errno_of(rd)),
            || format!("open for reading: {rd}"),
        );
        let wr = chk(&run.report, "openw:/dev/cfuse");
        r.eq("read_rule_denies_write", errno_of(wr), eperm);
    }
    // "The runtime MUST apply entries in the listed order": allow, then deny, wins deny.
    let case = "rules_applied_in_order";
    if let Some(run) = run_probe(ctx, r, &[case], &["openr:/dev/cfuse"], |b| {
        b.config["linux"]["devices"] = json!([fuse.clone()]);
        let rules = b.config["linux"]["resources"]["devices"]
            .as_array_mut()
            .expect("device rules");
        rules.push(fuse_rule(true, "rwm"));
        rules.push(fuse_rule(false, "rwm"));
    }) {
        r.eq(case, errno_of(chk(&run.report, "openr:/dev/cfuse")), eperm);
    }
    // runc keeps r, w and m of an access and ignores other letters (runc's own update.bats
    // writes "rwa"): "ra" allows reading only, and the container is not refused.
    let case = "unknown_access_letters_ignored";
    if let Some(run) = run_probe(ctx, r, &[case], checks, |b| {
        b.config["linux"]["devices"] = json!([fuse.clone()]);
        push_rule(b, fuse_rule(true, "ra"));
    }) {
        let rd = chk(&run.report, "openr:/dev/cfuse");
        let wr = chk(&run.report, "openw:/dev/cfuse");
        r.check(
            case,
            ![eperm, Some(libc::ENOENT as i64)].contains(&errno_of(rd)) && errno_of(wr) == eperm,
            || format!("open for reading: {rd}, for writing: {wr}"),
        );
    }
}
