use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use nix::unistd::Pid;
use procfs::process::{Process, Stat};

use crate::config::YoukiConfig;
use crate::container::{ContainerStatus, State};
use crate::error::LibcontainerError;
use crate::syscall::syscall::create_syscall;

/// Structure representing the container data
#[derive(Debug, Clone)]
pub struct Container {
    // State of the container
    pub state: State,
    // indicated the directory for the root path in the container
    pub root: PathBuf,
}

impl Default for Container {
    fn default() -> Self {
        Self {
            state: State::default(),
            root: PathBuf::from("/run/youki"),
        }
    }
}

/// nvbind: the spec a container was built from, in its state directory.
pub const SPEC_FILE: &str = "config.json";

impl Container {
    pub fn new(
        container_id: &str,
        status: ContainerStatus,
        pid: Option<i32>,
        bundle: &Path,
        container_root: &Path,
    ) -> Result<Self, LibcontainerError> {
        let container_root = fs::canonicalize(container_root).map_err(|err| {
            LibcontainerError::InvalidInput(format!(
                "invalid container root {container_root:?}: {err:?}"
            ))
        })?;
        let bundle = fs::canonicalize(bundle).map_err(|err| {
            LibcontainerError::InvalidInput(format!("invalid bundle {bundle:?}: {err:?}"))
        })?;
        Ok(Self::new_canonical(
            container_id,
            status,
            pid,
            bundle,
            container_root,
        ))
    }

    /// nvbind: `new` for paths the caller has already canonicalized, without resolving them
    /// again.
    pub(crate) fn new_canonical(
        container_id: &str,
        status: ContainerStatus,
        pid: Option<i32>,
        bundle: PathBuf,
        container_root: PathBuf,
    ) -> Self {
        let state = State::new(container_id, status, pid, bundle);

        let mut container = Self {
            state,
            root: container_root,
        };
        // nvbind: a pid given here (a restored container's) is recorded with its start time.
        if let Some(pid) = pid {
            container.set_pid(pid);
        }
        container
    }

    pub fn id(&self) -> &str {
        &self.state.id
    }

    pub fn can_start(&self) -> bool {
        self.state.status.can_start()
    }

    pub fn can_kill(&self) -> bool {
        self.state.status.can_kill()
    }

    pub fn can_delete(&self) -> bool {
        self.state.status.can_delete()
    }

    pub fn can_exec(&self) -> bool {
        self.state.status == ContainerStatus::Running
    }

    pub fn can_pause(&self) -> bool {
        self.state.status.can_pause()
    }

    pub fn can_resume(&self) -> bool {
        self.state.status.can_resume()
    }

    pub fn bundle(&self) -> &PathBuf {
        &self.state.bundle
    }

    /// nvbind: the spec this container was built from: the copy saved in its state
    /// directory at create (which carries the runtime's edits; root.path absolute), else,
    /// for a container created before that copy existed, the bundle's config.json.
    pub fn built_spec(&self) -> Result<oci_spec::runtime::Spec, LibcontainerError> {
        let saved = self.root.join(SPEC_FILE);
        let mut spec = if saved.exists() {
            oci_spec::runtime::Spec::load(saved)?
        } else {
            oci_spec::runtime::Spec::load(self.bundle().join("config.json"))?
        };
        // A relative root.path (a spec saved as given, by a restore) is the bundle's.
        spec.canonicalize_rootfs(self.bundle())?;
        Ok(spec)
    }

    /// nvbind: saves `spec` as the one this container was built from (atomically).
    pub fn save_spec(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), LibcontainerError> {
        let json = serde_json::to_vec(spec).map_err(|err| {
            LibcontainerError::OtherIO(std::io::Error::new(std::io::ErrorKind::InvalidData, err))
        })?;
        crate::utils::write_file_atomic(self.root.join(SPEC_FILE), json)
            .map_err(LibcontainerError::OtherIO)
    }

    pub fn set_annotations(&mut self, annotations: Option<HashMap<String, String>>) -> &mut Self {
        self.state.annotations = annotations;
        self
    }

    pub fn pid(&self) -> Option<Pid> {
        self.state.pid.map(Pid::from_raw)
    }

    /// Records `pid` as the container's init, with the start time of the process it names
    /// now (nvbind), so that a later process given the same pid is not taken for the init.
    pub fn set_pid(&mut self, pid: i32) -> &mut Self {
        self.state.pid = Some(pid);
        self.state.init_process_start = Process::new(pid)
            .and_then(|p| p.stat())
            .ok()
            .map(|stat| stat.starttime);
        self
    }

    /// nvbind: the start time recorded with the init's pid (field 22 of /proc/PID/stat).
    pub fn init_process_start(&self) -> Option<u64> {
        self.state.init_process_start
    }

    /// nvbind: the init's pid while it still names the init: the process exists (a zombie
    /// too) and started when the recorded one did. None once the init is gone, also when its
    /// pid was given to another process since (runc compares the start time as well). Use it,
    /// not `pid()`, to signal or inspect the init. A state saved without a start time is
    /// judged by the pid alone, as before.
    pub fn init_pid(&self) -> Option<Pid> {
        let pid = self.pid()?;
        let stat = Process::new(pid.as_raw()).and_then(|p| p.stat()).ok()?;
        self.started_as_init(&stat).then_some(pid)
    }

    /// nvbind: whether the process of `stat` (the one the init's pid names) is the init.
    fn started_as_init(&self, stat: &Stat) -> bool {
        self.state
            .init_process_start
            .is_none_or(|start| start == stat.starttime)
    }

    pub fn created(&self) -> Option<DateTime<Utc>> {
        self.state.created
    }

    pub fn creator(&self) -> Option<OsString> {
        if let Some(uid) = self.state.creator {
            let command = create_syscall();
            let user_name = command.get_pwuid(uid);
            if let Some(user_name) = user_name {
                return Some((*user_name).to_owned());
            }
        }

        None
    }

    pub fn set_creator(&mut self, uid: u32) -> &mut Self {
        self.state.creator = Some(uid);
        self
    }

    pub fn systemd(&self) -> bool {
        self.state.use_systemd
    }

    pub fn set_systemd(&mut self, should_use: bool) -> &mut Self {
        self.state.use_systemd = should_use;
        self
    }

    pub fn set_clean_up_intel_rdt_directory(&mut self, clean_up: bool) -> &mut Self {
        self.state.clean_up_intel_rdt_subdirectory = Some(clean_up);
        self
    }

    pub fn clean_up_intel_rdt_subdirectory(&self) -> Option<bool> {
        self.state.clean_up_intel_rdt_subdirectory
    }

    pub fn set_intel_rdt_dir(&mut self, dir: Option<PathBuf>) -> &mut Self {
        self.state.intel_rdt_dir = dir;
        self
    }

    pub fn intel_rdt_dir(&self) -> Option<&PathBuf> {
        self.state.intel_rdt_dir.as_ref()
    }

    pub fn set_intel_rdt_monitoring_dir(&mut self, dir: Option<PathBuf>) -> &mut Self {
        self.state.intel_rdt_monitoring_dir = dir;
        self
    }

    pub fn intel_rdt_monitoring_dir(&self) -> Option<&PathBuf> {
        self.state.intel_rdt_monitoring_dir.as_ref()
    }

    pub fn status(&self) -> ContainerStatus {
        self.state.status
    }

    pub fn set_status(&mut self, status: ContainerStatus) -> &mut Self {
        let created = match (status, self.state.created) {
            (ContainerStatus::Created, None) => Some(Utc::now()),
            _ => self.state.created,
        };

        self.state.created = created;
        self.state.status = status;

        self
    }

    pub fn refresh_status(&mut self) -> Result<(), LibcontainerError> {
        let new_status = match self.pid() {
            Some(pid) => {
                // Note that Process::new does not spawn a new process
                // but instead creates a new Process structure, and fill
                // it with information about the process with given pid
                if let Ok(proc) = Process::new(pid.as_raw()) {
                    use procfs::process::ProcState;

                    let stat = proc.stat()?;
                    match stat.state()? {
                        ProcState::Zombie | ProcState::Dead => ContainerStatus::Stopped,
                        // nvbind: the init was reaped and its pid given to another process.
                        _ if !self.started_as_init(&stat) => ContainerStatus::Stopped,
                        _ => match self.status() {
                            ContainerStatus::Creating
                            | ContainerStatus::Created
                            | ContainerStatus::Paused => self.status(),
                            _ => ContainerStatus::Running,
                        },
                    }
                } else {
                    ContainerStatus::Stopped
                }
            }
            None => ContainerStatus::Stopped,
        };

        self.set_status(new_status);
        Ok(())
    }

    pub fn refresh_state(&mut self) -> Result<&mut Self, LibcontainerError> {
        let state = State::load(&self.root)?;
        self.state = state;

        Ok(self)
    }

    pub fn load(container_root: PathBuf) -> Result<Self, LibcontainerError> {
        let state = State::load(&container_root)?;
        let mut container = Self {
            state,
            root: container_root,
        };
        container.refresh_status()?;
        Ok(container)
    }

    pub fn save(&self) -> Result<(), LibcontainerError> {
        tracing::debug!("Save container status: {:?} in {:?}", self, self.root);
        self.state.save(&self.root)?;

        Ok(())
    }

    pub fn spec(&self) -> Result<YoukiConfig, LibcontainerError> {
        let spec = YoukiConfig::load(&self.root)?;
        Ok(spec)
    }
}

/// Checkpoint parameter structure
pub struct CheckpointOptions {
    pub ext_unix_sk: bool,
    pub file_locks: bool,
    pub image_path: PathBuf,
    pub leave_running: bool,
    pub shell_job: bool,
    pub tcp_established: bool,
    pub work_path: Option<PathBuf>,
    pub manage_cgroups_mode: rust_criu::CgMode,
    pub link_remap: bool,
}

#[cfg(test)]
mod tests {
    use anyhow::{Context, Result};
    use serial_test::serial;

    use super::*;

    #[test]
    fn test_get_set_pid() {
        let mut container = Container::default();

        assert_eq!(container.pid(), None);
        container.set_pid(1);
        assert_eq!(container.pid(), Some(Pid::from_raw(1)));
    }

    #[test]
    fn test_basic_getter() -> Result<()> {
        let mut container = Container::new(
            "container_id",
            ContainerStatus::Creating,
            None,
            &PathBuf::from("."),
            &PathBuf::from("."),
        )?;

        // testing id
        assert_eq!(container.id(), "container_id");
        // testing bundle path
        assert_eq!(
            container.bundle(),
            &fs::canonicalize(PathBuf::from(".")).unwrap()
        );
        // testing root path
        assert_eq!(container.root, fs::canonicalize(PathBuf::from("."))?);
        // testing created
        assert_eq!(container.created(), None);
        container.set_status(ContainerStatus::Created);
        assert!(container.created().is_some());

        Ok(())
    }

    #[test]
    fn test_set_annotations() {
        let mut container = Container::default();
        assert_eq!(container.state.annotations, None);

        let mut annotations = std::collections::HashMap::with_capacity(1);
        annotations.insert(
            "org.criu.config".to_string(),
            "/etc/special-youki-criu-options".to_string(),
        );
        container.set_annotations(Some(annotations.clone()));
        assert_eq!(container.state.annotations, Some(annotations));
    }

    #[test]
    fn test_get_set_systemd() {
        let mut container = Container::default();
        assert!(!container.systemd());
        container.set_systemd(true);
        assert!(container.systemd());
        container.set_systemd(false);
        assert!(!container.systemd());
    }

    #[test]
    fn test_get_set_creator() {
        let mut container = Container::default();
        assert_eq!(container.creator(), None);
        container.set_creator(1000);
        assert_eq!(container.creator(), Some(OsString::from("youki")));
    }

    #[test]
    #[serial]
    fn test_refresh_load_save_state() -> Result<()> {
        let tmp_dir = tempfile::tempdir().unwrap();
        let mut container_1 = Container::new(
            "container_id_1",
            ContainerStatus::Created,
            None,
            &PathBuf::from("."),
            tmp_dir.path(),
        )?;

        container_1.save()?;
        let container_2 = Container::load(tmp_dir.path().to_path_buf())?;
        assert_eq!(container_1.state.id, container_2.state.id);
        assert_eq!(container_2.state.status, ContainerStatus::Stopped);

        container_1.state.id = "container_id_1_modified".to_string();
        container_1.save()?;
        container_1.refresh_state()?;
        assert_eq!(container_1.state.id, "container_id_1_modified".to_string());

        Ok(())
    }

    #[test]
    #[serial]
    fn test_get_spec() -> Result<()> {
        let tmp_dir = tempfile::tempdir().unwrap();
        use oci_spec::runtime::Spec;
        let spec = Spec::default();
        let config = YoukiConfig::from_spec(&spec, "123").context("convert spec to config")?;
        config.save(tmp_dir.path()).context("save config")?;

        let container = Container {
            root: tmp_dir.path().to_path_buf(),
            ..Default::default()
        };
        container.spec().context("get config")?;

        Ok(())
    }

    #[test]
    #[serial]
    fn test_get_set_refresh_status() -> Result<()> {
        // there already has a full and well-tested flow of status in state.rs
        // so we just let the coverage run through those can_xxx functions.
        let mut container = Container::default();
        assert_eq!(container.status(), ContainerStatus::Creating);
        assert!(!container.can_start());
        assert!(!container.can_kill());
        assert!(!container.can_delete());
        assert!(!container.can_exec());
        assert!(!container.can_pause());
        assert!(!container.can_resume());

        // no PID case
        container.refresh_status()?;
        assert_eq!(container.status(), ContainerStatus::Stopped);

        // with PID case but PID not exists
        container.set_pid(-1);
        container.refresh_status()?;
        assert_eq!(container.status(), ContainerStatus::Stopped);

        // with PID case
        container.set_pid(1);
        container.set_status(ContainerStatus::Paused);
        container.refresh_status()?;
        assert_eq!(container.status(), ContainerStatus::Paused);
        container.set_status(ContainerStatus::Running);
        container.refresh_status()?;
        assert_eq!(container.status(), ContainerStatus::Running);

        Ok(())
    }

    /// nvbind: a live process whose start time is not the recorded one is not the init.
    #[test]
    fn test_reused_pid_is_stopped() -> Result<()> {
        let mut child = std::process::Command::new("sleep").arg("100").spawn()?;
        let pid = child.id() as i32;
        let mut container = Container::default();
        container.set_pid(pid).set_status(ContainerStatus::Running);
        let start = container.init_process_start().context("no start time recorded")?;
        assert_eq!(start, Process::new(pid)?.stat()?.starttime);
        container.refresh_status()?;
        assert_eq!(container.status(), ContainerStatus::Running);
        assert_eq!(container.init_pid(), Some(Pid::from_raw(pid)));

        // The same pid, another process: what the kernel does once the init is reaped.
        container.state.init_process_start = Some(start + 1);
        container.refresh_status()?;
        assert_eq!(container.status(), ContainerStatus::Stopped);
        assert_eq!(container.init_pid(), None);

        child.kill()?;
        child.wait()?;
        container.state.init_process_start = Some(start);
        assert_eq!(container.init_pid(), None, "a reaped init has no pid");
        Ok(())
    }

    /// nvbind: a state saved before the start time was kept is judged by the pid alone.
    #[test]
    fn test_state_without_start_time_keeps_the_pid_alone() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let own = std::process::id();
        let old = format!(
            r#"{{"ociVersion":"1.0.2","id":"old","status":"running","pid":{own},
            "bundle":"/b","useSystemd":false}}"#
        );
        fs::write(dir.path().join("state.json"), old)?;
        let container = Container::load(dir.path().to_path_buf())?;
        assert_eq!(container.init_process_start(), None);
        assert_eq!(container.status(), ContainerStatus::Running);
        assert_eq!(container.init_pid(), Some(Pid::from_raw(own as i32)));
        Ok(())
    }

    /// nvbind: the start time survives a save and a load.
    #[test]
    fn test_start_time_is_saved() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let own = std::process::id() as i32;
        let mut container = Container::new(
            "saved",
            ContainerStatus::Running,
            Some(own),
            dir.path(),
            dir.path(),
        )?;
        let start = container.init_process_start().context("no start time recorded")?;
        container.save()?;
        let text = fs::read_to_string(dir.path().join("state.json"))?;
        assert!(text.contains(&format!("\"initProcessStart\":{start}")), "{text}");
        container = Container::load(dir.path().to_path_buf())?;
        assert_eq!(container.init_process_start(), Some(start));
        assert_eq!(container.status(), ContainerStatus::Running);
        Ok(())
    }

    /// nvbind: the start time is field 22 of /proc/PID/stat, counted after the command name,
    /// which may hold spaces and parentheses (the last ')' ends it).
    #[test]
    fn test_start_time_after_a_command_with_spaces_and_parens() -> Result<()> {
        use procfs::FromRead;
        let line = "4242 (a) (b c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 \
                    0 0 0 0 0 0 0 0 0 0\n";
        let stat = Stat::from_read(line.as_bytes())?;
        assert_eq!(stat.comm, "a) (b c)");
        assert_eq!(stat.starttime, 987654);

        // And from the kernel, for a process named so.
        let dir = tempfile::tempdir()?;
        let odd = dir.path().join("x) (y z");
        fs::copy("/bin/sleep", &odd)?;
        let mut child = std::process::Command::new(&odd).arg("100").spawn()?;
        let mut container = Container::default();
        container.set_pid(child.id() as i32);
        let stat = Process::new(child.id() as i32)?.stat()?;
        assert_eq!(stat.comm, "x) (y z");
        assert_eq!(container.init_process_start(), Some(stat.starttime));
        child.kill()?;
        child.wait()?;
        Ok(())
    }
}
