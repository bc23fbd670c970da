//! The harness of tests/load: nvbind calls under a timeout, clean-failure checks, parallel
//! workers, cheap bundles, and the process, state and list checks the tests share.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{process_alive, Env, NVBIND};

/// The heavy tests take turns, so that each one's figures are its own and the machine's
/// process and file limits are shared by one test at a time.
pub static HEAVY: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn env_num(var: &str) -> Option<f64> {
    let v = std::env::var(var).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a number")),
    )
}

/// A setting that does not scale: `var` if set, else `default`.
pub fn knob(var: &str, default: usize) -> usize {
    env_num(var).map_or(default, |n| n as usize)
}

/// `var` if set, else the issue's `full` count times NVBIND_LOAD_SCALE (default 1).
pub fn count(var: &str, full: usize) -> usize {
    match env_num(var) {
        Some(n) => n as usize,
        None => {
            ((full as f64 * env_num("NVBIND_LOAD_SCALE").unwrap_or(1.0)).round() as usize).max(1)
        }
    }
}

pub fn timeout() -> Duration {
    Duration::from_secs_f64(env_num("NVBIND_LOAD_TIMEOUT_S").unwrap_or(120.0))
}

pub static CALLS: AtomicUsize = AtomicUsize::new(0);

/// One nvbind call's result; `hung` when it outlived the timeout and was killed.
pub struct Out {
    pub args: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub hung: bool,
}

impl Out {
    pub fn ok(&self) -> bool {
        !self.hung && self.code == Some(0)
    }

    /// Why this failure is not a clean one, if it is not: a hang, a panic, a multi-line or
    /// unprefixed message, or a JSON decoding error leaking out of a half-written file.
    pub fn unclean(&self) -> Option<String> {
        if self.hung {
            return Some(format!("{} hung (killed after {:?})", self.args, timeout()));
        }
        let err = self.stderr.trim_end();
        let garbage = [
            "panicked",
            "RUST_BACKTRACE",
            "EOF while parsing",
            "expected value at",
            "trailing characters",
            "invalid type",
        ];
        if self.code != Some(1)
            || err.lines().count() != 1
            || !err.starts_with("nvbind: ")
            || garbage.iter().any(|g| err.contains(g))
        {
            return Some(format!(
                "{} failed uncleanly ({:?}): {err:?}",
                self.args, self.code
            ));
        }
        None
    }

    pub fn describe(&self) -> String {
        format!(
            "{} -> {:?}{}: {}",
            self.args,
            self.code,
            if self.hung { " (hung)" } else { "" },
            self.stderr.trim_end()
        )
    }
}

/// `nvbind --root ROOT ARGS` with a timeout. Output goes through files (a created container
/// inherits them and would hold a pipe open).
pub fn nv(env: &Env, args: &[&str]) -> Out {
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let out_path = env.dir.path().join(format!(".load-out-{n}"));
    let err_path = env.dir.path().join(format!(".load-err-{n}"));
    let mut child: Child = Command::new(NVBIND)
        .arg("--root")
        .arg(&env.root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("cannot run nvbind");
    let deadline = Instant::now() + timeout();
    let mut nap = Duration::from_millis(1);
    let (code, hung) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status.code(), false);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break (child.wait().unwrap().code(), true);
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    };
    let read = |p: &Path| {
        let s = String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
        let _ = fs::remove_file(p);
        s
    };
    Out {
        args: args.join(" "),
        code,
        stdout: read(&out_path),
        stderr: read(&err_path),
        hung,
    }
}

/// Collects failures from worker threads and the distinct clean error messages seen.
#[derive(Default)]
pub struct Tally {
    pub failures: Mutex<Vec<String>>,
    pub errors: Mutex<BTreeMap<String, usize>>,
    pub ops: AtomicUsize,
}

impl Tally {
    pub fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }

    /// Counts the call; a clean failure is recorded by message (IDs and numbers blanked).
    pub fn record(&self, env: &Env, out: &Out) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        if out.ok() {
            return;
        }
        if let Some(why) = out.unclean() {
            return self.fail(why);
        }
        let msg = out
            .stderr
            .trim_end()
            .replace(&*env.root.to_string_lossy(), "ROOT")
            .replace(|c: char| c.is_ascii_digit(), "N");
        *self.errors.lock().unwrap().entry(msg).or_default() += 1;
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    pub fn ops(&self) -> usize {
        self.ops.load(Ordering::Relaxed)
    }
}

/// Running-container counter with its high-water mark.
#[derive(Default)]
pub struct Gauge {
    pub now: AtomicUsize,
    pub peak: AtomicUsize,
}

impl Gauge {
    pub fn up(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
    }
    pub fn down(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// Runs `f(0..n)` on `workers` threads that start together.
pub fn parallel(n: usize, workers: usize, f: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    let workers = workers.clamp(1, n.max(1));
    let barrier = Barrier::new(workers);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                barrier.wait();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    f(i);
                }
            });
        }
    });
}

/// Bundles for many containers: each has its own rootfs (busybox hard-linked, not copied)
/// and its own cgroupsPath under the test's prefix, from one `nvbind spec` template.
pub struct Bundles {
    pub template: Value,
    pub busybox: PathBuf,
    /// A number no other process on the host sleeps for: `sleep MARKER` is ours.
    pub marker: String,
}

impl Bundles {
    pub fn new(env: &Env, salt: u64) -> Self {
        let base = env.bundle("base", &["true"]);
        let template = serde_json::from_slice(&fs::read(base.join("config.json")).unwrap());
        Self {
            template: template.unwrap(),
            busybox: base.join("rootfs/bin/busybox"),
            marker: (7_000_000 + u64::from(std::process::id()) * 8 + salt).to_string(),
        }
    }

    /// A bundle for container `id` running `sleep MARKER`.
    pub fn make(&self, env: &Env, id: &str) -> PathBuf {
        let b = env.dir.path().join(format!("bundle-{id}"));
        let rootfs = b.join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::hard_link(&self.busybox, rootfs.join("bin/busybox")).unwrap();
        symlink("busybox", rootfs.join("bin/sleep")).unwrap();
        let mut c = self.template.clone();
        c["process"]["args"] = json!(["sleep", self.marker]);
        c["linux"]["cgroupsPath"] = json!(format!("/{}-{id}", env.cgroup_prefix));
        fs::write(b.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
        b
    }
}

pub fn cmdline(pid: i64) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Live processes of this test: container inits that exec'd `sleep MARKER`, and anything
/// still running with this test's --root on its command line (nvbind calls, and inits
/// cloned by `create` that were never started).
pub fn our_processes(env: &Env, marker: &str) -> Vec<(i64, String)> {
    let root = env.root.to_string_lossy().into_owned();
    let sleeper = format!("sleep {marker} ");
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i64>().ok())
        .filter_map(|pid| {
            let cmd = cmdline(pid);
            ((cmd == sleeper || cmd.contains(&root)) && process_alive(pid)).then_some((pid, cmd))
        })
        .collect()
}

/// Polls (up to 10 s: a killed process takes a moment to die) until only `allowed` of our
/// processes are alive; panics naming the others.
pub fn assert_no_strays(env: &Env, marker: &str, allowed: &[i64]) {
    let strays = || {
        our_processes(env, marker)
            .into_iter()
            .filter(|(p, _)| !allowed.contains(p))
            .collect::<Vec<_>>()
    };
    for _ in 0..1000 {
        if strays().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("container processes left behind: {:?}", strays());
}

/// Whether the process is the init of container `id`: it sits in that container's cgroup.
pub fn in_cgroup_of(env: &Env, pid: i64, id: &str) -> bool {
    let leaf = format!("/{}-{id}\n", env.cgroup_prefix);
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|s| s.lines().any(|l| format!("{l}\n").ends_with(&leaf)))
        .unwrap_or(false)
}

/// Polls until `f` is true or 30 s pass: on a loaded machine, 200 SIGKILLed containers take
/// a while to die, and a slow death is not what these tests measure.
pub fn wait_long(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

pub fn report(name: &str, figures: &[(&str, String)]) {
    let line: Vec<String> = figures.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // On a line of its own: with --test-threads 1, libtest has just printed "test NAME ... ".
    println!("\nLOAD {name}: {}", line.join(" "));
}

pub fn print_errors(t: &Tally) {
    for (msg, n) in t.errors.lock().unwrap().iter() {
        println!("    {n:>5} x {msg}");
    }
}

pub const STATUSES: [&str; 5] = ["creating", "created", "running", "stopped", "paused"];

/// xorshift64*: a seeded, printable random order without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// `state ID` either parses into a document about ID with a known status or says cleanly
/// that ID does not exist; returns the document, or None when ID does not exist.
pub fn checked_state(env: &Env, id: &str) -> Result<Option<Value>, String> {
    let out = nv(env, &["state", id]);
    if !out.ok() {
        return match out.unclean() {
            Some(why) => Err(why),
            None if out.stderr.contains("does not exist") => Ok(None),
            None => Err(format!("state {id}: {}", out.describe())),
        };
    }
    let st: Value = serde_json::from_str(&out.stdout)
        .map_err(|e| format!("state {id} printed garbage ({e}): {:?}", out.stdout))?;
    let status = st["status"].as_str().unwrap_or("");
    if st["id"] != id || !STATUSES.contains(&status) || !st["pid"].is_i64() {
        return Err(format!("state {id} printed a bad document: {st}"));
    }
    Ok(Some(st))
}

/// `list --format json` succeeds with nothing on stderr and parses; returns its documents.
pub fn checked_list_json(env: &Env) -> Result<Vec<Value>, String> {
    let out = nv(env, &["list", "--format", "json"]);
    if !out.ok() || !out.stderr.is_empty() {
        return Err(out.describe());
    }
    let docs: Vec<Value> = serde_json::from_str(&out.stdout)
        .map_err(|e| format!("list --format json printed garbage ({e}): {:?}", out.stdout))?;
    for d in &docs {
        let status = d["status"].as_str().unwrap_or("");
        if !d["id"].is_string() || !STATUSES.contains(&status) || !d["pid"].is_i64() {
            return Err(format!("list printed a bad document: {d}"));
        }
    }
    Ok(docs)
}

/// `list` (table) succeeds with nothing on stderr; returns (id, pid, status) per row.
pub fn checked_list_table(env: &Env) -> Result<Vec<(String, i64, String)>, String> {
    let out = nv(env, &["list"]);
    if !out.ok() || !out.stderr.is_empty() {
        return Err(out.describe());
    }
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    if header[..] != ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"] {
        return Err(format!("list printed a bad header: {:?}", out.stdout));
    }
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            match cells[..] {
                // CREATED is empty while a container is being created.
                [id, pid, status, _bundle, ..]
                    if pid.parse::<i64>().is_ok() && STATUSES.contains(&status) =>
                {
                    Ok((id.to_string(), pid.parse().unwrap(), status.to_string()))
                }
                _ => Err(format!("list printed a bad row {l:?} in {:?}", out.stdout)),
            }
        })
        .collect()
}
