//! config.md "POSIX-platform hooks" and runtime.md "lifecycle": each hook type, order, the
//! state on stdin, env and args, timeouts and failure semantics.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bundle::push_mount;
use crate::harness::{Bundle, Container, Ctx, Results, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "hooks.lifecycle",
            cases: ALL,
            run: all_hooks,
        },
        Scenario {
            name: "hooks.failure",
            cases: FAIL,
            run: failures,
        },
        Scenario {
            name: "hooks.post_failure",
            cases: &[
                "poststart_failure_only_warns",
                "poststop_failure_only_warns",
            ],
            run: post_failures,
        },
        Scenario {
            name: "hooks.stdin",
            cases: &["hook_not_reading_stdin_succeeds"],
            run: stdin_ignored,
        },
        Scenario {
            name: "hooks.timeout",
            cases: &["timeout_enforced"],
            run: timeout,
        },
    ]
}

const TYPES: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// A hook recording its stdin, env and its name in `dir/order`. `startContainer` runs in
/// the container, where `dir` is bind-mounted at /hookout.
fn recording_hook(name: &str, dir: &Path) -> Value {
    let d = if name == "startContainer" {
        "/hookout".to_string()
    } else {
        dir.to_string_lossy().into_owned()
    };
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("cat > {d}/{name}.json; env > {d}/{name}.env; \
                                       echo {name} >> {d}/order")],
        "env": [format!("HOOKVAR={name}")]
    })
}

fn shell_hook(script: &str) -> Value {
    json!({ "path": "/bin/sh", "args": ["sh", "-c", script] })
}

fn mount_hookout(b: &mut Bundle) {
    let s = b.shared().to_string_lossy().into_owned();
    push_mount(
        &mut b.config,
        json!({ "destination": "/hookout", "type": "bind", "source": s, "options": ["rbind"] }),
    );
}

fn order(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("order"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

const ALL: &[&str] = &[
    "create_hooks_run_during_create",
    "create_runtime_before_create_container",
    "start_container_before_user_process",
    "poststart_before_start_returns",
    "poststop_runs_on_delete",
    "multiple_hooks_in_order",
    "hook_args",
    "hook_env",
    "state_prestart",
    "state_create_runtime",
    "state_create_container",
    "state_start_container",
    "state_poststart",
    "state_poststop",
    "create_container_cwd_is_the_rootfs",
];

fn all_hooks(ctx: &Ctx, r: &mut Results) {
    let mut b = match ctx.bundle() {
        Ok(b) => b,
        Err(e) => return r.fail_rest(ALL, &e),
    };
    let dir = b.shared();
    let d = dir.to_string_lossy().into_owned();
    let mut hooks = serde_json::Map::new();
    for t in TYPES {
        hooks.insert(t.to_string(), json!([recording_hook(t, &dir)]));
    }
    hooks["prestart"]
        .as_array_mut()
        .expect("prestart")
        .push(json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > /dev/null; echo prestart2 >> {d}/order; \
                                      echo \"$0 $1\" > {d}/args"),
                     "zero", "one"]
        }));
    // runc runs createContainer hooks in the rootfs (its init chdir'd there): the probe is
    // ./probe.
    hooks["createContainer"]
        .as_array_mut()
        .expect("createContainer")
        .push(shell_hook(&format!(
            "cat > /dev/null; test -x ./probe && echo rootfs > {d}/cc_cwd"
        )));
    b.config["hooks"] = Value::Object(hooks);
    mount_hookout(&mut b);
    b.config["process"]["args"] = json!(["/probe", "report", "stat:/hookout/startContainer.json"]);
    let mut c = match Container::create(ctx, &b) {
        Ok(c) => c,
        Err(o) => return r.fail_rest(ALL, &format!("create failed: {}", o.brief())),
    };
    let after_create = order(&dir);
    let pos = |o: &[String], n: &str| o.iter().position(|x| x == n);
    r.check(
        "create_hooks_run_during_create",
        ["prestart", "createRuntime", "createContainer"]
            .iter()
            .all(|n| pos(&after_create, n).is_some())
            && pos(&after_create, "startContainer").is_none()
            && pos(&after_create, "poststart").is_none(),
        || format!("hooks run by create: {after_create:?}"),
    );
    r.check(
        "create_runtime_before_create_container",
        matches!((pos(&after_create, "createRuntime"), pos(&after_create, "createContainer")),
                 (Some(a), Some(b)) if a < b),
        || format!("order {after_create:?}"),
    );
    let cwd = fs::read_to_string(dir.join("cc_cwd")).unwrap_or_default();
    r.check(
        "create_container_cwd_is_the_rootfs",
        cwd.trim() == "rootfs",
        || "the createContainer hook found no ./probe in its working directory".to_string(),
    );
    r.check(
        "multiple_hooks_in_order",
        matches!((pos(&after_create, "prestart"), pos(&after_create, "prestart2")),
                 (Some(a), Some(b)) if a < b),
        || format!("order {after_create:?}"),
    );
    let s = c.start();
    let after_start = order(&dir);
    if !s.ok() {
        r.fail_rest(ALL, &format!("start failed: {}", s.brief()));
    }
    r.check(
        "poststart_before_start_returns",
        pos(&after_start, "poststart").is_some(),
        || format!("hooks run by start returned: {after_start:?}"),
    );
    let _ = c.wait(Duration::from_secs(10));
    match c.output() {
        Ok(rep) => {
            let st = &rep["checks"]["stat:/hookout/startContainer.json"];
            r.check(
                "start_container_before_user_process",
                st["type"] == "f",
                || format!("the process saw no startContainer output: {st}"),
            )
        }
        Err(e) => r.fail("start_container_before_user_process", e),
    }
    let before_delete = order(&dir);
    let del = c.delete();
    let after_delete = order(&dir);
    r.check(
        "poststop_runs_on_delete",
        del.ok()
            && pos(&before_delete, "poststop").is_none()
            && after_delete.last().map(String::as_str) == Some("poststop"),
        || {
            format!(
                "delete {}; before {before_delete:?}, after {after_delete:?}",
                del.brief()
            )
        },
    );
    let args = fs::read_to_string(dir.join("args")).unwrap_or_default();
    r.eq("hook_args", args.trim(), "zero one");
    let bad_env: Vec<&str> = TYPES
        .iter()
        .copied()
        .filter(|t| {
            !fs::read_to_string(dir.join(format!("{t}.env")))
                .unwrap_or_default()
                .lines()
                .any(|l| l == format!("HOOKVAR={t}"))
        })
        .collect();
    r.check("hook_env", bad_env.is_empty(), || {
        format!("HOOKVAR missing for {bad_env:?}")
    });
    let bundle = fs::canonicalize(&b.dir).unwrap_or(b.dir.clone());
    for (case, t) in [
        ("state_prestart", "prestart"),
        ("state_create_runtime", "createRuntime"),
        ("state_create_container", "createContainer"),
        ("state_start_container", "startContainer"),
        ("state_poststart", "poststart"),
        ("state_poststop", "poststop"),
    ] {
        let text = fs::read_to_string(dir.join(format!("{t}.json"))).unwrap_or_default();
        let st: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let status = st["status"].as_str().unwrap_or("");
        // runtime.md: "created" once create has finished (startContainer runs during start);
        // pid is REQUIRED when the status is created or running.
        let status_ok = match t {
            "poststop" => status == "stopped",
            "poststart" => status == "running" || status == "stopped",
            "startContainer" => status == "created",
            _ => ["creating", "created"].contains(&status),
        };
        let pid_ok =
            !["created", "running"].contains(&status) || st["pid"].as_i64().is_some_and(|p| p > 0);
        let bundle_ok = st["bundle"].as_str().map(Path::new) == Some(bundle.as_path())
            || st["bundle"].as_str().map(Path::new) == Some(b.dir.as_path());
        r.check(
            case,
            st["id"] == b.id.as_str()
                && bundle_ok
                && pid_ok
                && status_ok
                && st["ociVersion"].is_string(),
            || {
                format!(
                    "state on stdin: {}",
                    text.chars().take(300).collect::<String>()
                )
            },
        );
    }
}

const FAIL: &[&str] = &[
    "prestart_failure_is_error",
    "create_runtime_failure_is_error",
    "create_container_failure_is_error",
    "start_container_failure_is_error",
    "start_container_failure_user_process_not_run",
    "failed_create_leaves_no_running_container",
];

fn failures(ctx: &Ctx, r: &mut Results) {
    for (case, t) in [
        ("prestart_failure_is_error", "prestart"),
        ("create_runtime_failure_is_error", "createRuntime"),
        ("create_container_failure_is_error", "createContainer"),
    ] {
        let mut b = match ctx.bundle() {
            Ok(b) => b,
            Err(e) => {
                r.fail(case, e);
                continue;
            }
        };
        b.config["hooks"] = json!({ t: [shell_hook("cat > /dev/null; exit 3")] });
        let created = Container::create(ctx, &b);
        let failed = match &created {
            Err(_) => true,
            Ok(c) => !c.start().ok(),
        };
        r.check(case, failed, || {
            format!("a failing {t} hook did not fail create/start")
        });
        if t == "prestart" {
            let st = ctx.rt.state_json(&b.dir, &b.id);
            let running = st
                .as_ref()
                .is_ok_and(|s| s["status"] == "running" || s["status"] == "created");
            r.check(
                "failed_create_leaves_no_running_container",
                !running,
                || format!("state after the failure: {st:?}"),
            );
        }
    }
    let cases = &[
        "start_container_failure_is_error",
        "start_container_failure_user_process_not_run",
    ];
    let mut b = match ctx.bundle() {
        Ok(b) => b,
        Err(e) => return r.fail_rest(cases, &e),
    };
    b.config["hooks"] = json!({ "startContainer": [shell_hook("cat > /dev/null; exit 3")] });
    mount_hookout(&mut b);
    b.config["process"]["args"] = json!(["/bin/sh", "-c", "touch /hookout/ran"]);
    let mut c = match Container::create(ctx, &b) {
        Ok(c) => c,
        Err(o) => {
            return r.fail_rest(
                cases,
                &format!(
                    "create failed (startContainer must run at start): {}",
                    o.brief()
                ),
            )
        }
    };
    let s = c.start();
    r.check("start_container_failure_is_error", !s.ok(), || {
        "start succeeded despite a failing startContainer hook".into()
    });
    let _ = c.wait(Duration::from_secs(5));
    r.check(
        "start_container_failure_user_process_not_run",
        !b.shared().join("ran").exists(),
        || "the user process ran".into(),
    );
}

fn post_failures(ctx: &Ctx, r: &mut Results) {
    let case = "poststart_failure_only_warns";
    match ctx.bundle() {
        Err(e) => r.fail(case, e),
        Ok(mut b) => {
            let d = b.shared().to_string_lossy().into_owned();
            b.config["hooks"] = json!({ "poststart": [
                shell_hook("cat > /dev/null; exit 3"),
                shell_hook(&format!("cat > /dev/null; touch {d}/second"))
            ]});
            b.config["process"]["args"] = json!(["/probe", "sleep", "30"]);
            match Container::create(ctx, &b) {
                Err(o) => r.fail(case, format!("create failed: {}", o.brief())),
                Ok(c) => {
                    let s = c.start();
                    let st = c.state().unwrap_or_default();
                    r.check(
                        case,
                        s.ok() && b.shared().join("second").exists() && st["status"] == "running",
                        || format!("start {}; status {}", s.brief(), st["status"]),
                    );
                }
            }
        }
    }
    let case = "poststop_failure_only_warns";
    match ctx.bundle() {
        Err(e) => r.fail(case, e),
        Ok(mut b) => {
            let d = b.shared().to_string_lossy().into_owned();
            b.config["hooks"] = json!({ "poststop": [
                shell_hook("cat > /dev/null; exit 3"),
                shell_hook(&format!("cat > /dev/null; touch {d}/second"))
            ]});
            b.config["process"]["args"] = json!(["/probe", "exit", "0"]);
            match Container::create(ctx, &b) {
                Err(o) => r.fail(case, format!("create failed: {}", o.brief())),
                Ok(mut c) => {
                    let _ = c.start();
                    let _ = c.wait(Duration::from_secs(10));
                    let del = c.delete();
                    let gone = c.state().is_err();
                    r.check(
                        case,
                        del.ok() && gone && b.shared().join("second").exists(),
                        || {
                            format!(
                                "delete {}; container gone {gone}; second hook ran {}",
                                del.brief(),
                                b.shared().join("second").exists()
                            )
                        },
                    );
                }
            }
        }
    }
}

fn timeout(ctx: &Ctx, r: &mut Results) {
    let case = "timeout_enforced";
    let mut b = match ctx.bundle() {
        Ok(b) => b,
        Err(e) => return r.fail(case, e),
    };
    let marker = b.shared().join("started");
    let mut h = shell_hook(&format!("touch {}; exec sleep 20", marker.display()));
    h["timeout"] = json!(1);
    b.config["hooks"] = json!({ "createRuntime": [h] });
    let t0 = Instant::now();
    let created = Container::create(ctx, &b);
    let took = t0.elapsed();
    r.check(
        case,
        created.is_err()
            && marker.exists()
            && took >= Duration::from_millis(900)
            && took < Duration::from_secs(10),
        || {
            format!(
                "create ok={} after {took:?}; hook started {}",
                created.is_ok(),
                marker.exists()
            )
        },
    );
}

/// A hook need not read its stdin. With a state larger than a pipe buffer (a big
/// annotation), the runtime's write fails with EPIPE when the hook exits: the runtime must
/// treat that as the hook's business and go by its exit status.
fn stdin_ignored(ctx: &Ctx, r: &mut Results) {
    let case = "hook_not_reading_stdin_succeeds";
    let mut b = match ctx.bundle() {
        Ok(b) => b,
        Err(e) => return r.fail(case, e),
    };
    let d = b.shared().to_string_lossy().into_owned();
    b.config["annotations"] = json!({ "org.example.big": "x".repeat(256 * 1024) });
    b.config["hooks"] = json!({ "createRuntime": [shell_hook(&format!("touch {d}/ran"))] });
    match Container::create(ctx, &b) {
        Ok(_c) => r.check(case, b.shared().join("ran").exists(), || {
            "the hook did not run".into()
        }),
        Err(o) => r.fail(case, format!("create failed: {}", o.brief())),
    }
}
