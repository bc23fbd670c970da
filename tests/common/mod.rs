//! Shared harness for tests that run real containers: a busybox-static bundle per test, a
//! private --root per test, and a guard that force-deletes whatever the test left and then
//! checks that nothing leaked (state dir entries, cgroups, mounts, processes).

#![allow(dead_code)]

pub mod criu;
pub mod v2view;

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

pub const NVBIND: &str = env!("CARGO_BIN_EXE_nvbind");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn busybox() -> PathBuf {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("busybox-static is not installed: apt-get install busybox-static (scripts/test does)");
}

/// One test's world: a temp dir with a state root and bundles, removed on drop after every
/// container in it was force-deleted.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    /// Prefix of the cgroupsPath of every container made here, unique per test.
    pub cgroup_prefix: String,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nvbind-it-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let cgroup_prefix = format!("nvbind-it-{}-{n}", std::process::id());
        Self {
            dir,
            root,
            cgroup_prefix,
        }
    }

    /// `nvbind --root ROOT ARGS...`. Output goes through files, not pipes: a created
    /// container inherits nvbind's stdio and would hold a pipe open until it exits.
    pub fn nvbind(&self, args: &[&str]) -> Output {
        self.nvbind_env(&[], args)
    }

    /// `nvbind --root ROOT ARGS...` with extra environment variables.
    pub fn nvbind_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let out_path = self.dir.path().join(format!(".out-{n}"));
        let err_path = self.dir.path().join(format!(".err-{n}"));
        let status = Command::new(NVBIND)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap())
            .status()
            .expect("cannot run nvbind");
        let output = Output {
            status,
            stdout: fs::read(&out_path).unwrap_or_default(),
            stderr: fs::read(&err_path).unwrap_or_default(),
        };
        let _ = fs::remove_file(out_path);
        let _ = fs::remove_file(err_path);
        output
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.nvbind(args);
        assert!(
            out.status.success(),
            "nvbind {args:?} failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs nvbind expecting failure; returns stderr and checks it is one line with exit 1.
    pub fn fails(&self, args: &[&str]) -> String {
        self.fails_with(args, 1)
    }

    /// As `fails`, with exit status `code` (`exec` that cannot run its process: 255, as runc).
    pub fn fails_with(&self, args: &[&str], code: i32) -> String {
        let out = self.nvbind(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "nvbind {args:?} should fail with {code}, stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "error is not one line: {err:?}"
        );
        err
    }

    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    /// A bundle named NAME running ARGS with a unique cgroupsPath; `edit` may change config.
    pub fn bundle(&self, name: &str, args: &[&str]) -> PathBuf {
        let b = self.dir.path().join(name);
        let rootfs = b.join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy(busybox(), rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "echo", "cat", "sleep", "ls", "id", "hostname", "kill", "true", "false", "touch",
            "mkdir", "stat", "mknod", "head", "wc", "grep", "trap", "env", "pwd", "readlink", "ps",
            "test",
        ] {
            let _ = symlink("busybox", rootfs.join("bin").join(applet));
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
        let out = Command::new(NVBIND)
            .args(["spec", "--hardened", "--bundle"])
            .arg(&b)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.edit(&b, |c| {
            c["process"]["args"] = json!(args);
            c["process"]["terminal"] = json!(false);
            c["linux"]["cgroupsPath"] = json!(format!("/{}-{name}", self.cgroup_prefix));
        });
        b
    }

    /// Gives the next container made from `bundle` a cgroup of its own, `/PREFIX-ID`: a
    /// create refuses a cgroup that already holds processes (as runc does), so containers
    /// running side by side from one bundle need one each.
    pub fn own_cgroup(&self, bundle: &Path, id: &str) {
        let path = format!("/{}-{id}", self.cgroup_prefix);
        self.edit(bundle, |c| c["linux"]["cgroupsPath"] = json!(path));
    }

    pub fn edit(&self, bundle: &Path, f: impl FnOnce(&mut Value)) {
        let p = bundle.join("config.json");
        let mut c: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        f(&mut c);
        fs::write(&p, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    }

    /// Container IDs still present under the root.
    pub fn ids(&self) -> Vec<String> {
        match fs::read_dir(&self.root) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => vec![],
        }
    }

    /// Asserts that nothing of this test is left on the host.
    pub fn assert_clean(&self) {
        assert!(self.ids().is_empty(), "state left behind: {:?}", self.ids());
        let cgroups = leaked_cgroups(&self.cgroup_prefix);
        assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let here = self.dir.path().to_string_lossy().into_owned();
        assert!(
            !mounts.contains(&here),
            "mounts left under {here}: {}",
            mounts
                .lines()
                .filter(|l| l.contains(&here))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in self.ids() {
            let _ = self.nvbind(&["delete", "--force", &id]);
        }
        for cg in leaked_cgroups(&self.cgroup_prefix) {
            let _ = fs::remove_dir(&cg);
        }
    }
}

/// Cgroup directories (any v1 controller or the v2 tree) of one test: named `PREFIX-NAME`.
/// A config.json with its capability lists, mount options and namespaces sorted: those
/// orders mean nothing to a runtime, so two specs compare by what they say.
pub fn spec_order_free(spec: &Value) -> Value {
    let mut v = spec.clone();
    let sort = |list: &mut Value| {
        if let Some(list) = list.as_array_mut() {
            list.sort_by_key(|o| o.to_string());
        }
    };
    if let Some(caps) = v["process"]["capabilities"].as_object_mut() {
        caps.values_mut().for_each(sort);
    }
    if let Some(mounts) = v["mounts"].as_array_mut() {
        mounts.iter_mut().for_each(|m| sort(&mut m["options"]));
    }
    sort(&mut v["linux"]["namespaces"]);
    v
}

pub fn leaked_cgroups(prefix: &str) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = match fs::read_dir("/sys/fs/cgroup") {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => return vec![],
    };
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    roots
        .iter()
        .filter_map(|r| fs::read_dir(r).ok())
        .flatten()
        .filter_map(|e| e.ok())
        // "PREFIX-" so that test 1's prefix does not match test 16's cgroups.
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}-"))
        })
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// The cgroup v1 file for a container made by `Env::bundle`.
pub fn cgroup_file(env: &Env, name: &str, controller: &str, file: &str) -> PathBuf {
    let leaf = format!("{}-{name}", env.cgroup_prefix);
    let v1 = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(&leaf)
        .join(file);
    if v1.exists() {
        return v1;
    }
    Path::new("/sys/fs/cgroup").join(leaf).join(file)
}

pub fn process_alive(pid: i64) -> bool {
    let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(_) => return false,
    };
    // A zombie is dead for our purposes.
    !stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .trim_start()
        .starts_with('Z')
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks after boot (counted
/// after the command name, which may hold spaces and parentheses: the last ')' ends it).
pub fn start_time(pid: i64) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, after_comm) = stat.rsplit_once(')').unwrap();
    after_comm
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}

/// Polls until `f` is true or about 5 s pass.
pub fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// One message on a connected unix stream into `buf`: its length and the fd it carried with
/// SCM_RIGHTS, if any.
pub fn recv_with_fd(
    stream: &std::os::unix::net::UnixStream,
    buf: &mut [u8],
) -> (usize, Option<OwnedFd>) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .unwrap();
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed this descriptor for us.
            fd = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        }
    }
    (msg.bytes, fd)
}

/// Receives one fd sent with SCM_RIGHTS on a connected unix stream.
pub fn recv_fd(stream: &std::os::unix::net::UnixStream) -> OwnedFd {
    let mut buf = [0u8; 4096];
    recv_with_fd(stream, &mut buf)
        .1
        .expect("no fd received on the socket")
}
