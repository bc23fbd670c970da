use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType};

use super::controller::Controller;
use crate::common::{self, ControllerOpt, WrappedIoError};
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
        Self::apply_device(&all, cgroup_root)?;
        for rule in emulator.rules() {
            Self::apply_device(&rule, cgroup_root)?;
        }

        Ok(())
    }

    // always needs to be called due to default devices
    fn needs_to_handle<'a>(controller_opt: &'a ControllerOpt) -> Option<&'a Self::Resource> {
        // nvbind: unless told to leave the device rules alone
        (!controller_opt.skip_devices).then_some(&())
    }
}

impl Devices {
    fn apply_device(device: &LinuxDeviceCgroup, cgroup_root: &Path) -> Result<(), WrappedIoError> {
        let path = if device.allow() {
            cgroup_root.join("devices.allow")
        } else {
            cgroup_root.join("devices.deny")
        };

        common::write_cgroup_file_str(path, &device.to_string())?;
        Ok(())
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
        // The fixture is a plain file, written over from its start by each write: the last
        // rule written is at its start.
        assert_eq!(
            read_to_string(tmp.path().join("devices.deny")).unwrap(),
            "a *:* rwm"
        );
        let allow = read_to_string(tmp.path().join("devices.allow")).unwrap();
        assert!(allow.starts_with("c 195:0 rw"), "{allow}");
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
