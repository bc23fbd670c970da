use std::fs;

mod controller;
pub mod controller_type;
mod cpu;
mod cpuset;
mod dbus_native;
// nvbind: DevicePolicy/DeviceAllow from the container's device rules
mod devices;
mod io;
pub mod manager;
mod memory;
mod pids;
mod unified;

/// nvbind: adds the allow rules to the `DeviceAllow` of a unit (runtime properties, kept until
/// the unit goes), so that systemd's own device program, which it attaches again at every
/// daemon-reload, allows what a hook granted behind the runtime's back (nvbind-hook under
/// runc or crun with their systemd driver). Root talks to systemd as the systemd driver does;
/// others to their user manager.
pub fn add_device_allow(
    unit: &str,
    rules: &[oci_spec::runtime::LinuxDeviceCgroup],
) -> Result<(), manager::SystemdManagerError> {
    use dbus_native::client::SystemdClient;
    use dbus_native::serialize::Variant;
    let conn = if nix::unistd::geteuid().is_root() {
        dbus_native::dbus::DbusConnection::new_system()?
    } else {
        dbus_native::dbus::DbusConnection::new_session()?
    };
    let entries = devices::allow_entries(rules, conn.systemd_version()?);
    if entries.is_empty() {
        return Ok(());
    }
    conn.set_unit_properties_list(unit, vec![("DeviceAllow", Variant::ArrayStructString(entries))])?;
    Ok(())
}

/// Checks if the system was booted with systemd
pub fn booted() -> bool {
    fs::symlink_metadata("/run/systemd/system")
        .map(|p| p.is_dir())
        .unwrap_or_default()
}

#[macro_export]
macro_rules! recast {
    ($v:ident, $t:ty) => {{
        let mut buf = Vec::new();
        $v.serialize(&mut buf);
        let mut ctr = 0;
        let ret = <$t>::deserialize(&buf, &mut ctr);
        ret
    }};
}
