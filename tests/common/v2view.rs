//! A pure cgroup v2 view of a hybrid host (v1 controllers, cgroup2 at /sys/fs/cgroup/unified:
//! the development and CI machines): a private mount namespace where /sys/fs/cgroup is the
//! cgroup2 hierarchy, so that libcgroups and runc take their v2 paths. Its cgroup2 carries
//! only the controllers v1 does not hold (hugetlb on these machines), but the core of cgroup
//! v2 (device programs, cgroup.procs and its rules, cgroup.kill) is all there.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Env, NVBIND};

pub fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// A mount namespace where /sys/fs/cgroup is the cgroup2 hierarchy, held by a sleeping
/// process that commands enter with nsenter; None where /sys/fs/cgroup is cgroup2 already.
pub struct View {
    holder: Child,
}

impl View {
    pub fn new() -> Option<View> {
        if is_cgroup2(Path::new("/sys/fs/cgroup")) {
            return None;
        }
        let mut holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount -t cgroup2 none /sys/fs/cgroup && echo ready && exec sleep 3600")
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "cannot mount cgroup2 in a mount namespace"
        );
        Some(View { holder })
    }

    pub fn command(view: &Option<View>, program: &str) -> Command {
        match view {
            None => Command::new(program),
            Some(v) => {
                let mut c = Command::new("nsenter");
                c.arg("-t")
                    .arg(v.holder.id().to_string())
                    .args(["-m", "--"])
                    .arg(program);
                c
            }
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rt {
    Nvbind,
    Runc,
}

/// One test's containers, made by nvbind and by runc (the reference), in the view.
pub struct Case {
    pub env: Env,
    pub view: Option<View>,
    pub runc_root: PathBuf,
    /// Every command with `--systemd-cgroup`.
    pub systemd: bool,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

impl Case {
    pub fn new(systemd: bool) -> Self {
        let env = Env::new();
        let runc_root = env.dir.path().join("runc-root");
        Case {
            env,
            view: View::new(),
            runc_root,
            systemd,
        }
    }

    pub fn command(&self, rt: Rt, args: &[&str]) -> Command {
        let (bin, root) = match rt {
            Rt::Nvbind => (NVBIND, &self.env.root),
            Rt::Runc => ("runc", &self.runc_root),
        };
        let mut c = View::command(&self.view, bin);
        c.arg("--root").arg(root);
        if self.systemd {
            c.arg("--systemd-cgroup");
        }
        c.args(args);
        c
    }

    /// Runs a runtime command; output through files (a created or detached container holds
    /// its stdio).
    pub fn output(&self, mut c: Command) -> Output {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let out_path = self.env.dir.path().join(format!(".out-{n}"));
        let err_path = self.env.dir.path().join(format!(".err-{n}"));
        let status = c
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap())
            .status()
            .expect("cannot run the runtime");
        Output {
            status,
            stdout: fs::read(&out_path).unwrap_or_default(),
            stderr: fs::read(&err_path).unwrap_or_default(),
        }
    }

    pub fn rt(&self, rt: Rt, args: &[&str]) -> Output {
        self.output(self.command(rt, args))
    }

    pub fn ok(&self, rt: Rt, args: &[&str]) -> String {
        let out = self.rt(rt, args);
        assert!(
            out.status.success(),
            "{rt:?} {args:?} failed ({:?}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn pid(&self, rt: Rt, id: &str) -> i64 {
        let state: serde_json::Value = serde_json::from_str(&self.ok(rt, &["state", id])).unwrap();
        state["pid"].as_i64().unwrap()
    }

    /// `delete --force` of every container of both runtimes, in the view: nvbind outside it
    /// would take the hybrid paths.
    pub fn delete_all(&self) {
        for (rt, root) in [(Rt::Nvbind, &self.env.root), (Rt::Runc, &self.runc_root)] {
            for id in list_dirs(root) {
                let _ = self.rt(rt, &["delete", "--force", &id]);
            }
        }
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        // Before Env's own cleanup, which runs outside the view.
        self.delete_all();
    }
}

/// The directories in `dir` (a state root's containers; its lock file left out).
pub fn list_dirs(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The cgroup2 directory of a running process, as seen from outside the view.
pub fn cgroup_of(pid: i64) -> PathBuf {
    let table = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = table
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("the process has a cgroup2 path");
    let mount = if is_cgroup2(Path::new("/sys/fs/cgroup")) {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/unified"
    };
    Path::new(mount).join(path.trim_start_matches('/'))
}
