//! Cases where the runtime hands a file descriptor to its caller over a unix socket:
//! `process.terminal` with `--console-socket` (the pty master), and seccomp's
//! `SCMP_ACT_NOTIFY` with `listenerPath` (the notify fd plus the container process state).

use std::os::fd::AsRawFd;
use std::time::Duration;

use serde_json::{json, Value};

use super::feature_has;
use crate::bundle::probe_args;
use crate::harness::{chk, errno_of, Bundle, Container, Ctx, Results, Scenario};
use crate::runtime::CmdOut;
use crate::unixfd::{read_pty, FdListener};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "terminal.console_socket",
            cases: TERMINAL,
            run: terminal,
        },
        Scenario {
            name: "seccomp.notify",
            cases: NOTIFY,
            run: notify,
        },
    ]
}

/// `create --console-socket SOCK` (and the pid file), writing config.json first.
fn create_with_socket(ctx: &Ctx, b: &Bundle, flag: Option<&str>) -> CmdOut {
    if let Err(e) = b.write_config() {
        return CmdOut {
            code: None,
            stdout: String::new(),
            stderr: e,
            timed_out: false,
            signal: None,
        };
    }
    let d = b.dir.to_string_lossy().into_owned();
    let p = b.dir.join("pid").to_string_lossy().into_owned();
    let mut args = vec!["create", "--bundle", &d, "--pid-file", &p];
    let sock = b.dir.join("console.sock").to_string_lossy().into_owned();
    if let Some(f) = flag {
        args.push(f);
        args.push(&sock);
    }
    args.push(&b.id);
    ctx.rt.call(&b.dir, "create", &args)
}

const TERMINAL: &[&str] = &[
    "console_socket_receives_pty_master",
    "process_output_via_pty",
    "stdio_is_terminal",
    "controlling_terminal",
    "dev_console_is_a_pty",
    "console_size_applied",
];

fn terminal(ctx: &Ctx, r: &mut Results) {
    let mut b = match ctx.bundle() {
        Ok(b) => b,
        Err(e) => return r.fail_rest(TERMINAL, &e),
    };
    probe_args(&mut b.config, "report", &["stat:/dev/console"]);
    b.config["process"]["terminal"] = json!(true);
    b.config["process"]["consoleSize"] = json!({ "height": 40, "width": 120 });
    let listener = match FdListener::bind(&b.dir.join("console.sock")) {
        Ok(l) => l,
        Err(e) => return r.fail_rest(TERMINAL, &e),
    };
    let o = create_with_socket(ctx, &b, Some("--console-socket"));
    if !o.ok() {
        return r.fail_rest(TERMINAL, &format!("create failed: {}", o.brief()));
    }
    let mut c = Container::adopt(ctx, &b);
    let master = match listener.receive(Duration::from_secs(5)) {
        Ok((fd, _)) => fd,
        Err(e) => return r.fail_rest(TERMINAL, &format!("console socket: {e}")),
    };
    let link = std::fs::read_link(format!("/proc/self/fd/{}", master.as_raw_fd()))
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    r.check(
        "console_socket_receives_pty_master",
        link.ends_with("ptmx"),
        || format!("the fd received is {link:?}, not a pty master"),
    );
    let s = c.start();
    if !s.ok() {
        return r.fail_rest(TERMINAL, &format!("start failed: {}", s.brief()));
    }
    let out = read_pty(&master, Duration::from_secs(10));
    let _ = c.wait(Duration::from_secs(5));
    let text = String::from_utf8_lossy(&out).into_owned();
    let rep = text.lines().rev().find_map(|l| {
        serde_json::from_str::<Value>(l.trim())
            .ok()
            .filter(Value::is_object)
    });
    let Some(rep) = rep else {
        return r.fail_rest(
            TERMINAL,
            &format!(
                "no report read from the pty: {:?}",
                text.chars().take(200).collect::<String>()
            ),
        );
    };
    r.pass("process_output_via_pty");
    r.eq("stdio_is_terminal", rep["tty"].as_bool(), Some(true));
    r.check(
        "controlling_terminal",
        rep["ctty"].as_i64().is_some_and(|t| t != 0),
        || format!("tty_nr {}", rep["ctty"]),
    );
    r.eq(
        "console_size_applied",
        rep["winsize"].clone(),
        json!([40, 120]),
    );
    let con = chk(&rep, "stat:/dev/console");
    r.check(
        "dev_console_is_a_pty",
        con["type"] == "c" && con["major"] == 136,
        || format!("/dev/console: {con}"),
    );
}

const NOTIFY: &[&str] = &[
    "listener_receives_fd",
    "message_names_seccomp_fd",
    "metadata_passed",
    "state_in_message",
    "notify_action_applied",
];

fn notify(ctx: &Ctx, r: &mut Results) {
    match feature_has(ctx, "/linux/seccomp/actions", "SCMP_ACT_NOTIFY") {
        Some(true) => {}
        Some(false) => return r.skip_rest(NOTIFY, "features do not list SCMP_ACT_NOTIFY"),
        None => return r.skip_rest(NOTIFY, "the runtime has no usable `features` output"),
    }
    let mut b = match ctx.bundle() {
        Ok(b) => b,
        Err(e) => return r.fail_rest(NOTIFY, &e),
    };
    let sock = b.dir.join("console.sock");
    probe_args(&mut b.config, "report", &["mkdir:/tmp/d"]);
    b.config["process"]["noNewPrivileges"] = json!(true);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "listenerPath": sock.to_string_lossy(),
        "listenerMetadata": "conformance-meta",
        "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY" }]
    });
    let listener = match FdListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => return r.fail_rest(NOTIFY, &e),
    };
    let o = create_with_socket(ctx, &b, None);
    if !o.ok() {
        return r.fail_rest(NOTIFY, &format!("create failed: {}", o.brief()));
    }
    let mut c = Container::adopt(ctx, &b);
    let (fd, msg) = match listener.receive(Duration::from_secs(5)) {
        Ok(x) => x,
        Err(e) => return r.fail_rest(NOTIFY, &format!("listener: {e}")),
    };
    r.pass("listener_receives_fd");
    let m: Value = serde_json::from_slice(&msg).unwrap_or(Value::Null);
    r.check(
        "message_names_seccomp_fd",
        m["fds"]
            .as_array()
            .is_some_and(|a| a.iter().any(|f| f == "seccompFd")),
        || format!("message {m}"),
    );
    r.eq(
        "metadata_passed",
        m["metadata"].as_str(),
        Some("conformance-meta"),
    );
    r.check(
        "state_in_message",
        m["state"]["id"] == b.id.as_str() && m["pid"].as_i64().is_some_and(|p| p > 0),
        || format!("message {m}"),
    );
    // With the listener gone, the kernel fails notified syscalls with ENOSYS.
    drop(fd);
    let s = c.start();
    if !s.ok() {
        return r.fail(
            "notify_action_applied",
            format!("start failed: {}", s.brief()),
        );
    }
    let _ = c.wait(Duration::from_secs(10));
    match c.output() {
        Ok(rep) => r.eq(
            "notify_action_applied",
            errno_of(chk(&rep, "mkdir:/tmp/d")),
            Some(libc::ENOSYS as i64),
        ),
        Err(e) => r.fail("notify_action_applied", e),
    }
}
