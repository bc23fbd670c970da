//! Property tests: the name parser and the spec loader never panic, whatever the input, and
//! valid names round-trip.

use std::path::Path;

use nvbind_cdi::name::{
    validate_class_name, validate_device_name, validate_vendor_name, QualifiedName,
};
use nvbind_cdi::requests::parse_nvidia_visible_devices;
use nvbind_cdi::spec::{Format, Spec};
use nvbind_cdi::validate::validate_spec;
use proptest::prelude::*;

fn vendor() -> impl Strategy<Value = String> {
    "[A-Za-z]([A-Za-z0-9_.-]{0,20}[A-Za-z0-9])?"
}

fn device() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]([A-Za-z0-9_.:-]{0,30}[A-Za-z0-9])?"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn name_parser_never_panics(s in "\\PC{0,64}") {
        let _ = QualifiedName::parse(&s);
        let _ = validate_vendor_name(&s);
        let _ = validate_class_name(&s);
        let _ = validate_device_name(&s);
        let _ = parse_nvidia_visible_devices(&s);
    }

    #[test]
    fn name_parser_on_name_like_input(s in "[a-z./=:_ -]{0,24}") {
        if let Ok(q) = QualifiedName::parse(&s) {
            prop_assert_eq!(q.to_string(), s);
        }
    }

    #[test]
    fn valid_names_round_trip(v in vendor(), c in vendor(), d in device()) {
        let text = format!("{v}/{c}={d}");
        let q = QualifiedName::parse(&text).unwrap();
        prop_assert_eq!((q.vendor.as_str(), q.class.as_str(), q.name.as_str()), (v.as_str(), c.as_str(), d.as_str()));
        prop_assert_eq!(q.to_string(), text);
    }

    #[test]
    fn spec_loader_never_panics_on_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        for format in [Format::Yaml, Format::Json] {
            if let Ok(spec) = Spec::from_slice(&data, format, Path::new("fuzz")) {
                let _ = validate_spec(&spec, Path::new("fuzz"));
            }
        }
    }

    /// Structured input that often parses, so validation gets exercised too.
    #[test]
    fn spec_loader_never_panics_on_spec_like_yaml(
        version in "(0\\.[0-9]\\.0|1\\.[01]\\.0|v1\\.1\\.0|[0-9.]{0,6})",
        kind in "[a-z./_-]{0,16}",
        name in "[A-Za-z0-9:._ -]{0,10}",
        env in "[A-Z=]{0,6}",
        path in "[a-z/]{0,8}",
        hook in "(prestart|createContainer|poststop|[a-zA-Z]{0,8})",
        ty in "[a-z]{0,2}",
        gid in any::<u32>(),
    ) {
        let yaml = format!(
            "cdiVersion: \"{version}\"\nkind: \"{kind}\"\ndevices:\n- name: \"{name}\"\n  containerEdits:\n    env: [\"{env}\"]\n    deviceNodes:\n    - path: \"{path}\"\n      type: \"{ty}\"\n    hooks:\n    - hookName: \"{hook}\"\n      path: \"{path}\"\n    additionalGids: [{gid}]\n"
        );
        let spec = Spec::from_slice(yaml.as_bytes(), Format::Yaml, Path::new("fuzz.yaml"));
        prop_assert!(spec.is_ok(), "{yaml}");
        let _ = validate_spec(&spec.unwrap(), Path::new("fuzz.yaml"));
    }
}
