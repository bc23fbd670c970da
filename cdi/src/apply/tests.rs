use std::collections::HashMap;

use super::*;
use crate::spec::NetDevice;

/// A host whose device nodes are a table.
#[derive(Default)]
struct FakeHost(HashMap<PathBuf, HostNode>);

impl FakeHost {
    fn with(mut self, path: &str, kind: NodeKind, major: i64, minor: i64) -> Self {
        self.0.insert(
            PathBuf::from(path),
            HostNode {
                kind,
                major,
                minor,
                mode: 0o666,
                uid: 0,
                gid: 0,
            },
        );
        self
    }
}

impl HostDevices for FakeHost {
    fn stat(&self, path: &Path) -> io::Result<HostNode> {
        self.0
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

fn base_spec() -> OciSpec {
    serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/bin:/bin", "TERM=xterm"],
            "cwd": "/"
        },
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs"}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}],
            "resources": {"devices": [{"allow": false, "access": "rwm"}]}
        }
    }))
    .unwrap()
}

fn node(path: &str) -> DeviceNode {
    DeviceNode {
        path: path.into(),
        ..Default::default()
    }
}

fn host() -> FakeHost {
    FakeHost::default()
        .with("/dev/nvidia0", NodeKind::Char, 195, 0)
        .with("/dev/nvidiactl", NodeKind::Char, 195, 255)
        .with("/dev/sda", NodeKind::Block, 8, 0)
        .with("/dev/fifo", NodeKind::Fifo, 0, 0)
        .with("/dev/notadev", NodeKind::Other, 0, 0)
        .with("/host/dev/card1", NodeKind::Char, 226, 1)
}

#[test]
fn env_replaces_same_key_and_appends_new() {
    let edits = ContainerEdits {
        env: vec![
            "TERM=dumb".into(),
            "NVIDIA_VISIBLE_DEVICES=void".into(),
            "X=1".into(),
            "X=2".into(),
        ],
        ..Default::default()
    };
    let out = apply(&edits, &base_spec(), &host()).unwrap();
    assert_eq!(
        out.process().as_ref().unwrap().env().as_ref().unwrap(),
        &[
            "PATH=/usr/bin:/bin",
            "TERM=dumb",
            "NVIDIA_VISIBLE_DEVICES=void",
            "X=2"
        ]
    );
}

#[test]
fn device_nodes_are_completed_from_the_host() {
    let edits = ContainerEdits {
        device_nodes: vec![
            node("/dev/nvidia0"),
            node("/dev/sda"),
            DeviceNode {
                path: "/dev/dri/card0".into(),
                host_path: Some("/host/dev/card1".into()),
                permissions: Some("rw".into()),
                file_mode: Some(0o660),
                ..Default::default()
            },
            node("/dev/fifo"),
            // Fully described: no stat needed (the fake host has no such node).
            DeviceNode {
                path: "/dev/virtual".into(),
                node_type: Some("c".into()),
                major: Some(10),
                minor: Some(200),
                permissions: Some(NO_PERMISSIONS.into()),
                uid: Some(7),
                gid: Some(8),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let out = apply(&edits, &base_spec(), &host()).unwrap();
    let linux = out.linux().as_ref().unwrap();
    let devs = linux.devices().as_ref().unwrap();
    let summary: Vec<_> = devs
        .iter()
        .map(|d| {
            (
                d.path().to_str().unwrap(),
                d.typ().as_str().to_string(),
                d.major(),
                d.minor(),
                d.file_mode(),
                d.uid(),
                d.gid(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("/dev/nvidia0", "c".to_string(), 195, 0, None, None, None),
            ("/dev/sda", "b".into(), 8, 0, None, None, None),
            (
                "/dev/dri/card0",
                "c".into(),
                226,
                1,
                Some(0o660),
                None,
                None
            ),
            ("/dev/fifo", "p".into(), 0, 0, None, None, None),
            ("/dev/virtual", "c".into(), 10, 200, None, Some(7), Some(8)),
        ]
    );
    let rules: Vec<_> = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| {
            let typ = r.typ().map(|t| t.as_str().to_string());
            (r.allow(), typ, r.major(), r.minor(), r.access().clone())
        })
        .collect();
    assert_eq!(
        rules,
        [
            (false, None, None, None, Some("rwm".to_string())),
            (
                true,
                Some("c".into()),
                Some(195),
                Some(0),
                Some("rwm".into())
            ),
            (true, Some("b".into()), Some(8), Some(0), Some("rwm".into())),
            (
                true,
                Some("c".into()),
                Some(226),
                Some(1),
                Some("rw".into())
            ),
            (
                true,
                Some("c".into()),
                Some(10),
                Some(200),
                Some(String::new())
            ),
        ]
    );
}

#[test]
fn device_nodes_take_the_process_user_and_replace_same_path() {
    let mut spec = base_spec();
    spec.process_mut()
        .as_mut()
        .unwrap()
        .user_mut()
        .set_uid(1000);
    spec.process_mut().as_mut().unwrap().user_mut().set_gid(100);
    let first = apply(
        &ContainerEdits {
            device_nodes: vec![node("/dev/nvidia0")],
            ..Default::default()
        },
        &spec,
        &host(),
    )
    .unwrap();
    let second = apply(
        &ContainerEdits {
            device_nodes: vec![DeviceNode {
                path: "/dev/nvidia0".into(),
                host_path: Some("/dev/nvidiactl".into()),
                ..Default::default()
            }],
            ..Default::default()
        },
        &first,
        &host(),
    )
    .unwrap();
    let devs = second.linux().as_ref().unwrap().devices().as_ref().unwrap();
    assert_eq!(devs.len(), 1);
    assert_eq!(
        (devs[0].minor(), devs[0].uid(), devs[0].gid()),
        (255, Some(1000), Some(100))
    );
}

#[test]
fn missing_or_wrong_host_nodes_fail_and_leave_the_spec_untouched() {
    let spec = base_spec();
    let before = serde_json::to_value(&spec).unwrap();
    let cases = [
        (node("/dev/nvidia7"), "/dev/nvidia7", "failed to stat"),
        (
            DeviceNode {
                path: "/dev/x".into(),
                host_path: Some("/dev/absent".into()),
                ..Default::default()
            },
            "/dev/absent",
            "failed to stat",
        ),
        (node("/dev/notadev"), "/dev/notadev", "not a device node"),
        (
            DeviceNode {
                path: "/dev/sda".into(),
                node_type: Some("c".into()),
                ..Default::default()
            },
            "/dev/sda",
            "declared type",
        ),
        // fuzz/cdi_spec: these passed validation (as in the reference) and failed only at
        // create's bundle check, which could not say which CDI node it was.
        (node("dev/kfd"), "dev/kfd", "must be absolute"),
        (node("/dev/../etc/x"), "/dev/../etc/x", "no '..'"),
        (node("/"), "\"/\"", "name a file"),
    ];
    for (bad, named, what) in cases {
        let edits = ContainerEdits {
            env: vec!["A=B".into()],
            device_nodes: vec![node("/dev/nvidia0"), bad],
            mounts: vec![Mount {
                host_path: "/a".into(),
                container_path: "/a".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = apply(&edits, &spec, &host()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(named) && msg.contains(what), "{msg}");
        assert_eq!(serde_json::to_value(&spec).unwrap(), before);
    }
}

#[test]
fn mounts_replace_same_destination_and_sort_by_depth() {
    let m = |h: &str, c: &str| Mount {
        host_path: h.into(),
        container_path: c.into(),
        options: vec!["ro".into(), "nosuid".into(), "nodev".into(), "bind".into()],
        ..Default::default()
    };
    let edits = ContainerEdits {
        mounts: vec![
            m(
                "/usr/lib/x86_64-linux-gnu/libcuda.so.535",
                "/usr/lib/x86_64-linux-gnu/libcuda.so.535",
            ),
            m("/host/sys", "/sys"),
            m("/usr/bin/nvidia-smi", "/usr/bin/nvidia-smi"),
            m(
                "/run/nvidia-persistenced/socket",
                "/run/nvidia-persistenced/socket",
            ),
        ],
        ..Default::default()
    };
    let out = apply(&edits, &base_spec(), &host()).unwrap();
    let mounts = out.mounts().as_ref().unwrap();
    let dests: Vec<_> = mounts
        .iter()
        .map(|m| m.destination().to_str().unwrap())
        .collect();
    assert_eq!(
        dests,
        [
            "/proc",
            "/dev",
            "/sys",
            "/dev/pts",
            "/usr/bin/nvidia-smi",
            "/run/nvidia-persistenced/socket",
            "/usr/lib/x86_64-linux-gnu/libcuda.so.535",
        ]
    );
    let sys = mounts
        .iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert_eq!(sys.source().as_deref(), Some(Path::new("/host/sys")));
    assert_eq!(sys.typ(), &None);
    assert_eq!(
        sys.options().as_ref().unwrap(),
        &["ro", "nosuid", "nodev", "bind"]
    );
}

#[test]
fn mount_depth_matches_go_clean() {
    for (p, d) in [
        ("/", 1),
        ("/a", 1),
        ("/a/b", 2),
        ("/a//b/", 2),
        ("/a/../b/c", 2),
        ("a", 0),
        ("a/b", 1),
        ("", 0),
        ("/..", 1),
    ] {
        assert_eq!(mount_depth(Path::new(p)), d, "{p}");
    }
}

#[test]
fn user_namespace_adds_idmap_to_bind_mounts() {
    let mut spec = base_spec();
    let mut ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    let user: oci_spec::runtime::LinuxNamespace =
        serde_json::from_str(r#"{"type":"user"}"#).unwrap();
    ns.push(user);
    spec.linux_mut().as_mut().unwrap().set_namespaces(Some(ns));
    let edits = ContainerEdits {
        mounts: vec![
            Mount {
                host_path: "/lib/a.so".into(),
                container_path: "/lib/a.so".into(),
                options: vec!["ro".into(), "bind".into()],
                ..Default::default()
            },
            Mount {
                host_path: "/lib/b".into(),
                container_path: "/lib/b".into(),
                mount_type: Some("bind".into()),
                options: vec!["ridmap".into()],
            },
            Mount {
                host_path: "tmpfs".into(),
                container_path: "/scratch".into(),
                mount_type: Some("tmpfs".into()),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let out = apply(&edits, &spec, &host()).unwrap();
    let opts = |dest: &str| {
        out.mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new(dest))
            .unwrap()
            .options()
            .clone()
    };
    assert_eq!(opts("/lib/a.so").unwrap(), ["ro", "bind", "idmap"]);
    assert_eq!(opts("/lib/b").unwrap(), ["ridmap"]);
    assert_eq!(opts("/scratch"), None);
    // Without a user namespace nothing is added.
    let out = apply(&edits, &base_spec(), &host()).unwrap();
    let a = out
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/lib/a.so"))
        .unwrap();
    assert_eq!(a.options().as_ref().unwrap(), &["ro", "bind"]);
}

#[test]
fn hooks_go_to_their_stage() {
    let h = |name: &str, path: &str| Hook {
        hook_name: name.into(),
        path: path.into(),
        args: vec![path.into(), "x".into()],
        env: vec![],
        timeout: Some(3),
    };
    let edits = ContainerEdits {
        hooks: vec![
            h("createContainer", "/usr/bin/nvidia-ctk"),
            h("createContainer", "/usr/bin/second"),
            h("prestart", "/p"),
            h("createRuntime", "/cr"),
            h("startContainer", "/sc"),
            h("poststart", "/ps"),
            h("poststop", "/pst"),
        ],
        ..Default::default()
    };
    let out = apply(&edits, &base_spec(), &host()).unwrap();
    let hooks = serde_json::to_value(out.hooks().as_ref().unwrap()).unwrap();
    let paths = |stage: &str| -> Vec<String> {
        hooks[stage]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        paths("createContainer"),
        ["/usr/bin/nvidia-ctk", "/usr/bin/second"]
    );
    assert_eq!(paths("prestart"), ["/p"]);
    assert_eq!(paths("createRuntime"), ["/cr"]);
    assert_eq!(paths("startContainer"), ["/sc"]);
    assert_eq!(paths("poststart"), ["/ps"]);
    assert_eq!(paths("poststop"), ["/pst"]);
    assert_eq!(hooks["createContainer"][0]["timeout"], 3);
    assert_eq!(hooks["createContainer"][0]["args"][1], "x");
    assert!(hooks["createContainer"][0].get("env").is_none());

    let bad = ContainerEdits {
        hooks: vec![h("preStart", "/p")],
        ..Default::default()
    };
    assert!(matches!(
        apply(&bad, &base_spec(), &host()),
        Err(ApplyError::UnknownHookName { .. })
    ));
}

#[test]
fn gids_rdt_and_net_devices() {
    let mut spec = base_spec();
    spec.process_mut()
        .as_mut()
        .unwrap()
        .user_mut()
        .set_additional_gids(Some(vec![44]));
    let edits = ContainerEdits {
        additional_gids: vec![0, 44, 45, 45],
        intel_rdt: Some(IntelRdt {
            clos_id: Some("gpu".into()),
            schemata: Some(vec!["L3:0=f".into()]),
            enable_monitoring: Some(true),
            ..Default::default()
        }),
        net_devices: vec![NetDevice {
            host_interface_name: "ib0".into(),
            name: "net1".into(),
        }],
        ..Default::default()
    };
    let out = apply(&edits, &spec, &host()).unwrap();
    assert_eq!(
        out.process()
            .as_ref()
            .unwrap()
            .user()
            .additional_gids()
            .as_ref()
            .unwrap(),
        &[44, 45]
    );
    let linux = serde_json::to_value(out.linux().as_ref().unwrap()).unwrap();
    assert_eq!(linux["intelRdt"]["closID"], "gpu");
    assert_eq!(linux["intelRdt"]["schemata"][0], "L3:0=f");
    assert_eq!(linux["intelRdt"]["enableMonitoring"], true);
    assert_eq!(linux["netDevices"]["ib0"]["name"], "net1");
}

#[test]
fn sections_are_created_when_missing() {
    let spec: OciSpec = serde_json::from_value(
        serde_json::json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"}}),
    )
    .unwrap();
    let edits = ContainerEdits {
        env: vec!["A=1".into()],
        device_nodes: vec![node("/dev/nvidia0")],
        hooks: vec![Hook {
            hook_name: "poststop".into(),
            path: "/bin/true".into(),
            ..Default::default()
        }],
        mounts: vec![Mount {
            host_path: "/a".into(),
            container_path: "/a".into(),
            ..Default::default()
        }],
        additional_gids: vec![5],
        ..Default::default()
    };
    let out = serde_json::to_value(apply(&edits, &spec, &host()).unwrap()).unwrap();
    assert_eq!(out["process"]["env"][0], "A=1");
    assert_eq!(out["process"]["user"]["additionalGids"][0], 5);
    assert_eq!(out["linux"]["devices"][0]["path"], "/dev/nvidia0");
    assert_eq!(out["linux"]["resources"]["devices"][0]["major"], 195);
    assert!(out["linux"].get("namespaces").is_none(), "{out}");
    assert_eq!(out["hooks"]["poststop"][0]["path"], "/bin/true");
    assert_eq!(out["mounts"][0]["destination"], "/a");
}

#[test]
fn empty_edits_change_nothing() {
    let spec = base_spec();
    let out = apply(&ContainerEdits::default(), &spec, &host()).unwrap();
    assert_eq!(
        serde_json::to_value(out).unwrap(),
        serde_json::to_value(spec).unwrap()
    );
}

#[test]
fn repeated_paths_in_one_edit_keep_the_last_like_remove_then_append() {
    let m = |src: &str, dst: &str| Mount {
        host_path: src.into(),
        container_path: dst.into(),
        ..Default::default()
    };
    let edits = ContainerEdits {
        device_nodes: vec![
            node("/dev/nvidia0"),
            node("/dev/nvidiactl"),
            DeviceNode {
                path: "/dev/nvidia0".into(),
                host_path: Some("/dev/sda".into()),
                ..Default::default()
            },
        ],
        mounts: vec![m("/one", "/x"), m("/y", "/y"), m("/two", "/x")],
        ..Default::default()
    };
    let out = apply(&edits, &base_spec(), &host()).unwrap();
    let devs: Vec<_> = out
        .linux()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap()
        .iter()
        .map(|d| (d.path().to_str().unwrap().to_string(), d.major()))
        .collect();
    assert_eq!(
        devs,
        [
            ("/dev/nvidiactl".to_string(), 195),
            ("/dev/nvidia0".to_string(), 8)
        ]
    );
    let mounts: Vec<_> = out
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m.destination().to_str().unwrap().to_string(),
                m.source().clone().unwrap(),
            )
        })
        .filter(|(d, _)| d == "/x" || d == "/y")
        .collect();
    assert_eq!(
        mounts,
        [
            ("/y".to_string(), PathBuf::from("/y")),
            ("/x".to_string(), PathBuf::from("/two"))
        ]
    );
    // Every node still gets its cgroup rule, as in the reference.
    let rules = out
        .linux()
        .as_ref()
        .unwrap()
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap()
        .len();
    assert_eq!(rules, 1 + 3);
}

/// Nodes remembered from the live check are answered from memory; any other path still goes
/// to the host, and a remembered answer is what the host said then (no second lstat).
#[test]
fn remembered_nodes_answer_from_memory() {
    let then = FakeHost::default().with("/dev/nvidia0", NodeKind::Char, 195, 0);
    let now = FakeHost::default()
        .with("/dev/nvidia0", NodeKind::Char, 195, 7)
        .with("/dev/nvidiactl", NodeKind::Char, 195, 255);
    let nodes: HostNodes = then
        .0
        .iter()
        .map(|(p, n)| (p.clone().into_os_string(), *n))
        .collect();
    let remembered = Remembered {
        nodes: &nodes,
        host: &now,
    };
    assert_eq!(remembered.stat(Path::new("/dev/nvidia0")).unwrap().minor, 0);
    assert_eq!(
        remembered.stat(Path::new("/dev/nvidiactl")).unwrap().minor,
        255
    );
    assert_eq!(
        remembered
            .stat(Path::new("/dev/nvidia1"))
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotFound
    );
}
