//! A pure cgroup v2 view of a hybrid host (v1 controllers, cgroup2 at /sys/fs/cgroup/unified:
//! the development and CI machines): a private mount namespace where /sys/fs/cgroup is the
//! cgroup2 hierarchy, so that libcgroups and runc take their v2 paths. Its cgroup2 carries
//! only the controllers v1 does not hold (hugetlb on these machines), but the core of cgroup
//! v2 (device programs, cgroup.procs and its rules, cgroup.kill) is all there.

use std::path::Path;
use std::process::{Child, Command, Stdio};

pub fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// A mount namespace where /sys/fs/cgroup is the cgroup2 hierarchy, held by a sleeping
/// process that commands enter with nsenter; None where /sys/fs/cgroup is cgroup2 already.
pub struct View {
    holder: Child,
}

impl View {
    pub fn new() -> Option<View> {
        if is_cgroup2(Path::new("/sys/fs/cgroup")) {
            return None;
        }
        let mut holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount -t cgroup2 none /sys/fs/cgroup && echo ready && exec sleep 3600")
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "cannot mount cgroup2 in a mount namespace"
        );
        Some(View { holder })
    }

    pub fn command(view: &Option<View>, program: &str) -> Command {
        match view {
            None => Command::new(program),
            Some(v) => {
                let mut c = Command::new("nsenter");
                c.arg("-t")
                    .arg(v.holder.id().to_string())
                    .args(["-m", "--"])
                    .arg(program);
                c
            }
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
