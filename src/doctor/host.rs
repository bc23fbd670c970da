//! What doctor reads from the host: files under a root directory ("/" on a real host, a fake
//! tree in tests) and a few probes that need syscalls or other programs.

use std::path::{Path, PathBuf};
use std::process::Command;

use nvbind_cdi::discover::amd::AmdDiscoverer;
use nvbind_cdi::discover::intel::IntelDiscoverer;
use nvbind_cdi::discover::nvidia::{NvidiaDiscoverer, NvmlSource};
use nvbind_cdi::discover::{Discover, HostRoots, Inventory};

use crate::seal::{self, Sealed};

/// The directories a root daemon (dockerd, containerd) has on its PATH under systemd.
pub const DAEMON_PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

pub trait Host {
    /// Where the host's filesystem is seen.
    fn root(&self) -> &Path;

    /// `abs` (an absolute host path) under the root.
    fn path(&self, abs: &str) -> PathBuf {
        self.root().join(abs.trim_start_matches('/'))
    }

    fn read(&self, abs: &str) -> Option<String> {
        std::fs::read_to_string(self.path(abs)).ok()
    }

    fn exists(&self, abs: &str) -> bool {
        self.path(abs).exists()
    }

    /// The first `name` in the daemons' PATH, as a host path.
    fn which(&self, name: &str) -> Option<String> {
        DAEMON_PATH.iter().find_map(|d| {
            let p = format!("{d}/{name}");
            is_executable(&self.path(&p)).then_some(p)
        })
    }

    /// Where a host path leads once its symlinks are followed, as a host path.
    fn resolve(&self, abs: &str) -> Option<String> {
        let real = self.path(abs).canonicalize().ok()?;
        let root = self.root().canonicalize().ok()?;
        let rel = real.strip_prefix(&root).ok()?;
        Some(format!("/{}", rel.display()))
    }

    /// An environment variable of the doctor's own process.
    fn env(&self, key: &str) -> Option<String>;

    /// `criu --version` of the given binary.
    fn criu_version(&self, criu: &str) -> Option<String>;

    /// Whether the kernel loads a cgroup device eBPF program (cgroup v2 device filtering).
    fn bpf_device_programs(&self) -> Result<(), String>;

    /// What protects this binary from a container writing through /proc/self/exe.
    fn exe_protection(&self) -> Result<Sealed, String>;

    /// GPU discovery.
    fn discover(&self) -> Inventory;
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The host nvbind runs on.
pub struct SystemHost {
    root: PathBuf,
}

impl SystemHost {
    pub fn new() -> SystemHost {
        SystemHost {
            root: PathBuf::from("/"),
        }
    }
}

impl Default for SystemHost {
    fn default() -> Self {
        Self::new()
    }
}

impl Host for SystemHost {
    fn root(&self) -> &Path {
        &self.root
    }

    fn env(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }

    fn criu_version(&self, criu: &str) -> Option<String> {
        let out = Command::new(criu).arg("--version").output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn bpf_device_programs(&self) -> Result<(), String> {
        load_trivial_device_program()
    }

    fn exe_protection(&self) -> Result<Sealed, String> {
        // The overlay copy needs a directory that does not hold the binary.
        let scratch = std::env::temp_dir();
        seal::probe(&scratch).map_err(|e| format!("{e}"))
    }

    fn discover(&self) -> Inventory {
        let nvidia = NvidiaDiscoverer {
            nvml: NvmlSource::Load,
        };
        let all: [&dyn Discover; 3] = [&nvidia, &AmdDiscoverer, &IntelDiscoverer];
        Inventory::collect(&HostRoots::under("/"), &all)
    }
}

/// Loads `r0 = 1; exit` as a BPF_PROG_TYPE_CGROUP_DEVICE program (what a runtime attaches to a
/// cgroup v2 to filter devices) and closes it, with the runtime's own bpf(2) calls (libcgroups):
/// what fails here fails a create the same way.
fn load_trivial_device_program() -> Result<(), String> {
    use libcgroups::v2::devices::{bpf, program::Insn};
    bpf::bump_memlock_rlimit();
    bpf::load(c"Apache-2.0", &[Insn::mov64_imm(0, 1), Insn::exit()])
        .map(drop)
        .map_err(|e| e.to_string())
}
