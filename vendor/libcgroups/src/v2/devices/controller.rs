use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::LinuxDeviceCgroup;

use super::bpf::BpfError;
use super::program::ProgramError;
use super::*;
use crate::common::ControllerOpt;
use crate::devices::{DeviceRuleError, Emulator};
use crate::v2::controller::Controller;

const LICENSE: &std::ffi::CStr = c"Apache";

pub struct Devices {}

#[derive(thiserror::Error, Debug)]
pub enum DevicesControllerError {
    // nvbind: transparent, the message says what failed
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error("cannot open cgroup {path}: {source}")]
    Cgroup {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("program error: {0}")]
    Program(#[from] ProgramError),
    #[error(transparent)]
    Rule(#[from] DeviceRuleError),
}

impl Controller for Devices {
    type Error = DevicesControllerError;

    fn apply(
        controller_opt: &ControllerOpt,
        cgroup_root: &Path,
    ) -> Result<(), DevicesControllerError> {
        #[cfg(not(feature = "cgroupsv2_devices"))]
        return Ok(());

        #[cfg(feature = "cgroupsv2_devices")]
        {
            // nvbind: runc's SkipDevices
            if controller_opt.skip_devices {
                return Ok(());
            }
            Self::apply_devices(cgroup_root, controller_opt.resources.devices())
        }
    }
}

impl Devices {
    pub fn apply_devices(
        cgroup_root: &Path,
        linux_devices: &Option<Vec<LinuxDeviceCgroup>>,
    ) -> Result<(), DevicesControllerError> {
        tracing::debug!("Apply Devices cgroup config");

        // nvbind: the spec's rules, then runc's defaults, replayed through runc's emulation
        // of a v1 devices cgroup (crate::devices): the program denies (or, after an allow-all
        // rule, allows) everything but the resulting exceptions. The old emulator checked the
        // rules last to first, so a deny of "w" did not stop an O_RDWR open that an earlier
        // "rw" allowed, and /dev/console (c 5:1) was allowed, which runc does not do.
        let emulator = Emulator::for_container(linux_devices.as_deref())?;
        let prog = program::Program::from_rules(&emulator.rules(), emulator.default_allow())?;

        // nvbind: bpf(2) directly (bpf.rs), and the program that was there is replaced
        // atomically (BPF_F_REPLACE) or detached only after the new one is attached, as runc
        // does: the cgroup is never without a filter in between.
        let cgroup: OwnedFd = std::fs::File::open(cgroup_root)
            .map_err(|source| DevicesControllerError::Cgroup {
                path: cgroup_root.to_path_buf(),
                source,
            })?
            .into();
        // Increase `ulimit -l` limit to avoid BPF_PROG_LOAD error (#2167).
        bpf::bump_memlock_rlimit();
        let prog_fd = bpf::load(LICENSE, prog.instructions())?;
        bpf::attach_replacing(cgroup.as_fd(), prog_fd.as_fd())?;

        Ok(())
    }
}
