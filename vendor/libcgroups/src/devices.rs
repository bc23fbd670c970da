//! nvbind: the device rules a container gets, computed the way runc computes them, for the
//! cgroup v1 `devices` controller and the cgroup v2 eBPF filter alike.
//!
//! A container's rules are the spec's `linux.resources.devices` followed by [`default_rules`]
//! (runc's `AllowedDevices`, which a spec cannot remove). They are replayed in order through
//! an emulation of the v1 devices controller (runc's `devices.Emulator`): a type `a` rule
//! resets everything (allow: every device, deny: none) and the rules after it add or remove
//! exceptions to that default. So the last rule that mentions a device and access wins, and
//! the result is a default (allow or deny) plus non-overlapping exceptions that all say the
//! opposite, which is what both the v1 files and the v2 program express. Where a rule would
//! remove part of a wildcard exception (allow `c *:* rwm`, then deny `c 1:3 w`), neither can
//! express it (v1 silently ignores the deny), so it is refused, as runc refuses it.

use std::collections::BTreeMap;
use std::fmt;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType};

/// A set of device accesses: read, write, mknod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access(u8);

impl Access {
    pub const READ: Access = Access(1);
    pub const WRITE: Access = Access(2);
    pub const MKNOD: Access = Access(4);
    pub const ALL: Access = Access(7);

    /// nvbind: letters other than r, w and m are ignored, as runc's `Permissions.toSet` ignores
    /// them (engines and runc's own tests write "rwa"); a string with none of the three is
    /// refused, with the first letter that is not one of them.
    fn parse(s: &str) -> Result<Self, char> {
        let mut a = 0;
        let mut unknown = None;
        for c in s.chars() {
            a |= match c {
                'r' => Self::READ.0,
                'w' => Self::WRITE.0,
                'm' => Self::MKNOD.0,
                c => {
                    unknown.get_or_insert(c);
                    0
                }
            };
        }
        match unknown {
            Some(c) if a == 0 => Err(c),
            _ => Ok(Access(a)),
        }
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    fn union(self, other: Access) -> Self {
        Access(self.0 | other.0)
    }

    fn intersection(self, other: Access) -> Self {
        Access(self.0 & other.0)
    }

    fn difference(self, other: Access) -> Self {
        Access(self.0 & !other.0)
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in [(Self::READ, 'r'), (Self::WRITE, 'w'), (Self::MKNOD, 'm')] {
            if self.contains(bit) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Block before char, as runc sorts its rules ('b' < 'c').
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Block,
    Char,
}

/// What an exception matches: a block or char device, with a major and a minor number or
/// any (None). Ordered by (major, minor, type), wildcards first, as runc writes its rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Device {
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub kind: Kind,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |v: Option<u32>| v.map_or_else(|| "*".to_string(), |v| v.to_string());
        let t = match self.kind {
            Kind::Block => 'b',
            Kind::Char => 'c',
        };
        write!(f, "{t} {}:{}", n(self.major), n(self.minor))
    }
}

/// Where a rule came from, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `linux.resources.devices[i]`
    Spec(usize),
    /// One of [`default_rules`].
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Spec(i) => write!(f, "linux.resources.devices[{i}]"),
            Origin::Default => write!(f, "the default device rule"),
        }
    }
}

#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum DeviceRuleError {
    #[error("{origin}: the access is empty; give a combination of r, w and m")]
    EmptyAccess { origin: Origin },
    #[error("{origin}: invalid access {access:?} ({c:?}); give a combination of r, w and m")]
    InvalidAccess {
        origin: Origin,
        access: String,
        c: char,
    },
    #[error("{origin}: invalid cgroup device type {typ:?}; give a, b or c")]
    InvalidType { origin: Origin, typ: &'static str },
    #[error("{origin}: {what} {value} is out of range (at most {})", u32::MAX)]
    OutOfRange {
        origin: Origin,
        what: &'static str,
        value: i64,
    },
    // Boxed: the largest by far, and these errors travel inside every cgroup error.
    #[error(transparent)]
    HolePunch(Box<HolePunch>),
}

/// A rule that would remove part of a wildcard exception.
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
#[error(
    "{origin} ({action} {device} {access}) cannot be expressed by a device cgroup: it would \
     punch a hole in the wildcard rule {wildcard} {wildcard_access} before it; runc refuses \
     it too: list the devices to {other} instead of a wildcard"
)]
pub struct HolePunch {
    pub origin: Origin,
    pub action: &'static str,
    pub device: Device,
    pub access: Access,
    pub wildcard: Device,
    pub wildcard_access: Access,
    pub other: &'static str,
}

/// runc's `specconv.AllowedDevices` as cgroup rules: mknod of any device (the rules for the
/// device nodes in the spec are the spec's), /dev/null, random, full, tty, zero, urandom,
/// /dev/pts/*, /dev/ptmx, and /dev/net/tun (kept by runc for compatibility).
pub fn default_rules() -> Vec<LinuxDeviceCgroup> {
    let rule = |typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().expect("a complete device rule")
    };
    use LinuxDeviceType::{B, C};
    vec![
        rule(C, None, None, "m"),
        rule(B, None, None, "m"),
        rule(C, Some(1), Some(3), "rwm"),
        rule(C, Some(1), Some(8), "rwm"),
        rule(C, Some(1), Some(7), "rwm"),
        rule(C, Some(5), Some(0), "rwm"),
        rule(C, Some(1), Some(5), "rwm"),
        rule(C, Some(1), Some(9), "rwm"),
        rule(C, Some(136), None, "rwm"),
        rule(C, Some(5), Some(2), "rwm"),
        rule(C, Some(10), Some(200), "rwm"),
    ]
}

/// The state of an emulated v1 devices cgroup: a default and its exceptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emulator {
    default_allow: bool,
    exceptions: BTreeMap<Device, Access>,
}

impl Default for Emulator {
    /// Deny everything: where runc starts, whatever the spec says first.
    fn default() -> Self {
        Emulator {
            default_allow: false,
            exceptions: BTreeMap::new(),
        }
    }
}

impl Emulator {
    /// The spec's rules followed by [`default_rules`], applied to a deny-all cgroup.
    pub fn for_container(rules: Option<&[LinuxDeviceCgroup]>) -> Result<Self, DeviceRuleError> {
        let mut e = Emulator::default();
        for (i, rule) in rules.unwrap_or_default().iter().enumerate() {
            e.apply(rule, Origin::Spec(i))?;
        }
        for rule in default_rules() {
            e.apply(&rule, Origin::Default)?;
        }
        Ok(e)
    }

    pub fn apply(
        &mut self,
        rule: &LinuxDeviceCgroup,
        origin: Origin,
    ) -> Result<(), DeviceRuleError> {
        let access = match rule.access().as_deref() {
            None | Some("") => return Err(DeviceRuleError::EmptyAccess { origin }),
            Some(a) => Access::parse(a).map_err(|c| DeviceRuleError::InvalidAccess {
                origin,
                access: a.to_string(),
                c,
            })?,
        };
        let kind = match rule.typ().unwrap_or_default() {
            // Everything, whatever the numbers and the access say (as v1 and runc do).
            LinuxDeviceType::A => {
                self.default_allow = rule.allow();
                self.exceptions.clear();
                return Ok(());
            }
            LinuxDeviceType::B => Kind::Block,
            LinuxDeviceType::C => Kind::Char,
            t @ (LinuxDeviceType::U | LinuxDeviceType::P) => {
                return Err(DeviceRuleError::InvalidType {
                    origin,
                    typ: t.as_str_static(),
                });
            }
        };
        let number = |what, v: Option<i64>| match v {
            // Negative numbers are wildcards, as in runc ("hasMajor := rule.Major >= 0").
            None => Ok(None),
            Some(v) if v < 0 => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| DeviceRuleError::OutOfRange {
                    origin,
                    what,
                    value: v,
                }),
        };
        let device = Device {
            major: number("major", rule.major())?,
            minor: number("minor", rule.minor())?,
            kind,
        };
        if rule.allow() == self.default_allow {
            self.remove(device, access, origin, rule.allow())
        } else {
            let e = self.exceptions.entry(device).or_default();
            *e = e.union(access);
            Ok(())
        }
    }

    /// Takes `access` away from the exception for exactly `device`. An exception for a
    /// wildcard that covers `device` would keep allowing (or denying) it, so that is refused.
    fn remove(
        &mut self,
        device: Device,
        access: Access,
        origin: Origin,
        allow: bool,
    ) -> Result<(), DeviceRuleError> {
        let wildcards = [
            Device {
                major: None,
                ..device
            },
            Device {
                minor: None,
                ..device
            },
            Device {
                major: None,
                minor: None,
                ..device
            },
        ];
        for wildcard in wildcards {
            if wildcard == device {
                continue;
            }
            let held = self.exceptions.get(&wildcard).copied().unwrap_or_default();
            if !held.intersection(access).is_empty() {
                return Err(DeviceRuleError::HolePunch(Box::new(HolePunch {
                    origin,
                    action: if allow { "allow" } else { "deny" },
                    device,
                    access,
                    wildcard,
                    wildcard_access: held,
                    other: if allow { "deny" } else { "allow" },
                })));
            }
        }
        if let Some(held) = self.exceptions.get_mut(&device) {
            *held = held.difference(access);
            if held.is_empty() {
                self.exceptions.remove(&device);
            }
        }
        Ok(())
    }

    /// Whether a device not among the exceptions is allowed.
    pub fn default_allow(&self) -> bool {
        self.default_allow
    }

    /// The exceptions, each the opposite of the default, in (major, minor, type) order.
    pub fn exceptions(&self) -> impl Iterator<Item = (Device, Access)> + '_ {
        self.exceptions.iter().map(|(d, a)| (*d, *a))
    }

    /// The exceptions as OCI rules (`allow` = the opposite of the default).
    pub fn rules(&self) -> Vec<LinuxDeviceCgroup> {
        self.exceptions()
            .map(|(d, a)| {
                let mut b = LinuxDeviceCgroupBuilder::default()
                    .allow(!self.default_allow)
                    .typ(match d.kind {
                        Kind::Block => LinuxDeviceType::B,
                        Kind::Char => LinuxDeviceType::C,
                    })
                    .access(a.to_string());
                if let Some(m) = d.major {
                    b = b.major(m as i64);
                }
                if let Some(m) = d.minor {
                    b = b.minor(m as i64);
                }
                b.build().expect("a complete device rule")
            })
            .collect()
    }

    /// Whether the emulated cgroup allows `access` to the device (v1's `match_exception`:
    /// an exception applies when it covers the whole of the requested access).
    pub fn allows(&self, kind: Kind, major: u32, minor: u32, access: Access) -> bool {
        let hit = self.exceptions().any(|(d, a)| {
            d.kind == kind
                && d.major.is_none_or(|m| m == major)
                && d.minor.is_none_or(|m| m == minor)
                && a.contains(access)
        });
        hit != self.default_allow
    }
}

trait StaticStr {
    fn as_str_static(self) -> &'static str;
}

impl StaticStr for LinuxDeviceType {
    fn as_str_static(self) -> &'static str {
        match self {
            LinuxDeviceType::A => "a",
            LinuxDeviceType::B => "b",
            LinuxDeviceType::C => "c",
            LinuxDeviceType::U => "u",
            LinuxDeviceType::P => "p",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allow: bool, spec: &str) -> LinuxDeviceCgroup {
        // "c 1:3 rwm", "a", "b *:* m"
        let mut parts = spec.split([' ', ':']);
        let typ = match parts.next().unwrap() {
            "a" => LinuxDeviceType::A,
            "b" => LinuxDeviceType::B,
            "c" => LinuxDeviceType::C,
            "p" => LinuxDeviceType::P,
            "u" => LinuxDeviceType::U,
            t => panic!("{t}"),
        };
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).typ(typ);
        let num = |s: Option<&str>| s.filter(|s| *s != "*").map(|s| s.parse::<i64>().unwrap());
        if let Some(m) = num(parts.next()) {
            b = b.major(m);
        }
        if let Some(m) = num(parts.next()) {
            b = b.minor(m);
        }
        b = b.access(parts.next().unwrap_or("rwm"));
        b.build().unwrap()
    }

    fn emulate(rules: &[LinuxDeviceCgroup]) -> Result<Emulator, DeviceRuleError> {
        let mut e = Emulator::default();
        for (i, r) in rules.iter().enumerate() {
            e.apply(r, Origin::Spec(i))?;
        }
        Ok(e)
    }

    fn listed(e: &Emulator) -> Vec<String> {
        e.exceptions().map(|(d, a)| format!("{d} {a}")).collect()
    }

    #[test]
    fn starts_denying_everything() {
        let e = emulate(&[]).unwrap();
        assert!(!e.default_allow());
        assert!(!e.allows(Kind::Block, 8, 0, Access::READ));
    }

    #[test]
    fn type_a_resets_and_later_rules_are_exceptions() {
        let e = emulate(&[
            rule(true, "c 1:3 rwm"),
            rule(false, "a"),
            rule(true, "c 195:* rw"),
            rule(true, "c 195:0 m"),
        ])
        .unwrap();
        assert!(!e.default_allow());
        assert_eq!(listed(&e), ["c 195:* rw", "c 195:0 m"]);
        assert!(
            !e.allows(Kind::Char, 1, 3, Access::READ),
            "reset by the a rule"
        );
        assert!(e.allows(Kind::Char, 195, 7, Access::READ.union(Access::WRITE)));
        assert!(!e.allows(Kind::Char, 195, 7, Access::MKNOD));
        // Two exceptions do not add up to one access (v1 semantics).
        assert!(!e.allows(Kind::Char, 195, 0, Access::ALL));
    }

    #[test]
    fn the_last_rule_wins() {
        let e = emulate(&[
            rule(false, "a"),
            rule(true, "c 1:3 rwm"),
            rule(false, "c 1:3 w"),
            rule(true, "c 1:5 r"),
            rule(true, "c 1:5 w"),
        ])
        .unwrap();
        assert_eq!(listed(&e), ["c 1:3 rm", "c 1:5 rw"]);
        assert!(e.allows(Kind::Char, 1, 3, Access::READ));
        assert!(!e.allows(Kind::Char, 1, 3, Access::WRITE));
        // O_RDWR asks for both at once: refused, not half-allowed.
        assert!(!e.allows(Kind::Char, 1, 3, Access::READ.union(Access::WRITE)));
        // Denying everything of a device removes its exception.
        let e = emulate(&[rule(true, "b 8:0 rw"), rule(false, "b 8:0 rwm")]).unwrap();
        assert_eq!(listed(&e), Vec::<String>::new());
    }

    #[test]
    fn allow_all_then_deny_some() {
        let e = emulate(&[
            rule(true, "a"),
            rule(false, "b 8:* rwm"),
            rule(false, "c 1:1 r"),
        ])
        .unwrap();
        assert!(e.default_allow());
        assert_eq!(listed(&e), ["c 1:1 r", "b 8:* rwm"]);
        assert!(!e.allows(Kind::Block, 8, 1, Access::READ));
        assert!(e.allows(Kind::Block, 7, 0, Access::READ));
        assert!(e.allows(Kind::Char, 1, 1, Access::WRITE));
        // Allowing it again removes the deny exception.
        let e = emulate(&[
            rule(true, "a"),
            rule(false, "c 1:1 rw"),
            rule(true, "c 1:1 rw"),
        ])
        .unwrap();
        assert_eq!(listed(&e), Vec::<String>::new());
    }

    #[test]
    fn holes_in_wildcards_are_refused() {
        let err = emulate(&[
            rule(false, "a"),
            rule(true, "c *:* rwm"),
            rule(false, "c 1:3 w"),
        ])
        .unwrap_err();
        assert!(matches!(&err, DeviceRuleError::HolePunch(h) if h.origin == Origin::Spec(2)));
        let msg = err.to_string();
        assert!(
            msg.starts_with("linux.resources.devices[2] (deny c 1:3 w)"),
            "{msg}"
        );
        assert!(msg.contains("wildcard rule c *:* rwm"), "{msg}");
        // Disjoint access is fine, and so is removing an exact exception.
        emulate(&[rule(true, "c *:* m"), rule(false, "c 1:3 rw")]).unwrap();
        emulate(&[rule(true, "c 195:* rw"), rule(false, "c 195:* w")]).unwrap();
        // In allow-all mode the hole is an allow in a wildcard deny.
        let err = emulate(&[
            rule(true, "a"),
            rule(false, "c 10:* rwm"),
            rule(true, "c 10:200 rwm"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("(allow c 10:200 rwm)"), "{err}");
    }

    #[test]
    fn letters_other_than_rwm_are_ignored_as_runc_ignores_them() {
        // runc's update.bats "minimal transition rules" denies c 1:11 "rwa".
        let e = emulate(&[rule(false, "a"), rule(true, "c 1:11 rwa")]).unwrap();
        assert!(listed(&e).contains(&"c 1:11 rw".to_string()), "{:?}", listed(&e));
        let e = emulate(&[rule(true, "c 1:11 rwm"), rule(false, "c 1:11 rwa")]).unwrap();
        assert!(listed(&e).contains(&"c 1:11 m".to_string()), "{:?}", listed(&e));
    }

    #[test]
    fn bad_rules_are_refused() {
        let no_access = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .build()
            .unwrap();
        assert_eq!(
            emulate(&[no_access]).unwrap_err(),
            DeviceRuleError::EmptyAccess {
                origin: Origin::Spec(0)
            }
        );
        let err = emulate(&[rule(true, "c 1:3 xa")]).unwrap_err();
        assert!(
            err.to_string().contains("invalid access \"xa\" ('x')"),
            "{err}"
        );
        let err = emulate(&[rule(true, "p 1:3 rw")]).unwrap_err();
        assert!(
            err.to_string().contains("invalid cgroup device type \"p\""),
            "{err}"
        );
        assert!(emulate(&[rule(true, "u 1:3 rw")]).is_err());
        let err = emulate(&[rule(true, "c 4294967296:0 rw")]).unwrap_err();
        assert!(
            err.to_string().contains("major 4294967296 is out of range"),
            "{err}"
        );
        // The largest number is fine, and negative ones are wildcards.
        let e = emulate(&[rule(true, "c 4294967295:0 rw"), rule(true, "c -1:-5 m")]).unwrap();
        assert_eq!(listed(&e), ["c *:* m", "c 4294967295:0 rw"]);
    }

    #[test]
    fn a_container_gets_runcs_defaults_after_its_own_rules() {
        // The deny-all of `runc spec`, then a GPU.
        let spec = [
            rule(false, "a"),
            rule(true, "c 195:0 rw"),
            rule(false, "c 1:3 rwm"),
        ];
        let e = Emulator::for_container(Some(&spec)).unwrap();
        assert_eq!(
            listed(&e),
            [
                "b *:* m",
                "c *:* m",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:2 rwm",
                "c 10:200 rwm",
                "c 136:* rwm",
                "c 195:0 rw",
            ]
        );
        // The spec cannot take /dev/null away: the defaults come last.
        assert!(e.allows(Kind::Char, 1, 3, Access::WRITE));
        // Nothing else: not the disk, not a second GPU, not /dev/console.
        assert!(!e.allows(Kind::Block, 254, 0, Access::READ));
        assert!(e.allows(Kind::Block, 254, 0, Access::MKNOD));
        assert!(!e.allows(Kind::Char, 195, 1, Access::READ));
        assert!(!e.allows(Kind::Char, 5, 1, Access::READ));
        // No rules at all: the same defaults on a deny-all cgroup.
        assert_eq!(
            Emulator::for_container(None).unwrap().exceptions().count(),
            11
        );
        // A privileged container (allow a) stays allow-all: the defaults are no-ops there.
        let e = Emulator::for_container(Some(&[rule(true, "a")])).unwrap();
        assert!(e.default_allow());
        assert_eq!(e.exceptions().count(), 0);
    }
}
