//! Docker `--gpus` through nvbind-hook. dockerd enables the flag when a program named
//! `nvidia-container-runtime-hook` is on its PATH at startup, and then adds it to each GPU
//! container's spec as a prestart hook (`nvidia-container-runtime-hook prestart`, dockerd's
//! own environment) with `NVIDIA_VISIBLE_DEVICES` in the process environment. The test starts
//! its own dockerd (data under a temp dir, stopped by PID) with a PATH holding that name as a
//! link to nvbind-hook, and runs containers with runc, Docker's default runtime.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const IMAGE: &str = "nvbind-hook-test/busybox:latest";

struct Dockerd {
    child: Child,
    sock: PathBuf,
}

impl Dockerd {
    /// Starts dockerd; with `v2`, in a private mount namespace that shows a pure cgroup v2
    /// host (v1 hierarchies unmounted, cgroup2 at /sys/fs/cgroup).
    fn start(dir: &Path, path_dir: &Path, spec_dir: &Path, v2: bool) -> Dockerd {
        let sock = dir.join("docker.sock");
        let log = fs::File::create(dir.join("dockerd.log")).unwrap();
        let mut cmd = if v2 {
            let mut c = Command::new("unshare");
            c.args(["-m", "--propagation", "private", "sh", "-c"]).arg(
                "umount -R /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec dockerd \"$@\"",
            ).arg("sh");
            c
        } else {
            Command::new("dockerd")
        };
        let child = cmd
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--storage-driver=overlay2", "--data-root"])
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(
                nvbind_runtime()
                    .map(|p| vec![format!("--add-runtime=nvbind={}", p.display())])
                    .unwrap_or_default(),
            )
            .arg("--host")
            .arg(format!("unix://{}", sock.display()))
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", path_dir.display()),
            )
            .env("NVBIND_CDI_SPEC_DIRS", spec_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let d = Dockerd { child, sock };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if d.docker(&["version"]).status.success() {
                return d;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!(
            "dockerd did not come up: {}",
            fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default()
        );
    }

    fn docker(&self, args: &[&str]) -> Output {
        run(Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .stdin(Stdio::null()))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nvbind runtime built next to nvbind-hook (a workspace build), else $NVBIND.
fn nvbind_runtime() -> Option<PathBuf> {
    hook_bin()
        .parent()
        .map(|d| d.join("nvbind"))
        .filter(|p| p.is_file())
        .or_else(|| std::env::var_os("NVBIND").map(PathBuf::from))
        .filter(|p| p.is_file())
}

const PROBE: &str = "for n in 0 1 2; do test -c /dev/nvidia$n && echo has-nvidia$n; done; \
    cat /dev/nvidia1 2>&1 | head -n1; /bin/cudaprobe 2>&1; true";

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn docker_run_gpus_with_runc() {
    docker_run_gpus(false);
}

/// The same on a pure cgroup v2 view: runc enforces device rules with eBPF, which the hook
/// extends.
#[test]
fn docker_run_gpus_with_runc_on_cgroup_v2() {
    docker_run_gpus(true);
}

fn docker_run_gpus(v2: bool) {
    require_root();
    if !have("dockerd") || !have("docker") || !have("gcc") || !have("unshare") {
        return;
    }
    let tmp = tempdir();
    let dir = tmp.path();
    let host = FakeHost::new(&dir.join("host"), 3);
    let specs = host.write_spec(&dir.join("cdi"), &hook_bin());
    let rootfs = dir.join("image/rootfs");
    busybox_rootfs(&rootfs, &host);
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    // The link, made the way users make it.
    ok(
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("install-docker-gpus-link"))
            .arg("--hook")
            .arg(hook_bin())
            .arg("--dir")
            .arg(&bin),
    );
    assert!(bin.join("nvidia-container-runtime-hook").is_symlink());

    let d = Dockerd::start(dir, &bin, &specs, v2);
    let info = d.docker(&["info", "--format", "{{.CgroupVersion}}"]);
    let version = String::from_utf8_lossy(&info.stdout).trim().to_string();
    assert_eq!(
        version,
        if v2 { "2" } else { "1" },
        "dockerd's cgroup version"
    );
    let tar = dir.join("image.tar");
    ok(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let o = d.docker(&["import", tar.to_str().unwrap(), IMAGE]);
    assert!(o.status.success(), "{:?}", text(&o));

    // --gpus all: every GPU, libraries and cache.
    let o = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--gpus",
        "all",
        IMAGE,
        "sh",
        "-c",
        PROBE,
    ]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    for i in 0..3 {
        assert!(so.contains(&format!("has-nvidia{i}")), "{so}");
    }
    assert!(so.contains("No such device or address"), "{so}");
    assert!(so.contains("cuInit=42"), "{so}");

    // --gpus '"device=1"': that GPU only.
    let o = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--gpus",
        "\"device=1\"",
        IMAGE,
        "sh",
        "-c",
        PROBE,
    ]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    assert!(so.contains("has-nvidia1"), "{so}");
    assert!(
        !so.contains("has-nvidia0") && !so.contains("has-nvidia2"),
        "{so}"
    );
    assert!(so.contains("cuInit=42"), "{so}");

    // No --gpus: nothing injected.
    let o = d.docker(&["run", "--rm", "--network", "none", IMAGE, "sh", "-c", PROBE]);
    let (so, _) = text(&o);
    assert!(o.status.success());
    assert!(!so.contains("has-nvidia"), "{so}");

    // --runtime nvbind --gpus all: the runtime injects, the hook dockerd adds sees the mark
    // and does nothing (one mount of libcuda).
    if nvbind_runtime().is_some() {
        let o = d.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--runtime",
            "nvbind",
            "--gpus",
            "all",
            IMAGE,
            "sh",
            "-c",
            "ls /dev | grep -c ^nvidia; grep -c libcuda /proc/self/mountinfo; /bin/cudaprobe 2>&1; true",
        ]);
        let (so, se) = text(&o);
        assert!(o.status.success(), "{so}\n{se}");
        assert!(so.starts_with("5\n1\n"), "{so}");
        assert!(so.contains("cuInit=42"), "{so}");
    } else {
        eprintln!("SKIP: --runtime nvbind case (no nvbind binary)");
    }

    // A GPU that does not exist fails `docker run` with the hook's message.
    let o = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--gpus",
        "\"device=7\"",
        IMAGE,
        "true",
    ]);
    let (_, se) = text(&o);
    assert!(!o.status.success());
    assert!(
        se.contains("nvbind-hook prestart: unresolvable CDI device nvidia.com/gpu=7"),
        "{se}"
    );
    drop(d);
    // Only dockerd's own overlay/shm mounts could remain, and it removes them on exit.
    let left: Vec<String> = host_mounts_containing(dir)
        .into_iter()
        .filter(|l| !l.contains("/data/") && !l.contains("/exec/"))
        .collect();
    assert!(left.is_empty(), "{left:#?}");
}
