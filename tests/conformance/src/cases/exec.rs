//! runtime.md is silent on `exec`, but every engine uses runc's: joining the container, env,
//! cwd, user, exit codes, `--process process.json` and `--detach --pid-file` (containerd).

use std::fs;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{Container, Ctx, Results, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "lifecycle.exec",
        cases: EXEC,
        run: exec,
    }]
}

const EXEC: &[&str] = &[
    "exec_joins_namespaces",
    "exec_keeps_bounding_set",
    "exec_inherits_process_env",
    "exec_env",
    "exec_cwd",
    "exec_user",
    "exec_exit_code",
    "exec_process_json",
    "exec_detach_pid_file",
    "exec_stopped_refused",
];

fn exec(ctx: &Ctx, r: &mut Results) {
    let mut b = match ctx.bundle() {
        Ok(b) => b,
        Err(e) => return r.fail_rest(EXEC, &e),
    };
    b.config["process"]["args"] = json!(["/probe", "sleep", "60"]);
    b.config["process"]["env"] = json!(["PATH=/bin", "FROMCONFIG=1"]);
    let mut c = match Container::create(ctx, &b) {
        Ok(c) => c,
        Err(o) => return r.fail_rest(EXEC, &format!("create failed: {}", o.brief())),
    };
    let s = c.start();
    if !s.ok() {
        return r.fail_rest(EXEC, &format!("start failed: {}", s.brief()));
    }
    let id = b.id.clone();
    let run = |tag: &str, extra: &[&str], cmd: &[&str]| {
        let mut args = vec!["exec"];
        args.extend_from_slice(extra);
        args.push(&id);
        args.extend_from_slice(cmd);
        ctx.rt.call(&b.dir, tag, &args)
    };
    let o = run("exec1", &[], &["/probe", "report"]);
    let rep: Value = serde_json::from_str(o.stdout.trim()).unwrap_or(Value::Null);
    let init_ns = c
        .pid
        .and_then(|p| fs::read_link(format!("/proc/{p}/ns/pid")).ok())
        .map(|l| l.to_string_lossy().into_owned());
    r.check(
        "exec_joins_namespaces",
        o.ok() && rep["ns"]["pid"].as_str() == init_ns.as_deref() && rep["pid"] != 1,
        || {
            format!(
                "exec {}; pid ns {} vs {init_ns:?}",
                o.brief(),
                rep["ns"]["pid"]
            )
        },
    );
    r.eq(
        "exec_keeps_bounding_set",
        crate::harness::cap_field(&rep, "bounding"),
        Some(crate::harness::cap_mask(crate::bundle::DEFAULT_CAPS)),
    );
    let env = rep["env"].as_array().cloned().unwrap_or_default();
    r.check(
        "exec_inherits_process_env",
        env.contains(&json!("FROMCONFIG=1")),
        || format!("env {env:?}"),
    );
    let o = run(
        "exec2",
        &["--env", "EXTRA=yes", "--cwd", "/tmp", "--user", "1000:1000"],
        &["/probe", "report"],
    );
    let rep: Value = serde_json::from_str(o.stdout.trim()).unwrap_or(Value::Null);
    let env = rep["env"].as_array().cloned().unwrap_or_default();
    r.check("exec_env", env.contains(&json!("EXTRA=yes")), || {
        format!("exec {}; env {env:?}", o.brief())
    });
    r.eq("exec_cwd", rep["cwd"].as_str(), Some("/tmp"));
    r.eq(
        "exec_user",
        (rep["uid"].as_u64(), rep["gid"].as_u64()),
        (Some(1000), Some(1000)),
    );
    let o = run("exec3", &[], &["/probe", "exit", "5"]);
    r.eq("exec_exit_code", o.code, Some(5));
    exec_process_json(ctx, r, &b.dir, &id);
    exec_detach(ctx, r, &b.dir, &id);
    let _ = c.kill("KILL");
    let _ = c.wait(Duration::from_secs(5));
    let o = run("exec4", &[], &["/probe", "exit", "0"]);
    r.check("exec_stopped_refused", !o.ok(), || {
        "exec into a stopped container succeeded".into()
    });
}

/// `exec --process FILE`: the whole process object from a file, as containerd passes it.
fn exec_process_json(ctx: &Ctx, r: &mut Results, dir: &std::path::Path, id: &str) {
    let case = "exec_process_json";
    let p = dir.join("process.json");
    let process = json!({
        "terminal": false,
        "user": { "uid": 1000, "gid": 1000, "additionalGids": [2000] },
        "args": ["/probe", "report"],
        "env": ["PATH=/bin", "FROMFILE=1"],
        "cwd": "/home",
        "capabilities": { "bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                          "permitted": ["CAP_KILL"] },
        "noNewPrivileges": true
    });
    if let Err(e) = fs::write(&p, process.to_string()) {
        return r.fail(case, e.to_string());
    }
    let ps = p.to_string_lossy().into_owned();
    let o = ctx
        .rt
        .call(dir, "exec-process", &["exec", "--process", &ps, id]);
    let rep: Value = serde_json::from_str(o.stdout.trim()).unwrap_or(Value::Null);
    let env = rep["env"].as_array().cloned().unwrap_or_default();
    let groups = rep["groups"].as_array().cloned().unwrap_or_default();
    r.check(
        case,
        o.ok()
            && rep["uid"] == 1000
            && rep["gid"] == 1000
            && groups.contains(&json!(2000))
            && rep["cwd"] == "/home"
            && env.contains(&json!("FROMFILE=1"))
            && rep["no_new_privs"] == "1"
            && crate::harness::cap_field(&rep, "bounding") == Some(1 << 5),
        || {
            format!(
                "exec {}; uid {} gid {} groups {:?} cwd {} nnp {} CapBnd {}",
                o.brief(),
                rep["uid"],
                rep["gid"],
                groups,
                rep["cwd"],
                rep["no_new_privs"],
                rep["cap"]["bounding"]
            )
        },
    );
}

/// `exec --detach --pid-file FILE`: returns at once, the pid file names the live process.
fn exec_detach(ctx: &Ctx, r: &mut Results, dir: &std::path::Path, id: &str) {
    let case = "exec_detach_pid_file";
    let pf = dir.join("exec.pid");
    let pfs = pf.to_string_lossy().into_owned();
    let o = ctx.rt.call(
        dir,
        "exec-detach",
        &[
            "exec",
            "--detach",
            "--pid-file",
            &pfs,
            id,
            "/probe",
            "sleep",
            "60",
        ],
    );
    let pid: Option<i32> = fs::read_to_string(&pf)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let alive = pid.is_some_and(|p| {
        fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.contains("sleep"))
    });
    r.check(case, o.ok() && alive, || {
        format!(
            "exec --detach {}; pid file {pid:?}; alive {alive}",
            o.brief()
        )
    });
    if let Some(p) = pid {
        // SAFETY: kill and reap the process we just started (we are its subreaper).
        unsafe {
            libc::kill(p, libc::SIGKILL);
            let mut st = 0;
            for _ in 0..200 {
                if libc::waitpid(p, &mut st, libc::WNOHANG) != 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
