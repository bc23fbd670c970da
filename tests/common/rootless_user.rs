//! The throw-away unprivileged user of tests/rootless.rs: a passwd entry made with useradd
//! (which also grants a subordinate ID range in /etc/subuid and /etc/subgid), a directory of
//! its own, and nvbind run as that user through setpriv. Dropping it deletes its containers,
//! kills whatever still runs under its uid, and removes the user (userdel takes the
//! subordinate ranges along) and the directory, also when the test failed.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::common::{wait_for, NVBIND};

static COUNTER: AtomicUsize = AtomicUsize::new(0);
/// useradd and userdel lock /etc/passwd; tests of this binary take turns.
static PASSWD: Mutex<()> = Mutex::new(());

pub fn sh(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throw-away unprivileged user with a directory of its own.
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub dir: PathBuf,
    /// --root of every call made through `nvbind`.
    pub root: PathBuf,
}

impl User {
    pub fn new() -> Self {
        let name = format!(
            "nvbrl{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        {
            let _lock = PASSWD.lock().unwrap_or_else(|e| e.into_inner());
            let c = "nvbind rootless test";
            sh(
                "useradd",
                &["-M", "-s", "/usr/sbin/nologin", "-c", c, &name],
            );
        }
        let id = |flag| text(&sh("id", &[flag, &name])).trim().parse().unwrap();
        let dir = PathBuf::from(format!("/tmp/{name}"));
        let user = Self {
            uid: id("-u"),
            gid: id("-g"),
            root: dir.join("state"),
            dir,
            name,
        };
        fs::create_dir(&user.dir).unwrap();
        user.chown(&user.dir);
        fs::set_permissions(&user.dir, fs::Permissions::from_mode(0o755)).unwrap();
        user
    }

    pub fn chown(&self, path: &Path) {
        let owner = format!("{}:{}", self.uid, self.gid);
        sh("chown", &["-R", &owner, path.to_str().unwrap()]);
    }

    /// nvbind as this user: `--rootless true --root ROOT ARGS` (no --root when `root` is
    /// None), HOME and XDG_RUNTIME_DIR in its directory. Output goes through files.
    pub fn run_as(&self, root: Option<&Path>, stdout: Option<Stdio>, args: &[&str]) -> Output {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let (out_path, err_path) = (
            self.dir.join(format!(".out{n}")),
            self.dir.join(format!(".err{n}")),
        );
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid",
            &self.uid.to_string(),
            "--regid",
            &self.gid.to_string(),
        ])
        .args([
            "--clear-groups",
            "--",
            "env",
            "-i",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        ])
        .arg(format!("HOME={}", self.dir.display()))
        .arg(format!(
            "XDG_RUNTIME_DIR={}",
            self.dir.join("xdg").display()
        ))
        .args([NVBIND, "--rootless", "true"]);
        if let Some(root) = root {
            cmd.arg("--root").arg(root);
        }
        let status = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout.unwrap_or_else(|| fs::File::create(&out_path).unwrap().into()))
            .stderr(fs::File::create(&err_path).unwrap())
            .status()
            .expect("cannot run setpriv");
        let output = Output {
            status,
            stdout: fs::read(&out_path).unwrap_or_default(),
            stderr: fs::read(&err_path).unwrap_or_default(),
        };
        let _ = fs::remove_file(out_path);
        let _ = fs::remove_file(err_path);
        output
    }

    pub fn nvbind(&self, args: &[&str]) -> Output {
        self.run_as(Some(&self.root), None, args)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.nvbind(args);
        assert!(
            out.status.success(),
            "nvbind {args:?} as {} failed ({:?}): {}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        text(&out)
    }

    /// Expects failure: exit 1 and a one-line message, which is returned.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.nvbind(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "nvbind {args:?} should fail: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
        err
    }

    pub fn status(&self, id: &str) -> String {
        let state: Value = serde_json::from_str(&self.ok(&["state", id])).unwrap();
        state["status"].as_str().unwrap().to_string()
    }

    /// A busybox bundle owned by the user, config.json from `nvbind spec --rootless` run as
    /// the user; `edit` may change it.
    pub fn bundle(&self, name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> String {
        let b = self.dir.join(name);
        let rootfs = b.join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root", "host"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("busybox-static is not installed (scripts/test installs it)");
        for applet in [
            "sh", "echo", "cat", "sleep", "id", "touch", "stat", "grep", "trap", "ls",
        ] {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
        self.chown(&b);
        let b = b.to_str().unwrap().to_string();
        self.ok(&["spec", "--rootless", "--hardened", "--bundle", &b]);
        let path = Path::new(&b).join("config.json");
        let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        config["process"]["args"] = json!(args);
        config["process"]["terminal"] = json!(false);
        edit(&mut config);
        fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        b
    }

    pub fn state_roots(&self) -> [PathBuf; 2] {
        [self.root.clone(), self.dir.join("xdg/nvbind")]
    }

    pub fn containers(&self) -> Vec<String> {
        let mut ids = vec![];
        for root in self.state_roots() {
            for e in fs::read_dir(root).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    ids.push(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        ids
    }

    /// Live (not zombie) processes running under the user's uid.
    pub fn processes(&self) -> Vec<String> {
        let mut found = vec![];
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(status) = fs::read_to_string(e.path().join("status")) else {
                continue;
            };
            let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).unwrap_or("");
            let mine = field("Uid:")
                .split_whitespace()
                .any(|u| u == self.uid.to_string());
            if mine && !field("State:").trim_start().starts_with('Z') {
                found.push(format!(
                    "{} {}",
                    e.file_name().to_string_lossy(),
                    field("Name:").trim()
                ));
            }
        }
        found
    }

    /// Nothing of this user's containers is left: state, processes, mounts.
    pub fn assert_clean(&self) {
        assert!(
            self.containers().is_empty(),
            "state left: {:?}",
            self.containers()
        );
        assert!(
            wait_for(|| self.processes().is_empty()),
            "left running: {:?}",
            self.processes()
        );
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(self.dir.to_str().unwrap()),
            "mounts left under {}",
            self.dir.display()
        );
    }
}

impl Drop for User {
    fn drop(&mut self) {
        for (root, id) in self.state_roots().iter().flat_map(|r| {
            let ids = fs::read_dir(r).into_iter().flatten().flatten();
            ids.map(move |e| (r.clone(), e.file_name()))
        }) {
            let _ = Command::new(NVBIND)
                .arg("--root")
                .arg(&root)
                .arg("delete")
                .arg("--force")
                .arg(&id)
                .output();
        }
        for p in self.processes() {
            let pid = p.split(' ').next().unwrap().parse().unwrap();
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        wait_for(|| self.processes().is_empty());
        {
            let _lock = PASSWD.lock().unwrap_or_else(|e| e.into_inner());
            let _ = Command::new("userdel").arg(&self.name).output();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
