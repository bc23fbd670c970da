//! runtime.md: state, the lifecycle, operations and their errors; runc's `run` and `exec`.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bundle::push_mount;
use crate::harness::{Bundle, Container, Ctx, Exit, Results, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "lifecycle.states",
            cases: STATES,
            run: states,
        },
        Scenario {
            name: "lifecycle.kill",
            cases: KILL,
            run: kill,
        },
        Scenario {
            name: "lifecycle.created",
            cases: &[
                "kill_created",
                "invalid_signal_refused",
                "delete_created_ends_process",
                "delete_force_running",
            ],
            run: created_ops,
        },
        Scenario {
            name: "lifecycle.errors",
            cases: ERRORS,
            run: errors,
        },
        Scenario {
            name: "lifecycle.run",
            cases: &[
                "run_propagates_exit_code",
                "run_removes_container",
                "run_detach",
            ],
            run: run_verb,
        },
    ]
}

fn wait_for(mut f: impl FnMut() -> bool, timeout: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        if f() {
            return true;
        }
        if t0.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A bundle whose process touches /hookout/started and then waits for signals.
fn trap_bundle(ctx: &Ctx) -> Result<Bundle, String> {
    let mut b = ctx.bundle()?;
    let s = b.shared().to_string_lossy().into_owned();
    push_mount(
        &mut b.config,
        json!({ "destination": "/hookout", "type": "bind", "source": s, "options": ["rbind"] }),
    );
    b.config["process"]["args"] =
        json!(["/bin/sh", "-c", "touch /hookout/started; exec /probe trap"]);
    Ok(b)
}

fn trap_ready(b: &Bundle) -> bool {
    fs::read_to_string(b.dir.join("create.out")).is_ok_and(|s| s.contains("\"trap\""))
}

const STATES: &[&str] = &[
    "state_created",
    "state_fields",
    "annotations_in_state",
    "pid_file_matches_state",
    "create_does_not_run_process",
    "duplicate_id_refused",
    "duplicate_id_leaves_original",
    "start_runs_process",
    "state_running",
    "start_twice_refused",
    "delete_running_refused",
    "kill_term_delivered",
    "state_stopped_after_kill",
    "kill_stopped_refused",
    "start_stopped_refused",
    "delete_stopped",
    "state_after_delete_refused",
    "id_reusable_after_delete",
];

fn states(ctx: &Ctx, r: &mut Results) {
    let mut b = match trap_bundle(ctx) {
        Ok(b) => b,
        Err(e) => return r.fail_rest(STATES, &e),
    };
    let ann = json!({ "org.example.key": "value", "org.example.other": "2" });
    b.config["annotations"] = ann.clone();
    let mut c = match Container::create(ctx, &b) {
        Ok(c) => c,
        Err(o) => return r.fail_rest(STATES, &format!("create failed: {}", o.brief())),
    };
    let st = c.state().unwrap_or(Value::Null);
    r.eq("state_created", st["status"].as_str(), Some("created"));
    let bundle_ok = st["bundle"].as_str().is_some_and(|p| {
        fs::canonicalize(p).ok() == fs::canonicalize(&b.dir).ok() && p.starts_with('/')
    });
    r.check(
        "state_fields",
        st["ociVersion"].is_string()
            && st["id"] == b.id.as_str()
            && st["pid"].as_i64().is_some_and(|p| p > 0)
            && bundle_ok,
        || format!("state {st}"),
    );
    r.eq("annotations_in_state", st["annotations"].clone(), ann);
    r.eq(
        "pid_file_matches_state",
        c.pid.map(i64::from),
        st["pid"].as_i64(),
    );
    let marker = b.shared().join("started");
    r.check("create_does_not_run_process", !marker.exists(), || {
        "the user process ran before start".into()
    });
    // A second create with the same id, from another bundle: an error, promptly.
    match ctx.bundle() {
        Err(e) => r.fail("duplicate_id_refused", e),
        Ok(b2) => {
            let _ = b2.write_config();
            let (d2, p2) = (b2.dir.to_string_lossy(), b2.dir.join("pid"));
            let p2 = p2.to_string_lossy();
            let o = ctx.rt.call_within(
                &b2.dir,
                "create",
                &["create", "--bundle", &d2, "--pid-file", &p2, &b.id],
                Duration::from_secs(5),
            );
            r.check("duplicate_id_refused", !o.ok() && !o.timed_out, || {
                if o.timed_out {
                    "create with an existing id hung (killed after 5s)".into()
                } else {
                    "a second create with the same id succeeded".into()
                }
            });
        }
    }
    let st = c.state().unwrap_or(Value::Null);
    r.check(
        "duplicate_id_leaves_original",
        st["status"] == "created" && st["bundle"].as_str().map(Path::new) == Some(&b.dir),
        || format!("state after the duplicate create: {st}"),
    );
    let s = c.start();
    r.check(
        "start_runs_process",
        s.ok() && wait_for(|| marker.exists(), Duration::from_secs(5)),
        || format!("start {}; marker {}", s.brief(), marker.exists()),
    );
    let st = c.state().unwrap_or(Value::Null);
    r.eq("state_running", st["status"].as_str(), Some("running"));
    let s2 = c.start();
    r.check("start_twice_refused", !s2.ok(), || {
        "second start succeeded".into()
    });
    let d = c.delete();
    let st = c.state().unwrap_or(Value::Null);
    r.check(
        "delete_running_refused",
        !d.ok() && st["status"] == "running",
        || format!("delete {}; status after {}", d.brief(), st["status"]),
    );
    wait_for(|| trap_ready(&b), Duration::from_secs(5));
    let k = c.kill("TERM");
    let exit = c.wait(Duration::from_secs(5));
    r.check(
        "kill_term_delivered",
        k.ok() && matches!(exit, Some(Exit::Code(115)) | Some(Exit::Unknown)),
        || format!("kill {}; exit {exit:?}", k.brief()),
    );
    let st = c.state().unwrap_or(Value::Null);
    r.eq(
        "state_stopped_after_kill",
        st["status"].as_str(),
        Some("stopped"),
    );
    let k2 = c.kill("TERM");
    r.check("kill_stopped_refused", !k2.ok(), || {
        "kill of a stopped container succeeded".into()
    });
    let s3 = c.start();
    r.check("start_stopped_refused", !s3.ok(), || {
        "start of a stopped container succeeded".into()
    });
    let d = c.delete();
    r.check("delete_stopped", d.ok(), || d.brief());
    r.check("state_after_delete_refused", c.state().is_err(), || {
        "state of a deleted container succeeded".into()
    });
    drop(c);
    match Container::create(ctx, &b) {
        Ok(_c) => r.pass("id_reusable_after_delete"),
        Err(o) => r.fail("id_reusable_after_delete", o.brief()),
    }
}

const KILL: &[&str] = &[
    "signal_name",
    "signal_sig_prefix",
    "signal_number",
    "default_signal_is_term",
    "sigkill",
];

fn kill(ctx: &Ctx, r: &mut Results) {
    for (case, sig, want) in [
        ("signal_name", Some("USR1"), Exit::Code(100 + libc::SIGUSR1)),
        (
            "signal_sig_prefix",
            Some("SIGHUP"),
            Exit::Code(100 + libc::SIGHUP),
        ),
        ("signal_number", Some("12"), Exit::Code(100 + libc::SIGUSR2)),
        (
            "default_signal_is_term",
            None,
            Exit::Code(100 + libc::SIGTERM),
        ),
        ("sigkill", Some("KILL"), Exit::Signal(libc::SIGKILL)),
    ] {
        let b = match trap_bundle(ctx) {
            Ok(b) => b,
            Err(e) => {
                r.fail(case, e);
                continue;
            }
        };
        let mut c = match Container::create(ctx, &b) {
            Ok(c) => c,
            Err(o) => {
                r.fail(case, format!("create failed: {}", o.brief()));
                continue;
            }
        };
        let s = c.start();
        if !s.ok() || !wait_for(|| trap_ready(&b), Duration::from_secs(5)) {
            r.fail(case, format!("container not ready: start {}", s.brief()));
            continue;
        }
        let k = match sig {
            Some(sig) => c.kill(sig),
            None => ctx.rt.call(&b.dir, "kill", &["kill", &b.id]),
        };
        let exit = c.wait(Duration::from_secs(5));
        match exit {
            Some(Exit::Unknown) => r.skip(case, "exit status unknown (init not reparented)"),
            e => r.check(case, k.ok() && e == Some(want), || {
                format!("kill {}; exit {e:?}, want {want:?}", k.brief())
            }),
        }
    }
}

fn created_ops(ctx: &Ctx, r: &mut Results) {
    let bundle = |r: &mut Results, case: &str| match ctx.bundle() {
        Ok(mut b) => {
            b.config["process"]["args"] = json!(["/probe", "sleep", "60"]);
            Some(b)
        }
        Err(e) => {
            r.fail(case, e);
            None
        }
    };
    if let Some(b) = bundle(r, "kill_created") {
        match Container::create(ctx, &b) {
            Err(o) => r.fail("kill_created", o.brief()),
            Ok(mut c) => {
                let bad = c.kill("SIGNOTASIGNAL");
                let st = c.state().unwrap_or(Value::Null);
                r.check(
                    "invalid_signal_refused",
                    !bad.ok() && st["status"] == "created",
                    || {
                        format!(
                            "kill SIGNOTASIGNAL: {}; status {}",
                            bad.brief(),
                            st["status"]
                        )
                    },
                );
                let k = c.kill("KILL");
                let _ = c.wait(Duration::from_secs(5));
                let st = c.state().unwrap_or(Value::Null);
                r.check("kill_created", k.ok() && st["status"] == "stopped", || {
                    format!("kill {}; status {}", k.brief(), st["status"])
                });
            }
        }
    }
    if let Some(b) = bundle(r, "delete_created_ends_process") {
        match Container::create(ctx, &b) {
            Err(o) => r.fail("delete_created_ends_process", o.brief()),
            Ok(mut c) => {
                let d = ctx.rt.delete(&b.dir, &b.id, false);
                let gone = c.wait(Duration::from_secs(5)).is_some();
                let d = if d.ok() {
                    d
                } else {
                    ctx.rt.delete(&b.dir, &b.id, true)
                };
                r.check("delete_created_ends_process", d.ok() && gone, || {
                    format!("delete {}; process gone {gone}", d.brief())
                });
            }
        }
    }
    if let Some(b) = bundle(r, "delete_force_running") {
        match Container::create(ctx, &b) {
            Err(o) => r.fail("delete_force_running", o.brief()),
            Ok(mut c) => {
                let _ = c.start();
                let d = ctx.rt.delete(&b.dir, &b.id, true);
                let gone = c.wait(Duration::from_secs(5)).is_some();
                let st = c.state();
                r.check(
                    "delete_force_running",
                    d.ok() && gone && st.is_err(),
                    || format!("delete --force {}; gone {gone}; state {st:?}", d.brief()),
                );
            }
        }
    }
}

const ERRORS: &[&str] = &[
    "state_unknown_id_refused",
    "start_unknown_id_refused",
    "kill_unknown_id_refused",
    "delete_unknown_id_refused",
    "missing_config_refused",
    "invalid_json_refused",
    "missing_rootfs_refused",
    "failed_create_leaves_no_state",
];

fn errors(ctx: &Ctx, r: &mut Results) {
    let scratch = ctx.work.join("errors");
    let _ = fs::create_dir_all(&scratch);
    let ghost = format!("{}-ghost", ctx.prefix);
    for (case, args) in [
        ("state_unknown_id_refused", vec!["state", ghost.as_str()]),
        ("start_unknown_id_refused", vec!["start", ghost.as_str()]),
        (
            "kill_unknown_id_refused",
            vec!["kill", ghost.as_str(), "KILL"],
        ),
        ("delete_unknown_id_refused", vec!["delete", ghost.as_str()]),
    ] {
        let o = ctx.rt.call(&scratch, case, &args);
        r.check(case, !o.ok(), || format!("`{}` succeeded", args.join(" ")));
    }
    let _ = fs::remove_dir_all(&scratch);
    let try_create = |prep: &dyn Fn(&Bundle)| -> Result<(bool, bool), String> {
        let b = ctx.bundle()?;
        prep(&b);
        let o = ctx.rt.create(&b.dir, &b.id, &b.dir, &b.dir.join("pid"));
        let st = ctx.rt.state(&b.dir, &b.id);
        if o.ok() || st.ok() {
            let _ = ctx.rt.delete(&b.dir, &b.id, true);
        }
        Ok((!o.ok(), !st.ok()))
    };
    let cfg = |b: &Bundle, text: &str| {
        let _ = fs::write(b.dir.join("config.json"), text);
    };
    match try_create(&|_b| {}) {
        Ok((refused, no_state)) => {
            r.check("missing_config_refused", refused, || {
                "create succeeded".into()
            });
            r.check("failed_create_leaves_no_state", no_state, || {
                "state works for a container whose create failed".into()
            });
        }
        Err(e) => r.fail_rest(
            &["missing_config_refused", "failed_create_leaves_no_state"],
            &e,
        ),
    }
    match try_create(&|b| cfg(b, "{ \"ociVersion\": ")) {
        Ok((refused, _)) => r.check("invalid_json_refused", refused, || {
            "create succeeded".into()
        }),
        Err(e) => r.fail("invalid_json_refused", e),
    }
    match try_create(&|b| {
        let mut c = b.config.clone();
        c["root"]["path"] = json!("no-such-rootfs");
        cfg(b, &c.to_string());
    }) {
        Ok((refused, _)) => r.check("missing_rootfs_refused", refused, || {
            "create succeeded".into()
        }),
        Err(e) => r.fail("missing_rootfs_refused", e),
    }
}

fn run_verb(ctx: &Ctx, r: &mut Results) {
    let cases = &["run_propagates_exit_code", "run_removes_container"];
    match ctx.bundle() {
        Err(e) => r.fail_rest(cases, &e),
        Ok(mut b) => {
            b.config["process"]["args"] = json!(["/probe", "exit", "3"]);
            if let Err(e) = b.write_config() {
                r.fail_rest(cases, &e);
            } else {
                let d = b.dir.to_string_lossy().into_owned();
                let o = ctx.rt.call(&b.dir, "run", &["run", "--bundle", &d, &b.id]);
                r.eq("run_propagates_exit_code", o.code, Some(3));
                let st = ctx.rt.state(&b.dir, &b.id);
                r.check("run_removes_container", !st.ok(), || {
                    format!("state after run: {}", st.stdout.trim())
                });
                let _ = ctx.rt.delete(&b.dir, &b.id, true);
            }
        }
    }
    match ctx.bundle() {
        Err(e) => r.fail("run_detach", e),
        Ok(mut b) => {
            b.config["process"]["args"] = json!(["/probe", "sleep", "60"]);
            if let Err(e) = b.write_config() {
                return r.fail("run_detach", e);
            }
            let d = b.dir.to_string_lossy().into_owned();
            let o = ctx
                .rt
                .call(&b.dir, "run", &["run", "--detach", "--bundle", &d, &b.id]);
            let st = ctx.rt.state_json(&b.dir, &b.id).unwrap_or(Value::Null);
            r.check("run_detach", o.ok() && st["status"] == "running", || {
                format!("run -d {}; status {}", o.brief(), st["status"])
            });
            let _ = ctx.rt.kill(&b.dir, &b.id, "KILL");
            if let Some(pid) = st["pid"].as_i64() {
                let mut status = 0;
                // SAFETY: reap our (subreaper) child; blocking is fine after SIGKILL.
                wait_for(
                    || unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) } != 0,
                    Duration::from_secs(5),
                );
            }
            let _ = ctx.rt.delete(&b.dir, &b.id, true);
        }
    }
}
