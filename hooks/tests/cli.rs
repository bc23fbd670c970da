//! The binary's contract without a container runtime: argument handling, exit codes and the
//! createContainer subcommands against a rootfs, hostile rootfs trees included.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

fn hook(args: &[&str], stdin: &[u8]) -> Output {
    hook_as(&hook_bin(), args, stdin)
}

fn hook_as(bin: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("NVBIND_CDI_SPEC_DIRS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A bundle directory with config.json (root.path = rootfs) and an empty rootfs; returns
/// the state JSON a runtime would pass.
fn bundle(dir: &Path) -> (PathBuf, Vec<u8>) {
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("usr/lib")).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(
        dir.join("config.json"),
        r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}}"#,
    )
    .unwrap();
    let state = format!(
        r#"{{"ociVersion":"1.0.2","id":"t","status":"creating","pid":{},"bundle":"{}"}}"#,
        std::process::id(),
        dir.display()
    );
    (rootfs, state.into_bytes())
}

#[test]
fn unknown_subcommand_warns_and_succeeds() {
    let o = hook(&["frobnicate", "--x"], b"");
    assert!(o.status.success());
    assert!(stderr(&o).contains("unknown subcommand \"frobnicate\""));
}

#[test]
fn no_subcommand_is_a_usage_error() {
    let o = hook(&[], b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("usage: nvbind-hook"));
}

#[test]
fn start_up_reads_no_proc_maps() {
    // std's start read /proc/self/maps for the main thread's stack (pthread_getattr_np); the
    // hook starts through nvbind-rt without that (issue 19). Needs strace.
    let tmp = tempdir();
    let log = tmp.path().join("strace.log");
    let o = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=open,openat,openat2,rt_sigaction",
            "-o",
        ])
        .arg(&log)
        .arg(hook_bin())
        .output()
        .expect("strace is not installed: apt-get install strace (scripts/test does)");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("usage: nvbind-hook"), "{}", stderr(&o));
    let trace = fs::read_to_string(&log).unwrap();
    assert!(!trace.contains("/maps\""), "{trace}");
    // and no stack-overflow handler; SIGPIPE ignored as std has it
    assert!(!trace.contains("SIGSEGV"), "{trace}");
    assert!(trace.contains("SIGPIPE, {sa_handler=SIG_IGN"), "{trace}");
}

#[test]
fn bad_state_is_one_clear_line() {
    for sub in [
        "prestart",
        "create-runtime",
        "update-ldcache",
        "create-symlinks",
    ] {
        let o = hook(&[sub], b"{not json");
        assert_eq!(o.status.code(), Some(1), "{sub}");
        let e = stderr(&o);
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert!(
            e.starts_with(&format!(
                "nvbind-hook {sub}: the container state on stdin is not valid OCI state JSON"
            )),
            "{e}"
        );
    }
    let o = hook(
        &["prestart"],
        br#"{"id":"x","bundle":"/nonexistent/bundle","pid":1}"#,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent/bundle/config.json"));
    let o = hook(&["create-symlinks", "--bogus"], b"");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unexpected argument \"--bogus\""));
}

#[test]
fn docker_hook_name_acts_as_prestart() {
    let tmp = tempdir();
    let (_rootfs, state) = bundle(tmp.path());
    let link = tmp.path().join("nvidia-container-runtime-hook");
    symlink(hook_bin(), &link).unwrap();
    // No GPU requested: nothing to do.
    let o = hook_as(&link, &["prestart"], &state);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = hook_as(&link, &["-debug", "poststop"], &state);
    assert!(o.status.success(), "{}", stderr(&o));
    // A bad state still fails: it is the prestart subcommand.
    let o = hook_as(&link, &["prestart"], b"[]");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("nvbind-hook prestart:"));
}

#[test]
fn create_symlinks_inside_the_rootfs() {
    require_root();
    let tmp = tempdir();
    let (rootfs, state) = bundle(tmp.path());
    let o = hook(
        &[
            "create-symlinks",
            "--link",
            "libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so",
            "--link=../../../../etc/shadow::/usr/lib/evil",
        ],
        &state,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read_link(rootfs.join("usr/lib/x86_64-linux-gnu/libcuda.so")).unwrap(),
        Path::new("libcuda.so.1")
    );
    // A target is only link content, interpreted inside the container later.
    assert_eq!(
        fs::read_link(rootfs.join("usr/lib/evil")).unwrap(),
        Path::new("../../../../etc/shadow")
    );
    // Existing entries are kept, with a warning.
    let o = hook(
        &["create-symlinks", "--link", "other::/usr/lib/evil"],
        &state,
    );
    assert!(o.status.success());
    assert!(stderr(&o).contains("left as is"), "{}", stderr(&o));
}

/// Every path is resolved as the container sees it (openat2 RESOLVE_IN_ROOT): `..` stops at
/// the rootfs and absolute links start again at it, so an image that points its paths at
/// host directories only ever reaches its own files.
#[test]
fn create_symlinks_stay_inside_the_rootfs() {
    require_root();
    let tmp = tempdir();
    let (rootfs, state) = bundle(tmp.path());
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    symlink(&outside, rootfs.join("usr/abs")).unwrap();
    symlink("../../../outside", rootfs.join("usr/rel")).unwrap();
    symlink("/", rootfs.join("hostroot")).unwrap();
    for (link, lands) in [
        ("x::/../../outside/pwned", Some("outside/pwned")),
        ("x::/usr/../../outside/pwned2", Some("outside/pwned2")),
        ("x::/usr/rel/pwned3", Some("outside/pwned3")),
        ("x::/hostroot/tmp/pwned", Some("tmp/pwned")),
        // Dangling inside the rootfs (the host path does not exist there): refused.
        ("x::/usr/abs/pwned", None),
        ("x::/usr/abs/deeper/pwned", None),
    ] {
        let o = hook(&["create-symlinks", "--link", link], &state);
        let e = stderr(&o);
        match lands {
            Some(p) => {
                assert!(o.status.success(), "{link}: {e}");
                assert!(rootfs.join(p).is_symlink(), "{link}");
            }
            None => {
                assert_eq!(o.status.code(), Some(1), "{link}");
                assert_eq!(e.trim_end().lines().count(), 1, "{e}");
            }
        }
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!Path::new("/tmp/pwned").exists());
    // Malformed requests.
    for bad in ["no-separator", "x::relative/link"] {
        let o = hook(&["create-symlinks", "--link", bad], &state);
        assert_eq!(o.status.code(), Some(1), "{bad}");
        assert!(stderr(&o).contains("expected TARGET::LINK"));
    }
}

#[test]
fn update_ldcache_writes_the_containers_cache_only() {
    require_root();
    if !have("gcc") {
        return;
    }
    let tmp = tempdir();
    let (rootfs, state) = bundle(tmp.path());
    fake_lib(
        &rootfs.join("usr/lib/nvidia-fake/libcuda.so.550.54.14"),
        "libcuda.so.1",
        "cuInit",
        1,
    );
    let host_cache = fs::read("/etc/ld.so.cache").ok();
    let o = hook(
        &["update-ldcache", "--folder", "/usr/lib/nvidia-fake"],
        &state,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read("/etc/ld.so.cache").ok(),
        host_cache,
        "host cache changed"
    );
    let cache = fs::read(rootfs.join("etc/ld.so.cache")).unwrap();
    let needle = b"/usr/lib/nvidia-fake/libcuda.so.1";
    assert!(cache.windows(needle.len()).any(|w| w == needle));
    assert_eq!(
        fs::read_link(rootfs.join("usr/lib/nvidia-fake/libcuda.so.1")).unwrap(),
        Path::new("libcuda.so.550.54.14")
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/ld.so.conf.d/00-nvbind-cdi.conf")).unwrap(),
        "# Written by nvbind: the GPU driver's libraries\n/usr/lib/nvidia-fake\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/ld.so.conf")).unwrap(),
        "include /etc/ld.so.conf.d/*.conf\n"
    );
    // ldconfig -p inside the rootfs's cache lists the library.
    let listed = ok(Command::new("ldconfig")
        .arg("-p")
        .arg("-C")
        .arg(rootfs.join("etc/ld.so.cache")));
    assert!(listed.contains("libcuda.so.1"), "{listed}");
}

#[test]
fn update_ldcache_stays_inside_the_rootfs() {
    require_root();
    let tmp = tempdir();
    let (rootfs, state) = bundle(tmp.path());
    let outside = tmp.path().join("outside-etc");
    fs::create_dir_all(&outside).unwrap();
    // /etc of the image is an absolute link to a host directory: inside the rootfs that
    // path does not exist, so there is nowhere to write and the hook says so in one line.
    fs::remove_dir(rootfs.join("etc")).unwrap();
    symlink(&outside, rootfs.join("etc")).unwrap();
    let o = hook(&["update-ldcache", "--folder", "/usr/lib"], &state);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    // ld.so.conf.d as a relative link climbing out: it lands on the rootfs's own
    // /outside-etc, which the hook fills instead of the host's.
    fs::remove_file(rootfs.join("etc")).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::create_dir_all(rootfs.join("outside-etc")).unwrap();
    symlink("../../outside-etc", rootfs.join("etc/ld.so.conf.d")).unwrap();
    let o = hook(&["update-ldcache", "--folder", "/usr/lib"], &state);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(rootfs.join("outside-etc/00-nvbind-cdi.conf").is_file());
    assert!(rootfs.join("etc/ld.so.cache").is_file());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    // Folders must be absolute and stay put.
    for bad in ["usr/lib", "/usr/../../etc"] {
        let o = hook(&["update-ldcache", "--folder", bad], &state);
        assert_eq!(o.status.code(), Some(1), "{bad}");
        assert!(stderr(&o).contains("is not an absolute path without `..`"));
    }
}

/// A prestart hook handed a pid in the host's mount namespace (pid 1, as a misplaced
/// createContainer hook would get) must refuse rather than mount on the host.
#[test]
fn prestart_refuses_the_host_mount_namespace() {
    require_root();
    if !have("gcc") {
        return;
    }
    let tmp = tempdir();
    let dir = tmp.path();
    let host = FakeHost::new(&dir.join("host"), 1);
    let specs = host.write_spec(&dir.join("cdi"), &hook_bin());
    let bdir = dir.join("bundle");
    fs::create_dir_all(bdir.join("rootfs/dev")).unwrap();
    fs::write(
        bdir.join("config.json"),
        r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","args":["sh"],"env":["NVIDIA_VISIBLE_DEVICES=0"],"user":{"uid":0,"gid":0}}}"#,
    )
    .unwrap();
    for pid in [1, std::process::id() as i32] {
        let state = format!(
            r#"{{"ociVersion":"1.0.2","id":"t","status":"creating","pid":{pid},"bundle":"{}"}}"#,
            bdir.display()
        );
        let mut child = Command::new(hook_bin())
            .arg("prestart")
            .env("NVBIND_CDI_SPEC_DIRS", &specs)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(state.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        // Pid 1 may not be inspectable at all here (EACCES on /proc/1/ns); then opening its
        // root fails instead. Either way nothing happens.
        let e = stderr(&o);
        assert!(
            e.contains("is in the hook's own or the host's mount namespace")
                || (pid == 1 && e.contains("cannot open the root of container process 1")),
            "{e}"
        );
    }
    assert!(!bdir.join("rootfs/dev/nvidia0").exists());
    assert!(host_mounts_containing(dir).is_empty());
}

/// The nvbind binary of this build (next to nvbind-hook), or $NVBIND.
fn nvbind_bin() -> Option<PathBuf> {
    hook_bin()
        .parent()
        .map(|d| d.join("nvbind"))
        .filter(|p| p.is_file())
        .or_else(|| std::env::var_os("NVBIND").map(PathBuf::from))
        .filter(|p| p.is_file())
}

#[test]
fn runtime_and_hook_resolve_a_bundle_to_the_same_edits() {
    require_root();
    let Some(nvbind) = nvbind_bin() else {
        eprintln!("SKIP: no nvbind binary next to nvbind-hook and no $NVBIND");
        return;
    };
    let dir = tempdir();
    let host = FakeHost::new(&dir.path().join("host"), 2);
    let specs = dir.path().join("cdi");
    host.write_spec(&specs, &hook_bin());
    let empty = dir.path().join("no-specs");
    fs::create_dir_all(&empty).unwrap();
    let b = dir.path().join("bundle");
    bundle(&b);
    let cfg = b.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    v["process"]["env"] = serde_json::json!(["NVIDIA_VISIBLE_DEVICES=1"]);
    v["annotations"] = serde_json::json!({"cdi.k8s.io/x": "nvidia.com/gpu=0"});
    fs::write(&cfg, v.to_string()).unwrap();
    // From the spec file, and from a spec generated at create time (no file, driver root).
    for (dirs, root) in [(&specs, None), (&empty, Some(&host.root))] {
        let run = |mut c: Command| {
            c.env("NVBIND_CDI_SPEC_DIRS", dirs)
                .env_remove("NVBIND_DRIVER_ROOT");
            if let Some(r) = root {
                c.env("NVBIND_DRIVER_ROOT", r);
            }
            let o = c.output().unwrap();
            assert!(o.status.success(), "{c:?}: {}", stderr(&o));
            String::from_utf8(o.stdout).unwrap()
        };
        let mut rt = Command::new(&nvbind);
        rt.args(["cdi", "resolve", "--bundle"]).arg(&b);
        let mut hk = Command::new(hook_bin());
        hk.args(["resolve", "--bundle"]).arg(&b);
        let (from_runtime, from_hook) = (run(rt), run(hk));
        let parsed: serde_json::Value = serde_json::from_str(&from_runtime).unwrap();
        assert_eq!(
            parsed["devices"],
            serde_json::json!(["nvidia.com/gpu=0", "nvidia.com/gpu=1"])
        );
        assert_eq!(
            parsed["generated"].as_array().unwrap().len(),
            usize::from(root.is_some())
        );
        let nodes = parsed["containerEdits"]["deviceNodes"].to_string();
        assert!(
            nodes.contains("/dev/nvidia0") && nodes.contains("/dev/nvidia1"),
            "{nodes}"
        );
        assert_eq!(from_runtime, from_hook);
    }
}
