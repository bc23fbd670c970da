//! A bundle's config.json, through the library `create`, `run` and `restore` load it with
//! (nvbind::bundle): parse_spec, then check_spec against a fixed bundle directory that has a
//! `rootfs` directory and a `file` that is not one. For a spec that passes, what `create`
//! does next: CDI injection (requests from annotations and NVIDIA_VISIBLE_DEVICES, resolved
//! in a registry of the nvbind-cdi spec fixtures, applied against a fixed device table) and
//! writing the result back as config.json, which libcontainer parses again.
#![no_main]

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::{bundle_dir, FixedHost};
use libfuzzer_sys::fuzz_target;
use nvbind::bundle::{check_injected, check_spec, parse_spec};
use nvbind_cdi::registry::{Registry, Trust};
use nvbind_cdi::requests::{inject, DriverCapabilities};

/// The registry `create` would consult: the good spec fixtures of nvbind-cdi's tests.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cdi/testdata/specs");
        let registry = Registry::with_trust(vec![dir], Trust::Any);
        assert!(
            !registry.devices().is_empty(),
            "no CDI devices in the fixtures"
        );
        registry
    })
}

fuzz_target!(|data: &[u8]| {
    let spec = match parse_spec(data) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    if let Err(e) = check_spec(&spec, bundle_dir()) {
        assert!(!e.to_string().is_empty());
        return;
    }
    let _ = DriverCapabilities::from_spec(&spec);
    let spec = match inject(&spec, registry(), &FixedHost) {
        // What create does next: the bundle's rules with the injected ones must still make a
        // device cgroup, or create refuses before anything is made.
        Ok(Some(injected)) => match check_injected(&injected) {
            Ok(()) => injected,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                return;
            }
        },
        Ok(None) => spec,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let written = serde_json::to_vec(&spec).expect("an accepted spec serializes");
    let again = parse_spec(&written).expect("a written spec parses again");
    // oci-spec writes some empty lists as absent (intelRdt.schemata: [] comes back as None),
    // so the first trip may normalise; from then on what create writes must be a fixed point.
    // (Compared as specs, not bytes: annotations are a HashMap, written in any order.)
    let rewritten = serde_json::to_vec(&again).expect("a written spec serializes");
    let third = parse_spec(&rewritten).expect("a rewritten spec parses again");
    assert_eq!(third, again, "config.json changed on its way through JSON");
    check_spec(&again, bundle_dir()).expect("a written spec passes the checks again");
    assert!(
        inject(&again, registry(), &FixedHost).is_ok_and(|o| o.is_none()),
        "an injected spec is injected again"
    );
});
