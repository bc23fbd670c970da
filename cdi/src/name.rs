//! Fully qualified CDI device names: `vendor/class=name`, e.g. `nvidia.com/gpu=0`.
//!
//! The character rules are those of the CNCF reference (`pkg/parser`):
//! - vendor and class: ASCII letters, digits, `_`, `-`, `.`; start with a letter, end with a
//!   letter or digit;
//! - device name: ASCII letters, digits, `_`, `-`, `.`, `:`; start and end with a letter or
//!   digit.

use std::fmt;
use std::str::FromStr;

/// A validated, fully qualified CDI device name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedName {
    pub vendor: String,
    pub class: String,
    pub name: String,
}

/// Which part of a name a [`NameError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Vendor,
    Class,
    Device,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Vendor => "vendor",
            Part::Class => "class",
            Part::Device => "device name",
        })
    }
}

/// Why a name, or one of its parts, is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("unqualified device {input:?}, missing {missing}")]
    Unqualified { input: String, missing: Part },
    #[error("invalid {part} {value:?}: empty")]
    Empty { part: Part, value: String },
    #[error("invalid {part} {value:?}: should start with {expected}")]
    BadStart {
        part: Part,
        value: String,
        expected: &'static str,
    },
    #[error("invalid {part} {value:?}: should end with a letter or digit")]
    BadEnd { part: Part, value: String },
    #[error("invalid {part} {value:?}: invalid character {ch:?}")]
    BadChar { part: Part, value: String, ch: char },
    #[error("invalid kind {kind:?}: expected vendor/class")]
    BadKind { kind: String },
    #[error("invalid device {input:?}")]
    InDevice {
        input: String,
        #[source]
        source: Box<NameError>,
    },
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

fn validate_part(part: Part, value: &str) -> Result<(), NameError> {
    let err_value = || value.to_string();
    let mut chars = value.chars();
    let Some(first) = chars.next() else {
        return Err(NameError::Empty {
            part,
            value: err_value(),
        });
    };
    let (first_ok, expected) = match part {
        Part::Vendor | Part::Class => (first.is_ascii_alphabetic(), "a letter"),
        Part::Device => (is_alnum(first), "a letter or digit"),
    };
    if !first_ok {
        return Err(NameError::BadStart {
            part,
            value: err_value(),
            expected,
        });
    }
    let len = value.chars().count();
    for (i, c) in value.chars().enumerate().skip(1) {
        if i == len - 1 {
            if !is_alnum(c) {
                // A valid-but-misplaced separator is reported as a bad ending; anything else
                // is a bad character wherever it is.
                if matches!(c, '_' | '-' | '.') || (part == Part::Device && c == ':') {
                    return Err(NameError::BadEnd {
                        part,
                        value: err_value(),
                    });
                }
                return Err(NameError::BadChar {
                    part,
                    value: err_value(),
                    ch: c,
                });
            }
            continue;
        }
        let ok = is_alnum(c) || matches!(c, '_' | '-' | '.') || (part == Part::Device && c == ':');
        if !ok {
            return Err(NameError::BadChar {
                part,
                value: err_value(),
                ch: c,
            });
        }
    }
    Ok(())
}

/// Checks a vendor name (`nvidia.com`).
pub fn validate_vendor_name(vendor: &str) -> Result<(), NameError> {
    validate_part(Part::Vendor, vendor)
}

/// Checks a class name (`gpu`).
pub fn validate_class_name(class: &str) -> Result<(), NameError> {
    validate_part(Part::Class, class)
}

/// Checks a device name (`0`, `all`, `GPU-8b0e...`, `mig:1:0`).
pub fn validate_device_name(name: &str) -> Result<(), NameError> {
    validate_part(Part::Device, name)
}

/// Splits a kind (`vendor/class`) as the reference's `ParseQualifier` does: `None` when it
/// has no `/` or an empty side. The parts are not validated.
pub fn parse_qualifier(kind: &str) -> Option<(&str, &str)> {
    match kind.split_once('/') {
        Some((v, c)) if !v.is_empty() && !c.is_empty() => Some((v, c)),
        _ => None,
    }
}

/// Splits and validates a spec kind (`vendor/class`).
pub fn parse_kind(kind: &str) -> Result<(&str, &str), NameError> {
    let (vendor, class) = parse_qualifier(kind).ok_or_else(|| NameError::BadKind {
        kind: kind.to_string(),
    })?;
    validate_vendor_name(vendor)?;
    validate_class_name(class)?;
    Ok((vendor, class))
}

impl QualifiedName {
    /// Builds a name from parts, validating each.
    pub fn new(vendor: &str, class: &str, name: &str) -> Result<Self, NameError> {
        validate_vendor_name(vendor)?;
        validate_class_name(class)?;
        validate_device_name(name)?;
        Ok(QualifiedName {
            vendor: vendor.to_string(),
            class: class.to_string(),
            name: name.to_string(),
        })
    }

    /// Parses `vendor/class=name`.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let unqualified = |missing| NameError::Unqualified {
            input: input.to_string(),
            missing,
        };
        if input.is_empty() || input.starts_with('/') {
            return Err(unqualified(Part::Vendor));
        }
        let Some((kind, name)) = input.split_once('=') else {
            return Err(unqualified(Part::Vendor));
        };
        if kind.is_empty() || name.is_empty() {
            return Err(unqualified(if kind.is_empty() {
                Part::Vendor
            } else {
                Part::Device
            }));
        }
        let Some((vendor, class)) = parse_qualifier(kind) else {
            return Err(unqualified(Part::Vendor));
        };
        QualifiedName::new(vendor, class, name).map_err(|source| NameError::InDevice {
            input: input.to_string(),
            source: Box::new(source),
        })
    }

    /// `vendor/class`.
    pub fn kind(&self) -> String {
        format!("{}/{}", self.vendor, self.class)
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}={}", self.vendor, self.class, self.name)
    }
}

impl FromStr for QualifiedName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QualifiedName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        for s in [
            "nvidia.com/gpu=0",
            "nvidia.com/gpu=all",
            "nvidia.com/gpu=GPU-8b0e4c6a-1111-2222-3333-444455556666",
            "nvidia.com/gpu=MIG-0c7a9a1e-5f1b-5b2c-9c3d-000000000001",
            "nvidia.com/mig.gpu=0:1",
            "amd.com/gpu=renderD128",
            "vendor1.example.org/class_x=dev.name-1",
            "a/b=c",
        ] {
            let q = QualifiedName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(q.to_string(), s);
            assert_eq!(s.parse::<QualifiedName>().unwrap(), q);
        }
        let q = QualifiedName::parse("nvidia.com/gpu=0").unwrap();
        assert_eq!(
            (q.vendor.as_str(), q.class.as_str(), q.name.as_str()),
            ("nvidia.com", "gpu", "0")
        );
        assert_eq!(q.kind(), "nvidia.com/gpu");
    }

    #[test]
    fn name_may_contain_equals_after_the_first() {
        // The reference splits on the first '='; the rest is the device name, which then
        // fails its character check.
        let err = QualifiedName::parse("a.com/b=c=d").unwrap_err();
        assert!(err.to_string().contains("a.com/b=c=d"), "{err}");
    }

    #[test]
    fn rejects_unqualified_names() {
        for s in [
            "",
            "0",
            "gpu=0",
            "/dev/nvidia0",
            "nvidia.com/gpu",
            "nvidia.com/gpu=",
            "=0",
            "/gpu=0",
            "nvidia.com/=0",
        ] {
            let err = QualifiedName::parse(s).unwrap_err();
            assert!(matches!(err, NameError::Unqualified { .. }), "{s}: {err:?}");
        }
    }

    #[test]
    fn rejects_bad_parts() {
        let cases = [
            ("1vendor.com/gpu=0", "vendor", "start"),
            ("-vendor.com/gpu=0", "vendor", "start"),
            ("vendor.com./gpu=0", "vendor", "end"),
            ("ven dor.com/gpu=0", "vendor", "character"),
            ("vendor.com/9gpu=0", "class", "start"),
            ("vendor.com/gpu-=0", "class", "end"),
            ("vendor.com/g:pu=0", "class", "character"),
            ("vendor.com/gpu/x=0", "class", "character"),
            ("vendor.com/gpu=-0", "device name", "start"),
            ("vendor.com/gpu=0:", "device name", "end"),
            ("vendor.com/gpu=0 1", "device name", "character"),
            ("vendor.com/gpu=ä", "device name", "start"),
            ("vendor.com/gpu=aä", "device name", "character"),
        ];
        for (input, part, what) in cases {
            let err = QualifiedName::parse(input).unwrap_err();
            let NameError::InDevice { source, .. } = &err else {
                panic!("{input}: {err:?}");
            };
            let msg = source.to_string();
            assert!(msg.contains(part) && msg.contains(what), "{input}: {msg}");
        }
    }

    #[test]
    fn validates_parts_individually() {
        assert!(validate_vendor_name("nvidia.com").is_ok());
        assert!(validate_vendor_name("a").is_ok());
        assert!(validate_vendor_name("").is_err());
        assert!(validate_class_name("gpu").is_ok());
        assert!(validate_class_name("mig.gpu").is_ok());
        assert!(validate_device_name("0").is_ok());
        assert!(validate_device_name("a:b").is_ok());
        assert!(validate_device_name("").is_err());
        assert!(validate_class_name("a:b").is_err());
    }

    #[test]
    fn kinds() {
        assert_eq!(parse_kind("nvidia.com/gpu").unwrap(), ("nvidia.com", "gpu"));
        assert!(matches!(
            parse_kind("nvidia.com"),
            Err(NameError::BadKind { .. })
        ));
        assert!(matches!(parse_kind("/gpu"), Err(NameError::BadKind { .. })));
        assert!(matches!(
            parse_kind("nvidia.com/"),
            Err(NameError::BadKind { .. })
        ));
        assert!(parse_kind("nvidia.com/g=pu").is_err());
        assert_eq!(parse_qualifier("a/b/c"), Some(("a", "b/c")));
    }
}
