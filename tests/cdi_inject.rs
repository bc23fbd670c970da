//! CDI injection in real containers: a fake GPU tree (device nodes made with mknod, a fake
//! driver library) described by a CDI spec in a temp spec dir, requested through the
//! cdi.k8s.io annotation and through NVIDIA_VISIBLE_DEVICES.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// A fake NVIDIA host: /dev nodes under `dir/dev`, a library under `dir/lib`, a spec dir.
struct FakeGpus {
    spec_dir: PathBuf,
}

fn mknod(path: &Path, major: u32, minor: u32) {
    let st = Command::new("mknod")
        .args(["-m", "666"])
        .arg(path)
        .args(["c", &major.to_string(), &minor.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "mknod {} needs root", path.display());
}

impl FakeGpus {
    fn new(env: &Env) -> Self {
        let root = env.dir.path().join("host");
        let dev = root.join("dev");
        let lib = root.join("lib");
        fs::create_dir_all(&dev).unwrap();
        fs::create_dir_all(&lib).unwrap();
        for i in 0..2 {
            mknod(&dev.join(format!("nvidia{i}")), 195, i);
        }
        mknod(&dev.join("nvidiactl"), 195, 255);
        fs::write(lib.join("libcuda.so.550.54.14"), "fake libcuda\n").unwrap();
        let spec_dir = env.dir.path().join("cdi");
        fs::create_dir(&spec_dir).unwrap();
        let d = dev.display();
        let l = lib.display();
        let yaml = format!(
            r#"cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
      hostPath: {d}/nvidia0
- name: "1"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
      hostPath: {d}/nvidia1
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
      hostPath: {d}/nvidia0
    - path: /dev/nvidia1
      hostPath: {d}/nvidia1
containerEdits:
  env:
  - NVIDIA_FAKE_DRIVER=550.54.14
  deviceNodes:
  - path: /dev/nvidiactl
    hostPath: {d}/nvidiactl
  mounts:
  - hostPath: {l}/libcuda.so.550.54.14
    containerPath: /usr/lib/libcuda.so.1
    options: [ro, nosuid, nodev, bind]
"#
        );
        fs::write(spec_dir.join("nvidia.yaml"), yaml).unwrap();
        Self { spec_dir }
    }

    fn flag(&self) -> String {
        format!("--cdi-spec-dir={}", self.spec_dir.display())
    }
}

// The last command reads the v1 device cgroup; on cgroup v2 (no such file) it must not make
// the probe's exit status, which `run` returns, non-zero.
const PROBE: &str = "ls /dev; stat -c '%n %t:%T' /dev/nvidia*; cat /usr/lib/libcuda.so.1; \
    echo env=$NVIDIA_FAKE_DRIVER; cat /sys/fs/cgroup/devices/devices.list 2>/dev/null; true";

fn run_probe(env: &Env, gpus: &FakeGpus, bundle: &Path, id: &str) -> String {
    env.ok(&[&gpus.flag(), "run", "-b", bundle.to_str().unwrap(), id])
}

#[test]
fn annotation_injects_one_gpu_and_the_shared_driver_files() {
    let env = Env::new();
    let gpus = FakeGpus::new(&env);
    let b = env.bundle("b", &["sh", "-c", PROBE]);
    env.edit(&b, |c| {
        c["annotations"] = json!({"cdi.k8s.io/test": "nvidia.com/gpu=0"})
    });
    let before = fs::read(b.join("config.json")).unwrap();
    let out = run_probe(&env, &gpus, &b, "a1");
    assert!(out.contains("/dev/nvidia0 c3:0"), "{out}");
    assert!(out.contains("/dev/nvidiactl c3:ff"), "{out}");
    assert!(!out.contains("nvidia1"), "GPU 1 was not requested: {out}");
    assert!(out.contains("fake libcuda"), "{out}");
    assert!(out.contains("env=550.54.14"), "{out}");
    // Exactly the requested devices are allowed by the device cgroup (v1 on this host).
    if Path::new("/sys/fs/cgroup/devices").is_dir() {
        assert!(
            !out.contains("a *:* rwm"),
            "the device cgroup is wide open: {out}"
        );
        assert!(out.contains("c 195:0 rwm"), "{out}");
        assert!(out.contains("c 195:255 rwm"), "{out}");
        assert!(!out.contains("c 195:1 rwm"), "{out}");
    }
    // The engine's bundle is never written; a second run gets the same.
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before);
    let out2 = run_probe(&env, &gpus, &b, "a2");
    assert_eq!(out, out2);
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before);
    env.assert_clean();
}

#[test]
fn nvidia_visible_devices_maps_to_cdi_names() {
    let env = Env::new();
    let gpus = FakeGpus::new(&env);
    for (value, want, not) in [
        ("1", "/dev/nvidia1 c3:1", "nvidia0"),
        ("all", "/dev/nvidia0 c3:0", ""),
    ] {
        let b = env.bundle(&format!("b{value}"), &["sh", "-c", PROBE]);
        env.edit(&b, |c| {
            c["process"]["env"]
                .as_array_mut()
                .unwrap()
                .push(json!(format!("NVIDIA_VISIBLE_DEVICES={value}")))
        });
        let out = run_probe(&env, &gpus, &b, &format!("v{value}"));
        assert!(out.contains(want), "{value}: {out}");
        if !not.is_empty() {
            assert!(!out.contains(not), "{value}: {out}");
        }
        if value == "all" {
            assert!(out.contains("/dev/nvidia1 c3:1"), "{out}");
        }
    }
    // none / void: nothing injected, config untouched.
    for value in ["none", "void", ""] {
        let b = env.bundle("bn", &["sh", "-c", "ls /dev"]);
        env.edit(&b, |c| {
            c["process"]["env"]
                .as_array_mut()
                .unwrap()
                .push(json!(format!("NVIDIA_VISIBLE_DEVICES={value}")))
        });
        let before = fs::read(b.join("config.json")).unwrap();
        let out = run_probe(&env, &gpus, &b, "vn");
        assert!(!out.contains("nvidia"), "{value:?}: {out}");
        assert_eq!(fs::read(b.join("config.json")).unwrap(), before);
        fs::remove_dir_all(&b).unwrap();
    }
    env.assert_clean();
}

#[test]
fn unknown_gpu_fails_create_naming_the_device_and_leaves_the_bundle_alone() {
    let env = Env::new();
    let gpus = FakeGpus::new(&env);
    let b = env.bundle("b", &["true"]);
    env.edit(&b, |c| {
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("NVIDIA_VISIBLE_DEVICES=7"))
    });
    let before = fs::read(b.join("config.json")).unwrap();
    let err = env.fails(&[&gpus.flag(), "create", "-b", b.to_str().unwrap(), "u1"]);
    assert!(err.contains("nvidia.com/gpu=7"), "{err}");
    assert!(
        err.contains("nvidia.com/gpu"),
        "known kinds are listed: {err}"
    );
    assert!(
        err.contains(gpus.spec_dir.to_str().unwrap()),
        "dirs searched are listed: {err}"
    );
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before);

    // A malformed request is refused too.
    env.edit(&b, |c| {
        c["annotations"] = json!({"cdi.k8s.io/x": "not a name"})
    });
    let err = env.fails(&[&gpus.flag(), "create", "-b", b.to_str().unwrap(), "u2"]);
    assert!(err.contains("not a name"), "{err}");
    env.assert_clean();
}

#[test]
fn a_create_that_fails_after_injection_leaves_config_json_as_it_was() {
    let env = Env::new();
    let gpus = FakeGpus::new(&env);
    let b = env.bundle("b", &["true"]);
    env.edit(&b, |c| {
        c["annotations"] = json!({"cdi.k8s.io/test": "nvidia.com/gpu=0"});
        // Fails inside libcontainer, after injection.
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/x", "type": "bind", "source": "/nonexistent/src", "options": ["bind"]}));
    });
    let before = fs::read(b.join("config.json")).unwrap();
    let out = env.nvbind(&[&gpus.flag(), "create", "-b", b.to_str().unwrap(), "f1"]);
    assert!(!out.status.success());
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before);
    env.assert_clean();
}

#[test]
fn a_gpu_the_bundle_denies_by_wildcard_fails_create_in_one_line_before_anything_is_made() {
    let env = Env::new();
    let gpus = FakeGpus::new(&env);
    let b = env.bundle("b", &["true"]);
    env.edit(&b, |c| {
        c["annotations"] = json!({"cdi.k8s.io/test": "nvidia.com/gpu=0"});
        // Allow everything but the NVIDIA majors: the allow injection appends for
        // /dev/nvidia0 (c 195:0) would punch a hole in that wildcard, which no device cgroup
        // can express (found by fuzz/bundle_config).
        c["linux"]["resources"]["devices"] = json!([
            {"allow": true, "access": "rwm"},
            {"allow": false, "type": "c", "major": 195, "access": "rwm"}
        ]);
    });
    let before = fs::read(b.join("config.json")).unwrap();
    let err = env.fails(&[&gpus.flag(), "create", "-b", b.to_str().unwrap(), "w1"]);
    assert!(
        err.contains("requested devices cannot be granted") && err.contains("c 195:*"),
        "names the conflict and the bundle's wildcard: {err}"
    );
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before);
    env.assert_clean();
}

#[test]
fn cdi_list_shows_devices_and_rejected_files() {
    let env = Env::new();
    let gpus = FakeGpus::new(&env);
    fs::write(
        gpus.spec_dir.join("broken.yaml"),
        "cdiVersion: 0.5.0\nkind: x.com/y\ndevices: [{name: a, bogus: 1}]\n",
    )
    .unwrap();
    let out = Command::new(NVBIND)
        .args(["cdi", "list", "--format", "json", "--spec-dir"])
        .arg(&gpus.spec_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["devices"],
        json!(["nvidia.com/gpu=0", "nvidia.com/gpu=1", "nvidia.com/gpu=all"])
    );
    assert_eq!(v["errors"].as_array().unwrap().len(), 1);
    assert!(v["errors"][0]["file"]
        .as_str()
        .unwrap()
        .ends_with("broken.yaml"));
}

#[test]
fn a_gpu_spec_is_generated_at_create_time_when_none_is_on_disk() {
    let env = Env::new();
    FakeGpus::new(&env);
    let host = env.dir.path().join("host");
    let empty = env.dir.path().join("no-specs");
    fs::create_dir(&empty).unwrap();
    let b = env.bundle("b", &["sh", "-c", PROBE]);
    env.edit(&b, |c| {
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("NVIDIA_VISIBLE_DEVICES=1"))
    });
    let flag = format!("--cdi-spec-dir={}", empty.display());
    let out = env.nvbind_env(
        &[("NVBIND_DRIVER_ROOT", host.to_str().unwrap())],
        &[&flag, "run", "-b", b.to_str().unwrap(), "j1"],
    );
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{so}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(so.contains("/dev/nvidia1 c3:1"), "{so}");
    assert!(so.contains("/dev/nvidiactl c3:ff"), "{so}");
    assert!(!so.contains("/dev/nvidia0 "), "{so}");
    env.assert_clean();
}

#[test]
fn a_stale_spec_fails_create_in_one_line_and_can_be_regenerated() {
    let env = Env::new();
    let gpus = FakeGpus::new(&env);
    let spec = gpus.spec_dir.join("nvidia.yaml");
    // The spec says what GPU 1 was when it was written...
    let text = fs::read_to_string(&spec).unwrap().replace(
        "    - path: /dev/nvidia1\n      hostPath:",
        "    - path: /dev/nvidia1\n      type: c\n      major: 195\n      minor: 1\n      hostPath:",
    );
    fs::write(&spec, text).unwrap();
    // ...and the host's node is another one now.
    let host = env.dir.path().join("host");
    fs::remove_file(host.join("dev/nvidia1")).unwrap();
    mknod(&host.join("dev/nvidia1"), 195, 7);
    let b = env.bundle("b", &["sh", "-c", PROBE]);
    env.edit(&b, |c| {
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("NVIDIA_VISIBLE_DEVICES=1"))
    });
    let before = fs::read(b.join("config.json")).unwrap();
    let err = env.fails(&[&gpus.flag(), "create", "-b", b.to_str().unwrap(), "s1"]);
    let want = format!(
        "CDI spec {p} is stale: device nvidia.com/gpu=1: device node /dev/nvidia1 is c 195:1 in the spec but c 195:7 on the host; regenerate it with `nvbind cdi generate --vendor nvidia --output {p}` (or set NVBIND_CDI_STALE_SPECS=regenerate to have it regenerated in memory at create time)",
        p = spec.display()
    );
    assert!(err.contains(&want), "{err}");
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before);
    env.assert_clean();

    // Regenerated in memory from the host (the GPU nodes found under the driver root).
    let out = env.nvbind_env(
        &[
            ("NVBIND_CDI_STALE_SPECS", "regenerate"),
            ("NVBIND_DRIVER_ROOT", host.to_str().unwrap()),
        ],
        &[&gpus.flag(), "run", "-b", b.to_str().unwrap(), "s2"],
    );
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{so}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(so.contains("/dev/nvidia1 c3:7"), "{so}");
    env.assert_clean();
}

#[test]
fn imex_channels_are_made_in_the_container_from_their_numbers() {
    let env = Env::new();
    let gpus = FakeGpus::new(&env);
    let host = env.dir.path().join("host");
    fs::create_dir_all(host.join("proc")).unwrap();
    fs::write(
        host.join("proc/devices"),
        "Character devices:\n195 nvidia-frontend\n234 nvidia-caps-imex-channels\n",
    )
    .unwrap();
    let b = env.bundle(
        "b",
        &[
            "sh",
            "-c",
            "stat -c '%n %t:%T' /dev/nvidia-caps-imex-channels/*; cat /sys/fs/cgroup/devices/devices.list 2>/dev/null; true",
        ],
    );
    env.edit(&b, |c| {
        let e = c["process"]["env"].as_array_mut().unwrap();
        e.push(json!("NVIDIA_VISIBLE_DEVICES=0"));
        e.push(json!("NVIDIA_IMEX_CHANNELS=1,3"));
    });
    let out = env.nvbind_env(
        &[("NVBIND_DRIVER_ROOT", host.to_str().unwrap())],
        &[&gpus.flag(), "run", "-b", b.to_str().unwrap(), "i1"],
    );
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{so}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        so.contains("/dev/nvidia-caps-imex-channels/channel1 ea:1"),
        "{so}"
    );
    assert!(
        so.contains("/dev/nvidia-caps-imex-channels/channel3 ea:3"),
        "{so}"
    );
    if Path::new("/sys/fs/cgroup/devices").is_dir() {
        assert!(
            so.contains("c 234:1 rwm") && so.contains("c 234:3 rwm"),
            "{so}"
        );
    }
    // Nothing was made on the host.
    assert!(!host.join("dev/nvidia-caps-imex-channels").exists());
    env.assert_clean();
}

#[test]
fn exec_and_state_of_a_gpu_container_see_what_was_injected() {
    let env = Env::new();
    let gpus = FakeGpus::new(&env);
    let b = env.bundle("b", &["sleep", "1000"]);
    env.edit(&b, |c| {
        c["annotations"] = json!({"cdi.k8s.io/test": "nvidia.com/gpu=0"})
    });
    let before = fs::read(b.join("config.json")).unwrap();
    env.ok(&[&gpus.flag(), "create", "-b", b.to_str().unwrap(), "e1"]);
    env.ok(&["start", "e1"]);
    // exec takes its defaults from the spec the container was built from (saved in its
    // state directory), not from the untouched bundle.
    let out = env.ok(&[
        "exec",
        "e1",
        "sh",
        "-c",
        "echo env=$NVIDIA_FAKE_DRIVER; test -c /dev/nvidia0 && echo node",
    ]);
    assert!(
        out.contains("env=550.54.14") && out.contains("node"),
        "{out}"
    );
    let state: Value = serde_json::from_str(&env.ok(&["state", "e1"])).unwrap();
    assert_eq!(
        state["annotations"]["org.nvbind.cdi.injected"],
        "nvidia.com/gpu=0"
    );
    env.ok(&["delete", "--force", "e1"]);
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before);
    env.assert_clean();
}
