//! runc (Debian's) with `nvbind-hook prestart` in config.json: the requested GPUs' device
//! nodes, the driver libraries (read-only) and the ld.so.cache entries are visible inside the
//! container, opening a node reaches the (absent) driver rather than the device cgroup, and
//! failures stop the start with the hook's message and leave nothing mounted on the host.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    host: FakeHost,
    specs: PathBuf,
    bundle: PathBuf,
    state: PathBuf,
}

fn setup(gpus: u32) -> Option<Env> {
    require_root();
    if !have("runc") || !have("gcc") {
        return None;
    }
    let tmp = tempdir();
    let dir = tmp.path().to_path_buf();
    let host = FakeHost::new(&dir.join("host"), gpus);
    let specs = host.write_spec(&dir.join("cdi"), &hook_bin());
    let bundle = dir.join("bundle");
    busybox_rootfs(&bundle.join("rootfs"), &host);
    Some(Env {
        _tmp: tmp,
        specs,
        state: dir.join("runc-state"),
        bundle,
        host,
        dir,
    })
}

const PROBE: &str = "ls /dev/; cat /sys/fs/cgroup/devices/devices.list 2>&1; \
    for n in 0 1 2 3; do test -c /dev/nvidia$n && echo has-nvidia$n; done; \
    stat -c 'node %n %t:%T %a' /dev/nvidia0 /dev/nvidiactl /dev/nvidia-uvm 2>/dev/null; \
    cat /dev/nvidia0 2>&1 | head -n1; \
    echo link1=$(readlink /usr/lib/nvidia-fake/libcuda.so.1); \
    echo link=$(readlink /usr/lib/nvidia-fake/libcuda.so); \
    (echo x >> /usr/lib/nvidia-fake/libcuda.so.550.54.14) 2>&1 | head -n1; \
    echo cache=$(grep -c nvidia-fake /etc/ld.so.cache); \
    cat /etc/ld.so.conf.d/00-nvbind-cdi.conf; \
    /bin/cudaprobe 2>&1; true";

fn run_probe(e: &Env, env: &[String]) -> (bool, String, String) {
    write_config(
        &e.bundle,
        &["sh", "-c", PROBE],
        env,
        Some(&hook_env(&e.specs)),
    );
    let out = runtime_run("runc", &e.state, &e.bundle, &cid("runc"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_nothing_left(dir: &Path) {
    let left = host_mounts_containing(dir);
    assert!(left.is_empty(), "mounts left on the host: {left:#?}");
}

#[test]
fn gpu_devices_libraries_and_ldcache_inside_runc() {
    let Some(e) = setup(4) else { return };
    let (ok, out, err) = run_probe(&e, &["NVIDIA_VISIBLE_DEVICES=1,2".into()]);
    assert!(ok, "runc run failed:\n{out}\n{err}");
    assert!(
        out.contains("has-nvidia1") && out.contains("has-nvidia2"),
        "{out}"
    );
    assert!(
        !out.contains("has-nvidia0") && !out.contains("has-nvidia3"),
        "{out}"
    );
    // Control nodes with the host's numbers (hex in stat), mode 666.
    assert!(out.contains("node /dev/nvidiactl c3:ff 666"), "{out}");
    assert!(out.contains("node /dev/nvidia-uvm 1fe:0 666"), "{out}");
    // nvidia0 was not requested.
    assert!(out.contains("No such file or directory"), "{out}");
    // Library: soname link made by ldconfig, the create-symlinks link, read-only mount.
    assert!(out.contains("link1=libcuda.so.550.54.14"), "{out}");
    assert!(out.contains("link=libcuda.so.1"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!out.contains("cache=0"), "{out}");
    assert!(out.contains("/usr/lib/nvidia-fake"), "{out}");
    // A dynamically linked program finds libcuda.so.1 through the container's cache.
    assert!(out.contains("cuInit=42"), "{out}\n{err}");
    assert_nothing_left(&e.dir);
    // The rootfs on the host has no library (it was bind-mounted in the container's
    // namespace only) but keeps the cache and links written through the mount namespace.
    let lib = e
        .bundle
        .join("rootfs/usr/lib/nvidia-fake/libcuda.so.550.54.14");
    assert_eq!(fs::metadata(&lib).unwrap().len(), 0, "mount target only");
}

#[test]
fn device_cgroup_allows_the_injected_nodes() {
    let Some(e) = setup(2) else { return };
    let (ok, out, err) = run_probe(&e, &["NVIDIA_VISIBLE_DEVICES=0".into()]);
    assert!(ok, "{out}\n{err}");
    // On cgroup v1 the rules are in the container's devices cgroup; on v2 they are in an eBPF
    // program, which only the open below shows.
    if Path::new("/sys/fs/cgroup/devices").is_dir() {
        for rule in ["c 195:0 rwm", "c 195:255 rwm", "c 510:0 rwm"] {
            assert!(out.contains(rule), "{rule} missing: {out}");
        }
        assert!(!out.contains("c 195:1 rwm"), "{out}");
    }
    // ENXIO comes from the kernel after the device cgroup check: the rule is in place.
    // Without it, open gives EPERM (Operation not permitted).
    assert!(out.contains("No such device or address"), "{out}");
    assert!(!out.contains("Operation not permitted"), "{out}");
}

#[test]
fn all_and_annotation_requests() {
    let Some(e) = setup(3) else { return };
    let (ok, out, err) = run_probe(&e, &["NVIDIA_VISIBLE_DEVICES=all".into()]);
    assert!(ok, "{out}\n{err}");
    for i in 0..3 {
        assert!(out.contains(&format!("has-nvidia{i}")), "{out}");
    }

    write_config(
        &e.bundle,
        &["sh", "-c", PROBE],
        &[],
        Some(&hook_env(&e.specs)),
    );
    edit_config(&e.bundle, |c| {
        c["annotations"] = json!({"cdi.k8s.io/test": "nvidia.com/gpu=2"});
    });
    let out = runtime_run("runc", &e.state, &e.bundle, &cid("annot"));
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{so}");
    assert!(
        so.contains("has-nvidia2") && !so.contains("has-nvidia0"),
        "{so}"
    );
    assert!(so.contains("cuInit=42"), "{so}");
}

#[test]
fn missing_gpu_fails_the_start_with_a_clear_message() {
    let Some(e) = setup(2) else { return };
    let (ok, out, err) = run_probe(&e, &["NVIDIA_VISIBLE_DEVICES=0,7".into()]);
    assert!(!ok, "start must fail: {out}");
    eprintln!("runc said: {err}");
    assert!(
        err.contains("nvbind-hook prestart: unresolvable CDI device nvidia.com/gpu=7"),
        "{err}"
    );
    assert!(!out.contains("cuInit"), "{out}");
    assert_nothing_left(&e.dir);
}

#[test]
fn missing_host_file_fails_before_anything_is_mounted() {
    // The spec on disk is checked against the host first: the line names the file.
    let Some(e) = setup(1) else { return };
    fs::remove_file(
        e.host
            .root
            .join(HOST_LIBDIR)
            .join(format!("libnvidia-ml.so.{DRIVER}")),
    )
    .unwrap();
    let (ok, _out, err) = run_probe(&e, &["NVIDIA_VISIBLE_DEVICES=0".into()]);
    assert!(!ok);
    assert!(err.contains("is stale: containerEdits: mount "), "{err}");
    assert!(err.contains("libnvidia-ml.so"), "{err}");
    assert!(err.contains("does not exist on the host"), "{err}");
    assert_nothing_left(&e.dir);
}

#[test]
fn already_injected_by_the_runtime_is_left_alone() {
    let Some(e) = setup(1) else { return };
    write_config(
        &e.bundle,
        &["sh", "-c", PROBE],
        &["NVIDIA_VISIBLE_DEVICES=0".into()],
        Some(&hook_env(&e.specs)),
    );
    edit_config(&e.bundle, |c| {
        c["annotations"] = json!({"org.nvbind.cdi.injected": "nvidia.com/gpu=0"});
    });
    let out = runtime_run("runc", &e.state, &e.bundle, &cid("done"));
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{so}");
    assert!(!so.contains("has-nvidia0"), "{so}");
}

#[test]
fn no_request_no_change() {
    let Some(e) = setup(1) else { return };
    let (ok, out, err) = run_probe(&e, &[]);
    assert!(ok, "{err}");
    assert!(!out.contains("has-nvidia0"), "{out}");
    let (ok, out, _) = run_probe(&e, &["NVIDIA_VISIBLE_DEVICES=void".into()]);
    assert!(ok && !out.contains("has-nvidia0"), "{out}");
}

#[test]
fn discovery_when_no_spec_exists() {
    let Some(e) = setup(2) else { return };
    let empty = e.dir.join("empty-cdi");
    fs::create_dir_all(&empty).unwrap();
    let mut env = hook_env(&empty);
    env.push(format!("NVBIND_DRIVER_ROOT={}", e.host.root.display()));
    write_config(
        &e.bundle,
        &[
            "sh",
            "-c",
            "test -c /dev/nvidia1 && echo has-nvidia1; test -c /dev/nvidia0 || echo no-nvidia0; \
             test -c /dev/nvidiactl && echo has-ctl; \
             ls /usr/lib/x86_64-linux-gnu/; LD_LIBRARY_PATH= /bin/cudaprobe 2>&1",
        ],
        &["NVIDIA_VISIBLE_DEVICES=1".into()],
        Some(&env),
    );
    let out = runtime_run("runc", &e.state, &e.bundle, &cid("disc"));
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{so}\n{se}");
    assert!(
        so.contains("has-nvidia1") && so.contains("no-nvidia0"),
        "{so}"
    );
    assert!(so.contains("has-ctl"), "{so}");
    assert!(so.contains(&format!("libcuda.so.{DRIVER}")), "{so}");
    assert!(so.contains("cuInit=42"), "{so}");
    assert_nothing_left(&e.dir);
}

/// The image's paths are resolved as the container sees them (openat2 RESOLVE_IN_ROOT): a
/// library directory linked to a host path leads to that path inside the rootfs, where it
/// does not exist, and the start fails in one line; the host directory is never touched.
#[test]
fn hostile_rootfs_symlink_is_refused() {
    let Some(e) = setup(1) else { return };
    let outside = e.dir.join("outside");
    fs::create_dir_all(&outside).unwrap();
    // The image points the library directory out of the rootfs with an absolute link.
    let libdir = e.bundle.join("rootfs/usr/lib/nvidia-fake");
    let _ = fs::remove_dir_all(&libdir);
    std::os::unix::fs::symlink(&outside, &libdir).unwrap();
    let (ok, out, err) = run_probe(&e, &["NVIDIA_VISIBLE_DEVICES=0".into()]);
    assert!(!ok, "start must fail: {out}");
    assert!(err.contains("nvbind-hook prestart: "), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert_nothing_left(&e.dir);

    // The same through a relative link climbing out: `..` stops at the rootfs, so it is the
    // rootfs's own /outside, and the libraries go there.
    fs::remove_file(&libdir).unwrap();
    std::os::unix::fs::symlink("../../../../outside", &libdir).unwrap();
    fs::create_dir_all(e.bundle.join("rootfs/outside")).unwrap();
    let (ok, out, err) = run_probe(&e, &["NVIDIA_VISIBLE_DEVICES=0".into()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("cuInit=42"), "{out}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert_nothing_left(&e.dir);
}

/// The hook registered twice (e.g. hooks.d and config.json): the second run finds everything
/// in place and changes nothing; no mount is stacked.
#[test]
fn running_the_hook_twice_is_harmless() {
    let Some(e) = setup(1) else { return };
    write_config(
        &e.bundle,
        &[
            "sh",
            "-c",
            "grep -c nvidia-fake/libcuda /proc/self/mountinfo; /bin/cudaprobe 2>&1; true",
        ],
        &["NVIDIA_VISIBLE_DEVICES=0".into()],
        Some(&hook_env(&e.specs)),
    );
    edit_config(&e.bundle, |c| {
        let h = c["hooks"]["prestart"][0].clone();
        c["hooks"]["prestart"] = json!([h.clone(), h]);
    });
    let out = runtime_run("runc", &e.state, &e.bundle, &cid("twice"));
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{so}");
    assert!(so.starts_with("1\n"), "one mount of libcuda expected: {so}");
    assert!(so.contains("cuInit=42"), "{so}");
}

/// `nvbind-hook prestart` with the state of a container that is already running (after
/// pivot_root): the GPU is hot-plugged. /proc/PID/root leads into its mount tree.
#[test]
fn injects_into_a_running_container() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Some(e) = setup(2) else { return };
    write_config(
        &e.bundle,
        &["sleep", "60"],
        &["NVIDIA_VISIBLE_DEVICES=0".into()],
        None,
    );
    let id = cid("hot");
    let runc = |args: &[&str]| {
        Command::new("runc")
            .arg("--root")
            .arg(&e.state)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    assert!(runc(&["create", "--bundle", e.bundle.to_str().unwrap(), &id]).success());
    assert!(runc(&["start", &id]).success());
    let state = ok(Command::new("runc")
        .arg("--root")
        .arg(&e.state)
        .args(["state", &id]));
    assert!(state.contains("\"running\""), "{state}");
    let mut child = Command::new(hook_bin())
        .arg("prestart")
        .env("NVBIND_CDI_SPEC_DIRS", &e.specs)
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
    let hook = child.wait_with_output().unwrap();
    let probe = run(Command::new("runc")
        .arg("--root")
        .arg(&e.state)
        .args(["exec", &id, "sh", "-c", PROBE]));
    runc(&["kill", &id, "KILL"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    runc(&["delete", "-f", &id]);
    assert!(
        hook.status.success(),
        "{}",
        String::from_utf8_lossy(&hook.stderr)
    );
    let so = String::from_utf8_lossy(&probe.stdout);
    assert!(
        so.contains("has-nvidia0") && !so.contains("has-nvidia1"),
        "{so}"
    );
    assert!(so.contains("No such device or address"), "{so}");
    assert!(so.contains("cuInit=42"), "{so}");
    assert_nothing_left(&e.dir);
}

/// runc on a pure cgroup v2 view of this machine (a private mount namespace with the v1
/// hierarchies unmounted and cgroup2 at /sys/fs/cgroup): runc enforces device rules with an
/// eBPF program, which the hook extends with the GPU rules.
#[test]
fn cgroup_v2_device_program_is_extended() {
    use std::process::{Command, Stdio};
    let Some(e) = setup(2) else { return };
    write_config(
        &e.bundle,
        &[
            "sh",
            "-c",
            "test -c /dev/nvidia1 && echo has-nvidia1; cat /dev/nvidia1 2>&1 | head -n1; \
             cat /dev/nvidia0 2>&1 | head -n1; head -c1 /dev/zero | wc -c; /bin/cudaprobe 2>&1; true",
        ],
        &["NVIDIA_VISIBLE_DEVICES=1".into()],
        Some(&hook_env(&e.specs)),
    );
    let id = cid("v2");
    let script = format!(
        "umount -R /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && \
         grep -c ' - cgroup ' /proc/self/mountinfo; \
         runc --root '{s}' run --bundle '{b}' '{id}' </dev/null; rc=$?; \
         runc --root '{s}' delete -f '{id}' >/dev/null 2>&1; exit $rc",
        s = e.state.display(),
        b = e.bundle.display(),
    );
    let out = run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null()));
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{so}\n{se}");
    assert!(so.starts_with("0\n"), "v1 hierarchies still mounted: {so}");
    assert!(so.contains("has-nvidia1"), "{so}");
    // The GPU node passes the extended program (ENXIO from the absent driver); /dev/zero is
    // still allowed by runc's own rules (the original program runs after ours).
    assert!(so.contains("No such device or address"), "{so}\n{se}");
    assert!(so.contains("\n1\n"), "/dev/zero: {so}");
    assert!(so.contains("cuInit=42"), "{so}");
}

/// More hostile shapes: the mount target itself is an absolute symlink in the image, and a
/// spec whose container path climbs out with `..`.
#[test]
fn hostile_targets_are_refused() {
    let Some(e) = setup(1) else { return };
    let outside = e.dir.join("outside");
    fs::create_dir_all(&outside).unwrap();
    let victim = outside.join("victim");
    fs::write(&victim, "keep").unwrap();
    let libdir = e.bundle.join("rootfs/usr/lib/nvidia-fake");
    fs::create_dir_all(&libdir).unwrap();
    std::os::unix::fs::symlink(&victim, libdir.join(format!("libcuda.so.{DRIVER}"))).unwrap();
    let (ok, out, err) = run_probe(&e, &["NVIDIA_VISIBLE_DEVICES=0".into()]);
    assert!(!ok, "start must fail: {out}");
    assert!(err.contains("nvbind-hook prestart: "), "{err}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    assert_nothing_left(&e.dir);
    fs::remove_file(libdir.join(format!("libcuda.so.{DRIVER}"))).unwrap();

    // A spec that mounts to /usr/../../../<outside>: `..` stops at the rootfs, so the file
    // lands at <outside>/pwned inside the rootfs; nothing is created outside.
    let mut spec = e.host.spec(&hook_bin());
    spec.container_edits.mounts[0].container_path =
        format!("/usr/../../../../../..{}/pwned", outside.display());
    let path = e.specs.join("nvidia.json");
    fs::write(
        &path,
        spec.to_string(nvbind_cdi::spec::Format::Json, &path)
            .unwrap(),
    )
    .unwrap();
    let (ok, out, err) = run_probe(&e, &["NVIDIA_VISIBLE_DEVICES=0".into()]);
    assert!(ok, "{out}{err}");
    assert!(!outside.join("pwned").exists());
    let inside = e
        .bundle
        .join("rootfs")
        .join(outside.strip_prefix("/").unwrap())
        .join("pwned");
    assert!(inside.exists(), "{}", inside.display());
    assert_nothing_left(&e.dir);
}

/// The nvbind runtime injects the devices itself and marks the bundle; the same prestart hook
/// in its config then does nothing (no second mount). Uses the `nvbind` built next to this
/// hook (a workspace build), else $NVBIND; skipped without one.
#[test]
fn nvbind_runtime_and_hook_do_not_inject_twice() {
    let Some(e) = setup(2) else { return };
    let nvbind = hook_bin()
        .parent()
        .map(|d| d.join("nvbind"))
        .filter(|p| p.is_file())
        .or_else(|| std::env::var_os("NVBIND").map(PathBuf::from))
        .filter(|p| p.is_file());
    let Some(nvbind) = nvbind else {
        eprintln!("SKIP: no nvbind binary next to nvbind-hook and no $NVBIND");
        return;
    };
    write_config(
        &e.bundle,
        &[
            "sh",
            "-c",
            "ls /dev | grep -c ^nvidia; grep -c nvidia-fake/libcuda /proc/self/mountinfo; \
             /bin/cudaprobe 2>&1; true",
        ],
        &["NVIDIA_VISIBLE_DEVICES=all".into()],
        // The hook is pointed at no spec and no driver: had it tried to inject, it would fail
        // the start ("unresolvable CDI device"). Success means it saw the runtime's mark.
        Some(&[
            hook_env(&e.dir.join("no-specs"))[0].clone(),
            "NVBIND_DRIVER_ROOT=/nonexistent".into(),
        ]),
    );
    let id = cid("nvb");
    let out = run(std::process::Command::new(&nvbind)
        .arg("--root")
        .arg(e.dir.join("nvbind-state"))
        .args(["run", "--bundle"])
        .arg(&e.bundle)
        .arg(&id)
        .env("NVBIND_CDI_SPEC_DIRS", &e.specs)
        .stdin(std::process::Stdio::null()));
    let _ = std::process::Command::new(&nvbind)
        .arg("--root")
        .arg(e.dir.join("nvbind-state"))
        .args(["delete", "-f", &id])
        .output();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{so}\n{se}");
    // 2 GPUs + nvidiactl + nvidia-uvm, and one mount of libcuda (the runtime's).
    assert!(so.starts_with("4\n1\n"), "{so}");
    assert!(so.contains("cuInit=42"), "{so}");
    // The bundle is not written: the hook learnt from the container's state (its
    // annotations) that the runtime had injected.
    let cfg = fs::read_to_string(e.bundle.join("config.json")).unwrap();
    assert!(
        !cfg.contains("org.nvbind.cdi.injected"),
        "the runtime wrote the bundle"
    );
}

/// A container in a user namespace (uid 0 -> 100000): a node made on its /dev would not
/// open, so the hook bind-mounts the host's nodes, as runc itself does there.
#[test]
fn user_namespace_container_gets_bind_mounted_nodes() {
    use std::process::Command;
    let Some(e) = setup(2) else { return };
    write_config(
        &e.bundle,
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map; test -c /dev/nvidia1 && echo has-nvidia1; \
             cat /dev/nvidia1 2>&1 | head -n1; grep -c ' /dev/nvidia1 ' /proc/self/mountinfo; \
             /bin/cudaprobe 2>&1; true",
        ],
        &["NVIDIA_VISIBLE_DEVICES=1".into()],
        Some(&hook_env(&e.specs)),
    );
    edit_config(&e.bundle, |c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        // The default cgroup mount needs a cgroup namespace under a user namespace.
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.retain(|m| m["type"] != "cgroup");
    });
    ok(Command::new("chown")
        .args(["-R", "-h", "100000:100000"])
        .arg(e.bundle.join("rootfs")));
    let out = runtime_run("runc", &e.state, &e.bundle, &cid("userns"));
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{so}\n{se}");
    assert!(so.contains("100000"), "no user namespace: {so}");
    assert!(so.contains("has-nvidia1"), "{so}");
    assert!(so.contains("No such device or address"), "{so}");
    assert!(
        so.contains("\n1\n"),
        "/dev/nvidia1 is not a bind mount: {so}"
    );
    assert!(so.contains("cuInit=42"), "{so}");
    assert_nothing_left(&e.dir);
}
