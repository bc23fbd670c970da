//! crun with `nvbind-hook prestart`. Debian's crun 1.8.1 refuses this machine's hybrid cgroup
//! layout, so each run happens in a private mount namespace with /sys/fs/cgroup/unified
//! unmounted (pure cgroup v1 for crun; the host keeps its mounts). On a pure cgroup v2 view
//! (v1 hierarchies unmounted, cgroup2 at /sys/fs/cgroup) crun 1.8.1 stops before any hook:
//! it raises RLIMIT_MEMLOCK for its eBPF device program and this VM lacks CAP_SYS_RESOURCE
//! ("setrlimit (RLIM_MEMLOCK): Operation not permitted"); runc works there (tests/runc.rs).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

fn crun_run(state: &Path, bundle: &Path, id: &str) -> Output {
    let script = format!(
        "umount /sys/fs/cgroup/unified 2>/dev/null; crun --root '{s}' run --bundle '{b}' '{id}' </dev/null; rc=$?; crun --root '{s}' delete -f '{id}' >/dev/null 2>&1; exit $rc",
        s = state.display(),
        b = bundle.display(),
    );
    run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null()))
}

#[test]
fn gpu_devices_and_libraries_inside_crun() {
    require_root();
    if !have("crun") || !have("gcc") || !have("runc") {
        return;
    }
    let tmp = tempdir();
    let dir = tmp.path();
    let host = FakeHost::new(&dir.join("host"), 2);
    let specs = host.write_spec(&dir.join("cdi"), &hook_bin());
    let bundle = dir.join("bundle");
    busybox_rootfs(&bundle.join("rootfs"), &host);
    write_config(
        &bundle,
        &[
            "sh",
            "-c",
            "test -c /dev/nvidia1 && echo has-nvidia1; test -e /dev/nvidia0 || echo no-nvidia0; \
             cat /dev/nvidia1 2>&1 | head -n1; /bin/cudaprobe 2>&1; true",
        ],
        &["NVIDIA_VISIBLE_DEVICES=1".into()],
        Some(&hook_env(&specs)),
    );
    let out = crun_run(&dir.join("crun-state"), &bundle, &cid("crun"));
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "crun failed:\n{so}\n{se}");
    assert!(
        so.contains("has-nvidia1") && so.contains("no-nvidia0"),
        "{so}"
    );
    assert!(so.contains("No such device or address"), "{so}");
    assert!(so.contains("cuInit=42"), "{so}");
    assert!(host_mounts_containing(dir).is_empty());

    // A GPU that does not exist stops the start. crun discards a hook's stderr unless the
    // `run.oci.hooks.stderr` annotation names a file for it.
    write_config(
        &bundle,
        &["true"],
        &["NVIDIA_VISIBLE_DEVICES=5".into()],
        Some(&hook_env(&specs)),
    );
    let log = dir.join("hook-stderr.log");
    edit_config(&bundle, |c| {
        c["annotations"] = serde_json::json!({"run.oci.hooks.stderr": log});
    });
    let out = crun_run(&dir.join("crun-state"), &bundle, &cid("crun"));
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(se.contains("error executing hook"), "{se}");
    let hook_err = std::fs::read_to_string(&log).unwrap();
    assert!(
        hook_err.contains("nvbind-hook prestart: unresolvable CDI device nvidia.com/gpu=5"),
        "{hook_err}"
    );
    assert!(host_mounts_containing(dir).is_empty());
}
