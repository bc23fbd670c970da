//! End to end with a real runtime: a spec generated for the fake 8-GPU host, resolved by our
//! registry and applied to runc's default config, runs a busybox container under runc that
//! sees the fake GPU's device nodes (with the fake host's device numbers), the driver
//! libraries and binaries, and the spec's environment. runc is the reference runtime here,
//! so a failure is about the spec, not about nvbind's runtime. Needs root, runc and a static
//! busybox (busybox-static).

mod generate_common;

use std::fs;
use std::path::Path;
use std::process::Command;

use generate_common::*;
use nvbind_cdi::apply::{apply, RealHost};
use nvbind_cdi::discover::nvidia::{NvidiaDiscoverer, NvmlSource};
use nvbind_cdi::discover::Discover;
use nvbind_cdi::generate::{render, spec_for, write_atomic, GenerateOptions, NameStrategy};
use nvbind_cdi::name::QualifiedName;
use nvbind_cdi::registry::{Registry, Trust};
use nvbind_cdi::spec::Format;

fn which(bin: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(bin))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{bin} not found in PATH (apt-get install {bin})"))
}

#[test]
fn runc_container_sees_the_generated_gpu() {
    let runc = which("runc");
    let busybox = which("busybox");
    let host = FakeHost::h100x8();
    let inv = NvidiaDiscoverer {
        nvml: NvmlSource::Disabled,
    }
    .discover(&host.roots())
    .unwrap();
    // /bin/true stands in for nvbind-hook: the hooks run (and must succeed) but do nothing.
    let opts = GenerateOptions {
        name_strategy: NameStrategy::Index,
        hook_path: "/bin/true".into(),
        compat32: false,
    };
    let spec = spec_for(&inv, &opts, &mut Vec::new()).unwrap();
    let specs = tempfile::tempdir().unwrap();
    let path = specs.path().join("nvidia.yaml");
    write_atomic(
        &path,
        render(&spec, Format::Yaml, &path).unwrap().as_bytes(),
    )
    .unwrap();
    let registry = Registry::with_trust(vec![specs.path().to_path_buf()], Trust::Any);
    assert!(registry.errors().is_empty(), "{:?}", registry.errors());
    // GPU index 4 has device minor 5 on this host.
    let edits = registry
        .resolve(&[QualifiedName::parse("nvidia.com/gpu=4").unwrap()])
        .unwrap();

    let bundle = tempfile::tempdir().unwrap();
    let rootfs = bundle.path().join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "stat", "cat", "echo", "test"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let out = Command::new(&runc)
        .args(["spec", "--bundle"])
        .arg(bundle.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "runc spec: {out:?}");
    let config_path = bundle.path().join("config.json");
    let mut config: oci_spec::runtime::Spec =
        serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
    let mut process = config.process().clone().unwrap();
    process.set_terminal(Some(false));
    let script = format!(
        "stat -c '%n %F %t:%T' /dev/nvidia5 /dev/nvidiactl /dev/nvidia-uvm /dev/dri/card5; \
         test -f /usr/lib/x86_64-linux-gnu/libcuda.so.{DRIVER} && echo libcuda-mounted; \
         test -x /usr/bin/nvidia-smi && echo nvidia-smi-mounted; \
         test -e /dev/nvidia0 || echo no-other-gpu; \
         echo NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES"
    );
    process.set_args(Some(vec!["sh".into(), "-c".into(), script]));
    config.set_process(Some(process));
    let config = apply(&edits, &config, &RealHost).unwrap();
    fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

    let id = format!("nvbind-cdi-e2e-{}", std::process::id());
    let out = Command::new(&runc)
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .output()
        .unwrap();
    let _ = Command::new(&runc)
        .args(["delete", "--force", &id])
        .output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "runc run: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    println!("container output:\n{stdout}");
    let uvm = format!("/dev/nvidia-uvm character special file {UVM_MAJOR:x}:0");
    for expected in [
        "/dev/nvidia5 character special file c3:5",
        "/dev/nvidiactl character special file c3:ff",
        uvm.as_str(),
        "/dev/dri/card5 character special file e2:5",
        "libcuda-mounted",
        "nvidia-smi-mounted",
        "no-other-gpu",
        "NVIDIA_VISIBLE_DEVICES=void",
    ] {
        assert!(
            stdout.lines().any(|l| l == expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(Path::new(&host.path("/dev/nvidia5")).exists());
}
