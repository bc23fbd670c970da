//! Terminals through the nvbind binary: a pty handed to a --console-socket, and the pty a
//! foreground `run`/`exec` relays. Needs root (CI runs as root).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn console_socket_receives_a_working_pty() {
    let env = Env::new();
    let b = env.bundle("tty", &["sh"]);
    env.edit(&b, |c| c["process"]["terminal"] = json!(true));
    let sock = env.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let accept = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        recv_fd(&stream)
    });
    env.ok(&[
        "create",
        "-b",
        b.to_str().unwrap(),
        "--console-socket",
        sock.to_str().unwrap(),
        "t1",
    ]);
    let master: fs::File = accept.join().unwrap().into();
    env.ok(&["start", "t1"]);
    let mut w = master.try_clone().unwrap();
    w.write_all(b"echo pty-$((6*7))\n").unwrap();
    let reader = std::thread::spawn(move || {
        let mut m = master;
        let mut seen = String::new();
        let mut buf = [0u8; 1024];
        while !seen.contains("pty-42\r\n") {
            match m.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        seen
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = w.write_all(b"exit\n");
    assert!(reader.is_finished(), "no answer through the pty");
    let seen = reader.join().unwrap();
    assert!(seen.contains("pty-42"), "pty said {seen:?}");
    env.ok(&["delete", "-f", "t1"]);
    env.assert_clean();
}

/// A foreground `run` (terminal true) or `exec -t` without --console-socket: nvbind takes the
/// pty the process got and relays it to its own stdio, as runc does (tty.bats). Here nvbind's
/// stdin is /dev/null and its stdout a pipe: the process still has the pty on fds 0-2, owned
/// by its user, and what it writes comes out (pty line endings). A --console-socket is for a
/// detached container only. exec's process is the container's user's unless --user is given.
#[test]
fn foreground_terminal_is_relayed_through_a_new_pty() {
    let env = Env::new();
    let script = "for f in /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2; do readlink $f; \
                  done; stat -c %u $(tty); stty size >/dev/null 2>&1 && echo sized";
    let b = env.bundle("b", &["sh", "-c", script]);
    for applet in ["tty", "stty"] {
        std::os::unix::fs::symlink("busybox", b.join("rootfs/bin").join(applet)).unwrap();
    }
    env.edit(&b, |c| c["process"]["terminal"] = json!(true));
    let check = |out: &str, uid: &str| {
        let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
        assert_eq!(lines.len(), 5, "{out:?}");
        for l in &lines[..3] {
            assert!(l.starts_with("/dev/pts/"), "{out:?}");
        }
        assert_eq!(lines[3], uid, "{out:?}");
        assert_eq!(lines[4], "sized", "{out:?}");
    };
    // Byte for byte, as runc relays it: ONLCR is off on the pty ("\n", not "\r\n"). Only
    // for run: its process waits for start, after nvbind took the pty; an exec'd process can
    // write before that (with runc too).
    let out = env.ok(&["run", "-b", b.to_str().unwrap(), "t1"]);
    assert!(!out.contains('\r'), "{out:?}");
    check(&out, "0");
    env.edit(&b, |c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 100})
    });
    check(&env.ok(&["run", "-b", b.to_str().unwrap(), "t2"]), "1000");

    let sock = env.dir.path().join("unused.sock");
    let _listener = UnixListener::bind(&sock).unwrap();
    let s = sock.to_str().unwrap();
    let err = env.fails(&[
        "run",
        "--console-socket",
        s,
        "-b",
        b.to_str().unwrap(),
        "t3",
    ]);
    assert!(
        err.contains("--console-socket is for a container that detaches"),
        "{err}"
    );

    // exec runs as the container's user unless --user says otherwise (runc)
    env.edit(&b, |c| {
        c["process"]["terminal"] = json!(false);
        c["process"]["args"] = json!(["sleep", "1000"]);
    });
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "t4"]);
    assert_eq!(env.ok(&["exec", "t4", "--", "id", "-u"]).trim(), "1000");
    assert_eq!(env.ok(&["exec", "t4", "--", "id", "-g"]).trim(), "100");
    check(
        &env.ok(&["exec", "-t", "t4", "--", "sh", "-c", script]),
        "1000",
    );
    check(
        &env.ok(&["exec", "-t", "-u", "0:0", "t4", "--", "sh", "-c", script]),
        "0",
    );
    let out = env.nvbind(&["exec", "-t", "t4", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    // A --process object says itself whether it wants a terminal (runc ignores -t with it:
    // tty.bats "exec [tty consolesize]"), and one without PATH runs a program given by its
    // path, as runc's does.
    let process = env.dir.path().join("process.json");
    fs::write(
        &process,
        json!({"args": ["/bin/sh", "-c", "readlink /proc/self/fd/1"], "cwd": "/"}).to_string(),
    )
    .unwrap();
    let p = process.to_str().unwrap();
    let out = env.ok(&["exec", "-t", "-p", p, "t4"]);
    assert!(!out.starts_with("/dev/pts/"), "{out:?}");
    fs::write(
        &process,
        json!({"args": ["sh", "-c", "true"], "cwd": "/"}).to_string(),
    )
    .unwrap();
    let err = env.fails_with(&["exec", "-p", p, "t4"], 255);
    assert!(err.contains("PATH is not set"), "{err}");
    let err = env.fails_with(
        &["exec", "-t", "--console-socket", s, "t4", "--", "true"],
        255,
    );
    assert!(
        err.contains("--console-socket is for a container that detaches"),
        "{err}"
    );
    env.ok(&["delete", "--force", "t4"]);
    env.assert_clean();
}
