use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::LinuxDeviceCgroup;

use super::bpf::BpfError;
use super::program::ProgramError;
use super::*;
use crate::common::{ControllerOpt, default_allow_devices, default_devices};
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
        return Self::apply_devices(cgroup_root, controller_opt.resources.devices());
    }
}

impl Devices {
    pub fn apply_devices(
        cgroup_root: &Path,
        linux_devices: &Option<Vec<LinuxDeviceCgroup>>,
    ) -> Result<(), DevicesControllerError> {
        tracing::debug!("Apply Devices cgroup config");

        // FIXME: should we start as "deny all"?
        let mut emulator = emulator::Emulator::with_default_allow(false);

        // FIXME: apply user-defined and default rules in which order?
        if let Some(devices) = linux_devices {
            for d in devices {
                tracing::debug!("apply user defined rule: {:?}", d);
                emulator.add_rule(d);
            }
        }

        for d in [
            default_devices().iter().map(|d| d.into()).collect(),
            default_allow_devices(),
        ]
        .concat()
        {
            tracing::debug!("apply default rule: {:?}", d);
            emulator.add_rule(&d);
        }

        let prog = program::Program::from_rules(&emulator.rules, emulator.default_allow)?;

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
