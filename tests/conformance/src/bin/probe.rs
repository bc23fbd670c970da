//! The in-container probe: it runs as (or beside) the container's process and prints, as one
//! JSON object on stdout, what the process sees of its own environment. The driver compares
//! that with what config.json asked for.
//!
//! Usage: `probe report [CHECK]...` where each CHECK is `op:arg` (see `run_check`), or
//! `probe trap` (wait for a signal, exit 100+signo), `probe sleep SECS`, `probe exit CODE`.
//! It must be linked statically: it runs in a busybox rootfs with no libc.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use serde_json::{json, Map, Value};

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn read_trim(path: &str) -> Value {
    match fs::read_to_string(path) {
        Ok(s) => Value::String(s.trim_end().to_string()),
        Err(e) => json!({ "err": e.raw_os_error().unwrap_or(0) }),
    }
}

fn status_fields() -> Map<String, Value> {
    let mut m = Map::new();
    if let Ok(s) = fs::read_to_string("/proc/self/status") {
        for line in s.lines() {
            if let Some((k, v)) = line.split_once(':') {
                m.insert(k.to_string(), Value::String(v.trim().to_string()));
            }
        }
    }
    m
}

const RLIMITS: &[(&str, libc::__rlimit_resource_t)] = &[
    ("RLIMIT_CPU", libc::RLIMIT_CPU),
    ("RLIMIT_FSIZE", libc::RLIMIT_FSIZE),
    ("RLIMIT_DATA", libc::RLIMIT_DATA),
    ("RLIMIT_STACK", libc::RLIMIT_STACK),
    ("RLIMIT_CORE", libc::RLIMIT_CORE),
    ("RLIMIT_RSS", libc::RLIMIT_RSS),
    ("RLIMIT_NPROC", libc::RLIMIT_NPROC),
    ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE),
    ("RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK),
    ("RLIMIT_AS", libc::RLIMIT_AS),
    ("RLIMIT_LOCKS", libc::RLIMIT_LOCKS),
    ("RLIMIT_SIGPENDING", libc::RLIMIT_SIGPENDING),
    ("RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE),
    ("RLIMIT_NICE", libc::RLIMIT_NICE),
    ("RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO),
    ("RLIMIT_RTTIME", libc::RLIMIT_RTTIME),
];

fn rlimits() -> Value {
    let mut m = Map::new();
    for (name, res) in RLIMITS {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the rlimit we own.
        if unsafe { libc::getrlimit(*res, &mut rl) } == 0 {
            m.insert(name.to_string(), json!([rl.rlim_cur, rl.rlim_max]));
        }
    }
    Value::Object(m)
}

fn groups() -> Value {
    let mut buf = vec![0 as libc::gid_t; 256];
    // SAFETY: the buffer holds 256 gids.
    let n = unsafe { libc::getgroups(256, buf.as_mut_ptr()) };
    if n < 0 {
        return json!({ "err": errno() });
    }
    buf.truncate(n as usize);
    json!(buf)
}

fn uname() -> (String, String) {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    unsafe { libc::uname(&mut u) };
    let cs = |a: &[libc::c_char]| {
        let bytes: Vec<u8> = a
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (cs(&u.nodename), cs(&u.domainname))
}

fn namespaces() -> Value {
    let mut m = Map::new();
    for ns in ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"] {
        if let Ok(l) = fs::read_link(format!("/proc/self/ns/{ns}")) {
            m.insert(
                ns.to_string(),
                Value::String(l.to_string_lossy().into_owned()),
            );
        }
    }
    Value::Object(m)
}

/// /proc/self/mountinfo, one object per line.
fn mounts() -> Value {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 3 {
            continue;
        }
        out.push(json!({
            "id": l[0], "parent": l[1], "root": l[3], "target": l[4].replace("\\040", " "),
            "opts": l[5], "optional": l[6..].join(" "),
            "fstype": r[0], "source": r[1], "super": r[2],
        }));
    }
    Value::Array(out)
}

fn stat(path: &str) -> Value {
    match fs::symlink_metadata(path) {
        Err(e) => json!({ "err": e.raw_os_error().unwrap_or(0) }),
        Ok(m) => {
            let ft = m.file_type();
            let kind = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else if ft.is_dir() {
                "d"
            } else if ft.is_symlink() {
                "l"
            } else if ft.is_fifo() {
                "p"
            } else if ft.is_socket() {
                "s"
            } else {
                "f"
            };
            let rdev = m.rdev();
            let link = fs::read_link(path)
                .map(|l| l.to_string_lossy().into_owned())
                .ok();
            json!({
                "type": kind, "mode": m.mode() & 0o7777, "uid": m.uid(), "gid": m.gid(),
                "major": libc::major(rdev), "minor": libc::minor(rdev), "size": m.size(),
                "link": link,
            })
        }
    }
}

fn cpath(p: &str) -> CString {
    CString::new(p).unwrap_or_default()
}

/// Result of a raw syscall: `{"ok": ret}` or `{"err": errno}`.
fn sys_result(ret: libc::c_long) -> Value {
    if ret < 0 {
        json!({ "err": errno() })
    } else {
        json!({ "ok": ret })
    }
}

fn open_mode(path: &str, flags: libc::c_int) -> Value {
    let p = cpath(path);
    // SAFETY: p is a valid C string; the fd is closed right away.
    let fd = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return json!({ "err": errno() });
    }
    unsafe { libc::close(fd) };
    json!({ "ok": 0 })
}

/// One `op:arg` check. The result is stored under the full check string.
fn run_check(check: &str) -> Value {
    let (op, arg) = check.split_once(':').unwrap_or((check, ""));
    match op {
        "stat" => stat(arg),
        "read" => match fs::read(arg) {
            Ok(b) => json!({ "ok": String::from_utf8_lossy(&b[..b.len().min(8192)]) }),
            Err(e) => json!({ "err": e.raw_os_error().unwrap_or(0) }),
        },
        "ls" => match fs::read_dir(arg) {
            Ok(rd) => {
                let mut v: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                json!({ "ok": v })
            }
            Err(e) => json!({ "err": e.raw_os_error().unwrap_or(0) }),
        },
        // open for writing (no truncation, no creation)
        "openw" => open_mode(arg, libc::O_WRONLY),
        "openr" => open_mode(arg, libc::O_RDONLY),
        // create (or truncate) and write a file
        "write" => match fs::write(arg, b"probe\n") {
            Ok(()) => json!({ "ok": 0 }),
            Err(e) => json!({ "err": e.raw_os_error().unwrap_or(0) }),
        },
        // write a value into an existing file (sysctls, cgroup files)
        "put" => {
            let (path, val) = arg.split_once('=').unwrap_or((arg, ""));
            match fs::OpenOptions::new().write(true).open(path) {
                Ok(mut f) => match std::io::Write::write_all(&mut f, val.as_bytes()) {
                    Ok(()) => json!({ "ok": 0 }),
                    Err(e) => json!({ "err": e.raw_os_error().unwrap_or(0) }),
                },
                Err(e) => json!({ "err": e.raw_os_error().unwrap_or(0) }),
            }
        }
        "mkdir" => {
            let p = cpath(arg);
            // SAFETY: raw mkdirat with a valid path.
            sys_result(unsafe {
                libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, p.as_ptr(), 0o755)
            })
        }
        "chdir" => {
            let p = cpath(arg);
            // SAFETY: raw chdir with a valid path.
            sys_result(unsafe { libc::syscall(libc::SYS_chdir, p.as_ptr()) })
        }
        "getcwd" => match std::env::current_dir() {
            Ok(p) => json!({ "ok": p.to_string_lossy() }),
            Err(e) => json!({ "err": e.raw_os_error().unwrap_or(0) }),
        },
        "mknod" => {
            let p = cpath(arg);
            // SAFETY: mknod of /dev/null's numbers at a valid path.
            let r = unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
            sys_result(r as libc::c_long)
        }
        "sethostname" => {
            // SAFETY: valid buffer and length.
            let r = unsafe { libc::sethostname(arg.as_ptr().cast(), arg.len()) };
            sys_result(r as libc::c_long)
        }
        "setuid" => {
            let uid: libc::uid_t = arg.parse().unwrap_or(0);
            // SAFETY: raw setuid, no libc thread broadcasting needed (single thread).
            sys_result(unsafe { libc::syscall(libc::SYS_setuid, uid) })
        }
        "chown" => {
            let p = cpath(arg);
            // SAFETY: valid path.
            sys_result(unsafe {
                libc::syscall(libc::SYS_fchownat, libc::AT_FDCWD, p.as_ptr(), 1, 1, 0)
            })
        }
        "clock" => {
            let id = match arg {
                "boottime" => libc::CLOCK_BOOTTIME,
                _ => libc::CLOCK_MONOTONIC,
            };
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: ts is ours.
            unsafe { libc::clock_gettime(id, &mut ts) };
            json!({ "ok": ts.tv_sec })
        }
        "env" => json!({ "ok": std::env::var(arg).ok() }),
        // fork up to N children that wait; report how many forks succeeded
        "forkn" => {
            let n: usize = arg.parse().unwrap_or(1);
            let mut kids = Vec::new();
            let mut last_err = 0;
            for _ in 0..n {
                // SAFETY: the child only pauses until killed.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    loop {
                        unsafe { libc::pause() };
                    }
                }
                if pid < 0 {
                    last_err = errno();
                    break;
                }
                kids.push(pid);
            }
            for &k in &kids {
                // SAFETY: kill and reap our own children.
                unsafe {
                    libc::kill(k, libc::SIGKILL);
                    libc::waitpid(k, std::ptr::null_mut(), 0);
                }
            }
            json!({ "ok": kids.len(), "errno": last_err })
        }
        "fork" => {
            // SAFETY: the child only calls _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                unsafe { libc::_exit(0) };
            }
            if pid < 0 {
                return json!({ "err": errno() });
            }
            let mut st = 0;
            unsafe { libc::waitpid(pid, &mut st, 0) };
            json!({ "ok": pid })
        }
        _ => json!({ "err": "unknown check" }),
    }
}

fn report(checks: &[String]) -> Value {
    let st = status_fields();
    let cwd = std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let env: Vec<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    let (hostname, domainname) = uname();
    // SAFETY: plain queries of our own process.
    let (uid, euid, gid, egid, pid, ppid, pgid, sid) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
            libc::getpid(),
            libc::getppid(),
            libc::getpgid(0),
            libc::getsid(0),
        )
    };
    let personality = unsafe { libc::personality(0xffff_ffff) };
    let sched = unsafe { libc::sched_getscheduler(0) };
    let mut sp = libc::sched_param { sched_priority: 0 };
    unsafe { libc::sched_getparam(0, &mut sp) };
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    // ioprio_get(IOPRIO_WHO_PROCESS = 1, 0)
    let ioprio = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, 0) };
    let tty = unsafe { libc::isatty(0) } == 1;
    // SAFETY: TIOCGWINSZ fills a winsize we own (fails harmlessly on a non-tty).
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let winsize = if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0 {
        json!([ws.ws_row, ws.ws_col])
    } else {
        Value::Null
    };
    // tty_nr: the 7th field of /proc/self/stat, counted after the ")" closing comm
    let ctty: i64 = fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            rest.split_whitespace().nth(4)?.parse().ok()
        })
        .unwrap_or(0);
    let field = |k: &str| st.get(k).cloned().unwrap_or(Value::Null);
    let mut out = json!({
        "argv": std::env::args().collect::<Vec<_>>(),
        "uid": uid, "euid": euid, "gid": gid, "egid": egid, "groups": groups(),
        "pid": pid, "ppid": ppid, "pgid": pgid, "sid": sid, "tty": tty, "ctty": ctty, "winsize": winsize,
        "cwd": cwd, "env": env, "umask": field("Umask"),
        "cap": {
            "inheritable": field("CapInh"), "permitted": field("CapPrm"),
            "effective": field("CapEff"), "bounding": field("CapBnd"), "ambient": field("CapAmb"),
        },
        "no_new_privs": field("NoNewPrivs"), "seccomp": field("Seccomp"),
        "seccomp_filters": field("Seccomp_filters"),
        "oom_score_adj": read_trim("/proc/self/oom_score_adj"),
        "hostname": hostname, "domainname": domainname,
        "rlimits": rlimits(), "ns": namespaces(), "mounts": mounts(),
        "uid_map": read_trim("/proc/self/uid_map"), "gid_map": read_trim("/proc/self/gid_map"),
        "setgroups": read_trim("/proc/self/setgroups"),
        "cgroup": read_trim("/proc/self/cgroup"),
        "timens_offsets": read_trim("/proc/self/timens_offsets"),
        "personality": personality, "sched_policy": sched, "sched_priority": sp.sched_priority,
        "nice": nice, "ioprio": ioprio,
    });
    let mut cm = Map::new();
    for c in checks {
        cm.insert(c.clone(), run_check(c));
    }
    out["checks"] = Value::Object(cm);
    out
}

extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(100 + sig) };
}

fn trap() -> ! {
    for sig in [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGTERM,
        libc::SIGWINCH,
    ] {
        // SAFETY: installing a handler that only calls _exit.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    println!("{{\"trap\":true}}");
    loop {
        // SAFETY: pause just waits for a signal.
        unsafe { libc::pause() };
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("report") | None => {
            let v = report(args.get(2..).unwrap_or(&[]));
            println!("{v}");
        }
        Some("trap") => trap(),
        Some("sleep") => {
            let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3600);
            std::thread::sleep(std::time::Duration::from_secs(secs));
        }
        Some("exit") => {
            let code: i32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
            std::process::exit(code);
        }
        Some(other) => {
            eprintln!("probe: unknown mode {other}");
            std::process::exit(2);
        }
    }
}
