//! A CDI spec file, as the registry reads it: decoded as JSON and as YAML (every input is
//! tried both ways), validated, then what the registry and `create` do with a valid spec:
//! qualify each device name, merge the spec's and the devices' edits and apply them to an OCI
//! spec (against a fixed table of host device nodes, not the real /dev) and check the result
//! as `create` would check a bundle.
//!
//! Checks beyond "never panics": a spec that validates has a valid kind and device names (the
//! registry relies on it), re-encodes and decodes to the same value, and its edits apply with
//! no error other than the host's answer about a device node or a container path nvbind
//! refuses, into an OCI spec that survives JSON and the bundle checks.
#![no_main]

mod common;

use common::{bundle_dir, FixedHost};

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nvbind::bundle::{check_spec, parse_spec};
use nvbind_cdi::apply::{apply, ApplyError};
use nvbind_cdi::spec::{Format, Spec};
use nvbind_cdi::{name, validate, version, ContainerEdits, QualifiedName};

fn check(data: &[u8], format: Format) {
    let path = Path::new(match format {
        Format::Json => "/etc/cdi/fuzz.json",
        Format::Yaml => "/etc/cdi/fuzz.yaml",
    });
    let spec = match Spec::from_slice(data, format, path) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let declared = match validate::validate_spec(&spec, path) {
        Ok(v) => v,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(version::minimum_required_version(&spec) <= declared);

    let (vendor, class) = name::parse_kind(&spec.kind).expect("validated kind");
    let mut edits = ContainerEdits::default();
    edits.append(&spec.container_edits);
    for dev in &spec.devices {
        let q = QualifiedName::new(vendor, class, &dev.name).expect("validated device name");
        assert_eq!(QualifiedName::parse(&q.to_string()).as_ref(), Ok(&q));
        edits.append(&dev.container_edits);
    }

    let text = spec
        .to_string(format, path)
        .expect("a decoded spec encodes");
    let again = Spec::from_slice(text.as_bytes(), format, path).expect("encoded spec decodes");
    assert_eq!(again, spec, "round trip changed the spec:\n{text}");

    let base = oci_spec::runtime::Spec::default();
    match apply(&edits, &base, &FixedHost) {
        Ok(out) => {
            // create writes this as the bundle's config.json; libcontainer reads it back.
            let written = serde_json::to_vec(&out).expect("the injected OCI spec serializes");
            let read = parse_spec(&written).expect("the injected OCI spec parses");
            assert_eq!(
                read, out,
                "the injected OCI spec changed on its way through JSON"
            );
            check_spec(&read, bundle_dir()).expect("the injected OCI spec passes the checks");
        }
        Err(ApplyError::HostDevice { .. } | ApplyError::NotADevice { .. }) => {}
        Err(ApplyError::TypeMismatch { .. }) => {}
        // Valid CDI (the reference takes any non-empty path) that apply refuses by name
        // rather than leave to create's bundle check.
        Err(ApplyError::ContainerPath { .. }) => {}
        Err(e) => panic!("validated edits failed to apply: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, Format::Json);
    check(data, Format::Yaml);
});
