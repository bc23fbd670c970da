//! config.md "root" and "mounts": the default filesystems, tmpfs and bind mounts, options,
//! order, propagation, recursive bind behaviour, destinations that must stay in the rootfs.

use std::fs;
use std::path::PathBuf;

use serde_json::json;

use super::{ok_str, run_probe};
use crate::bundle::push_mount;
use crate::harness::{chk, errno_of, has_opt, mount_at, Ctx, Results, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "root.defaults",
            cases: &[
                "pivoted_into_rootfs",
                "host_not_visible",
                "writable",
                "relative_path_resolved_against_bundle",
            ],
            run: root_defaults,
        },
        Scenario {
            name: "root.readonly",
            cases: ROOT_RO,
            run: root_readonly,
        },
        Scenario {
            name: "mounts.defaults",
            cases: MOUNT_DEFAULTS,
            run: mount_defaults,
        },
        Scenario {
            name: "mounts.tmpfs",
            cases: TMPFS,
            run: tmpfs,
        },
        Scenario {
            name: "mounts.bind",
            cases: BIND,
            run: bind,
        },
        Scenario {
            name: "mounts.order",
            cases: &["nested_after_parent", "later_mount_on_top"],
            run: order,
        },
        Scenario {
            name: "mounts.propagation",
            cases: &[
                "bind_rshared",
                "bind_rprivate",
                "rootfs_propagation_private",
                "rootfs_propagation_shared",
                "rootfs_propagation_unbindable",
            ],
            run: propagation,
        },
        Scenario {
            name: "mounts.safety",
            cases: &[
                "destination_symlink_stays_in_rootfs",
                "destination_dangling_symlink_resolved_in_rootfs",
            ],
            run: safety,
        },
    ]
}

fn root_defaults(ctx: &Ctx, r: &mut Results) {
    let cases = &[
        "pivoted_into_rootfs",
        "host_not_visible",
        "writable",
        "relative_path_resolved_against_bundle",
    ];
    let host_marker = ctx.work.join("template");
    let marker = host_marker.to_string_lossy().into_owned();
    let checks = [format!("stat:{marker}"), "write:/newfile".into()];
    let refs: Vec<&str> = checks.iter().map(String::as_str).collect();
    let Some(run) = run_probe(ctx, r, cases, &refs, |_| {}) else {
        return;
    };
    let rep = &run.report;
    // root.path is "rootfs" and the runtime runs with another working directory.
    r.pass("relative_path_resolved_against_bundle");
    r.check(
        "pivoted_into_rootfs",
        mount_at(rep, "/").is_some() && rep["argv"][0] == "/probe",
        || "no mount at / in mountinfo".into(),
    );
    r.check(
        "host_not_visible",
        errno_of(chk(rep, &checks[0])) == Some(libc::ENOENT as i64),
        || format!("host path {marker} is visible inside the container"),
    );
    r.check(
        "writable",
        chk(rep, "write:/newfile")["ok"].is_number(),
        || format!("write failed: {}", chk(rep, "write:/newfile")),
    );
}

const ROOT_RO: &[&str] = &[
    "root_mount_ro",
    "write_erofs",
    "tmpfs_mounts_still_writable",
    "absolute_root_path",
];

fn root_readonly(ctx: &Ctx, r: &mut Results) {
    let Some(run) = run_probe(ctx, r, ROOT_RO, &["write:/x", "write:/dev/shm/x"], |b| {
        let abs = b.rootfs().to_string_lossy().into_owned();
        b.config["root"] = json!({ "path": abs, "readonly": true });
    }) else {
        return;
    };
    let rep = &run.report;
    r.check(
        "root_mount_ro",
        mount_at(rep, "/").is_some_and(|m| has_opt(m, "ro")),
        || format!("/ mount: {:?}", mount_at(rep, "/")),
    );
    r.eq(
        "write_erofs",
        errno_of(chk(rep, "write:/x")),
        Some(libc::EROFS as i64),
    );
    r.check(
        "tmpfs_mounts_still_writable",
        chk(rep, "write:/dev/shm/x")["ok"].is_number(),
        || format!("{}", chk(rep, "write:/dev/shm/x")),
    );
    r.pass("absolute_root_path");
}

const MOUNT_DEFAULTS: &[&str] = &[
    "proc",
    "sysfs_ro",
    "dev_tmpfs",
    "devpts",
    "shm_options",
    "mqueue",
    "cgroup_ro",
];

fn mount_defaults(ctx: &Ctx, r: &mut Results) {
    let Some(run) = run_probe(ctx, r, MOUNT_DEFAULTS, &[], |_| {}) else {
        return;
    };
    let rep = &run.report;
    let fst = |d: &str| mount_at(rep, d).and_then(|m| m["fstype"].as_str().map(String::from));
    r.eq("proc", fst("/proc").as_deref(), Some("proc"));
    r.check(
        "sysfs_ro",
        mount_at(rep, "/sys").is_some_and(|m| m["fstype"] == "sysfs" && has_opt(m, "ro")),
        || format!("/sys: {:?}", mount_at(rep, "/sys")),
    );
    r.eq("dev_tmpfs", fst("/dev").as_deref(), Some("tmpfs"));
    r.eq("devpts", fst("/dev/pts").as_deref(), Some("devpts"));
    r.check(
        "shm_options",
        mount_at(rep, "/dev/shm").is_some_and(|m| {
            m["fstype"] == "tmpfs"
                && has_opt(m, "nosuid")
                && has_opt(m, "nodev")
                && has_opt(m, "noexec")
        }),
        || format!("/dev/shm: {:?}", mount_at(rep, "/dev/shm")),
    );
    r.eq("mqueue", fst("/dev/mqueue").as_deref(), Some("mqueue"));
    // Every cgroup filesystem under /sys/fs/cgroup must be read-only.
    let cg: Vec<&serde_json::Value> = rep["mounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| {
                    m["target"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("/sys/fs/cgroup")
                })
                .filter(|m| m["fstype"] == "cgroup" || m["fstype"] == "cgroup2")
                .collect()
        })
        .unwrap_or_default();
    let rw: Vec<&str> = cg
        .iter()
        .filter(|m| !has_opt(m, "ro"))
        .filter_map(|m| m["target"].as_str())
        .collect();
    r.check("cgroup_ro", !cg.is_empty() && rw.is_empty(), || {
        format!("cgroup filesystems mounted read-write: {rw:?}")
    });
}

const TMPFS: &[&str] = &[
    "fstype",
    "nosuid",
    "nodev",
    "noexec",
    "mode_option",
    "size_option",
    "destination_created",
];

fn tmpfs(ctx: &Ctx, r: &mut Results) {
    let checks = &["stat:/mnt/t/deep"];
    let Some(run) = run_probe(ctx, r, TMPFS, checks, |b| {
        push_mount(
            &mut b.config,
            json!({ "destination": "/mnt/t/deep", "type": "tmpfs", "source": "tmpfs",
                     "options": ["nosuid", "nodev", "noexec", "mode=0710", "size=1m"] }),
        );
    }) else {
        return;
    };
    let rep = &run.report;
    let m = mount_at(rep, "/mnt/t/deep").cloned().unwrap_or_default();
    r.eq("fstype", m["fstype"].as_str(), Some("tmpfs"));
    for o in ["nosuid", "nodev", "noexec"] {
        r.check(o, has_opt(&m, o), || {
            format!("options {} {}", m["opts"], m["super"])
        });
    }
    r.eq(
        "mode_option",
        chk(rep, "stat:/mnt/t/deep")["mode"].as_u64(),
        Some(0o710),
    );
    r.check("size_option", has_opt(&m, "size=1024k"), || {
        format!("super options {}", m["super"])
    });
    r.check("destination_created", !m.is_null(), || {
        "no mount at /mnt/t/deep".into()
    });
}

const BIND: &[&str] = &[
    "ro_readable",
    "ro_write_erofs",
    "rw_write_visible_on_host",
    "file_bind",
    "nosuid_option",
    "relative_source",
];

fn bind(ctx: &Ctx, r: &mut Results) {
    bind_main(ctx, r);
    bind_relative(ctx, r);
}

fn bind_main(ctx: &Ctx, r: &mut Results) {
    let mut shared = PathBuf::new();
    let checks = &[
        "read:/mnt/ro/data.txt",
        "write:/mnt/ro/new",
        "write:/mnt/rw/fromcontainer",
        "read:/etc/bound.txt",
    ];
    let Some(run) = run_probe(ctx, r, &BIND[..5], checks, |b| {
        shared = b.shared();
        let s = shared.to_string_lossy().into_owned();
        let _ = fs::write(shared.join("data.txt"), "hello\n");
        let f = b.dir.join("file.txt");
        let _ = fs::write(&f, "file\n");
        for m in [
            json!({ "destination": "/mnt/ro", "type": "bind", "source": s,
                    "options": ["bind", "ro", "nosuid"] }),
            json!({ "destination": "/mnt/rw", "type": "bind", "source": s,
                    "options": ["rbind", "rw"] }),
            json!({ "destination": "/etc/bound.txt", "type": "bind",
                    "source": f.to_string_lossy(), "options": ["bind", "ro"] }),
        ] {
            push_mount(&mut b.config, m);
        }
    }) else {
        return;
    };
    let rep = &run.report;
    r.eq(
        "ro_readable",
        ok_str(chk(rep, "read:/mnt/ro/data.txt")),
        Some("hello\n"),
    );
    r.eq(
        "ro_write_erofs",
        errno_of(chk(rep, "write:/mnt/ro/new")),
        Some(libc::EROFS as i64),
    );
    r.check(
        "rw_write_visible_on_host",
        shared.join("fromcontainer").exists(),
        || format!("write: {}", chk(rep, "write:/mnt/rw/fromcontainer")),
    );
    r.eq(
        "file_bind",
        ok_str(chk(rep, "read:/etc/bound.txt")),
        Some("file\n"),
    );
    r.check(
        "nosuid_option",
        mount_at(rep, "/mnt/ro").is_some_and(|m| has_opt(m, "nosuid")),
        || format!("{:?}", mount_at(rep, "/mnt/ro")),
    );
}

fn bind_relative(ctx: &Ctx, r: &mut Results) {
    // A relative bind source is relative to the bundle (the runtime runs elsewhere).
    let checks = &["read:/mnt/rel/data.txt"];
    if let Some(run) = run_probe(ctx, r, &BIND[5..], checks, |b| {
        let _ = fs::write(b.shared().join("data.txt"), "hello\n");
        push_mount(
            &mut b.config,
            json!({ "destination": "/mnt/rel", "type": "bind", "source": "shared",
                    "options": ["rbind"] }),
        );
    }) {
        r.eq(
            "relative_source",
            ok_str(chk(&run.report, checks[0])),
            Some("hello\n"),
        );
    }
}

fn order(ctx: &Ctx, r: &mut Results) {
    let cases = &["nested_after_parent", "later_mount_on_top"];
    let Some(run) = run_probe(
        ctx,
        r,
        cases,
        &["read:/mnt/o/x", "stat:/mnt/s/data.txt"],
        |b| {
            let f = b.dir.join("x.txt");
            let _ = fs::write(&f, "x\n");
            let _ = fs::write(b.shared().join("data.txt"), "d\n");
            let s = b.shared().to_string_lossy().into_owned();
            for m in [
                json!({ "destination": "/mnt/o", "type": "tmpfs", "source": "tmpfs" }),
                json!({ "destination": "/mnt/o/x", "type": "bind",
                    "source": f.to_string_lossy(), "options": ["bind"] }),
                json!({ "destination": "/mnt/s", "type": "tmpfs", "source": "tmpfs" }),
                json!({ "destination": "/mnt/s", "type": "bind", "source": s,
                    "options": ["rbind"] }),
            ] {
                push_mount(&mut b.config, m);
            }
        },
    ) else {
        return;
    };
    let rep = &run.report;
    r.eq(
        "nested_after_parent",
        ok_str(chk(rep, "read:/mnt/o/x")),
        Some("x\n"),
    );
    r.eq(
        "later_mount_on_top",
        chk(rep, "stat:/mnt/s/data.txt")["type"].as_str(),
        Some("f"),
    );
}

fn propagation(ctx: &Ctx, r: &mut Results) {
    let cases = &[
        "bind_rshared",
        "bind_rprivate",
        "rootfs_propagation_private",
    ];
    let Some(run) = run_probe(ctx, r, cases, &[], |b| {
        let s = b.shared().to_string_lossy().into_owned();
        push_mount(
            &mut b.config,
            json!({ "destination": "/mnt/sh", "type": "bind", "source": s,
                    "options": ["rbind", "rshared"] }),
        );
        push_mount(
            &mut b.config,
            json!({ "destination": "/mnt/pr", "type": "bind", "source": s,
                    "options": ["rbind", "rprivate"] }),
        );
        b.config["linux"]["rootfsPropagation"] = json!("private");
    }) else {
        return;
    };
    let rep = &run.report;
    let opt = |d: &str| {
        mount_at(rep, d)
            .and_then(|m| m["optional"].as_str().map(String::from))
            .unwrap_or_else(|| "<no mount>".into())
    };
    let sh = opt("/mnt/sh");
    r.check("bind_rshared", sh.contains("shared:"), || {
        format!("optional fields {sh:?}")
    });
    let pr = opt("/mnt/pr");
    r.check("bind_rprivate", pr.is_empty(), || {
        format!("optional fields {pr:?}")
    });
    let root = opt("/");
    r.check("rootfs_propagation_private", root.is_empty(), || {
        format!("optional fields of / {root:?}")
    });
    drop(run);
    for (case, value, want) in [
        ("rootfs_propagation_shared", "shared", "shared:"),
        ("rootfs_propagation_unbindable", "unbindable", "unbindable"),
    ] {
        if let Some(run) = run_probe(ctx, r, &[case], &[], |b| {
            b.config["linux"]["rootfsPropagation"] = json!(value);
        }) {
            let root = mount_at(&run.report, "/")
                .and_then(|m| m["optional"].as_str().map(String::from))
                .unwrap_or_else(|| "<no mount>".into());
            r.check(case, root.contains(want), || {
                format!("optional fields of / {root:?}, want {want:?}")
            });
        }
    }
}

/// A destination under a symlink must be resolved inside the rootfs (runc: securejoin),
/// never on the host; a runtime may refuse such a config, but must not escape.
fn safety(ctx: &Ctx, r: &mut Results) {
    let cases = &[
        "destination_symlink_stays_in_rootfs",
        "destination_dangling_symlink_resolved_in_rootfs",
    ];
    let mut b = match ctx.bundle() {
        Ok(b) => b,
        Err(e) => return r.fail_rest(cases, &e),
    };
    let outside = b.dir.join("outside");
    let _ = fs::create_dir_all(&outside);
    let _ = std::os::unix::fs::symlink(&outside, b.rootfs().join("escape"));
    let inside = format!("{}/m", outside.display());
    crate::bundle::probe_args(&mut b.config, "report", &[]);
    push_mount(
        &mut b.config,
        json!({ "destination": "/escape/m", "type": "tmpfs", "source": "tmpfs" }),
    );
    let run = crate::harness::probe_run(ctx, &b);
    r.check(cases[0], !outside.join("m").exists(), || {
        format!("{} was created on the host", outside.join("m").display())
    });
    match run {
        Err(e) => r.fail(cases[1], format!("runc resolves it in the rootfs; {e}")),
        Ok(run) => r.check(cases[1], mount_at(&run.report, &inside).is_some(), || {
            format!("no tmpfs at {inside} inside the container")
        }),
    }
}
