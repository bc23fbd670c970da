//! CDI qualified names (`vendor/class=name`) and their parts, as spec files, annotations and
//! NVIDIA_VISIBLE_DEVICES give them. Besides "never panics", checks that an accepted name
//! prints back as the input and parses again to the same value, and that the part validators
//! agree with the whole-name parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvbind_cdi::name::{self, QualifiedName};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    match QualifiedName::parse(input) {
        Ok(q) => {
            assert_eq!(
                q.to_string(),
                input,
                "accepted name does not print back as given"
            );
            assert_eq!(QualifiedName::parse(&q.to_string()).as_ref(), Ok(&q));
            assert_eq!(name::parse_kind(&q.kind()), Ok((&*q.vendor, &*q.class)));
            assert_eq!(
                QualifiedName::new(&q.vendor, &q.class, &q.name).as_ref(),
                Ok(&q)
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    if let Ok((vendor, class)) = name::parse_kind(input) {
        assert_eq!(format!("{vendor}/{class}"), input);
        assert!(name::validate_vendor_name(vendor).is_ok());
        assert!(name::validate_class_name(class).is_ok());
    }
    if name::validate_device_name(input).is_ok() {
        let q = QualifiedName::new("nvidia.com", "gpu", input)
            .expect("a valid device name makes a valid qualified name");
        assert_eq!(QualifiedName::parse(&q.to_string()).as_ref(), Ok(&q));
    }
});
