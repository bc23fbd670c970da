use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType};

use super::controller::Controller;
use crate::common::{ControllerOpt, WrappedIoError};
use crate::devices::{DeviceRuleError, Emulator};

pub struct Devices {}

#[derive(thiserror::Error, Debug)]
pub enum V1DevicesControllerError {
    #[error(transparent)]
    Rule(#[from] DeviceRuleError),
    // Not transparent: the WrappedIoError must be a source of its own, where callers look
    // for the errno of a failed add_task (as with the other controllers' errors).
    #[error("io error: {0}")]
    WrappedIo(#[from] WrappedIoError),
}

impl Controller for Devices {
    type Error = V1DevicesControllerError;
    type Resource = ();

    fn apply(controller_opt: &ControllerOpt, cgroup_root: &Path) -> Result<(), Self::Error> {
        tracing::debug!("Apply Devices cgroup config");

        // nvbind: the rules are replayed through runc's emulation first (crate::devices):
        // the cgroup is switched to the resulting default (deny, unless the rules say allow
        // all) and gets the resulting exceptions, as runc writes them to a new cgroup. Writing
        // the spec's rules one by one left a spec without a leading "deny a" rule allowing
        // every device, and a deny that only punches a hole in a wildcard silently ignored.
        let emulator = Emulator::for_container(controller_opt.resources.devices().as_deref())?;
        let all = LinuxDeviceCgroupBuilder::default()
            .allow(emulator.default_allow())
            .typ(LinuxDeviceType::A)
            .access("rwm")
            .build()
            .expect("a complete device rule");
        // nvbind: devices.allow and devices.deny are each opened once for all the rules; the
        // kernel takes one rule per write(). An open and a close per rule made 22 rules (a
        // container given 8 GPUs) cost 66 syscalls, now 24.
        let mut files = RuleFiles::new(cgroup_root);
        files.write(&all)?;
        for rule in emulator.rules() {
            files.write(&rule)?;
        }

        Ok(())
    }

    // always needs to be called due to default devices
    fn needs_to_handle<'a>(controller_opt: &'a ControllerOpt) -> Option<&'a Self::Resource> {
        // nvbind: unless told to leave the device rules alone
        (!controller_opt.skip_devices).then_some(&())
    }
}

/// nvbind: devices.allow and devices.deny of one cgroup, each opened on its first rule and
/// kept for the rules that follow.
struct RuleFiles<'a> {
    cgroup_root: &'a Path,
    allow: Option<std::fs::File>,
    deny: Option<std::fs::File>,
}

impl<'a> RuleFiles<'a> {
    fn new(cgroup_root: &'a Path) -> Self {
        Self {
            cgroup_root,
            allow: None,
            deny: None,
        }
    }

    /// Writes `device` to devices.allow or devices.deny with one write(), as a rule of its own.
    fn write(&mut self, device: &LinuxDeviceCgroup) -> Result<(), WrappedIoError> {
        use std::io::Write;
        let (slot, name) = if device.allow() {
            (&mut self.allow, "devices.allow")
        } else {
            (&mut self.deny, "devices.deny")
        };
        let path = self.cgroup_root.join(name);
        let file = match slot {
            Some(f) => f,
            None => slot.insert(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|err| WrappedIoError::Open {
                        err,
                        path: path.clone(),
                    })?,
            ),
        };
        let data = device.to_string();
        file.write_all(data.as_bytes())
            .map_err(|err| WrappedIoError::Write { err, path, data })
    }
}

impl Devices {
    // nvbind: one rule through its own open, for the tests (apply writes through RuleFiles)
    #[cfg(test)]
    fn apply_device(device: &LinuxDeviceCgroup, cgroup_root: &Path) -> Result<(), WrappedIoError> {
        RuleFiles::new(cgroup_root).write(device)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::read_to_string;

    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};

    use super::*;
    use crate::test::set_fixture;

    // nvbind: a failed add_task's errno stays reachable through the manager's error, as for
    // the other controllers (libcontainer looks for EACCES there for rootless containers)
    #[test]
    fn test_io_error_is_a_source() {
        use std::error::Error;
        let err = crate::common::AnyManagerError::V1(
            V1DevicesControllerError::WrappedIo(WrappedIoError::CreateDir {
                err: std::io::Error::from_raw_os_error(nix::errno::Errno::EACCES as i32),
                path: "/sys/fs/cgroup/devices/x".into(),
            })
            .into(),
        );
        let mut cur: Option<&(dyn Error + 'static)> = Some(&err);
        let mut found = false;
        while let Some(e) = cur {
            found |= e.downcast_ref::<WrappedIoError>().is_some();
            cur = e.source();
        }
        assert!(found);
    }

    // nvbind
    #[test]
    fn test_skip_devices() {
        let resources = oci_spec::runtime::LinuxResources::default();
        let mut opt = ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
            skip_devices: false,
        };
        assert!(Devices::needs_to_handle(&opt).is_some());
        opt.skip_devices = true;
        assert!(Devices::needs_to_handle(&opt).is_none());
    }

    // nvbind: what a new cgroup gets: deny all, then runc's exceptions
    #[test]
    fn test_apply_writes_deny_all_then_exceptions() {
        let tmp = tempfile::tempdir().unwrap();
        set_fixture(tmp.path(), "devices.allow", "").unwrap();
        set_fixture(tmp.path(), "devices.deny", "").unwrap();
        let resources = oci_spec::runtime::LinuxResourcesBuilder::default()
            .devices(vec![
                LinuxDeviceCgroupBuilder::default()
                    .allow(true)
                    .typ(LinuxDeviceType::C)
                    .major(195)
                    .minor(0)
                    .access("rw")
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        let opt = ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
            skip_devices: false,
        };
        Devices::apply(&opt, tmp.path()).unwrap();
        // The fixture is a plain file: the rules written through one open follow each other
        // in it, in order (a cgroup file takes each write as one rule).
        assert_eq!(
            read_to_string(tmp.path().join("devices.deny")).unwrap(),
            "a *:* rwm"
        );
        let allow = read_to_string(tmp.path().join("devices.allow")).unwrap();
        assert!(allow.ends_with("c 195:0 rw"), "{allow}");
    }

    // nvbind: devices.allow is opened once for all the rules, which follow each other in it
    // (each reopened file was written from its start: the second rule over the first)
    #[test]
    fn test_apply_writes_every_rule_through_one_open() {
        let tmp = tempfile::tempdir().unwrap();
        set_fixture(tmp.path(), "devices.allow", "").unwrap();
        set_fixture(tmp.path(), "devices.deny", "").unwrap();
        let gpu = |minor| {
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(195)
                .minor(minor)
                .access("rw")
                .build()
                .unwrap()
        };
        let resources = oci_spec::runtime::LinuxResourcesBuilder::default()
            .devices(vec![gpu(0), gpu(255)])
            .build()
            .unwrap();
        let opt = ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
            skip_devices: false,
        };
        Devices::apply(&opt, tmp.path()).unwrap();
        let allow = read_to_string(tmp.path().join("devices.allow")).unwrap();
        let expected: String = Emulator::for_container(resources.devices().as_deref())
            .unwrap()
            .rules()
            .into_iter()
            .filter(|r| r.allow())
            .map(|r| r.to_string())
            .collect();
        assert!(expected.ends_with("c 195:0 rwc 195:255 rw"), "{expected}");
        assert_eq!(allow, expected);
    }

    #[test]
    fn test_set_default_devices() {
        let tmp = tempfile::tempdir().unwrap();

        crate::devices::default_rules().iter().for_each(|d| {
            // NOTE: We reset the fixtures every iteration because files aren't appended
            // so what happens in the tests is you get strange overwrites which can contain
            // remaining bytes from the last iteration. Resetting the files more appropriately
            // mocks the behavior of cgroup files.
            set_fixture(tmp.path(), "devices.allow", "").expect("create allowed devices list");
            set_fixture(tmp.path(), "devices.deny", "").expect("create denied devices list");

            Devices::apply_device(d, tmp.path()).expect("Apply default device");
            println!("Device: {}", d);
            if d.allow() {
                let allowed_content =
                    read_to_string(tmp.path().join("devices.allow")).expect("read to string");
                assert_eq!(allowed_content, d.to_string());
            } else {
                let denied_content =
                    read_to_string(tmp.path().join("devices.deny")).expect("read to string");
                assert_eq!(denied_content, d.to_string());
            }
        });
    }

    #[test]
    fn test_set_mock_devices() {
        let tmp = tempfile::tempdir().unwrap();
        [
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(10)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::A)
                .minor(200)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .typ(LinuxDeviceType::P)
                .major(10)
                .minor(200)
                .access("m")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .typ(LinuxDeviceType::U)
                .access("rw")
                .build()
                .unwrap(),
        ]
        .iter()
        .for_each(|d| {
            set_fixture(tmp.path(), "devices.allow", "").expect("create allowed devices list");
            set_fixture(tmp.path(), "devices.deny", "").expect("create denied devices list");

            Devices::apply_device(d, tmp.path()).expect("Apply default device");
            println!("Device: {}", d);
            if d.allow() {
                let allowed_content =
                    read_to_string(tmp.path().join("devices.allow")).expect("read to string");
                assert_eq!(allowed_content, d.to_string());
            } else {
                let denied_content =
                    read_to_string(tmp.path().join("devices.deny")).expect("read to string");
                assert_eq!(denied_content, d.to_string());
            }
        });
    }

    quickcheck! {
        fn property_test_apply_device(device: LinuxDeviceCgroup) -> bool {
            let tmp = tempfile::tempdir().unwrap();
            set_fixture(tmp.path(), "devices.allow", "").expect("create allowed devices list");
            set_fixture(tmp.path(), "devices.deny", "").expect("create denied devices list");
            Devices::apply_device(&device, tmp.path()).expect("Apply default device");
            if device.allow() {
                let allowed_content =
                    read_to_string(tmp.path().join("devices.allow")).expect("read to string");
                allowed_content == device.to_string()
            } else {
                let denied_content =
                    read_to_string(tmp.path().join("devices.deny")).expect("read to string");
                denied_content == device.to_string()
            }
        }

        fn property_test_apply_multiple_devices(devices: Vec<LinuxDeviceCgroup>) -> bool {
            let tmp = tempfile::tempdir().unwrap();
            devices.iter()
                .all(|device| {
                    set_fixture(tmp.path(), "devices.allow", "").expect("create allowed devices list");
                    set_fixture(tmp.path(), "devices.deny", "").expect("create denied devices list");
                    Devices::apply_device(device, tmp.path()).expect("Apply default device");
                    if device.allow() {
                        let allowed_content =
                            read_to_string(tmp.path().join("devices.allow")).expect("read to string");
                        allowed_content == device.to_string()
                    } else {
                        let denied_content =
                            read_to_string(tmp.path().join("devices.deny")).expect("read to string");
                        denied_content == device.to_string()
                    }
                })
        }
    }
}
