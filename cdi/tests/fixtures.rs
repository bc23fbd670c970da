//! Every fixture spec loads and validates; every bad fixture fails with an error naming the
//! file and the field; and the good ones load through the `container-device-interface` crate
//! too (compatibility with the other Rust implementation of the reference).

use std::path::{Path, PathBuf};

use nvbind_cdi::spec::{Format, Spec};
use nvbind_cdi::validate::validate_spec;
use nvbind_cdi::version::{minimum_required_version, Version};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/specs")
        .join(rel)
}

const GOOD: [(&str, Version); 4] = [
    ("nvidia.yaml", Version::V0_5_0),
    ("nvidia-mig.yaml", Version::V0_6_0),
    ("amd.yaml", Version::V0_5_0),
    ("example-net.json", Version::V1_1_0),
];

#[test]
fn good_fixtures_validate_at_their_minimum_version() {
    for (file, version) in GOOD {
        let path = testdata(file);
        let spec = Spec::from_path(&path).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(validate_spec(&spec, &path).unwrap(), version, "{file}");
        // Generated specs declare the lowest version that can express them.
        assert_eq!(minimum_required_version(&spec), version, "{file}");
    }
}

#[test]
fn bad_fixtures_fail_naming_file_and_field() {
    let cases = [
        ("malformed.yaml", "", "invalid YAML"),
        ("malformed.json", "", "invalid JSON"),
        ("unknown-field.yaml", "", "unknown field `hostpath`"),
        ("low-version.yaml", "cdiVersion", "at least v0.7.0"),
        (
            "unknown-version.yaml",
            "cdiVersion",
            "invalid version \"2.0.0\"",
        ),
        (
            "relative-hook.yaml",
            "devices[0].containerEdits.hooks[0].path",
            "not absolute",
        ),
        (
            "bad-device-name.yaml",
            "devices[0].name",
            "invalid character ' '",
        ),
        ("bad-kind.yaml", "kind", "vendor/class"),
        (
            "bad-env.yaml",
            "devices[0].containerEdits.env[0]",
            "KEY=VALUE",
        ),
        (
            "bad-hook-name.yaml",
            "devices[0].containerEdits.hooks[0].hookName",
            "preStart",
        ),
        (
            "bad-node-type.yaml",
            "devices[0].containerEdits.deviceNodes[0].type",
            "device type",
        ),
        (
            "empty-node-path.yaml",
            "devices[0].containerEdits.deviceNodes[0].path",
            "empty",
        ),
    ];
    let mut listed: Vec<String> = cases.iter().map(|c| c.0.to_string()).collect();
    let mut present: Vec<String> = std::fs::read_dir(testdata("bad"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    present.sort();
    assert_eq!(listed, present, "every bad fixture needs an expectation");

    for (file, field, needle) in cases {
        let path = testdata(&format!("bad/{file}"));
        let chain = match Spec::from_path(&path) {
            Err(e) => chain(&e),
            Ok(spec) => {
                let e = validate_spec(&spec, &path).expect_err(file);
                assert_eq!(e.field, field, "{file}");
                chain(&e)
            }
        };
        assert!(chain.contains(path.to_str().unwrap()), "{file}: {chain}");
        assert!(chain.contains(field), "{file}: {chain}");
        assert!(chain.contains(needle), "{file}: {chain}");
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[test]
fn good_fixtures_load_in_the_container_device_interface_crate() {
    for (file, _) in GOOD {
        let path = testdata(file);
        container_device_interface::spec::read_spec(&path, 0)
            .unwrap_or_else(|e| panic!("{file}: {e:#}"));
    }
}

#[test]
fn our_serialization_round_trips_and_loads_in_the_reference_crate() {
    let tmp = tempfile::tempdir().unwrap();
    for (file, _) in GOOD {
        let spec = Spec::from_path(&testdata(file)).unwrap();
        for (format, ext) in [(Format::Yaml, "yaml"), (Format::Json, "json")] {
            let out = tmp.path().join(format!("{file}.{ext}"));
            std::fs::write(&out, spec.to_string(format, &out).unwrap()).unwrap();
            assert_eq!(Spec::from_path(&out).unwrap(), spec, "{file} as {ext}");
            container_device_interface::spec::read_spec(&out, 0)
                .unwrap_or_else(|e| panic!("{file} as {ext}: {e:#}"));
        }
    }
}

#[test]
fn the_reference_crate_resolves_the_same_devices() {
    // That crate descends into subdirectories (the Go reference skips them) and stops at the
    // first bad file, so give it a directory holding only the good fixtures.
    let tmp = tempfile::tempdir().unwrap();
    for (file, _) in GOOD {
        std::fs::copy(testdata(file), tmp.path().join(file)).unwrap();
    }
    let ours = nvbind_cdi::registry::Registry::with_trust(
        vec![testdata("")],
        nvbind_cdi::registry::Trust::Any,
    );
    let theirs = container_device_interface::cache::new_cache(vec![
        container_device_interface::spec_dirs::with_spec_dirs(&[tmp.path().to_str().unwrap()]),
        container_device_interface::cache::with_auto_refresh(false),
    ]);
    let mut theirs = theirs.lock().unwrap();
    theirs.refresh().unwrap();
    let ours: Vec<String> = ours.devices().iter().map(|d| d.to_string()).collect();
    assert_eq!(ours, theirs.list_devices());
}
