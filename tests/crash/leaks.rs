//! The leak check of tests/crash.rs: what one test's containers may leave on the host, found
//! by looking (state root, cgroup trees, mountinfo, /proc), and removed by hand after it is
//! reported so that the next trial starts clean.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::common::{leaked_cgroups, Env};
use super::take_turn;

/// Everything of one test that should be gone once its containers are deleted.
#[derive(Debug, Default)]
pub struct Leaks {
    /// Entries under --root other than the root's lock file and CRIU version cache.
    state: Vec<PathBuf>,
    cgroups: Vec<PathBuf>,
    mounts: Vec<String>,
    /// (pid, why it belongs to us, command line)
    processes: Vec<(i32, &'static str, String)>,
    /// nvbind's work files (`.nvbind-*`) in watched directories: CRIU's staging
    /// directory in an image directory, rootfs clones in a bundle.
    work_files: Vec<PathBuf>,
}

/// Files the root keeps between containers.
const ROOT_FILES: [&str; 2] = [".nvbind.lock", ".criu-version"];
/// The start of the names of compiled seccomp programs the root keeps (src/seccomp_cache.rs).
const SECCOMP_CACHE: &str = ".nvbind-seccomp-";

impl Leaks {
    pub fn find(env: &Env, watch: &[&Path]) -> Self {
        let state = fs::read_dir(&env.root)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        !ROOT_FILES.contains(&name.as_str()) && !name.starts_with(SECCOMP_CACHE)
                    })
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        let here = env.dir.path().to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&here))
            .map(str::to_string)
            .collect();
        let work_files = watch
            .iter()
            .filter_map(|d| fs::read_dir(d).ok())
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".nvbind-"))
            .map(|e| e.path())
            .collect();
        Self {
            state,
            cgroups: leaked_cgroups(&env.cgroup_prefix),
            mounts,
            processes: stray_processes(env),
            work_files,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
            && self.cgroups.is_empty()
            && self.mounts.is_empty()
            && self.processes.is_empty()
            && self.work_files.is_empty()
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for p in &self.state {
            let inside: Vec<String> = fs::read_dir(p)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            parts.push(format!("state entry {} {inside:?}", p.display()));
        }
        for c in &self.cgroups {
            let frozen = fs::read_to_string(c.join("freezer.state"))
                .map(|s| format!(" (freezer.state {})", s.trim()))
                .unwrap_or_default();
            let procs = fs::read_to_string(c.join("cgroup.procs")).unwrap_or_default();
            parts.push(format!(
                "cgroup {}{frozen} with processes {:?}",
                c.display(),
                procs.split_whitespace().collect::<Vec<_>>()
            ));
        }
        for m in &self.mounts {
            parts.push(format!("mount {m}"));
        }
        for (pid, why, cmd) in &self.processes {
            parts.push(format!("process {pid} ({why}): {cmd}"));
        }
        for w in &self.work_files {
            parts.push(format!("work file {}", w.display()));
        }
        parts.join("; ")
    }

    /// Removes what leaked, by hand, so the next trial is independent of this one.
    pub fn remove(&self, env: &Env) {
        for c in &self.cgroups {
            let _ = fs::write(c.join("freezer.state"), "THAWED");
        }
        for (pid, _, _) in &self.processes {
            // SAFETY: kill(2) with a pid read from /proc.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(100));
        reap_children();
        for c in &self.cgroups {
            let _ = fs::remove_dir(c);
        }
        let mut points: Vec<String> = self
            .mounts
            .iter()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for p in self.state.iter().chain(&self.work_files) {
            let _ = fs::remove_dir_all(p).or_else(|_| fs::remove_file(p));
        }
        let _ = env;
    }
}

/// Removes, when a test ends (failed or not), whatever its containers left: a failing
/// trial or assertion must not leave a cgroup with a live init on the host. Declared after
/// the Env, so it runs first, while the test still holds its turn.
pub struct Cleanup<'a>(pub &'a Env);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let leaks = Leaks::find(self.0, &[]);
        if !leaks.is_empty() {
            leaks.remove(self.0);
        }
    }
}

/// Reaps every zombie child (re-parented orphans included); returns how many.
pub fn reap_children() -> usize {
    let mut n = 0;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on any child; no Command of ours is waiting (the turn).
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return n;
        }
        n += 1;
    }
}

/// Live processes that belong to this test: in one of its cgroups, rooted under its
/// directory, or children of the test process (the subreaper) while no nvbind runs.
fn stray_processes(env: &Env) -> Vec<(i32, &'static str, String)> {
    reap_children();
    let me = std::process::id() as i32;
    let here = env.dir.path();
    let mut found = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in rd.filter_map(|e| e.ok()) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid: i32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if state == "Z" || state == "X" {
            continue;
        }
        let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let why = if cgroup.contains(&env.cgroup_prefix) {
            "in the container's cgroup"
        } else if fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r.starts_with(here)) {
            "rooted in the bundle"
        } else if ppid == me {
            "orphan of a killed nvbind"
        } else {
            continue;
        };
        let cmd = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        found.push((pid, why, cmd.trim().to_string()));
    }
    found
}

/// The leak check must be able to fail: a cgroup directory, a state entry, a mount and a
/// process made by hand are each reported.
#[test]
fn leak_check_reports_what_is_left() {
    let _turn = take_turn();
    let env = Env::new();
    assert!(Leaks::find(&env, &[]).is_empty());

    let cg = PathBuf::from("/sys/fs/cgroup/pids").join(format!("{}-control", env.cgroup_prefix));
    let cg = if cg.parent().unwrap().is_dir() {
        cg
    } else {
        PathBuf::from("/sys/fs/cgroup").join(format!("{}-control", env.cgroup_prefix))
    };
    fs::create_dir(&cg).unwrap();
    fs::create_dir_all(env.root.join("half-made")).unwrap();
    let mnt = env.dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &mnt,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let mut orphan = Command::new("sleep").arg("1000").spawn().unwrap();
    let images = env.dir.path().join("images");
    fs::create_dir_all(images.join(".nvbind-dump-1")).unwrap();

    let leaks = Leaks::find(&env, &[&images]);
    let text = leaks.describe();
    leaks.remove(&env);
    let _ = orphan.wait();
    assert!(Leaks::find(&env, &[&images]).is_empty(), "not removed");
    assert!(text.contains(&cg.display().to_string()), "{text}");
    assert!(text.contains("half-made"), "{text}");
    assert!(text.contains(&mnt.display().to_string()), "{text}");
    assert!(text.contains(&format!("process {}", orphan.id())), "{text}");
    assert!(text.contains(".nvbind-dump-1"), "{text}");
}
