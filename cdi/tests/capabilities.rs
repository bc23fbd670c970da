//! NVIDIA_DRIVER_CAPABILITIES on the 8 x H100 fake host with a file for every capability:
//! one golden per value (cdi/testdata/golden-capabilities/<value>.txt: the nodes, mounts,
//! links and linker-cache folders `NVIDIA_VISIBLE_DEVICES=0` gets), from the spec generated
//! at create time and from the spec file `nvbind cdi generate` writes; CDI names are not
//! narrowed. UPDATE_GOLDEN=1 rewrites the goldens.

mod generate_common;

use std::fs;
use std::path::Path;

use generate_common::*;
use nvbind_cdi::discover::nvidia::{NvidiaDiscoverer, NvmlSource};
use nvbind_cdi::discover::Discover;
use nvbind_cdi::generate::{self, NameStrategy};
use nvbind_cdi::registry::{Registry, Trust};
use nvbind_cdi::resolver::{Resolver, ResolverConfig};
use nvbind_cdi::spec::{ContainerEdits, Format};
use nvbind_cdi::QualifiedName;
use oci_spec::runtime::Spec as OciSpec;

fn config(env: &[String], annotation: Option<&str>) -> OciSpec {
    let mut spec = OciSpec::default();
    let mut process = spec.process().clone().unwrap();
    let mut e = process.env().clone().unwrap_or_default();
    e.extend(env.iter().cloned());
    process.set_env(Some(e));
    spec.set_process(Some(process));
    if let Some(a) = annotation {
        spec.set_annotations(Some([("cdi.k8s.io/t".to_string(), a.to_string())].into()));
    }
    spec
}

fn resolver(spec_dir: &Path, host: &FakeHost) -> Resolver {
    let mut c = ResolverConfig::new(vec![spec_dir.to_path_buf()], Trust::Any);
    c.roots = host.roots();
    c.hook_path = "/usr/bin/nvbind-hook".into();
    Resolver::new(c)
}

/// The edits as sorted lines, host paths left out.
fn lines(e: &ContainerEdits) -> String {
    let mut out: Vec<String> = Vec::new();
    out.extend(e.device_nodes.iter().map(|n| format!("node {}", n.path)));
    out.extend(
        e.mounts
            .iter()
            .map(|m| format!("mount {}", m.container_path)),
    );
    for h in &e.hooks {
        let mut it = h.args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--link" => out.push(format!("link {}", it.next().unwrap())),
                "--folder" => out.push(format!("ldcache {}", it.next().unwrap())),
                _ => {}
            }
        }
    }
    out.extend(e.env.iter().map(|v| format!("env {v}")));
    out.sort();
    out.join("\n") + "\n"
}

fn host() -> FakeHost {
    let h = FakeHost::h100x8();
    h.nvidia_userspace_all_capabilities();
    h
}

const VALUES: [(&str, Option<&str>); 11] = [
    ("default", None),
    ("compute", Some("compute")),
    ("utility", Some("utility")),
    ("video", Some("video")),
    ("graphics", Some("graphics")),
    ("display", Some("display")),
    ("ngx", Some("ngx")),
    ("compat32", Some("compat32")),
    ("compute-compat32", Some("compute,compat32")),
    ("all", Some("all")),
    ("unknown", Some("frobnicate")),
];

#[test]
fn each_capability_selects_its_files_as_the_toolkit_defines_them() {
    let host = host();
    let empty = host.path("/etc/cdi-empty");
    fs::create_dir_all(&empty).unwrap();
    let r = resolver(&empty, &host);
    for (name, value) in VALUES {
        let mut env = vec!["NVIDIA_VISIBLE_DEVICES=0".to_string()];
        if let Some(v) = value {
            env.push(format!("NVIDIA_DRIVER_CAPABILITIES={v}"));
        }
        let res = r.resolve(&config(&env, None)).unwrap().unwrap();
        assert!(res.capabilities_applied);
        assert_golden_in(
            "golden-capabilities",
            &format!("{name}.txt"),
            &lines(&res.edits),
        );
    }
}

#[test]
fn a_spec_file_is_narrowed_the_same_way_without_its_32bit_libraries() {
    let host = host();
    let inv = NvidiaDiscoverer {
        nvml: NvmlSource::Disabled,
    }
    .discover(&host.roots())
    .unwrap();
    let spec = generate::spec_for(&inv, &options(NameStrategy::Index), &mut Vec::new()).unwrap();
    let dir = host.path("/etc/cdi");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nvidia.yaml");
    fs::write(&path, spec.to_string(Format::Yaml, &path).unwrap()).unwrap();
    let empty = host.path("/etc/cdi-empty");
    fs::create_dir_all(&empty).unwrap();
    for (_, value) in VALUES {
        let mut env = vec!["NVIDIA_VISIBLE_DEVICES=0".to_string()];
        if let Some(v) = value {
            env.push(format!("NVIDIA_DRIVER_CAPABILITIES={v}"));
        }
        let from_file = resolver(&dir, &host)
            .resolve(&config(&env, None))
            .unwrap()
            .unwrap();
        let jit = resolver(&empty, &host)
            .resolve(&config(&env, None))
            .unwrap()
            .unwrap();
        assert!(from_file.generated.is_empty() && !jit.generated.is_empty());
        let no32 = |e: &ContainerEdits| {
            lines(e)
                .lines()
                .filter(|l| !l.contains(LIBDIR32))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(no32(&from_file.edits), no32(&jit.edits), "{value:?}");
    }
}

#[test]
fn cdi_names_get_what_their_spec_says() {
    let host = host();
    let inv = NvidiaDiscoverer {
        nvml: NvmlSource::Disabled,
    }
    .discover(&host.roots())
    .unwrap();
    let spec = generate::spec_for(&inv, &options(NameStrategy::Index), &mut Vec::new()).unwrap();
    let dir = host.path("/etc/cdi");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nvidia.yaml");
    fs::write(&path, spec.to_string(Format::Yaml, &path).unwrap()).unwrap();
    // As the reference resolves the name: every file of the spec, whatever the env says.
    let registry = Registry::with_trust(vec![dir.clone()], Trust::Any);
    let name: QualifiedName = "nvidia.com/gpu=0".parse().unwrap();
    let whole = registry.resolve(&[name]).unwrap();
    let env = ["NVIDIA_DRIVER_CAPABILITIES=utility".to_string()];
    let res = resolver(&dir, &host)
        .resolve(&config(&env, Some("nvidia.com/gpu=0")))
        .unwrap()
        .unwrap();
    assert!(!res.capabilities_applied);
    assert_eq!(res.edits, whole);
    // A name from both places is a CDI request: not narrowed either.
    let env = [
        "NVIDIA_DRIVER_CAPABILITIES=utility".to_string(),
        "NVIDIA_VISIBLE_DEVICES=1".to_string(),
    ];
    let res = resolver(&dir, &host)
        .resolve(&config(&env, Some("nvidia.com/gpu=0")))
        .unwrap()
        .unwrap();
    assert!(!res.capabilities_applied);
    assert!(res
        .edits
        .mounts
        .iter()
        .any(|m| m.container_path.contains("libGLX_nvidia")));
}
