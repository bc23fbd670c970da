use std::path::{Path, PathBuf};

use super::*;
use crate::apply::RealHost;
use crate::registry::Trust;

fn oci(env: &[&str], annotations: &[(&str, &str)]) -> OciSpec {
    let ann: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh"], "env": env, "cwd": "/"},
        "root": {"path": "rootfs"},
        "annotations": ann,
    }))
    .unwrap()
}

fn strs(v: &[QualifiedName]) -> Vec<String> {
    v.iter().map(|q| q.to_string()).collect()
}

#[test]
fn visible_devices_values() {
    let ok = |v: &str| parse_nvidia_visible_devices(v).unwrap();
    assert_eq!(ok("all"), ["all"]);
    assert_eq!(ok("0,1"), ["0", "1"]);
    assert_eq!(ok(" 0 , 1 ,"), ["0", "1"]);
    assert_eq!(ok("0:1"), ["0:1"]);
    assert_eq!(
        ok("GPU-4b6a5f0e-6a1c-4d1b-9f5e-2a3c9d1e7b01,MIG-2f7e3b8c-1d4a-5e6f-9a0b-c1d2e3f4a5b6"),
        [
            "GPU-4b6a5f0e-6a1c-4d1b-9f5e-2a3c9d1e7b01",
            "MIG-2f7e3b8c-1d4a-5e6f-9a0b-c1d2e3f4a5b6"
        ]
    );
    assert_eq!(ok("nvidia.com/gpu=0"), ["nvidia.com/gpu=0"]);
    for nothing in ["", "  ", "none", "void", " void "] {
        assert!(ok(nothing).is_empty(), "{nothing:?}");
    }
    for bad in [
        "0 1",
        "/dev/nvidia0",
        "GPU-x$",
        "-1",
        "nvidia.com/gpu",
        "a=b",
    ] {
        let err = parse_nvidia_visible_devices(bad).unwrap_err();
        assert!(
            matches!(err, RequestError::VisibleDevice { .. }),
            "{bad}: {err:?}"
        );
        assert!(err.to_string().contains(NVIDIA_VISIBLE_DEVICES), "{err}");
    }
}

#[test]
fn requests_from_annotations_and_env() {
    let spec = oci(
        &[
            "PATH=/bin",
            "NVIDIA_VISIBLE_DEVICES=0,GPU-4b6a5f0e-6a1c-4d1b-9f5e-2a3c9d1e7b01",
        ],
        &[
            ("cdi.k8s.io/z-plugin", "amd.com/gpu=1"),
            ("cdi.k8s.io/a-plugin", "nvidia.com/gpu=0,amd.com/gpu=all"),
            ("other.io/ignored", "not a name"),
        ],
    );
    assert_eq!(
        strs(&device_requests(&spec).unwrap()),
        [
            "nvidia.com/gpu=0",
            "amd.com/gpu=all",
            "amd.com/gpu=1",
            "nvidia.com/gpu=GPU-4b6a5f0e-6a1c-4d1b-9f5e-2a3c9d1e7b01",
        ]
    );
}

#[test]
fn env_forms() {
    let req = |env: &[&str]| strs(&device_requests(&oci(env, &[])).unwrap());
    assert!(req(&[]).is_empty());
    assert!(req(&["NVIDIA_VISIBLE_DEVICES="]).is_empty());
    assert!(req(&["NVIDIA_VISIBLE_DEVICES=void"]).is_empty());
    assert!(req(&["NVIDIA_VISIBLE_DEVICES=none"]).is_empty());
    assert!(req(&[
        "NVIDIA_VISIBLE_DEVICES_EXTRA=all",
        "XNVIDIA_VISIBLE_DEVICES=all"
    ])
    .is_empty());
    assert_eq!(req(&["NVIDIA_VISIBLE_DEVICES=all"]), ["nvidia.com/gpu=all"]);
    assert_eq!(
        req(&["NVIDIA_VISIBLE_DEVICES=1,0,1"]),
        ["nvidia.com/gpu=1", "nvidia.com/gpu=0"]
    );
    // The last definition wins, as with a map built from the list.
    assert_eq!(
        req(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_VISIBLE_DEVICES=1"]),
        ["nvidia.com/gpu=1"]
    );
    assert_eq!(
        req(&["NVIDIA_VISIBLE_DEVICES=amd.com/gpu=0"]),
        ["amd.com/gpu=0"]
    );
    let no_process: OciSpec =
        serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2"})).unwrap();
    assert!(device_requests(&no_process).unwrap().is_empty());
}

#[test]
fn bad_annotations_are_rejected_naming_the_key() {
    for value in [
        "nvidia.com/gpu=0, nvidia.com/gpu=1",
        "gpu0",
        "",
        "nvidia.com/gpu=0,",
    ] {
        let spec = oci(&[], &[("cdi.k8s.io/plugin", value)]);
        let err = device_requests(&spec).unwrap_err();
        assert!(
            matches!(err, RequestError::Annotation { .. }),
            "{value:?}: {err:?}"
        );
        assert!(err.to_string().contains("cdi.k8s.io/plugin"), "{err}");
    }
    let spec = oci(&["NVIDIA_VISIBLE_DEVICES=0 1"], &[]);
    assert!(matches!(
        device_requests(&spec),
        Err(RequestError::VisibleDevice { .. })
    ));
}

#[test]
fn driver_capabilities() {
    let caps = |v: Option<&str>| {
        DriverCapabilities::parse(v)
            .0
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(caps(None), ["compute", "utility"]);
    assert_eq!(caps(Some("")), ["compute", "utility"]);
    assert_eq!(caps(Some("all")).len(), DriverCapabilities::ALL.len());
    assert_eq!(
        caps(Some("graphics, video,graphics")),
        ["graphics", "video"]
    );
    assert_eq!(caps(Some("compute,future")), ["compute", "future"]);
    let spec = oci(&["NVIDIA_DRIVER_CAPABILITIES=compute,video"], &[]);
    let c = DriverCapabilities::from_spec(&spec);
    assert!(c.contains("video") && !c.contains("utility"));
    assert_eq!(DriverCapabilities::from_spec(&oci(&[], &[])).0.len(), 2);
}

fn registry(dir: &Path) -> Registry {
    let yaml = "cdiVersion: 0.5.0\nkind: vendor.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/vgpu0\n      type: c\n      major: 195\n      minor: 0\ncontainerEdits:\n  env: [VENDOR=1]\n";
    std::fs::write(dir.join("vendor.yaml"), yaml).unwrap();
    Registry::with_trust(vec![PathBuf::from(dir)], Trust::Any)
}

#[test]
fn inject_marks_the_spec_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(tmp.path());

    assert!(inject(&oci(&[], &[]), &reg, &RealHost).unwrap().is_none());

    let spec = oci(&["A=1"], &[("cdi.k8s.io/x", "vendor.com/gpu=0")]);
    let out = inject(&spec, &reg, &RealHost).unwrap().expect("injected");
    let ann = out.annotations().as_ref().unwrap();
    assert_eq!(ann[INJECTED_ANNOTATION], "vendor.com/gpu=0");
    assert_eq!(
        out.process().as_ref().unwrap().env().as_ref().unwrap(),
        &["A=1", "VENDOR=1"]
    );
    assert_eq!(
        out.linux()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap()
            .len(),
        1
    );
    // Already injected: nothing more to do.
    assert!(inject(&out, &reg, &RealHost).unwrap().is_none());
}

#[test]
fn inject_failures_leave_the_spec_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(tmp.path());
    let spec = oci(
        &["NVIDIA_VISIBLE_DEVICES=3"],
        &[("cdi.k8s.io/x", "vendor.com/gpu=0")],
    );
    let before = serde_json::to_value(&spec).unwrap();
    let err = inject(&spec, &reg, &RealHost).unwrap_err();
    assert!(matches!(err, InjectError::Resolve(_)), "{err:?}");
    let line = err.to_string();
    assert!(
        line.contains("nvidia.com/gpu=3") && line.contains("vendor.com/gpu"),
        "{line}"
    );
    assert!(!line.contains("vendor.com/gpu=0"), "{line}");
    assert_eq!(serde_json::to_value(&spec).unwrap(), before);

    let bad = oci(&[], &[("cdi.k8s.io/x", "vendor.com/gpu")]);
    assert!(matches!(
        inject(&bad, &reg, &RealHost),
        Err(InjectError::Request(_))
    ));

    // A device node that the host lacks.
    std::fs::write(
        tmp.path().join("missing.yaml"),
        "cdiVersion: 0.5.0\nkind: vendor.com/missing\ndevices:\n- name: d\n  containerEdits:\n    deviceNodes:\n    - path: /dev/definitely-not-here-nvbind\n",
    )
    .unwrap();
    let reg = Registry::with_trust(vec![tmp.path().into()], Trust::Any);
    let spec = oci(&[], &[("cdi.k8s.io/x", "vendor.com/missing=d")]);
    let err = inject(&spec, &reg, &RealHost).unwrap_err();
    assert!(matches!(err, InjectError::Apply(_)));
    assert!(
        err.to_string().contains("/dev/definitely-not-here-nvbind"),
        "{err}"
    );
}
