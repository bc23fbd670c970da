//! resolve + apply of an 8-GPU spec (8 per-GPU devices, 44 device nodes, 40 mounts, hooks),
//! nvbind-cdi against the `container-device-interface` crate on the same spec and OCI config.
//!
//! The timing run is ignored by default (it wants a release build):
//! `cargo test --release -p nvbind-cdi --test resolve_bench -- --ignored --nocapture`
//! prints one JSON line per implementation and the speedup. The non-ignored test checks that
//! both implementations produce the same devices for this spec, so the timing compares equal
//! work.

mod generate_common;

use std::path::Path;
use std::time::{Duration, Instant};

use nvbind_cdi::registry::{Registry, Trust};
use nvbind_cdi::{apply, QualifiedName, RealHost};
use oci_spec::runtime::Spec as OciSpec;

const GPUS: usize = 8;

/// An nvidia-ctk shaped spec with fully described nodes (no host lookup needed).
fn eight_gpu_spec() -> String {
    let mut s = String::from("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n");
    for i in 0..GPUS {
        s.push_str(&format!(
            "- name: \"{i}\"\n  containerEdits:\n    deviceNodes:\n    - {{path: /dev/nvidia{i}, type: c, major: 195, minor: {i}}}\n    - {{path: /dev/dri/card{c}, type: c, major: 226, minor: {c}}}\n    - {{path: /dev/dri/renderD{r}, type: c, major: 226, minor: {r}}}\n    - {{path: /dev/nvidia-caps/nvidia-cap{i}, type: c, major: 237, minor: {i}}}\n    - {{path: /dev/nvidia-vgpu{i}, type: c, major: 238, minor: {i}}}\n    hooks:\n    - hookName: createContainer\n      path: /usr/bin/nvidia-ctk\n      args: [nvidia-ctk, hook, create-symlinks, --link, \"../card{c}::/dev/dri/by-path/pci-{i}-card\"]\n",
            c = i + 1,
            r = 128 + i
        ));
    }
    s.push_str("containerEdits:\n  env: [NVIDIA_VISIBLE_DEVICES=void]\n  deviceNodes:\n");
    for (p, mi) in [
        ("nvidiactl", 255),
        ("nvidia-modeset", 254),
        ("nvidia-uvm", 0),
        ("nvidia-uvm-tools", 1),
    ] {
        s.push_str(&format!(
            "  - {{path: /dev/{p}, type: c, major: 195, minor: {mi}}}\n"
        ));
    }
    s.push_str("  hooks:\n  - hookName: createContainer\n    path: /usr/bin/nvidia-ctk\n    args: [nvidia-ctk, hook, update-ldcache, --folder, /usr/lib/x86_64-linux-gnu]\n  mounts:\n");
    for i in 0..40 {
        s.push_str(&format!(
            "  - {{hostPath: /usr/lib/x86_64-linux-gnu/libnv{i}.so.535.104.05, containerPath: /usr/lib/x86_64-linux-gnu/libnv{i}.so.535.104.05, options: [ro, nosuid, nodev, bind]}}\n"
        ));
    }
    s
}

fn base() -> OciSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden/base-config.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn names() -> Vec<String> {
    (0..GPUS).map(|i| format!("nvidia.com/gpu={i}")).collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    ours: Registry,
    theirs: std::sync::Arc<std::sync::Mutex<container_device_interface::cache::Cache>>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nvidia.yaml"), eight_gpu_spec()).unwrap();
    let ours = Registry::with_trust(vec![dir.path().into()], Trust::Any);
    assert!(ours.errors().is_empty(), "{:?}", ours.errors());
    let theirs = container_device_interface::cache::new_cache(vec![
        container_device_interface::spec_dirs::with_spec_dirs(&[dir.path().to_str().unwrap()]),
        container_device_interface::cache::with_auto_refresh(false),
    ]);
    Fixture {
        _dir: dir,
        ours,
        theirs,
    }
}

fn run_ours(f: &Fixture, base: &OciSpec) -> OciSpec {
    let names: Vec<QualifiedName> = names().iter().map(|n| n.parse().unwrap()).collect();
    let edits = f.ours.resolve(&names).unwrap();
    apply(&edits, base, &RealHost).unwrap()
}

fn run_theirs(f: &Fixture, base: &OciSpec) -> OciSpec {
    let mut spec = base.clone();
    f.theirs
        .lock()
        .unwrap()
        .inject_devices(Some(&mut spec), names())
        .unwrap();
    spec
}

#[test]
fn both_implementations_inject_the_same_devices() {
    let f = fixture();
    let base = base();
    let (o, t) = (
        serde_json::to_value(run_ours(&f, &base)).unwrap(),
        serde_json::to_value(run_theirs(&f, &base)).unwrap(),
    );
    assert_eq!(o["linux"]["devices"].as_array().unwrap().len(), 8 * 5 + 4);
    assert_eq!(o["linux"]["devices"], t["linux"]["devices"]);
    assert_eq!(o["linux"]["resources"], t["linux"]["resources"]);
    assert_eq!(o["hooks"], t["hooks"]);
    assert_eq!(
        o["mounts"].as_array().unwrap().len(),
        t["mounts"].as_array().unwrap().len()
    );
}

fn time(iters: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed() / iters
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn bench_resolve_and_apply_8_gpus() {
    let f = fixture();
    let base = base();
    let iters = 2000;
    let ours = time(iters, || {
        std::hint::black_box(run_ours(&f, &base));
    });
    let theirs = time(iters, || {
        std::hint::black_box(run_theirs(&f, &base));
    });
    println!(
        r#"{{"impl":"nvbind-cdi","per_op_us":{:.1}}}"#,
        ours.as_secs_f64() * 1e6
    );
    println!(
        r#"{{"impl":"container-device-interface","per_op_us":{:.1}}}"#,
        theirs.as_secs_f64() * 1e6
    );
    println!(
        r#"{{"speedup":{:.2}}}"#,
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}

/// The resolver (requests -> edits) for `NVIDIA_VISIBLE_DEVICES=all` on the 8 x H100 fake
/// host: from the spec file `nvbind cdi generate` writes (checked against the host), and with
/// no spec on disk (the host discovered and the spec generated in memory). The difference is
/// what a create pays for specs made at create time.
#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn bench_jit_resolve_8_gpus() {
    use generate_common::{options, FakeHost};
    use nvbind_cdi::discover::nvidia::{NvidiaDiscoverer, NvmlSource};
    use nvbind_cdi::discover::Discover;
    use nvbind_cdi::generate::{self, NameStrategy};
    use nvbind_cdi::resolver::{Resolver, ResolverConfig};
    use nvbind_cdi::spec::Format;

    let host = FakeHost::h100x8();
    let inv = NvidiaDiscoverer {
        nvml: NvmlSource::Disabled,
    }
    .discover(&host.roots())
    .unwrap();
    let spec = generate::spec_for(&inv, &options(NameStrategy::Index), &mut Vec::new()).unwrap();
    let file_dir = host.path("/etc/cdi");
    std::fs::create_dir_all(&file_dir).unwrap();
    let path = file_dir.join("nvidia.yaml");
    std::fs::write(&path, spec.to_string(Format::Yaml, &path).unwrap()).unwrap();
    let empty = host.path("/etc/cdi-empty");
    std::fs::create_dir_all(&empty).unwrap();
    let resolver = |dir: &Path| {
        let mut c = ResolverConfig::new(vec![dir.to_path_buf()], Trust::Any);
        c.roots = host.roots();
        c.hook_path = "/usr/bin/nvbind-hook".into();
        Resolver::new(c)
    };
    let mut config = base();
    let mut process = config.process().clone().unwrap();
    let mut env = process.env().clone().unwrap_or_default();
    env.push("NVIDIA_VISIBLE_DEVICES=all".into());
    process.set_env(Some(env));
    config.set_process(Some(process));
    let (from_file, jit) = (resolver(&file_dir), resolver(&empty));
    assert!(jit.resolve(&config).unwrap().unwrap().generated.len() == 1);
    let iters = 300;
    let file = time(iters, || {
        std::hint::black_box(from_file.resolve(&config).unwrap());
    });
    let generated = time(iters, || {
        std::hint::black_box(jit.resolve(&config).unwrap());
    });
    println!(
        r#"{{"impl":"resolve, spec file (checked against the host)","per_op_us":{:.1}}}"#,
        file.as_secs_f64() * 1e6
    );
    println!(
        r#"{{"impl":"resolve, spec generated at create time","per_op_us":{:.1}}}"#,
        generated.as_secs_f64() * 1e6
    );
    println!(
        r#"{{"jit_extra_ms":{:.3}}}"#,
        (generated.as_secs_f64() - file.as_secs_f64()) * 1e3
    );
}
