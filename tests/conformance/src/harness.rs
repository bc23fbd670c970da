//! Scenarios, outcomes, containers with guaranteed cleanup, and the helpers cases share.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bundle::{base_config, Template};
use crate::runtime::{CmdOut, Runtime};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

/// One scenario builds one (or a few) containers and reports several cases.
pub struct Scenario {
    /// `area.scenario`
    pub name: &'static str,
    /// Case names (suffixes); every one is reported, "not reported" counts as a failure.
    pub cases: &'static [&'static str],
    pub run: fn(&Ctx, &mut Results),
}

/// The outcomes of one scenario's cases.
#[derive(Debug, Default)]
pub struct Results {
    pub map: BTreeMap<String, Outcome>,
}

impl Results {
    pub fn set(&mut self, case: &str, o: Outcome) {
        self.map.entry(case.to_string()).or_insert(o);
    }
    pub fn pass(&mut self, case: &str) {
        self.set(case, Outcome::Pass)
    }
    pub fn fail(&mut self, case: &str, why: impl Into<String>) {
        self.set(case, Outcome::Fail(why.into()))
    }
    pub fn skip(&mut self, case: &str, why: impl Into<String>) {
        self.set(case, Outcome::Skip(why.into()))
    }
    pub fn check(&mut self, case: &str, ok: bool, why: impl FnOnce() -> String) {
        if ok {
            self.pass(case)
        } else {
            self.fail(case, why())
        }
    }
    pub fn eq<T: PartialEq + std::fmt::Debug>(&mut self, case: &str, got: T, want: T) {
        let ok = got == want;
        self.check(case, ok, || format!("got {got:?}, want {want:?}"))
    }
    /// Fail every listed case not decided yet.
    pub fn fail_rest(&mut self, cases: &[&str], why: &str) {
        for c in cases {
            self.set(c, Outcome::Fail(why.to_string()));
        }
    }
    pub fn skip_rest(&mut self, cases: &[&str], why: &str) {
        for c in cases {
            self.set(c, Outcome::Skip(why.to_string()));
        }
    }
}

pub struct Ctx {
    pub rt: Runtime,
    pub template: Template,
    pub work: PathBuf,
    pub prefix: String,
    counter: AtomicUsize,
}

impl Ctx {
    pub fn new(rt: Runtime, template: Template, work: PathBuf, prefix: String) -> Self {
        Ctx {
            rt,
            template,
            work,
            prefix,
            counter: AtomicUsize::new(0),
        }
    }

    /// A fresh bundle with the default config and a populated rootfs.
    pub fn bundle(&self) -> Result<Bundle, String> {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}-{n}", self.prefix);
        let dir = self.work.join(format!("b{n}"));
        fs::create_dir_all(dir.join("rootfs")).map_err(|e| format!("bundle dir: {e}"))?;
        self.template.populate(&dir.join("rootfs"))?;
        fs::create_dir_all(dir.join("shared")).map_err(|e| format!("shared dir: {e}"))?;
        Ok(Bundle {
            id,
            dir,
            config: base_config(),
        })
    }
}

/// A bundle directory; removed on drop.
pub struct Bundle {
    pub id: String,
    pub dir: PathBuf,
    pub config: Value,
}

impl Bundle {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    /// A host directory for hooks and bind mounts to leave files in.
    pub fn shared(&self) -> PathBuf {
        self.dir.join("shared")
    }
    pub fn write_config(&self) -> Result<(), String> {
        let text = serde_json::to_string_pretty(&self.config).map_err(|e| e.to_string())?;
        fs::write(self.dir.join("config.json"), text).map_err(|e| format!("config.json: {e}"))
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if std::env::var_os("CONFORMANCE_KEEP_BUNDLES").is_some() {
            let kept = self.dir.with_extension("kept");
            if fs::rename(&self.dir, &kept).is_ok() {
                eprintln!("# kept bundle {} as {}", self.id, kept.display());
                return;
            }
        }
        detach_mounts_under(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Lazily unmount every mount of this process's namespace at or below `dir`, deepest first,
/// so that removing a bundle never descends into (or is blocked by) a leftover mount.
pub fn detach_mounts_under(dir: &Path) {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut targets: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(|t| t.replace("\\040", " ")))
        .filter(|t| Path::new(t).starts_with(dir))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        if let Ok(c) = std::ffi::CString::new(t) {
            // SAFETY: umount2 with a valid path; failures are ignored on purpose.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// A created container; killed and force-deleted on drop.
pub struct Container<'a> {
    pub ctx: &'a Ctx,
    pub id: String,
    pub pid: Option<i32>,
    pub scratch: PathBuf,
    reaped: Option<Exit>,
}

/// How the container's init process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Gone, but not our child, so the status is unknown.
    Unknown,
}

impl<'a> Container<'a> {
    /// `create` the bundle (config written first). Err carries the runtime's output.
    pub fn create(ctx: &'a Ctx, b: &Bundle) -> Result<Container<'a>, CmdOut> {
        if let Err(e) = b.write_config() {
            return Err(CmdOut {
                code: None,
                stdout: String::new(),
                stderr: e,
                timed_out: false,
                signal: None,
            });
        }
        let pid_file = b.dir.join("pid");
        let o = ctx.rt.create(&b.dir, &b.id, &b.dir, &pid_file);
        // No guard for a failed create: the id may belong to another container (a duplicate
        // create must not take the original down). Leftovers are the final sweep's job.
        if !o.ok() {
            return Err(o);
        }
        Ok(Container {
            ctx,
            id: b.id.clone(),
            pid: fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            scratch: b.dir.clone(),
            reaped: None,
        })
    }

    /// A guard for a container created some other way (e.g. with extra flags).
    pub fn adopt(ctx: &'a Ctx, b: &Bundle) -> Container<'a> {
        Container {
            ctx,
            id: b.id.clone(),
            pid: fs::read_to_string(b.dir.join("pid"))
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            scratch: b.dir.clone(),
            reaped: None,
        }
    }

    pub fn start(&self) -> CmdOut {
        self.ctx.rt.start(&self.scratch, &self.id)
    }

    pub fn state(&self) -> Result<Value, String> {
        self.ctx.rt.state_json(&self.scratch, &self.id)
    }

    pub fn kill(&self, sig: &str) -> CmdOut {
        self.ctx.rt.kill(&self.scratch, &self.id, sig)
    }

    pub fn delete(&self) -> CmdOut {
        self.ctx.rt.delete(&self.scratch, &self.id, false)
    }

    /// Wait for the init process to end (we are its subreaper, so we can reap it).
    pub fn wait(&mut self, timeout: Duration) -> Option<Exit> {
        if let Some(e) = self.reaped {
            return Some(e);
        }
        let pid = self.pid?;
        let start = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: non-blocking wait for one specific pid.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                let e = if libc::WIFEXITED(status) {
                    Exit::Code(libc::WEXITSTATUS(status))
                } else {
                    Exit::Signal(libc::WTERMSIG(status))
                };
                self.reaped = Some(e);
                return Some(e);
            }
            if r < 0 && !Path::new(&format!("/proc/{pid}")).exists() {
                self.reaped = Some(Exit::Unknown);
                return self.reaped;
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The probe's JSON report: the last line of the container's stdout that parses.
    pub fn output(&self) -> Result<Value, String> {
        let text = fs::read_to_string(self.scratch.join("create.out")).unwrap_or_default();
        text.lines()
            .rev()
            .find_map(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .filter(Value::is_object)
            })
            .ok_or_else(|| {
                let err = fs::read_to_string(self.scratch.join("create.err")).unwrap_or_default();
                format!(
                    "no probe report on stdout ({:?}); stderr: {}",
                    text.chars().take(200).collect::<String>(),
                    err.trim().chars().take(300).collect::<String>()
                )
            })
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.ctx.rt.kill(&self.scratch, &self.id, "KILL");
        let _ = self.wait(Duration::from_secs(2));
        let _ = self.ctx.rt.delete(&self.scratch, &self.id, true);
    }
}

/// What a simple probe run gives: the report, the exit and the container's state after create.
pub struct ProbeRun {
    pub report: Value,
    pub exit: Option<Exit>,
    /// The bundle, kept until the run is dropped so that cases can look at host-side files.
    pub bundle: Option<Bundle>,
}

/// create + start + wait + delete, returning the probe's report.
pub fn probe_run(ctx: &Ctx, b: &Bundle) -> Result<ProbeRun, String> {
    let mut c = Container::create(ctx, b).map_err(|o| format!("create failed: {}", o.brief()))?;
    let s = c.start();
    if !s.ok() {
        return Err(format!("start failed: {}", s.brief()));
    }
    let exit = c.wait(Duration::from_secs(20));
    if exit.is_none() {
        return Err("container did not exit within 20s".into());
    }
    let report = c.output()?;
    let d = c.delete();
    if !d.ok() {
        return Err(format!("delete failed: {}", d.brief()));
    }
    Ok(ProbeRun {
        report,
        exit,
        bundle: None,
    })
}

/// create + start + wait + delete, returning only how the process ended.
pub fn probe_run_raw(ctx: &Ctx, b: &Bundle) -> Result<Option<Exit>, String> {
    let mut c = Container::create(ctx, b).map_err(|o| format!("create failed: {}", o.brief()))?;
    let s = c.start();
    if !s.ok() {
        return Err(format!("start failed: {}", s.brief()));
    }
    let exit = c.wait(Duration::from_secs(20));
    let d = c.delete();
    if !d.ok() {
        return Err(format!("delete failed: {}", d.brief()));
    }
    Ok(exit)
}

/// The result of a probe check: `checks[key]`.
pub fn chk<'v>(report: &'v Value, key: &str) -> &'v Value {
    &report["checks"][key]
}

pub fn errno_of(v: &Value) -> Option<i64> {
    v["err"].as_i64()
}

/// Host path of the cgroup a process is in for a v1 controller ("" for the v2 hierarchy).
pub fn host_cgroup_dir(pid: i32, controller: &str) -> Option<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controller.is_empty() && ctrls.is_empty() {
            let base = if Path::new("/sys/fs/cgroup/unified").exists() {
                "/sys/fs/cgroup/unified"
            } else {
                "/sys/fs/cgroup"
            };
            return Some(PathBuf::from(format!("{base}{path}")));
        }
        if !controller.is_empty() && ctrls.split(',').any(|c| c == controller) {
            return Some(PathBuf::from(format!("/sys/fs/cgroup/{ctrls}{path}")));
        }
    }
    None
}

/// Is cgroup v2 the only hierarchy (unified mode)?
pub fn cgroup_v2_unified() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Capability numbers by name (as in linux/capability.h).
pub const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The mask for a list of capability names.
pub fn cap_mask(names: &[&str]) -> u64 {
    names
        .iter()
        .filter_map(|n| CAP_NAMES.iter().position(|c| c == n))
        .fold(0, |m, i| m | (1u64 << i))
}

/// Parse a Cap* hex field from the report.
pub fn cap_field(report: &Value, set: &str) -> Option<u64> {
    u64::from_str_radix(report["cap"][set].as_str()?, 16).ok()
}

/// The mount whose target is `dst` (the last one, as mounts stack).
pub fn mount_at<'v>(report: &'v Value, dst: &str) -> Option<&'v Value> {
    report["mounts"]
        .as_array()?
        .iter()
        .rev()
        .find(|m| m["target"] == dst)
}

/// Does the mount's per-mount or super option list contain `opt`?
pub fn has_opt(m: &Value, opt: &str) -> bool {
    let per = m["opts"].as_str().unwrap_or("");
    let sup = m["super"].as_str().unwrap_or("");
    per.split(',').chain(sup.split(',')).any(|o| o == opt)
}

/// This process's namespace link for `ns` (e.g. "net:[4026531840]").
pub fn host_ns(ns: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{ns}"))
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default()
}
