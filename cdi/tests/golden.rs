//! Golden results of resolve + apply: fixture specs applied to a runc-style config.json with a
//! table of host device nodes. `UPDATE_GOLDEN=1 cargo test -p nvbind-cdi --test golden`
//! rewrites the files under testdata/golden; review the diff before committing.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use nvbind_cdi::apply::{apply, HostDevices, HostNode, NodeKind};
use nvbind_cdi::registry::{Registry, Trust};
use nvbind_cdi::QualifiedName;
use oci_spec::runtime::Spec as OciSpec;

struct TableHost(HashMap<PathBuf, (i64, i64)>);

impl HostDevices for TableHost {
    fn stat(&self, path: &Path) -> io::Result<HostNode> {
        let (major, minor) = self
            .0
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(HostNode {
            kind: NodeKind::Char,
            major,
            minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        })
    }
}

fn host() -> TableHost {
    let nodes = [
        ("/dev/nvidia0", 195, 0),
        ("/dev/nvidia1", 195, 1),
        ("/dev/nvidiactl", 195, 255),
        ("/dev/nvidia-modeset", 195, 254),
        ("/dev/nvidia-uvm", 508, 0),
        ("/dev/nvidia-uvm-tools", 508, 1),
        ("/dev/dri/card1", 226, 1),
        ("/dev/dri/renderD128", 226, 128),
        ("/run/nvidia/driver/dev/nvidia0", 195, 0),
        ("/run/nvidia/driver/dev/nvidiactl", 195, 255),
        ("/run/nvidia/driver/dev/nvidia-caps/nvidia-cap21", 237, 21),
    ];
    TableHost(
        nodes
            .iter()
            .map(|(p, ma, mi)| (PathBuf::from(p), (*ma, *mi)))
            .collect(),
    )
}

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

fn base_config() -> OciSpec {
    let text = std::fs::read_to_string(testdata("golden/base-config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Rebuilds every JSON object with sorted keys, so the output does not depend on hash order.
fn canonical(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(canonical).collect())
        }
        other => other,
    }
}

fn check_golden(name: &str, devices: &[&str], spec: OciSpec) {
    let registry = Registry::with_trust(vec![testdata("specs")], Trust::Any);
    assert!(registry.errors().is_empty(), "{:?}", registry.errors());
    let names: Vec<QualifiedName> = devices.iter().map(|d| d.parse().unwrap()).collect();
    let edits = registry.resolve(&names).unwrap();
    let out = apply(&edits, &spec, &host()).unwrap();
    let text = serde_json::to_string_pretty(&canonical(serde_json::to_value(&out).unwrap()))
        .unwrap()
        + "\n";
    let path = testdata(&format!("golden/{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if want != text {
        let first = want
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(text.lines().count()));
        panic!(
            "{} differs from the golden file at line {}:\n  want: {:?}\n  got:  {:?}",
            path.display(),
            first + 1,
            want.lines().nth(first),
            text.lines().nth(first)
        );
    }
}

#[test]
fn nvidia_gpu0() {
    check_golden("nvidia-gpu0", &["nvidia.com/gpu=0"], base_config());
}

#[test]
fn nvidia_two_gpus_by_uuid_and_index() {
    check_golden(
        "nvidia-uuid-and-1",
        &[
            "nvidia.com/gpu=GPU-4b6a5f0e-6a1c-4d1b-9f5e-2a3c9d1e7b01",
            "nvidia.com/gpu=1",
        ],
        base_config(),
    );
}

#[test]
fn nvidia_all_in_a_user_namespace() {
    let mut spec = serde_json::to_value(base_config()).unwrap();
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "user"}));
    spec["linux"]["uidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    spec["linux"]["gidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    check_golden(
        "nvidia-all-userns",
        &["nvidia.com/gpu=all"],
        serde_json::from_value(spec).unwrap(),
    );
}

#[test]
fn nvidia_mig_with_driver_root() {
    check_golden("nvidia-mig", &["nvidia.com/mig.gpu=0:0"], base_config());
}

#[test]
fn amd_all() {
    check_golden("amd-all", &["amd.com/gpu=all"], base_config());
}

#[test]
fn amd_and_nvidia_together() {
    check_golden(
        "amd0-nvidia0",
        &["amd.com/gpu=0", "nvidia.com/gpu=0"],
        base_config(),
    );
}

#[test]
fn rdma_net_device_v1_1() {
    check_golden("example-net", &["example.com/net=rdma0"], base_config());
}
