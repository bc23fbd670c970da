use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::Pid;
use pathrs::flags::OpenFlags;
use pathrs::procfs::{ProcfsBase, ProcfsHandle};
use procfs::{FromRead, ProcError, ProcessCGroups};

use super::blkio::{Blkio, V1BlkioStatsError};
use super::controller::Controller;
use super::controller_type::CONTROLLERS;
use super::cpu::{Cpu, V1CpuStatsError};
use super::cpuacct::{CpuAcct, V1CpuAcctStatsError};
use super::cpuset::{CpuSet, V1CpuSetControllerError};
use super::devices::Devices;
use super::freezer::{Freezer, V1FreezerControllerError};
use super::hugetlb::{HugeTlb, V1HugeTlbControllerError, V1HugeTlbStatsError};
use super::memory::{Memory, V1MemoryControllerError, V1MemoryStatsError};
use super::network_classifier::NetworkClassifier;
use super::network_priority::NetworkPriority;
use super::perf_event::PerfEvent;
use super::pids::Pids;
use super::util::V1MountPointError;
use super::{ControllerType as CtrlType, util};
use crate::common::{
    self, AnyCgroupManager, CGROUP_PROCS, CgroupManager, ControllerOpt, FreezerState,
    JoinSafelyError, PathBufExt, WrapIoResult, WrappedIoError,
};
use crate::stats::{PidStatsError, Stats, StatsProvider};

/// The named hierarchy runc's fs manager joins beside the controllers' (its key in runc's
/// cgroup paths and in `exec --cgroup name=systemd:PATH`).
const NAME_SYSTEMD: &str = "systemd";
const NAME_SYSTEMD_KEY: &str = "name=systemd";

pub struct Manager {
    subsystems: HashMap<CtrlType, PathBuf>,
    // nvbind: the container's cgroup in the controller-less cgroup2 hierarchy of a hybrid host
    // (/sys/fs/cgroup/unified), which runc's fs manager joins too: the last line of
    // /proc/PID/cgroup ("0::/...") then names the container's cgroup, as systemd and tools
    // that read it expect.
    hybrid_unified: Option<PathBuf>,
    // nvbind: the container's cgroup in the `name=systemd` v1 hierarchy, where the host mounts
    // one (hybrid and legacy hosts, with or without systemd running). runc's fs manager joins
    // it too (its NameGroup "name=systemd"): every line of /proc/PID/cgroup then names the
    // container's cgroup, and systemd on the host does not see the container's processes as
    // its caller's.
    name_systemd: Option<PathBuf>,
}

#[derive(thiserror::Error, Debug)]
pub enum V1ManagerError {
    #[error("io error: {0}")]
    WrappedIo(#[from] WrappedIoError),
    #[error("mount point error: {0}")]
    MountPoint(#[from] V1MountPointError),
    #[error("proc error: {0}")]
    Proc(#[from] ProcError),
    #[error("while joining paths: {0}")]
    JoinSafely(#[from] JoinSafelyError),
    #[error("cgroup {0} is required to fulfill the request, but is not supported by this system")]
    CGroupRequired(CtrlType),
    #[error("subsystem does not exist")]
    SubsystemDoesNotExist,
    #[error(transparent)]
    Pathrs(#[from] pathrs::error::Error),

    #[error(transparent)]
    BlkioController(WrappedIoError),
    #[error(transparent)]
    CpuController(WrappedIoError),
    #[error(transparent)]
    CpuAcctController(WrappedIoError),
    #[error(transparent)]
    CpuSetController(#[from] V1CpuSetControllerError),
    #[error(transparent)]
    FreezerController(#[from] V1FreezerControllerError),
    #[error(transparent)]
    HugeTlbController(#[from] V1HugeTlbControllerError),
    #[error(transparent)]
    MemoryController(#[from] V1MemoryControllerError),
    #[error(transparent)]
    PidsController(WrappedIoError),
    // nvbind: device rules can be refused (crate::devices).
    #[error(transparent)]
    DevicesController(#[from] super::devices::V1DevicesControllerError),

    #[error(transparent)]
    BlkioStats(#[from] V1BlkioStatsError),
    #[error(transparent)]
    CpuStats(#[from] V1CpuStatsError),
    #[error(transparent)]
    CpuAcctStats(#[from] V1CpuAcctStatsError),
    #[error(transparent)]
    PidsStats(#[from] PidStatsError),
    #[error(transparent)]
    HugeTlbStats(#[from] V1HugeTlbStatsError),
    #[error(transparent)]
    MemoryStats(#[from] V1MemoryStatsError),
}

impl Manager {
    /// Constructs a new cgroup manager with cgroups_path being relative to the root of the subsystem
    pub fn new(cgroup_path: &Path) -> Result<Self, V1ManagerError> {
        // nvbind: mountinfo and our /proc/self/cgroup read once here, not once per controller
        // (each read opens procfs anew: about 30 syscalls, 24 reads per manager), both
        // through one procfs handle (each new handle is verified again: about 16 syscalls);
        // the mounts are read once per thread and mount namespace (cgroup_mounts_in), not
        // once per manager
        // nvbind: the process's one checked handle (procfs_handle)
        let procfs = crate::procfs_handle::get()?;
        let mounts = util::cgroup_mounts_in(&procfs)?;
        let own = Self::own_cgroups(&procfs);
        let mut subsystems = HashMap::new();
        for subsystem in CONTROLLERS {
            if let Ok(subsystem_path) =
                Self::get_subsystem_path(&mounts, own.as_deref(), cgroup_path, subsystem)
            {
                subsystems.insert(*subsystem, subsystem_path);
            } else {
                tracing::warn!("cgroup {} not supported on this system", subsystem);
            }
        }

        let hybrid_unified = match common::get_cgroup_setup() {
            Ok(common::CgroupSetup::Hybrid) if !cgroup_path.as_os_str().is_empty() => Some(
                Path::new(common::DEFAULT_CGROUP_ROOT)
                    .join("unified")
                    .join_safely(cgroup_path)?,
            ),
            _ => None,
        };

        let name_systemd = match util::named_hierarchy_mount_point_in(&mounts, NAME_SYSTEMD) {
            Some(mount_point) if !cgroup_path.as_os_str().is_empty() => {
                Some(mount_point.join_safely(cgroup_path)?)
            }
            _ => None,
        };

        Ok(Manager {
            subsystems,
            hybrid_unified,
            name_systemd,
        })
    }

    /// nvbind: this process's cgroups (/proc/self/cgroup), for `get_subsystem_path`.
    fn own_cgroups(procfs: &ProcfsHandle) -> Result<Vec<procfs::ProcessCGroup>, V1ManagerError> {
        Ok(ProcessCGroups::from_read(procfs.open(
            ProcfsBase::ProcSelf,
            "cgroup",
            OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
        )?)?
        .0)
    }

    fn get_subsystem_path(
        mounts: &[util::CgroupMount],
        own: Result<&[procfs::ProcessCGroup], &V1ManagerError>,
        cgroup_path: &Path,
        subsystem: &CtrlType,
    ) -> Result<PathBuf, V1ManagerError> {
        tracing::debug!("Get path for subsystem: {}", subsystem);
        let mount_point = util::subsystem_mount_point_in(mounts, subsystem)?;

        // nvbind: the name compared as a str, not formatted into a String for each line of
        // /proc/self/cgroup (12 controllers times every line, per manager)
        let name: &str = subsystem.as_ref();
        let cgroup = own
            .map_err(|_| V1ManagerError::SubsystemDoesNotExist)?
            .iter()
            .find(|c| c.controllers.iter().any(|c| c == name))
            .ok_or(V1ManagerError::SubsystemDoesNotExist)?;

        let p = if cgroup_path.as_os_str().is_empty() {
            mount_point.join_safely(Path::new(&cgroup.pathname))?
        } else {
            mount_point.join_safely(cgroup_path)?
        };

        Ok(p)
    }

    fn get_required_controllers(
        &self,
        controller_opt: &ControllerOpt,
    ) -> Result<HashMap<&CtrlType, &PathBuf>, V1ManagerError> {
        let mut required_controllers = HashMap::new();

        for controller in CONTROLLERS {
            let required = match controller {
                CtrlType::Cpu => Cpu::needs_to_handle(controller_opt).is_some(),
                CtrlType::CpuAcct => CpuAcct::needs_to_handle(controller_opt).is_some(),
                CtrlType::CpuSet => CpuSet::needs_to_handle(controller_opt).is_some(),
                CtrlType::Devices => Devices::needs_to_handle(controller_opt).is_some(),
                CtrlType::HugeTlb => HugeTlb::needs_to_handle(controller_opt).is_some(),
                CtrlType::Memory => Memory::needs_to_handle(controller_opt).is_some(),
                CtrlType::Pids => Pids::needs_to_handle(controller_opt).is_some(),
                CtrlType::PerfEvent => PerfEvent::needs_to_handle(controller_opt).is_some(),
                CtrlType::Blkio => Blkio::needs_to_handle(controller_opt).is_some(),
                CtrlType::NetworkPriority => {
                    NetworkPriority::needs_to_handle(controller_opt).is_some()
                }
                CtrlType::NetworkClassifier => {
                    NetworkClassifier::needs_to_handle(controller_opt).is_some()
                }
                CtrlType::Freezer => Freezer::needs_to_handle(controller_opt).is_some(),
            };

            if required {
                if let Some(subsystem_path) = self.subsystems.get(controller) {
                    required_controllers.insert(controller, subsystem_path);
                } else {
                    return Err(V1ManagerError::CGroupRequired(*controller));
                }
            }
        }

        Ok(required_controllers)
    }

    /// nvbind: see `AnyCgroupManager::sub_cgroup_dirs`. Controllers not named in `subs` take
    /// the "" entry, or stay in the container's cgroup; controllers mounted together (often
    /// cpu and cpuacct) are one hierarchy, so naming one of them moves the process in both,
    /// and naming them with different sub-cgroups is refused (the last write would win).
    pub fn sub_cgroup_dirs(
        &self,
        subs: &crate::sub_cgroups::SubCgroupPaths,
    ) -> Result<Vec<PathBuf>, crate::sub_cgroups::SubCgroupError> {
        use crate::sub_cgroups::{SubCgroupError, join_sub};
        let name_of = |c: &CtrlType| c.to_string();
        if let Some(unknown) = subs
            .keys()
            .find(|k| {
                !k.is_empty()
                    && !self.subsystems.keys().any(|c| name_of(c) == **k)
                    && !(k.as_str() == NAME_SYSTEMD_KEY && self.name_systemd.is_some())
            })
        {
            let mut known: Vec<String> = self.subsystems.keys().map(name_of).collect();
            if self.name_systemd.is_some() {
                known.push(NAME_SYSTEMD_KEY.to_owned());
            }
            known.sort();
            return Err(SubCgroupError::UnknownController {
                controller: unknown.clone(),
                known: format!("this host's cgroup v1 controllers are {}", known.join(", ")),
            });
        }
        let mut ctrls: Vec<&CtrlType> = self.subsystems.keys().collect();
        ctrls.sort_by_key(|c| name_of(c));
        // base dir (one per hierarchy) -> (controller that named a sub-cgroup, the sub-cgroup)
        let mut chosen: BTreeMap<&PathBuf, Option<(String, &PathBuf)>> = BTreeMap::new();
        for ctrl in ctrls {
            let entry = chosen.entry(&self.subsystems[ctrl]).or_insert(None);
            if let Some(sub) = subs.get(&name_of(ctrl)) {
                match entry {
                    Some((first, other)) if *other != sub => {
                        return Err(SubCgroupError::SharedHierarchy {
                            first: first.clone(),
                            second: name_of(ctrl),
                        });
                    }
                    _ => *entry = Some((name_of(ctrl), sub)),
                }
            }
        }
        let all = subs.get("");
        let mut dirs: Vec<PathBuf> = chosen
            .into_iter()
            .map(|(base, named)| join_sub(base, named.map(|(_, sub)| sub).or(all)))
            .collect();
        if let Some(named) = &self.name_systemd {
            dirs.push(join_sub(named, subs.get(NAME_SYSTEMD_KEY).or(all)));
        }
        if let Some(unified) = &self.hybrid_unified {
            dirs.push(join_sub(unified, all));
        }
        Ok(dirs)
    }

    pub fn any(self) -> AnyCgroupManager {
        AnyCgroupManager::V1(self)
    }
}

/// nvbind: removes a cgroup with the sub-cgroups the container made in it (with a cgroup
/// namespace and a writable /sys/fs/cgroup it may), deepest first, killing what each holds;
/// rmdir of a cgroup with children fails with EBUSY. runc's `RemovePath` is recursive too.
fn remove_tree(cgroup_path: &Path) -> Result<(), V1ManagerError> {
    let entries = fs::read_dir(cgroup_path).wrap_read(cgroup_path)?;
    for entry in entries {
        let entry = entry.wrap_read(cgroup_path)?;
        if entry.file_type().wrap_read(entry.path())?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    let procs_path = cgroup_path.join(CGROUP_PROCS);
    let procs = fs::read_to_string(&procs_path).wrap_read(&procs_path)?;

    for line in procs.lines() {
        let pid: i32 = line
            .parse()
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))
            .wrap_other(&procs_path)?;
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }

    common::delete_with_retry(cgroup_path, 4, Duration::from_millis(100))?;
    Ok(())
}

impl CgroupManager for Manager {
    type Error = V1ManagerError;

    fn get_all_pids(&self) -> Result<Vec<Pid>, Self::Error> {
        let devices = self.subsystems.get(&CtrlType::Devices);
        if let Some(p) = devices {
            Ok(common::get_all_pids(p)?)
        } else {
            Err(V1ManagerError::SubsystemDoesNotExist)
        }
    }

    fn add_task(&self, pid: Pid) -> Result<(), Self::Error> {
        for (ctrl_type, cgroup_path) in &self.subsystems {
            match ctrl_type {
                CtrlType::Cpu => Cpu::add_task(pid, cgroup_path)?,
                CtrlType::CpuAcct => CpuAcct::add_task(pid, cgroup_path)?,
                CtrlType::CpuSet => CpuSet::add_task(pid, cgroup_path)?,
                CtrlType::Devices => Devices::add_task(pid, cgroup_path)?,
                CtrlType::HugeTlb => HugeTlb::add_task(pid, cgroup_path)?,
                CtrlType::Memory => Memory::add_task(pid, cgroup_path)?,
                CtrlType::Pids => Pids::add_task(pid, cgroup_path)?,
                CtrlType::PerfEvent => PerfEvent::add_task(pid, cgroup_path)?,
                CtrlType::Blkio => Blkio::add_task(pid, cgroup_path)?,
                CtrlType::NetworkPriority => NetworkPriority::add_task(pid, cgroup_path)?,
                CtrlType::NetworkClassifier => NetworkClassifier::add_task(pid, cgroup_path)?,
                CtrlType::Freezer => Freezer::add_task(pid, cgroup_path)?,
            }
        }
        for joined in self.hybrid_unified.iter().chain(&self.name_systemd) {
            fs::create_dir_all(joined).wrap_create_dir(joined)?;
            common::write_cgroup_file(joined.join(CGROUP_PROCS), pid)?;
        }

        Ok(())
    }

    fn apply(&self, controller_opt: &ControllerOpt) -> Result<(), Self::Error> {
        for (ctrl_type, cgroup_path) in self.get_required_controllers(controller_opt)? {
            match ctrl_type {
                CtrlType::Cpu => Cpu::apply(controller_opt, cgroup_path)?,
                CtrlType::CpuAcct => CpuAcct::apply(controller_opt, cgroup_path)?,
                CtrlType::CpuSet => CpuSet::apply(controller_opt, cgroup_path)?,
                CtrlType::Devices => Devices::apply(controller_opt, cgroup_path)?,
                CtrlType::HugeTlb => HugeTlb::apply(controller_opt, cgroup_path)?,
                CtrlType::Memory => Memory::apply(controller_opt, cgroup_path)?,
                CtrlType::Pids => Pids::apply(controller_opt, cgroup_path)?,
                CtrlType::PerfEvent => PerfEvent::apply(controller_opt, cgroup_path)?,
                CtrlType::Blkio => Blkio::apply(controller_opt, cgroup_path)?,
                CtrlType::NetworkPriority => NetworkPriority::apply(controller_opt, cgroup_path)?,
                CtrlType::NetworkClassifier => {
                    NetworkClassifier::apply(controller_opt, cgroup_path)?
                }
                CtrlType::Freezer => Freezer::apply(controller_opt, cgroup_path)?,
            }
        }

        Ok(())
    }

    fn remove(&self) -> Result<(), Self::Error> {
        for cgroup_path in self
            .subsystems
            .values()
            .chain(&self.hybrid_unified)
            .chain(&self.name_systemd)
        {
            if cgroup_path.exists() {
                tracing::debug!("remove cgroup {:?}", cgroup_path);
                remove_tree(cgroup_path)?;
            }
        }

        Ok(())
    }

    fn freeze(&self, state: FreezerState) -> Result<(), Self::Error> {
        let controller_opt = ControllerOpt {
            resources: &Default::default(),
            freezer_state: Some(state),
            oom_score_adj: None,
            disable_oom_killer: false,
            skip_devices: false,
        };
        Ok(Freezer::apply(
            &controller_opt,
            self.subsystems
                .get(&CtrlType::Freezer)
                .ok_or(V1ManagerError::SubsystemDoesNotExist)?,
        )?)
    }

    fn stats(&self) -> Result<Stats, Self::Error> {
        let mut stats = Stats::default();

        for (ctrl_type, cgroup_path) in &self.subsystems {
            match ctrl_type {
                CtrlType::Cpu => stats.cpu.throttling = Cpu::stats(cgroup_path)?,
                CtrlType::CpuAcct => stats.cpu.usage = CpuAcct::stats(cgroup_path)?,
                CtrlType::Pids => stats.pids = Pids::stats(cgroup_path)?,
                CtrlType::HugeTlb => stats.hugetlb = HugeTlb::stats(cgroup_path)?,
                CtrlType::Blkio => stats.blkio = Blkio::stats(cgroup_path)?,
                CtrlType::Memory => stats.memory = Memory::stats(cgroup_path)?,
                _ => continue,
            }
        }

        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sub_cgroups::{SubCgroupError, SubCgroupPaths};

    // nvbind: runc's `exec --cgroup` on a host where cpu and cpuacct share a hierarchy.
    fn manager() -> Manager {
        let c = Path::new("/sys/fs/cgroup");
        Manager {
            subsystems: HashMap::from([
                (CtrlType::Memory, c.join("memory/ct")),
                (CtrlType::Cpu, c.join("cpu,cpuacct/ct")),
                (CtrlType::CpuAcct, c.join("cpu,cpuacct/ct")),
            ]),
            hybrid_unified: Some(c.join("unified/ct")),
            name_systemd: Some(c.join("systemd/ct")),
        }
    }

    fn subs(pairs: &[(&str, &str)]) -> SubCgroupPaths {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
            .collect()
    }

    #[test]
    fn sub_cgroups_per_controller_and_for_all() {
        let m = manager();
        let c = Path::new("/sys/fs/cgroup");
        assert_eq!(
            m.sub_cgroup_dirs(&subs(&[("memory", "m")])).unwrap(),
            vec![
                c.join("cpu,cpuacct/ct"),
                c.join("memory/ct/m"),
                c.join("systemd/ct"),
                c.join("unified/ct")
            ]
        );
        // Naming cpu moves the process in the hierarchy cpuacct shares.
        assert_eq!(
            m.sub_cgroup_dirs(&subs(&[("cpu", "s"), ("memory", "m")])).unwrap(),
            vec![
                c.join("cpu,cpuacct/ct/s"),
                c.join("memory/ct/m"),
                c.join("systemd/ct"),
                c.join("unified/ct")
            ]
        );
        assert_eq!(
            m.sub_cgroup_dirs(&subs(&[("", "x")])).unwrap(),
            vec![
                c.join("cpu,cpuacct/ct/x"),
                c.join("memory/ct/x"),
                c.join("systemd/ct/x"),
                c.join("unified/ct/x")
            ]
        );
        assert_eq!(
            m.sub_cgroup_dirs(&subs(&[("", "")])).unwrap(),
            vec![
                c.join("cpu,cpuacct/ct"),
                c.join("memory/ct"),
                c.join("systemd/ct"),
                c.join("unified/ct")
            ]
        );
        // The named hierarchy has its own key, as in runc's cgroup paths.
        assert_eq!(
            m.sub_cgroup_dirs(&subs(&[("name=systemd", "n"), ("", "x")])).unwrap(),
            vec![
                c.join("cpu,cpuacct/ct/x"),
                c.join("memory/ct/x"),
                c.join("systemd/ct/n"),
                c.join("unified/ct/x")
            ]
        );
    }

    #[test]
    fn bad_sub_cgroups_are_refused() {
        let m = manager();
        let e = m.sub_cgroup_dirs(&subs(&[("whaaat", "/")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown controller whaaat for a sub-cgroup; this host's cgroup v1 controllers are \
             cpu, cpuacct, memory, name=systemd"
        );
        let e = m
            .sub_cgroup_dirs(&subs(&[("cpu", "a"), ("cpuacct", "b")]))
            .unwrap_err();
        assert!(matches!(e, SubCgroupError::SharedHierarchy { .. }), "{e}");
    }
}
