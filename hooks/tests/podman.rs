//! Podman with packaging/oci-hooks.d/nvbind-hook.json in a private `--hooks-dir` (its path
//! pointed at the built binary, the fixture's spec dir in its env), runc as the runtime and
//! storage under a temp dir.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

fn podman(dir: &Path, hooks: &Path, args: &[&str]) -> Output {
    run(Command::new("podman")
        .arg("--root")
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("runroot"))
        .args([
            "--storage-driver",
            "overlay",
            "--cgroup-manager",
            "cgroupfs",
        ])
        .args(["--events-backend", "file", "--runtime", "runc"])
        .arg("--tmpdir")
        .arg(dir.join("libpod-tmp"))
        .arg("--hooks-dir")
        .arg(hooks)
        .args(args)
        .stdin(Stdio::null()))
}

#[test]
fn podman_hooks_dir_injects_gpus() {
    require_root();
    if !have("podman") || !have("runc") || !have("gcc") {
        return;
    }
    let tmp = tempdir();
    let dir = tmp.path();
    let host = FakeHost::new(&dir.join("host"), 2);
    let specs = host.write_spec(&dir.join("cdi"), &hook_bin());
    let rootfs = dir.join("image/rootfs");
    busybox_rootfs(&rootfs, &host);

    // The packaged hook file, pointed at this build.
    let packaged =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/oci-hooks.d/nvbind-hook.json");
    let mut hook: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(packaged).unwrap()).unwrap();
    hook["hook"]["path"] = serde_json::json!(hook_bin());
    hook["hook"]["env"] = serde_json::json!(hook_env(&specs));
    let hooks = dir.join("hooks.d");
    fs::create_dir_all(&hooks).unwrap();
    fs::write(hooks.join("nvbind-hook.json"), hook.to_string()).unwrap();

    let tar = dir.join("image.tar");
    ok(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let o = podman(
        dir,
        &hooks,
        &["import", tar.to_str().unwrap(), "localhost/nvbind-hook-bb"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let probe = "for n in 0 1; do test -c /dev/nvidia$n && echo has-nvidia$n; done; \
                 /bin/cudaprobe 2>&1; true";
    let base = [
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=32768:32768",
    ];
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["-e", "NVIDIA_VISIBLE_DEVICES=1"]);
    args.extend(["localhost/nvbind-hook-bb", "sh", "-c", probe]);
    let o = podman(dir, &hooks, &args);
    let (so, se) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{so}\n{se}");
    assert!(
        so.contains("has-nvidia1") && !so.contains("has-nvidia0"),
        "{so}"
    );
    assert!(so.contains("cuInit=42"), "{so}");

    // An annotation request, and a container without any request.
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--annotation", "cdi.k8s.io/x=nvidia.com/gpu=0"]);
    args.extend(["localhost/nvbind-hook-bb", "sh", "-c", probe]);
    let o = podman(dir, &hooks, &args);
    let so = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{so}");
    assert!(
        so.contains("has-nvidia0") && !so.contains("has-nvidia1"),
        "{so}"
    );

    let mut args: Vec<&str> = base.to_vec();
    args.extend(["localhost/nvbind-hook-bb", "sh", "-c", probe]);
    let o = podman(dir, &hooks, &args);
    let so = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{so}");
    assert!(!so.contains("has-nvidia"), "{so}");

    // Remove podman's storage mounts before the temp dir goes.
    let _ = podman(dir, &hooks, &["rm", "-af"]);
    let _ = podman(dir, &hooks, &["rmi", "-af"]);
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "grep -o ' {}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l",
            dir.display()
        ))
        .status();
}
