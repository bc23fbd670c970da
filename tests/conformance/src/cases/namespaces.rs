//! config-linux.md "namespaces", "user namespace mappings" and "time offsets".

use serde_json::json;

use super::{expect_refusal, feature_has, refusal_case, run_probe};
use crate::bundle::{remove_namespace, set_namespace};
use crate::harness::{chk, host_ns, Container, Ctx, Results, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "namespaces.defaults",
            cases: DEFAULTS,
            run: defaults,
        },
        Scenario {
            name: "namespaces.cgroup",
            cases: &["new_cgroup_ns", "cgroup_root_view"],
            run: cgroup,
        },
        Scenario {
            name: "namespaces.user",
            cases: USER,
            run: user,
        },
        Scenario {
            name: "namespaces.user_bind_sources",
            cases: USER_BIND_SOURCES,
            run: user_bind_sources,
        },
        Scenario {
            name: "namespaces.join",
            cases: &["join_net", "join_ipc", "join_uts", "join_pid"],
            run: join,
        },
        Scenario {
            name: "namespaces.invalid",
            cases: &[
                "path_missing_refused",
                "path_wrong_type_refused",
                "duplicate_type_refused",
            ],
            run: invalid,
        },
        Scenario {
            name: "namespaces.absent",
            cases: &["network_absent_shares_host", "ipc_absent_shares_host"],
            run: absent,
        },
        Scenario {
            name: "namespaces.time",
            cases: &["new_time_ns", "monotonic_offset", "boottime_offset"],
            run: time,
        },
    ]
}

const DEFAULTS: &[&str] = &[
    "pid_new_and_pid1",
    "net_new",
    "ipc_new",
    "uts_new",
    "mnt_new",
    "cgroup_unlisted_inherited",
    "user_unlisted_inherited",
    "time_unlisted_inherited",
];

fn defaults(ctx: &Ctx, r: &mut Results) {
    let Some(run) = run_probe(ctx, r, DEFAULTS, &[], |_| {}) else {
        return;
    };
    let rep = &run.report;
    let ns = |n: &str| rep["ns"][n].as_str().unwrap_or("").to_string();
    r.check(
        "pid_new_and_pid1",
        ns("pid") != host_ns("pid") && rep["pid"] == 1,
        || {
            format!(
                "pid ns {} (host {}), pid {}",
                ns("pid"),
                host_ns("pid"),
                rep["pid"]
            )
        },
    );
    for (case, n) in [
        ("net_new", "net"),
        ("ipc_new", "ipc"),
        ("uts_new", "uts"),
        ("mnt_new", "mnt"),
    ] {
        let (c, h) = (ns(n), host_ns(n));
        r.check(case, !c.is_empty() && c != h, || {
            format!("container {c}, host {h}")
        });
    }
    for (case, n) in [
        ("cgroup_unlisted_inherited", "cgroup"),
        ("user_unlisted_inherited", "user"),
        ("time_unlisted_inherited", "time"),
    ] {
        let (c, h) = (ns(n), host_ns(n));
        if h.is_empty() {
            r.skip(case, format!("the kernel has no {n} namespace"));
        } else {
            r.eq(case, c, h);
        }
    }
}

fn cgroup(ctx: &Ctx, r: &mut Results) {
    let cases = &["new_cgroup_ns", "cgroup_root_view"];
    let Some(run) = run_probe(ctx, r, cases, &[], |b| {
        set_namespace(&mut b.config, "cgroup", None)
    }) else {
        return;
    };
    let rep = &run.report;
    let c = rep["ns"]["cgroup"].as_str().unwrap_or("").to_string();
    r.check("new_cgroup_ns", c != host_ns("cgroup"), || {
        format!("container {c}, host {}", host_ns("cgroup"))
    });
    let text = rep["cgroup"].as_str().unwrap_or("");
    r.check(
        "cgroup_root_view",
        !text.is_empty() && text.lines().all(|l| l.ends_with(":/")),
        || format!("/proc/self/cgroup: {text:?}"),
    );
}

const USER: &[&str] = &[
    "new_user_ns",
    "uid_map",
    "gid_map",
    "root_inside",
    "dev_null_usable",
];

fn user(ctx: &Ctx, r: &mut Results) {
    let Some(run) = run_probe(ctx, r, USER, &["openw:/dev/null"], |b| {
        set_namespace(&mut b.config, "user", None);
        b.config["linux"]["uidMappings"] =
            json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
        b.config["linux"]["gidMappings"] =
            json!([{ "containerID": 0, "hostID": 200000, "size": 65536 }]);
        // A user namespace cannot mount a v1 cgroup tree it does not own; keep it simple.
        b.config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .retain(|m| m["type"] != "cgroup");
        let _ = chown_tree(&b.rootfs(), 100000, 200000);
    }) else {
        return;
    };
    let rep = &run.report;
    let u = rep["ns"]["user"].as_str().unwrap_or("").to_string();
    r.check("new_user_ns", u != host_ns("user"), || {
        format!("user ns {u}")
    });
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    r.eq(
        "uid_map",
        norm(rep["uid_map"].as_str().unwrap_or("")),
        "0 100000 65536".to_string(),
    );
    r.eq(
        "gid_map",
        norm(rep["gid_map"].as_str().unwrap_or("")),
        "0 200000 65536".to_string(),
    );
    r.eq(
        "root_inside",
        (rep["uid"].as_u64(), rep["gid"].as_u64()),
        (Some(0), Some(0)),
    );
    r.check(
        "dev_null_usable",
        chk(rep, "openw:/dev/null")["ok"].is_number(),
        || format!("{}", chk(rep, "openw:/dev/null")),
    );
}

const USER_BIND_SOURCES: &[&str] = &[
    "bind_source_behind_a_dir_only_host_root_reaches",
    "bind_source_behind_a_dir_only_host_root_reaches_ro",
];

/// Bind mounts whose sources sit below a 0700 directory of the host's root: the container's
/// mapped root (uid 100000) cannot look them up, the runtime can, and must mount them before
/// it becomes that user (runc's userns.bats "userns with 2 inaccessible mounts").
fn user_bind_sources(ctx: &Ctx, r: &mut Results) {
    let checks = &[
        "stat:/mnt/hidden/foo",
        "write:/mnt/hidden/new",
        "stat:/mnt/hidden-ro/foo",
        "write:/mnt/hidden-ro/new",
    ];
    let Some(run) = run_probe(ctx, r, USER_BIND_SOURCES, checks, |b| {
        set_namespace(&mut b.config, "user", None);
        b.config["linux"]["uidMappings"] =
            json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
        b.config["linux"]["gidMappings"] =
            json!([{ "containerID": 0, "hostID": 200000, "size": 65536 }]);
        b.config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .retain(|m| m["type"] != "cgroup");
        let _ = chown_tree(&b.rootfs(), 100000, 200000);
        let mut mounts = vec![];
        for (name, opts) in [
            ("hidden", json!(["bind"])),
            ("hidden-ro", json!(["bind", "ro"])),
        ] {
            // shared/NAME (0700, the host's root) / dir (the mapped root's) / foo
            let outer = b.shared().join(name);
            let dir = outer.join("dir");
            let made = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(dir.join("foo"), "x"))
                .and_then(|()| chown_tree(&dir, 100000, 200000))
                .and_then(|()| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&outer, std::fs::Permissions::from_mode(0o700))
                });
            if let Err(e) = made {
                eprintln!("user_bind_sources: {}: {e}", dir.display());
            }
            mounts.push(
                json!({ "destination": format!("/mnt/{name}"), "type": "bind",
                "source": dir, "options": opts }),
            );
        }
        b.config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .extend(mounts);
    }) else {
        return;
    };
    let rep = &run.report;
    // stat gives the file's fields or {"err": errno}; write gives {"ok": 0} or {"err": errno}.
    let ok = |k: &str| chk(rep, k)["type"] == json!("f") || chk(rep, k)["ok"].is_number();
    r.check(
        "bind_source_behind_a_dir_only_host_root_reaches",
        ok("stat:/mnt/hidden/foo") && ok("write:/mnt/hidden/new"),
        || {
            format!(
                "stat {}, write {}",
                chk(rep, "stat:/mnt/hidden/foo"),
                chk(rep, "write:/mnt/hidden/new")
            )
        },
    );
    r.check(
        "bind_source_behind_a_dir_only_host_root_reaches_ro",
        ok("stat:/mnt/hidden-ro/foo")
            && chk(rep, "write:/mnt/hidden-ro/new")["err"] == json!(libc::EROFS),
        || {
            format!(
                "stat {}, write {} (want EROFS)",
                chk(rep, "stat:/mnt/hidden-ro/foo"),
                chk(rep, "write:/mnt/hidden-ro/new")
            )
        },
    );
}

/// lchown every entry below `root` (so the mapped root owns the rootfs).
fn chown_tree(root: &std::path::Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(root, Some(uid), Some(gid))?;
    for e in std::fs::read_dir(root)? {
        let p = e?.path();
        let md = std::fs::symlink_metadata(&p)?;
        if md.is_dir() {
            chown_tree(&p, uid, gid)?;
        } else if md.is_symlink() || md.is_file() {
            if md.is_file() && std::os::unix::fs::MetadataExt::nlink(&md) > 1 {
                // hard links to the shared template: copy before chown
                let tmp = p.with_extension("copy");
                std::fs::copy(&p, &tmp)?;
                std::fs::rename(&tmp, &p)?;
            }
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

fn join(ctx: &Ctx, r: &mut Results) {
    let cases = &["join_net", "join_ipc", "join_uts", "join_pid"];
    let mut a = match ctx.bundle() {
        Ok(b) => b,
        Err(e) => return r.fail_rest(cases, &e),
    };
    a.config["process"]["args"] = json!(["/probe", "sleep", "60"]);
    let ca = match Container::create(ctx, &a) {
        Ok(c) => c,
        Err(o) => return r.fail_rest(cases, &format!("first container: {}", o.brief())),
    };
    let s = ca.start();
    if !s.ok() {
        return r.fail_rest(cases, &format!("first container start: {}", s.brief()));
    }
    let Some(pid) = ca.pid else {
        return r.fail_rest(cases, "first container has no pid");
    };
    let ns_of = |n: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/{n}"))
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let Some(run) = run_probe(ctx, r, cases, &[], |b| {
        for (ty, n) in [
            ("network", "net"),
            ("ipc", "ipc"),
            ("uts", "uts"),
            ("pid", "pid"),
        ] {
            set_namespace(&mut b.config, ty, Some(&format!("/proc/{pid}/ns/{n}")));
        }
        // Joining a uts namespace: setting a hostname would change the other container's.
        b.config.as_object_mut().map(|o| o.remove("hostname"));
    }) else {
        return;
    };
    let rep = &run.report;
    for (case, n) in [
        ("join_net", "net"),
        ("join_ipc", "ipc"),
        ("join_uts", "uts"),
    ] {
        r.eq(
            case,
            rep["ns"][n].as_str().unwrap_or("").to_string(),
            ns_of(n),
        );
    }
    r.check(
        "join_pid",
        rep["ns"]["pid"].as_str() == Some(ns_of("pid").as_str()) && rep["pid"] != 1,
        || {
            format!(
                "pid ns {} vs {}, pid {}",
                rep["ns"]["pid"],
                ns_of("pid"),
                rep["pid"]
            )
        },
    );
}

fn invalid(ctx: &Ctx, r: &mut Results) {
    let res = expect_refusal(ctx, |b| {
        set_namespace(
            &mut b.config,
            "network",
            Some("/proc/self/ns/does-not-exist"),
        )
    });
    refusal_case(r, "path_missing_refused", res);
    let res = expect_refusal(ctx, |b| {
        set_namespace(&mut b.config, "network", Some("/proc/self/ns/uts"))
    });
    refusal_case(r, "path_wrong_type_refused", res);
    // config-linux.md: duplicated namespaces with the same type MUST be an error.
    let res = expect_refusal(ctx, |b| {
        if let Some(ns) = b.config["linux"]["namespaces"].as_array_mut() {
            ns.push(json!({ "type": "ipc" }));
        }
    });
    refusal_case(r, "duplicate_type_refused", res);
}

fn absent(ctx: &Ctx, r: &mut Results) {
    let cases = &["network_absent_shares_host", "ipc_absent_shares_host"];
    let Some(run) = run_probe(ctx, r, cases, &[], |b| {
        remove_namespace(&mut b.config, "network");
        remove_namespace(&mut b.config, "ipc");
        // mqueue needs a private ipc namespace; sysfs a private network one.
        b.config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .retain(|m| m["type"] != "mqueue");
    }) else {
        return;
    };
    let rep = &run.report;
    r.eq(
        "network_absent_shares_host",
        rep["ns"]["net"].as_str().unwrap_or("").to_string(),
        host_ns("net"),
    );
    r.eq(
        "ipc_absent_shares_host",
        rep["ns"]["ipc"].as_str().unwrap_or("").to_string(),
        host_ns("ipc"),
    );
}

fn time(ctx: &Ctx, r: &mut Results) {
    let cases = &["new_time_ns", "monotonic_offset", "boottime_offset"];
    if host_ns("time").is_empty() {
        return r.skip_rest(cases, "the kernel has no time namespace");
    }
    if feature_has(ctx, "/linux/namespaces", "time") == Some(false) {
        return r.skip_rest(
            cases,
            "the runtime's features do not list the time namespace",
        );
    }
    let Some(run) = run_probe(ctx, r, cases, &["clock:monotonic", "clock:boottime"], |b| {
        set_namespace(&mut b.config, "time", None);
        b.config["linux"]["timeOffsets"] = json!({
            "monotonic": { "secs": 86400, "nanosecs": 0 },
            "boottime": { "secs": 172800, "nanosecs": 0 }
        });
    }) else {
        return;
    };
    let rep = &run.report;
    let c = rep["ns"]["time"].as_str().unwrap_or("").to_string();
    r.check("new_time_ns", c != host_ns("time"), || {
        format!("time ns {c}")
    });
    let offs = rep["timens_offsets"].as_str().unwrap_or("").to_string();
    let has = |clock: &str, secs: &str| {
        offs.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 2 && f[0] == clock && f[1] == secs
        })
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into our struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mono = chk(rep, "clock:monotonic")["ok"].as_i64().unwrap_or(0);
    r.check(
        "monotonic_offset",
        has("monotonic", "86400") && mono >= ts.tv_sec + 86400 - 60,
        || {
            format!(
                "timens_offsets {offs:?}, monotonic {mono} vs host {}",
                ts.tv_sec
            )
        },
    );
    r.check("boottime_offset", has("boottime", "172800"), || {
        format!("timens_offsets {offs:?}")
    });
}
