//! NVIDIA_VISIBLE_DEVICES and cdi.k8s.io/* annotation values, through the same path `create`
//! takes: the value in an OCI spec's process.env (or annotations), then `device_requests`.
//! Checks that the env parser and `device_requests` agree (what the parser accepts becomes a
//! valid qualified name), and that every request prints as a name that parses back.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use nvbind_cdi::requests::{self, DriverCapabilities};
use nvbind_cdi::QualifiedName;
use oci_spec::runtime::{ProcessBuilder, Spec, SpecBuilder};

fn spec_with_env(value: &str) -> Spec {
    let process = ProcessBuilder::default()
        .env(vec![
            "PATH=/bin".to_string(),
            format!("NVIDIA_VISIBLE_DEVICES={value}"),
            format!("NVIDIA_DRIVER_CAPABILITIES={value}"),
        ])
        .build()
        .expect("process");
    SpecBuilder::default()
        .process(process)
        .build()
        .expect("spec")
}

fn spec_with_annotation(value: &str) -> Spec {
    let annotations = HashMap::from([("cdi.k8s.io/fuzz".to_string(), value.to_string())]);
    SpecBuilder::default()
        .annotations(annotations)
        .build()
        .expect("spec")
}

fn check_round_trip(names: &[QualifiedName]) {
    for q in names {
        assert_eq!(QualifiedName::parse(&q.to_string()).as_ref(), Ok(q));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = requests::parse_nvidia_visible_devices(value);
    let spec = spec_with_env(value);
    let from_spec = requests::device_requests(&spec);
    match (&parsed, &from_spec) {
        (Ok(entries), Ok(names)) => {
            assert!(names.len() <= entries.len(), "more requests than entries");
            check_round_trip(names);
        }
        (Err(_), Err(_)) => {}
        _ => panic!("parser and device_requests disagree: {parsed:?} vs {from_spec:?}"),
    }
    let caps = DriverCapabilities::from_spec(&spec);
    assert!(!caps.0.is_empty(), "capabilities never end up empty");

    if let Ok(names) = requests::device_requests(&spec_with_annotation(value)) {
        check_round_trip(&names);
        assert!(
            !names.is_empty(),
            "an accepted annotation requests something"
        );
    }
});
